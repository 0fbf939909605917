"""Was a grid trained to convergence? Each run's validation robust accuracy (its card's summary.csv, PGD-20 on the
1,000 held-out training images after every epoch) over the last epochs before the learning-rate drop.

The measure is the rise: the mean of the last `WINDOW` epochs before the drop minus the mean of the `WINDOW` before
those. Both windows see the same validation images, so their sampling error is largely shared and the rise shows
what training still changed. A rise below `FLAT` (1 point) counts as stopped rising; the table states every number
so that a reader can apply another threshold.
"""
import statistics
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import yaml

from robust_zoo._io import PathLike
from robust_zoo.publish.plots import summary_rows
from robust_zoo.training import first_decayed_epoch

__all__ = ['FLAT', 'WINDOW', 'convergence_markdown', 'plateau']

WINDOW = 5  # epochs per window
FLAT = 0.01  # a rise below one point over WINDOW epochs: stopped rising


def plateau(robust: Sequence[float], drop_epoch: int) -> Optional[Dict[str, float]]:
    """`robust`: validation robust accuracy per epoch (counted from 0); `drop_epoch`: the first epoch at the lower
    learning rate. Returns the two windows' means before the drop, their difference (`rise`) and the mean after the
    drop; None when the run has fewer than 2 x WINDOW epochs before its drop."""
    if drop_epoch < 2 * WINDOW or len(robust) < drop_epoch:
        return None
    last, before = robust[drop_epoch - WINDOW:drop_epoch], robust[drop_epoch - 2 * WINDOW:drop_epoch - WINDOW]
    after = robust[drop_epoch:]
    return dict(earlier=statistics.fmean(before), last=statistics.fmean(last),
                rise=statistics.fmean(last) - statistics.fmean(before),
                after=statistics.fmean(after) if after else float('nan'))


def _run_plateau(card: Path) -> Optional[Dict[str, float]]:
    """The plateau of one card's run: its summary.csv and the first epoch at the lower lr of its multistep
    schedule, as timm's scheduler gives it for the args.yaml (milestone 27 lowers the lr from epoch 26)."""
    args = yaml.safe_load((card / 'args.yaml').read_text())
    if args.get('sched') != 'multistep' or not args.get('decay_milestones'):
        return None
    drop = first_decayed_epoch(args)
    if drop < 0:
        return None
    robust = [float(r['eval_robust_acc']) for r in summary_rows(card / 'summary.csv')]
    return plateau(robust, drop)


def _cpu_hours(card: Path) -> Optional[float]:
    """The run's training time in CPU-hours as its card states it (training_cost: hours x threads); None for a GPU
    run or a card without a measured cost."""
    from huggingface_hub import ModelCard
    cost = (ModelCard.load(card / 'README.md').data.to_dict().get('robust_zoo') or {}).get('training_cost') or {}
    if not cost.get('threads') or 'GPU' in str(cost.get('device')) or 'cuda' in str(cost.get('device')):
        return None
    return float(cost['train_hours']) * int(cost['threads'])


def convergence_markdown(rows: Sequence[Mapping[str, Any]], cards_root: PathLike, recipe: str) -> str:
    """One line per activation of the leaderboard `rows` trained under `recipe` (a card's recipe path): the rise of
    each seed, and whether every seed stopped rising."""
    root = Path(cards_root)
    lines = [f'| activation | seeds | val robust, epochs -{2 * WINDOW} to -{WINDOW + 1} before the lr drop | '
             f'last {WINDOW} before it | rise per seed (points) | after the drop | stopped rising (< '
             f'{100 * FLAT:g} point) |', '|---|---|---|---|---|---|---|']
    found: List[str] = []
    hours: List[Optional[float]] = []
    for row in rows:
        if row.get('recipe') != recipe or row.get('bank'):
            continue
        stats = [p for p in (_run_plateau(root / repo) for repo in row['repos']) if p]
        if not stats:
            continue
        found.append(row['activation'])
        hours += [_cpu_hours(root / repo) for repo in row['repos']]

        def mean(key: str) -> str:
            return f'{100 * statistics.fmean(s[key] for s in stats):.1f}'
        rises = ', '.join(f"{100 * s['rise']:+.1f}" for s in stats)
        flat = sum(round(100 * s['rise'], 1) < 100 * FLAT for s in stats)  # as the table shows it
        lines.append(f"| `{row['activation']}` | {len(stats)} | {mean('earlier')} | {mean('last')} | {rises} | "
                     f"{mean('after')} | {flat} of {len(stats)} |")
    if not found:
        return f'_No run under `{recipe}` published yet._'
    known = [h for h in hours if h is not None]
    cost = (f' Training cost of these {len(known)} runs: {sum(known):.1f} CPU-hours (the sum of their cards\' training '
            f'time{"" if len(known) == len(hours) else f"; {len(hours) - len(known)} more without a CPU cost"}).'
            if known else '')
    return '\n'.join(lines + ['', f'Validation robust accuracy in % (PGD-20 on the 1,000 held-out training images, '
                                  f'mean over seeds), from each card\'s summary.csv; `{recipe}`.{cost}'])
