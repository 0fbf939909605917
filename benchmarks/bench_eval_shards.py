"""`evaluate()` in one process against the same evaluation sharded over 2 processes (torchrun-like, gloo).

Small attack batches use intra-op threads poorly: on a CPU with 2 cores, 2 processes with 1 thread each
(each rank evaluates every other batch, `torch.distributed` gathers the per-example outcomes) can beat
1 process with 2 threads. Both must give the same numbers (per-batch seeding does not depend on the rank);
the table says whether they do. Times are `evaluate`'s wall time (the ranks start together after a
barrier); starting the processes (importing torch and timm, a few seconds here) is not included.

    python benchmarks/bench_eval_shards.py                   # ResNet-20, PGD-20 on 256 Fashion-MNIST test images
    python benchmarks/bench_eval_shards.py --weights runs/fmnist-zoo/resnet20_relu_at-s0/model.safetensors
"""
import argparse
import json
import os
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / 'model_cards/resnet20_relu_at.fmnist_s0/model.safetensors'


def add_quiet_args(p: argparse.ArgumentParser) -> None:
    """--before-run / --after-run: the shell commands `quiet` runs around each timed run."""
    p.add_argument('--before-run', default=None, metavar='CMD',
                   help='shell command run before each timed run, e.g. to pause a background job: '
                   "pkill -STOP -f '[t]rain/train_at[.]py' (the brackets keep the pattern from matching this "
                   "benchmark's own command line, which holds it)")
    p.add_argument('--after-run', default=None, metavar='CMD',
                   help='shell command run after each timed run (also when it fails), e.g. to resume that job')


@contextmanager
def quiet(before: Optional[str], after: Optional[str]) -> Iterator[None]:
    """Run the shell command `before`, then the block, then `after` (also when the block fails)."""
    if before:
        subprocess.run(before, shell=True, check=False)
    try:
        yield
    finally:
        if after:
            subprocess.run(after, shell=True, check=False)


def build_model(name: str, weights: Optional[str]) -> torch.nn.Module:
    import timm

    import robust_zoo  # noqa: F401  (registers the models)
    model = timm.create_model(name, num_classes=10)
    if weights:
        from safetensors.torch import load_file
        model.load_state_dict(load_file(weights))
    return model.eval()


