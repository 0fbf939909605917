"""Training-step time of every activation relative to SiLU, on the same model, batch and data.

Each round times one step of every (activation, kernel mode) in turn, in a shuffled order, so machine
noise hits all of them alike; the table reports the median step time over rounds and its ratio to
SiLU's (PyTorch's single native kernel; only PSSiLU, PSoftplus and Sparta have a fused mode). A step is
forward + backward + SGD update on a fixed batch, model in train mode. Modes: `eager` (plain PyTorch ops) and
`fused` (robust_zoo's compiled activation kernels, `robust_zoo.layers.set_fused_activations`).

    python benchmarks/bench_activations.py                  # resnet20, 128 x 1x28x28, fp32, eager + fused
    python benchmarks/bench_activations.py --model preact_resnet18 --in-chans 3 --img-size 32 --batch-size 64
"""
import argparse
import random
import statistics
import time

import timm
import torch
import torch.nn.functional as F

import robust_zoo  # noqa: F401  (registers the models)
from robust_zoo.layers import ACTIVATIONS, set_fused_activations

TARGETS = {'pssilu': 1.10, 'sparta': 1.30}  # issue #2's CPU targets, relative to SiLU
FUSABLE = {'pssilu', 'psoftplus', 'sparta'}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default='resnet20', help='robust_zoo architecture (default: %(default)s)')
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--img-size', type=int, default=28)
    p.add_argument('--in-chans', type=int, default=1)
    p.add_argument('--rounds', type=int, default=15)
    p.add_argument('--warmup', type=int, default=3, help='untimed rounds (compiles fused kernels)')
    p.add_argument('--acts', default=','.join(ACTIVATIONS), help='comma-separated activations (silu always runs)')
    p.add_argument('--modes', default='eager,fused', help='eager and/or fused (default: %(default)s)')
    p.add_argument('--amp', action='store_true', help='bf16 autocast')
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--threads', type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.rand(args.batch_size, args.in_chans, args.img_size, args.img_size).contiguous(
        memory_format=memory_format)
    y = torch.randint(0, 10, (args.batch_size,))

    acts = list(dict.fromkeys(['silu', *args.acts.split(',')]))
    modes = args.modes.split(',')
    runs = [(a, m) for a in acts for m in modes if m == 'eager' or a in FUSABLE] or [('silu', 'eager')]
    if ('silu', 'eager') not in runs:
        runs.insert(0, ('silu', 'eager'))
    setups = {}
    for act, mode in runs:
        model = timm.create_model(f'robust_zoo/{args.model}_{act}_at', num_classes=10, in_chans=args.in_chans)
        model = model.to(memory_format=memory_format).train()
        setups[act, mode] = (model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))

    def step(run) -> float:
        model, opt = setups[run]
        set_fused_activations(run[1] == 'fused')
        t = time.perf_counter()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=args.amp):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t

    times = {run: [] for run in runs}
    order = list(runs)
    for r in range(args.warmup + args.rounds):
        random.Random(r).shuffle(order)
        for run in order:
            dt = step(run)
            if r >= args.warmup:
                times[run].append(dt)

    base = statistics.median(times['silu', 'eager'])
    print(f'robust_zoo/{args.model}_<act>_at, batch {args.batch_size}x{args.in_chans}x{args.img_size}x'
          f'{args.img_size}, {"bf16 autocast" if args.amp else "fp32"}'
          f'{", channels_last" if args.channels_last else ""}, {torch.get_num_threads()} threads, '
          f'median of {args.rounds} rounds, torch {torch.__version__}')
    print('| activation | kernels | ms / step | vs SiLU | target |')
    print('|---|---|---|---|---|')
    for act, mode in runs:
        ratio = statistics.median(times[act, mode]) / base
        target = TARGETS.get(act)
        verdict = '' if target is None else f'<= {target:.2f}x: {"met" if ratio <= target else "missed"}'
        print(f'| {act} | {mode} | {statistics.median(times[act, mode]) * 1e3:.1f} | {ratio:.2f}x | {verdict} |')


if __name__ == '__main__':
    main()
