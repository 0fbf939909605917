"""What the input range check (robust_zoo.models._normalize.InputNormalize) costs when it runs on every forward
instead of the first one only: the same forwards and PGD-k attack, timed both ways, and the ratio.

The check reads the batch's min and max (and whether any value is NaN or infinite) and brings them to the CPU:
on a GPU that is a synchronisation per forward, on a CPU a pass over the batch. Each round times both variants
once, in a shuffled order, so machine noise hits them alike; the table reports the median over rounds.

    python benchmarks/bench_range_check.py                       # ResNet-20, 128 x 1x28x28, CPU
    python benchmarks/bench_range_check.py --device cuda --batch 512
"""
import argparse
import random
import statistics
import time

import timm
import torch

import robust_zoo  # noqa: F401  (registers the models)
from robust_zoo.attacks import pgd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', default='robust_zoo/resnet20_silu_at')
    parser.add_argument('--batch', type=int, default=128)
    parser.add_argument('--in-chans', type=int, default=1)
    parser.add_argument('--img-size', type=int, default=28)
    parser.add_argument('--steps', type=int, default=10, help='PGD steps (each one forward and backward)')
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()

    torch.manual_seed(0)
    model = timm.create_model(args.model, in_chans=args.in_chans).to(args.device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(args.batch, args.in_chans, args.img_size, args.img_size, device=args.device)
    y = torch.randint(0, model.num_classes, (args.batch,), device=args.device)

    def run(every: bool) -> float:
        model.normalize.check_every_forward = every
        model.normalize._range_checked = False
        if args.device.startswith('cuda'):
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.no_grad():
            for _ in range(args.steps):
                model(x)
        pgd(model, x, y, eps=0.1, steps=args.steps, step_size=0.025, norm='Linf')
        if args.device.startswith('cuda'):
            torch.cuda.synchronize()
        return time.perf_counter() - t

    run(True), run(False)  # warm-up
    times = {True: [], False: []}
    for _ in range(args.rounds):
        for every in random.sample([True, False], 2):
            times[every].append(run(every))
    once, every = statistics.median(times[False]), statistics.median(times[True])
    print(f'{args.model}, batch {args.batch}x{args.in_chans}x{args.img_size}x{args.img_size}, {args.device}, '
          f'{args.steps} forwards + PGD-{args.steps}, median of {args.rounds} rounds')
    print('| range check | seconds |\n|---|---|')
    print(f'| first forward only | {once:.4f} |\n| every forward | {every:.4f} |')
    print(f'ratio every / first only: {every / once:.3f}')


if __name__ == '__main__':
    main()
