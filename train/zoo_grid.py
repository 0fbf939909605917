#!/usr/bin/env python3
"""Train the project's experiment grids, restartable:

    nohup python train/zoo_grid.py --grid zoo --root runs/fmnist-zoo > runs/fmnist-zoo.log 2>&1 &
    nohup python train/zoo_grid.py --grid transfer --root runs/transfer > runs/transfer.log 2>&1 &

`zoo` (issue 7): every activation of ResNet-20 on Fashion-MNIST under ONE recipe (fmnist_resnet20.yaml),
the capped-ReLU small net, then the extra seeds of the claims under test.
`transfer` (issue 5): Sparta banks from the zoo's ResNet-20 Sparta runs (seed s), frozen, in ResNet-32/56 on
Fashion-MNIST and in ResNet-20 on the digits, against ReLU and Sparta from scratch, same seeds and budget.

Each run goes to ROOT/<name>/. A finished run (final_eval.json) is skipped, a started one is resumed from its
last.ckpt, so killing and restarting this script loses at most --checkpoint-interval steps. A run whose
inputs (a bank from an unfinished zoo run) are missing is skipped with a message.
"""
import argparse
import subprocess
import sys
from pathlib import Path

ACTIVATIONS = ('relu', 'softplus', 'smoothrelu', 'silu', 'gelu', 'elu', 'pssilu', 'psoftplus', 'sparta',
               'capped_relu', 'relu_smoothgrad')
CLAIMS = ('relu', 'silu', 'pssilu', 'sparta', 'capped_relu', 'relu_smoothgrad')  # 3 seeds each
SEEDS = (0, 1, 2)
HERE = Path(__file__).resolve().parent


def zoo_grid():
    """(run name, recipe, model, seed, extra flags, bank source run or None)"""
    runs = [(f'resnet20_{a}_at-s0', 'fmnist_resnet20.yaml', f'resnet20_{a}_at', 0, [], None) for a in ACTIVATIONS]
    runs += [(f'mlp3_{a}_at-s0', 'capped_relu_mlp3_fmnist.yaml', f'mlp3_{a}_at', 0, [], None)
             for a in ('capped_relu', 'relu')]
    runs += [(f'resnet20_{a}_at-s{s}', 'fmnist_resnet20.yaml', f'resnet20_{a}_at', s, [], None)
             for s in SEEDS[1:] for a in CLAIMS]
    return runs


def transfer_grid(zoo_root: Path):
    runs = []
    for s in SEEDS:  # the digits first: minutes per run
        bank = zoo_root / f'resnet20_sparta_at-s{s}'
        runs += [(f'digits-resnet20_relu_at-s{s}', 'digits_resnet20.yaml', 'resnet20_relu_at', s, [], None),
                 (f'digits-resnet20_sparta_at-s{s}', 'digits_resnet20.yaml', 'resnet20_sparta_at', s, [], None),
                 (f'digits-resnet20_sparta_at-bank-s{s}', 'digits_resnet20.yaml', 'resnet20_sparta_at', s, [], bank)]
    for depth in (32, 56):
        for s in SEEDS:
            bank = zoo_root / f'resnet20_sparta_at-s{s}'
            runs += [(f'resnet{depth}_relu_at-s{s}', 'fmnist_resnet_transfer.yaml', f'resnet{depth}_relu_at', s, [], None),
                     (f'resnet{depth}_sparta_at-s{s}', 'fmnist_resnet_transfer.yaml', f'resnet{depth}_sparta_at', s, [],
                      None),
                     (f'resnet{depth}_sparta_at-bank-s{s}', 'fmnist_resnet_transfer.yaml', f'resnet{depth}_sparta_at',
                      s, [], bank)]
    return runs


def bank_of(run: Path) -> Path:
    """The Sparta bank of a finished zoo run (written once, next to its weights)."""
    path = run / 'sparta_bank.safetensors'
    if not path.exists():
        import timm
        import yaml

        import robust_zoo  # noqa: F401
        from robust_zoo.sparta import save_bank
        from robust_zoo.training import load_weights
        args = yaml.safe_load((run / 'args.yaml').read_text())
        model = timm.create_model(args['model'])
        model.load_state_dict(load_weights(run / 'model.safetensors'))
        save_bank(model, path, source_model=args['model'].split('/', 1)[1], dataset=args['dataset'],
                  threat_model='fashion-mnist-linf', recipe=str(args.get('config') or 'train/configs/fmnist_resnet20.yaml'),
                  seed=str(args['seed']), run=run.name)
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--grid', default='zoo', choices=('zoo', 'transfer'))
    p.add_argument('--root', default=None, help='default: runs/fmnist-zoo or runs/transfer')
    p.add_argument('--zoo-root', default='runs/fmnist-zoo', help='where the transfer grid finds the Sparta runs')
    p.add_argument('--dry-run', action='store_true', help='list the runs and their state, train nothing')
    p.add_argument('extra', nargs=argparse.REMAINDER, help='flags passed on to train_at.py')
    args = p.parse_args()
    root = Path(args.root or ('runs/fmnist-zoo' if args.grid == 'zoo' else 'runs/transfer'))
    grid = zoo_grid() if args.grid == 'zoo' else transfer_grid(Path(args.zoo_root))
    for name, recipe, model, seed, flags, bank_run in grid:
        out = root / name
        if (out / 'final_eval.json').exists():
            print(f'done     {out}', flush=True)
            continue
        if bank_run is not None and not (bank_run / 'final_eval.json').exists():
            print(f'waiting  {out}: its bank comes from {bank_run}, not finished yet', flush=True)
            continue
        if args.dry_run:
            print(f'{"partial" if (out / "last.ckpt").exists() else "todo":8} {out}')
            continue
        cmd = [sys.executable, str(HERE / 'train_at.py'), '-c', str(HERE / 'configs' / recipe),
               '--model', f'robust_zoo/{model}', '--seed', str(seed), *flags, *args.extra]
        if bank_run is not None:
            cmd += ['--model-kwargs', f'sparta_bank={bank_of(bank_run)}']
        cmd += ['--resume', str(out)] if (out / 'last.ckpt').exists() else ['--output', str(out)]
        print(f'training {out}: {" ".join(cmd[1:])}', flush=True)
        rc = subprocess.call(cmd)
        if rc != 0:
            print(f'FAILED   {out} (exit {rc}); continuing with the next run', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
