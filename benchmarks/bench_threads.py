"""One training process on all cores vs one process per core, side by side, here: total img/s.

Why: the experiment grid is a queue of independent runs. Small 28x28 ResNet-20 steps may not keep every
core busy through intra-op parallelism, in which case running the queue as one worker per core (each
with torch.set_num_threads(1)) finishes more runs per hour. This measures both layouts on the zoo
recipe's step (N-FGSM example + forward/backward + SGD, batch 128, 1x28x28, fp32), alternating rounds,
and prints total throughput and the ratio. Run it on an idle machine: anything else running skews it.

    python benchmarks/bench_threads.py                 # resnet20_psoftplus_at, 2 rounds of 20 steps
    python benchmarks/bench_threads.py --act relu --steps 30 --rounds 3
"""
import argparse
import multiprocessing as mp
import os
import statistics
import time

import torch


def _train(act: str, steps: int, threads: int, batch_size: int, start, result) -> None:
    """`steps` zoo-recipe steps in this process with `threads` intra-op threads, after a warm-up; waits for
    `start` so that parallel workers time the same interval; puts its wall time into `result`."""
    torch.set_num_threads(threads)
    import timm

    import robust_zoo  # noqa: F401  (registers the models)
    from robust_zoo.training import AttackConfig, adversarial_step
    torch.manual_seed(0)
    x, y = torch.rand(batch_size, 1, 28, 28), torch.randint(0, 10, (batch_size,))
    model = timm.create_model(f'robust_zoo/resnet20_{act}_at', num_classes=10, in_chans=1).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    cfg = AttackConfig(attack='n-fgsm', eps=0.1)
    for _ in range(2):
        adversarial_step(model, x, y, opt, cfg)
    start.wait()
    t = time.perf_counter()
    for _ in range(steps):
        adversarial_step(model, x, y, opt, cfg)
    result.put(time.perf_counter() - t)


def _layout(workers: int, threads: int, args: argparse.Namespace) -> float:
    """Total img/s of `workers` processes with `threads` threads each, all training at once."""
    ctx = mp.get_context('spawn')
    start, result = ctx.Barrier(workers + 1), ctx.Queue()
    procs = [ctx.Process(target=_train, args=(args.act, args.steps, threads, args.batch_size, start, result))
             for _ in range(workers)]
    for p in procs:
        p.start()
    start.wait()
    times = [result.get() for _ in procs]
    for p in procs:
        p.join()
    return workers * args.steps * args.batch_size / max(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--act', default='psoftplus', help='activation of resnet20_<act>_at (default: %(default)s)')
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--steps', type=int, default=20, help='timed steps per worker and round')
    p.add_argument('--rounds', type=int, default=2)
    args = p.parse_args()
    cores = os.cpu_count() or 1
    layouts = {f'1 process x {cores} threads': (1, cores), f'{cores} processes x 1 thread': (cores, 1)}
    rates = {name: [] for name in layouts}
    for _ in range(args.rounds):
        for name, (workers, threads) in layouts.items():
            rates[name].append(_layout(workers, threads, args))
    base = statistics.median(next(iter(rates.values())))
    print(f'resnet20_{args.act}_at, batch {args.batch_size}, N-FGSM step, fp32, {cores} cores, median of '
          f'{args.rounds} rounds of {args.steps} steps per worker; torch {torch.__version__}')
    print('| layout | total img/s | vs one process |')
    print('|---|---|---|')
    for name, r in rates.items():
        print(f'| {name} | {statistics.median(r):.0f} | {statistics.median(r) / base:.2f}x |')


if __name__ == '__main__':
    main()
