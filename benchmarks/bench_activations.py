"""Training-step time of every activation relative to SiLU, on the same model, batch and data.

Each round times one step of every activation in turn (order shuffled per round), so machine noise hits
all of them alike; the table reports the median step time over rounds and its ratio to SiLU's.
A step is forward + backward + SGD update on a fixed batch (model in train mode).

    python benchmarks/bench_activations.py                     # resnet20, 128 x 1x28x28, fp32
    python benchmarks/bench_activations.py --amp --channels-last
"""
import argparse
import random
import statistics
import time

import timm
import torch
import torch.nn.functional as F

import robust_zoo
from robust_zoo.layers import ACTIVATIONS

TARGETS = {'pssilu': 1.10, 'sparta': 1.30}  # issue #2's CPU targets, relative to SiLU


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default='resnet20', help='robust_zoo architecture (default: %(default)s)')
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--img-size', type=int, default=28)
    p.add_argument('--in-chans', type=int, default=1)
    p.add_argument('--rounds', type=int, default=15)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--amp', action='store_true', help='bf16 autocast')
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--threads', type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(args.batch_size, args.in_chans, args.img_size, args.img_size)
    y = torch.randint(0, 10, (args.batch_size,))
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    x = x.contiguous(memory_format=memory_format)

    setups = {}
    for act in ACTIVATIONS:
        model = timm.create_model(f'robust_zoo/{args.model}_{act}_at', num_classes=10, in_chans=args.in_chans)
        model = model.to(memory_format=memory_format).train()
        setups[act] = (model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))

    def step(act: str) -> float:
        model, opt = setups[act]
        t = time.perf_counter()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=args.amp):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t

    times = {act: [] for act in ACTIVATIONS}
    order = list(ACTIVATIONS)
    for r in range(args.warmup + args.rounds):
        random.Random(r).shuffle(order)
        for act in order:
            dt = step(act)
            if r >= args.warmup:
                times[act].append(dt)

    base = statistics.median(times['silu'])
    print(f'robust_zoo/{args.model}_<act>_at, batch {args.batch_size}x{args.in_chans}x{args.img_size}x'
          f'{args.img_size}, {"bf16 autocast" if args.amp else "fp32"}'
          f'{", channels_last" if args.channels_last else ""}, {torch.get_num_threads()} threads, '
          f'median of {args.rounds} rounds, torch {torch.__version__}')
    print('| activation | ms / step | vs SiLU | target |')
    print('|---|---|---|---|')
    for act in ACTIVATIONS:
        med = statistics.median(times[act])
        ratio = med / base
        target = TARGETS.get(act)
        verdict = '' if target is None else f'<= {target:.2f}x {"met" if ratio <= target else "MISSED"}'
        print(f'| {act} | {med * 1e3:.1f} | {ratio:.2f}x | {verdict} |')


if __name__ == '__main__':
    main()
