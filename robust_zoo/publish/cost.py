"""A run's training cost for its card: time per epoch from the throughput train_at.py logs, the device, CPU-hours
(or GPU-minutes), and how long the run took to come within one point of its final validation robust accuracy.

Times are training time only (validation and checkpoints excluded), measured on whatever else the machine ran:
the card says which device and how many threads, so a reader can judge contention."""
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

__all__ = ['cost_markdown', 'train_images_of', 'training_cost']

REACH_MARGIN = 0.01  # "reached its robust accuracy": within one point of the final validation robust accuracy


def train_images_of(run: Path, final: Mapping[str, Any]) -> Optional[int]:
    """Training images per epoch: the run record's `train_images`, else the `N train / M val images` line that
    every train_at.py log starts with."""
    if final.get('train_images'):
        return int(final['train_images'])
    log = run / 'log.txt'
    if log.is_file():
        m = re.search(r'(\d+) train / \d+ val images', log.read_text(errors='replace'))
        if m:
            return int(m.group(1))
    return None


def training_cost(rows: Sequence[Mapping[str, str]], train_images: Optional[int], device: str,
                  threads: Optional[int] = None, kept_epoch: Optional[int] = None) -> Optional[Dict[str, Any]]:
    """Per-epoch and total training hours from summary.csv `rows`, with the epoch at which validation robust
    accuracy first came within REACH_MARGIN of that of the shipped weights (`kept_epoch`, default the last; None
    without throughput or image counts)."""
    if not rows or not train_images or 'train_img_per_sec' not in rows[0]:
        return None
    hours, elapsed = [], 0.0
    for r in rows:
        elapsed += train_images / max(float(r['train_img_per_sec']), 1e-9) / 3600
        hours.append(round(elapsed, 4))
    out: Dict[str, Any] = dict(device=device, threads=threads, train_hours=hours[-1], hours_per_epoch=hours,
                               train_images=train_images)
    robust = [float(r['eval_robust_acc']) for r in rows if r.get('eval_robust_acc') not in (None, '')]
    if len(robust) == len(rows):
        kept = kept_epoch if kept_epoch is not None and 0 <= kept_epoch < len(robust) else len(robust) - 1
        epoch = next(i for i, v in enumerate(robust) if v >= robust[kept] - REACH_MARGIN)
        out.update(final_val_robust=robust[kept], kept_epoch=kept, reached_epoch=epoch, reached_hours=hours[epoch])
    return out


def _amount(hours: float, cost: Mapping[str, Any]) -> str:
    if str(cost['device']).startswith('cuda') or 'GPU' in str(cost['device']):
        return f'{60 * hours:.0f} GPU-minutes'
    if cost.get('threads'):
        return f"{hours * cost['threads']:.2f} CPU-hours ({hours:.2f} h x {cost['threads']} thread(s))"
    return f'{hours:.2f} hours (threads not recorded)'


def cost_markdown(cost: Mapping[str, Any], val_attack: str) -> List[str]:
    """The card's Training cost section."""
    lines = ['## Training cost', '',
             '| | |', '|---|---|',
             f"| device | {cost['device']} |",
             f"| training time | {_amount(cost['train_hours'], cost)} for {len(cost['hours_per_epoch'])} epochs of "
             f"{cost['train_images']:,} images |"]
    if 'reached_epoch' in cost:
        lines.append(f"| to within {100 * REACH_MARGIN:.0f} point of the shipped weights' validation {val_attack} "
                     f"accuracy ({100 * cost['final_val_robust']:.1f}%, epoch {cost['kept_epoch']}) | "
                     f"{_amount(cost['reached_hours'], cost)}, "
                     f"epoch {cost['reached_epoch']} (counted from 0) |")
    lines += ['', 'Times are training time from the throughput logged each epoch (summary.csv), without validation '
              'or checkpointing, on a machine that may have run other jobs: compare them with care. The plot '
              '`training_vs_time.png` shows validation accuracy against this time.']
    return lines
