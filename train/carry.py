#!/usr/bin/env python3
"""Carry long training runs across machines through git: runs/ does not outlive a machine, train/pending/ does.

    python train/carry.py save runs/croce2019/lenet_small_relu_at-s0   # before a session ends; then commit
    git add -A train/pending && git commit -m "Carry ..."
    python train/carry.py restore                                       # on the next machine
    python train/train_at.py --resume runs/croce2019/lenet_small_relu_at-s0

`save` copies what `train_at.py --resume` needs (args.yaml, last.ckpt, summary.csv, log.txt; last.ckpt is written
after every epoch, so a carried run loses at most the epoch in progress) to train/pending/<the run's path>. It checks
last.ckpt loads first, so a half-written file is never carried. `restore` copies each carried run back where it
came from unless that folder already holds a run at the same or a later epoch, and prints the resume command.
`list` shows the carried runs and their epochs. A run that finished and was published is removed with `drop RUN`.
"""
import argparse
import shutil
import sys
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parents[1]
PENDING = ROOT / 'train' / 'pending'
CARRIED = ('args.yaml', 'last.ckpt', 'summary.csv', 'log.txt')


def _epoch(run: Path) -> Optional[int]:
    """The epoch last.ckpt resumes at, or None when there is none."""
    from robust_zoo.training import load_train_state
    ckpt = run / 'last.ckpt'
    return int(load_train_state(ckpt)['epoch']) if ckpt.is_file() else None


def _relative(run: Path) -> Path:
    try:
        return run.resolve().relative_to(ROOT)
    except ValueError:
        raise SystemExit(f'carry: {run} is outside the repository {ROOT}; runs are carried by their path in it '
                         f'(e.g. runs/<grid>/<run>).') from None


def _copy(src: Path, dst: Path) -> None:
    """Copy the carried files atomically (each to a temporary name, then renamed)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in CARRIED:
        if (src / name).is_file():
            tmp = dst / f'.{name}.tmp'
            shutil.copyfile(src / name, tmp)
            tmp.replace(dst / name)


def save(runs: List[Path]) -> int:
    for run in runs:
        target = PENDING / _relative(run)
        if not (run / 'args.yaml').is_file():
            raise SystemExit(f'carry: {run} is not a training run folder (no args.yaml).')
        epoch = _epoch(run)
        if epoch is None:
            raise SystemExit(f'carry: {run} has no last.ckpt yet (killed in its first epoch): nothing to carry; '
                             f'restart it in place on the next machine.')
        _copy(run, target)
        print(f'carried {run} at epoch {epoch} -> {target}; commit it: git add -A train/pending')
    return 0


def carried() -> List[Path]:
    return sorted(p.parent for p in PENDING.glob('runs/**/last.ckpt'))


def restore() -> int:
    for src in carried():
        dst = ROOT / src.relative_to(PENDING)
        have, take = _epoch(dst) if (dst / 'last.ckpt').is_file() else None, _epoch(src)
        if have is not None and have >= take:
            print(f'kept {dst} (epoch {have}; carried epoch {take})')
        else:
            _copy(src, dst)
            print(f'restored {dst} at epoch {take}')
        print(f'  resume: python train/train_at.py --resume {dst.relative_to(ROOT)}')
    return 0


def list_carried() -> int:
    for src in carried():
        print(f'{src.relative_to(PENDING)}: epoch {_epoch(src)}')
    return 0


def drop(runs: List[Path]) -> int:
    for run in runs:
        target = PENDING / _relative(run)
        if not (target / 'last.ckpt').is_file():
            raise SystemExit(f'carry: {run} is not carried (no {target}/last.ckpt).')
        shutil.rmtree(target)
        print(f'dropped {target}')
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    for name in ('save', 'drop'):
        sub.add_parser(name).add_argument('runs', nargs='+', type=Path)
    sub.add_parser('restore')
    sub.add_parser('list')
    args = parser.parse_args(argv)
    if args.command == 'save':
        return save(args.runs)
    if args.command == 'drop':
        return drop(args.runs)
    return restore() if args.command == 'restore' else list_carried()


if __name__ == '__main__':
    sys.exit(main())
