"""The learning-rate schedule of a run, built one way for training and for reading a run back.

timm's multistep scheduler counts its milestones from 1: `decay_milestones: [27]` lowers the lr from the 27th
epoch, i.e. epoch 26 counted from 0 (`MultiStepLRScheduler` compares a milestone with `t + 1`). Code that asks
when a run's lr dropped should ask the scheduler (`epoch_lrs`), not re-derive it from the milestones.
"""
from typing import Any, List, Mapping, Tuple

import torch
from timm.scheduler import create_scheduler_v2
from timm.scheduler.scheduler import Scheduler

__all__ = ['create_run_scheduler', 'epoch_lrs', 'first_decayed_epoch']


def create_run_scheduler(optimizer: torch.optim.Optimizer, args: Mapping[str, Any],
                         updates_per_epoch: int = 0) -> Tuple[Scheduler, int]:
    """timm's scheduler for a train_at.py run's flags (`args`: its args.yaml or namespace as a mapping)."""
    return create_scheduler_v2(
        optimizer, sched=args.get('sched', 'cosine'), num_epochs=int(args['epochs']),
        warmup_epochs=args.get('warmup_epochs', 0), warmup_lr=args.get('warmup_lr', 1e-5),
        min_lr=args.get('min_lr', 0.0), decay_milestones=list(args.get('decay_milestones') or [30, 60, 90]),
        decay_rate=args.get('decay_rate', 0.1), step_on_epochs=not args.get('sched_on_updates', False),
        updates_per_epoch=updates_per_epoch)


def epoch_lrs(args: Mapping[str, Any]) -> List[float]:
    """The lr each epoch of a run with these flags trains with, epochs counted from 0, as train_at.py steps the
    scheduler (`step(0)` before the first epoch, `step(epoch + 1)` after each). For a per-update schedule, the lr
    at each epoch's first update."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=float(args['lr']))
    scheduler, _ = create_run_scheduler(optimizer, args, updates_per_epoch=1)
    lrs = []
    for epoch in range(int(args['epochs'])):
        if args.get('sched_on_updates', False):
            scheduler.step_update(epoch)
        else:
            scheduler.step(epoch)
        lrs.append(optimizer.param_groups[0]['lr'])
    return lrs


def first_decayed_epoch(args: Mapping[str, Any]) -> int:
    """The first epoch (counted from 0) whose lr is below the one before it, after any warmup; -1 for none."""
    lrs = epoch_lrs(args)
    start = int(args.get('warmup_epochs', 0) or 0)
    return next((e for e in range(max(start, 1), len(lrs)) if lrs[e] < lrs[e - 1] * (1 - 1e-9)), -1)