def load_points(n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    from robust_zoo.data import load_dataset
    return load_dataset('fashion-mnist', 'test', None, n)


def warm_up(net: torch.nn.Module, data: Tuple[torch.Tensor, torch.Tensor], kwargs: Dict[str, Any]) -> float:
    """A few untimed forwards and backwards (one-time allocations and kernel set-up), on this process only.
    With compile=True, an evaluation of 4 points with the same attacks compiles the model (one time per model
    and process); returns the seconds that took (0 otherwise)."""
    from robust_zoo.attacks import pgd
    x, y = data[0][:kwargs.get('batch_size', 8)], data[1][:kwargs.get('batch_size', 8)]
    for amp in (False, True) if kwargs.get('amp') else (False,):
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
            pgd(net, x, y, eps=0.1, steps=3)
    if not kwargs.get('compile'):
        return 0.0
    from robust_zoo.evaluation import evaluate
    t = time.perf_counter()
    evaluate(net, 'fashion-mnist-linf', data=(x[:4], y[:4]), distributed=False,
             **{k: v for k, v in kwargs.items() if k not in ('state_path', 'batch_size')})
    return time.perf_counter() - t


def _rank(rank: int, world: int, threads: int, init: str, out: str, model: Tuple[str, Optional[str]], n: int,
          kwargs: Dict[str, Any]) -> None:
    torch.set_num_threads(threads)
    dist.init_process_group('gloo', init_method=f'file://{init}', rank=rank, world_size=world)
    try:
        from robust_zoo.evaluation import evaluate
        net, data = build_model(*model), load_points(n)
        warm = warm_up(net, data, kwargs)
        dist.barrier()
        t = time.perf_counter()
        result = evaluate(net, 'fashion-mnist-linf', data=data, **kwargs)
        dist.barrier()
        seconds = time.perf_counter() - t
        if rank == 0:
            Path(out).write_text(json.dumps(dict(seconds=seconds, result=dict(result.to_dict(), warm_up_seconds=warm))))
    finally:
        dist.destroy_process_group()


def evaluate_sharded(world: int, threads: int, model: Tuple[str, Optional[str]], n: int,
                     **kwargs: Any) -> Tuple[float, Dict[str, Any]]:
    """(seconds, EvalRecord dict) of `evaluate(model, 'fashion-mnist-linf', data=first n test points, **kwargs)`
    over `world` spawned gloo processes with `threads` intra-op threads each."""
    with tempfile.TemporaryDirectory() as tmp:
        init, out = os.path.join(tmp, 'init'), os.path.join(tmp, 'out.json')
        mp.start_processes(_rank, args=(world, threads, init, out, model, n, kwargs), nprocs=world,
                           start_method='spawn')
        record = json.loads(Path(out).read_text())
    return record['seconds'], record['result']


def evaluate_single(threads: int, model: Tuple[str, Optional[str]], n: int,
                    **kwargs: Any) -> Tuple[float, Dict[str, Any]]:
    """The same in this process, with `threads` intra-op threads."""
    from robust_zoo.evaluation import evaluate
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        net, data = build_model(*model), load_points(n)
        warm = warm_up(net, data, kwargs)
        t = time.perf_counter()
        result = evaluate(net, 'fashion-mnist-linf', data=data, **kwargs)
        return time.perf_counter() - t, dict(result.to_dict(), warm_up_seconds=warm)
    finally:
        torch.set_num_threads(before)


def numbers(result: Dict[str, Any]) -> Dict[str, Any]:
    return {k: result[k] for k in ('clean_accuracy', 'robust_accuracy', 'attacks', 'n_examples')}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default='robust_zoo/resnet20_relu_at')
    p.add_argument('--weights', default=str(DEFAULT_WEIGHTS) if DEFAULT_WEIGHTS.exists() else None,
                   help='safetensors weights (default: the published resnet20_relu_at.fmnist_s0)')
    p.add_argument('--n', type=int, default=256, help='Fashion-MNIST test images (default: %(default)s)')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--attack', default='pgd-20')
    add_quiet_args(p)
    args = p.parse_args()
    model = (args.model, args.weights)
    kwargs = dict(attacks=[args.attack], batch_size=args.batch_size, checks=False, progress=False)
    runs = {
        '1 process x 2 threads': lambda: evaluate_single(2, model, args.n, **kwargs),
        '1 process x 1 thread': lambda: evaluate_single(1, model, args.n, **kwargs),
        '2 processes x 1 thread (gloo)': lambda: evaluate_sharded(2, 1, model, args.n, **kwargs),
    }
    results = {}
    for name, run in runs.items():
        with quiet(args.before_run, args.after_run):
            results[name] = run()
    base_s, base = results['1 process x 2 threads']
    print(f'\nevaluate() with {args.attack} on the first {args.n} Fashion-MNIST test images, batch {args.batch_size}, '
          f'{args.model} ({"weights " + Path(args.weights).name if args.weights else "random init"}), '
          f'{os.cpu_count()} CPU cores; one run each\n')
    print(f'| run | seconds | images/s | speed-up vs 1 x 2 threads | clean / {args.attack} | same numbers |')
    print('|---|---|---|---|---|---|')
    for name, (seconds, result) in results.items():
        print(f'| {name} | {seconds:.1f} | {args.n / seconds:.1f} | {base_s / seconds:.2f}x | '
              f'{result["clean_accuracy"]:.4f} / {result["attacks"][args.attack]:.4f} | '
              f'{"yes" if numbers(result) == numbers(base) else "NO"} |')


if __name__ == '__main__':
    main()
