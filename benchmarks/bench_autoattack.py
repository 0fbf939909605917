"""AutoAttack standard: stock pyautoattack against `robust_zoo.evaluate(..., attacks=['autoattack-standard'])`,
side by side in one run on the same model, the same points and the same seed.

- stock: `pyautoattack.AutoAttack(model, norm='Linf', eps=0.1, version='standard', seed=0)
  .run_standard_evaluation(x, y, batch_size=...)`, the model as loaded (parameters requiring gradients),
  robust accuracy = its adversarial images classified in fp32.
- robust_zoo, fp32: the same AutoAttack code through the evaluator's adapter, one batch per
  `batch_size` points; the parameters stop requiring gradients during the run (FAB's `loss.backward()`
  then skips the weight gradients), so with the same batches its decisions must be those of stock.
- `amp`: the attacks under bf16 autocast; decisions re-made in fp32, and the points broken in bf16 but
  not in fp32 attacked again in fp32. The numbers may differ from fp32: the table says whether they do.
- `compile`: the attacks query `torch.compile(model, dynamic=True)` (`evaluate(..., compile=True)`); the
  decisions stay with the eager fp32 model. Compilation is paid once per model and process, in the
  warm-up (an evaluation of 4 points); the table shows that time apart. Compiled kernels may round
  differently, so points near the boundary can differ: the table says whether they do.
- 2 processes x 1 thread: the evaluation sharded over 2 gloo ranks (`torch.distributed`, as under
  torchrun), each rank attacking every other batch; the batches are then half the points each, so
  AutoAttack's random starts differ from the single-batch runs and per-point results may differ too.

`--attacks apgd-ce+apgd-t` (any `+`-joined subset) times that subset instead, stock as the AutoAttack README
runs a subset: built as `standard`, then `attacks_to_run` set, so both sides keep standard's settings.

AutoAttack standard costs seconds per point on a CPU (stock: about 8 s per point on a robust ResNet-20 on
2 cores), so this runs on a few dozen points (`--n`): the robust accuracies are of those points only, for
comparing the runs, not an evaluation of the model. Times are the attack's wall time after a warm-up;
starting the shard processes is not included. One run each: expect +-10% noise.

    python benchmarks/bench_autoattack.py --n 32
    python benchmarks/bench_autoattack.py --weights OUT/model.safetensors --n 40
"""
import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_eval_shards import (  # noqa: E402
    DEFAULT_WEIGHTS, add_quiet_args, build_model, evaluate_sharded, evaluate_single, load_points, quiet, warm_up,
)


def stock(model_spec: Tuple[str, str], n: int, batch_size: int, threads: int,
          attacks: Optional[List[str]] = None) -> Tuple[float, torch.Tensor, int, float]:
    """(seconds, per-point robust mask) of stock pyautoattack, in this process."""
    from pyautoattack import AutoAttack
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = build_model(*model_spec)
        x, y = load_points(n)
        warm_up(model, (x, y), dict(batch_size=batch_size))
        t = time.perf_counter()
        adversary = AutoAttack(model, norm='Linf', eps=0.1, version='standard', seed=0)
        if attacks:
            adversary.attacks_to_run = attacks
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
        seconds = time.perf_counter() - t
        with torch.no_grad():
            robust = model(x_adv).argmax(1) == y
        return seconds, robust, 0, 0.0
    finally:
        torch.set_num_threads(before)


