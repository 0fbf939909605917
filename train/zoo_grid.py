#!/usr/bin/env python3
"""Train the Fashion-MNIST zoo (issue 7): every activation under ONE recipe, restartable.

    nohup python train/zoo_grid.py --root runs/fmnist-zoo > runs/fmnist-zoo.log 2>&1 &

Each run goes to ROOT/<model>-s<seed>/. A finished run (final_eval.json) is skipped, a started one is
resumed from its last.ckpt, so killing and restarting this script loses at most --checkpoint-interval steps.
Order: seed 0 of every model first, then the extra seeds of the claims under test.
"""
import argparse
import subprocess
import sys
from pathlib import Path

ACTIVATIONS = ('relu', 'softplus', 'smoothrelu', 'silu', 'gelu', 'elu', 'pssilu', 'psoftplus', 'sparta',
               'capped_relu', 'relu_smoothgrad')
CLAIMS = ('relu', 'silu', 'pssilu', 'sparta', 'capped_relu', 'relu_smoothgrad')  # 3 seeds each
HERE = Path(__file__).resolve().parent


def grid():
    runs = [(f'resnet20_{a}_at', 'fmnist_resnet20.yaml', 0) for a in ACTIVATIONS]
    runs += [(f'mlp3_{a}_at', 'capped_relu_mlp3_fmnist.yaml', 0) for a in ('capped_relu', 'relu')]
    runs += [(f'resnet20_{a}_at', 'fmnist_resnet20.yaml', s) for s in (1, 2) for a in CLAIMS]
    return runs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--root', default='runs/fmnist-zoo')
    p.add_argument('--dry-run', action='store_true', help='list the runs and their state, train nothing')
    p.add_argument('extra', nargs=argparse.REMAINDER, help='flags passed on to train_at.py')
    args = p.parse_args()
    root = Path(args.root)
    for model, recipe, seed in grid():
        out = root / f'{model}-s{seed}'
        if (out / 'final_eval.json').exists():
            print(f'done     {out}', flush=True)
            continue
        if args.dry_run:
            print(f'{"partial" if (out / "last.ckpt").exists() else "todo":8} {out}')
            continue
        cmd = [sys.executable, str(HERE / 'train_at.py'), '-c', str(HERE / 'configs' / recipe),
               '--model', f'robust_zoo/{model}', '--seed', str(seed), *args.extra]
        cmd += ['--resume', str(out)] if (out / 'last.ckpt').exists() else ['--output', str(out)]
        print(f'training {out}: {" ".join(cmd[1:])}', flush=True)
        rc = subprocess.call(cmd)
        if rc != 0:
            print(f'FAILED   {out} (exit {rc}); continuing with the next run', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