def robust_mask(state_file: str) -> Tuple[torch.Tensor, int]:
    """Per-point robustness from an evaluation state file (clean-correct and not broken), and how many points
    were attacked again in fp32 (amp)."""
    from robust_zoo.evaluation.state import from_bits
    state = json.loads(Path(state_file).read_text())
    masks = []
    for _, record in sorted(state['batches'].items(), key=lambda kv: int(kv[0])):
        ok = from_bits(record['clean'])
        for s in record['attacks'].values():
            ok &= from_bits(s)
        masks.append(ok)
    again = sum(n for record in state['batches'].values() for n in record['reattacked'].values())
    return torch.cat(masks), again


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default='robust_zoo/resnet20_relu_at')
    p.add_argument('--weights', default=str(DEFAULT_WEIGHTS) if DEFAULT_WEIGHTS.exists() else None,
                   help='safetensors weights of an adversarially trained model (default: the published '
                   'resnet20_relu_at.fmnist_s0)')
    p.add_argument('--n', type=int, default=32, help='first n Fashion-MNIST test points (default: %(default)s)')
    p.add_argument('--batch-size', type=int, default=250, help='stock and single-process batch size (default: '
                   "%(default)s, both libraries' default; the sharded runs use ceil(n / 2))")
    p.add_argument('--attacks', default='autoattack-standard',
                   help="autoattack-standard, or a '+'-joined subset of its attacks, e.g. apgd-ce+apgd-t (default: "
                   '%(default)s)')
    p.add_argument('--runs', default='stock,fp32,shards,compile,shards-compile,amp,shards-amp',
                   help='comma-separated among stock, fp32, shards, compile, shards-compile, amp, shards-amp')
    add_quiet_args(p)
    args = p.parse_args()
    if not args.weights:
        sys.exit('no weights: train a model first, e.g. train/train_at.py -c train/configs/fmnist_resnet20.yaml '
                 '--model robust_zoo/resnet20_relu_at --epochs 1 --train-samples 6000 --eval-samples 0 --output OUT, '
                 'then --weights OUT/model.safetensors')
    spec = (args.model, args.weights)
    half = math.ceil(args.n / 2)
    subset = None if args.attacks == 'autoattack-standard' else args.attacks.split('+')
    common: Dict[str, Any] = dict(attacks=[args.attacks], checks=False, progress=False, seed=0)
    wanted = args.runs.split(',')
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        def ours(name: str, **kwargs: Any) -> Tuple[float, torch.Tensor, int, float]:
            state = os.path.join(tmp, f'{name}.json')
            if kwargs.pop('world', 1) == 1:
                seconds, result = evaluate_single(2, spec, args.n, state_path=state, **common, **kwargs)
            else:
                seconds, result = evaluate_sharded(2, 1, spec, args.n, state_path=state, **common, **kwargs)
            return (seconds, *robust_mask(state), result['warm_up_seconds'])

        runs = {
            'stock': ('stock pyautoattack, 1 process x 2 threads',
                      lambda: stock(spec, args.n, args.batch_size, 2, subset)),
            'fp32': ('robust_zoo, 1 process x 2 threads', lambda: ours('fp32', batch_size=args.batch_size)),
            'amp': ('robust_zoo amp, 1 process x 2 threads',
                    lambda: ours('amp', batch_size=args.batch_size, amp=True)),
            'shards': ('robust_zoo, 2 processes x 1 thread', lambda: ours('shards', batch_size=half, world=2)),
            'shards-amp': ('robust_zoo amp, 2 processes x 1 thread',
                           lambda: ours('shards-amp', batch_size=half, world=2, amp=True)),
            'compile': ('robust_zoo compile, 1 process x 2 threads',
                        lambda: ours('compile', batch_size=args.batch_size, compile=True)),
            'shards-compile': ('robust_zoo compile, 2 processes x 1 thread',
                               lambda: ours('shards-compile', batch_size=half, world=2, compile=True)),
        }
        for key in wanted:
            name, run = runs[key]
            with quiet(args.before_run, args.after_run):
                rows[key] = (name, *run())
            print(f'{name}: {rows[key][1]:.1f} s, robust accuracy {rows[key][2].float().mean().item():.4f}',
                  file=sys.stderr, flush=True)
    x, y = load_points(args.n)
    what = ('AutoAttack standard' if subset is None
            else f'{" + ".join(a.upper() for a in subset)} (AutoAttack standard settings)')
    print(f'\n{what}, Linf eps 0.1, seed 0, on the first {args.n} Fashion-MNIST test points only '
          f'(a speed comparison, not an evaluation), {args.model} ({Path(args.weights).name}), {os.cpu_count()} '
          f'CPU cores; batch {args.batch_size} (sharded: {half}); one run each\n')
    base_key = 'stock' if 'stock' in rows else wanted[0]
    base_s, base_mask = rows[base_key][1], rows[base_key][2]
    print(f'| run | seconds | s/point | speed-up vs {base_key} | one-time compile s (not in seconds) | '
          'robust accuracy | identical robust accuracy | points decided alike | re-attacked in fp32 |')
    print('|---|---|---|---|---|---|---|---|---|')
    for key, (name, seconds, mask, again, warm) in rows.items():
        acc, base_acc = mask.float().mean().item(), base_mask.float().mean().item()
        alike = int((mask == base_mask).sum())
        print(f'| {name} | {seconds:.1f} | {seconds / args.n:.2f} | {base_s / seconds:.2f}x | '
              f'{f"{warm:.0f}" if "compile" in key else "-"} | {acc:.4f} '
              f'({int(mask.sum())}/{args.n}) | {"yes" if acc == base_acc else "NO"} | {alike}/{args.n} | '
              f'{again if "amp" in key else "-"} |')


if __name__ == '__main__':
    main()
