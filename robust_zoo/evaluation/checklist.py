"""Which sanity checks an evaluation runs, and when (the checks themselves are in `checks.py`).

Each check is a dict {name, status: PASS | WARN | FAIL, detail[, data]} in the record's `checks`:

- `checks=True` or `'fast'` (`FAST_CHECKS`): logits not probabilities, a deterministic forward, non-zero input
  gradients and an unbounded attack that wins, on the first batch (a few forwards and 20 PGD steps); after the
  batches, every adversarial example within budget (re-measured in fp32) and AutoAttack's own flags.
- `'full'` (`CHECKS`, the protocol of a published model card): also, on the first `probe` clean-correct points
  (Carlini et al. 2019): `steps_convergence` (PGD-10 / 50 / 200; WARN if 50 -> 200 steps still lowers accuracy by
  > 2 points), `restarts` (PGD-20, 1 vs 5 random starts; WARN if > 2 points apart), `eps_sweep` (PGD-20 at eps 0,
  eps/4, eps/2, eps, 2 eps, ... up to Linf 0.5 / L2 0.5 sqrt(d); FAIL if eps 0 is not the clean accuracy or the
  largest budget leaves more than chance + 10 points, WARN if accuracy rises with eps) and `black_box` (Square,
  1000 queries, vs PGD-20; WARN if Square breaks > 2% of points that PGD could not). Their curves are in the
  checks' `data`, and `robust_zoo.evaluation.save_eval_plots` draws them. Per probe point: about 500 PGD steps
  and up to 1000 Square forwards (ResNet-20, Fashion-MNIST, 100 points, one CPU thread: about 5 minutes).
- `False`: none; or a list of names among `CHECKS`.
"""
import logging
import time
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from ..threat_models import ThreatModel
from .checks import (
    check_black_box, check_budget, check_deterministic, check_eps_sweep, check_input_gradients, check_logits,
    check_restarts, check_steps_convergence, check_unbounded,
)
from .state import all_gather

__all__ = ['CHECKS', 'FAST_CHECKS', 'batch_checks', 'check_names', 'fast_checks', 'full_checks', 'merge_budget']

_logger = logging.getLogger('robust_zoo.evaluate')
#: `checks=True`: cheap checks on one batch, and of every adversarial example's budget
FAST_CHECKS = ('logits', 'deterministic', 'input_gradients', 'unbounded', 'budget', 'autoattack_flags')
#: `checks='full'`: also the attack's own sanity checks on a probe of clean-correct points
CHECKS = FAST_CHECKS + ('steps_convergence', 'restarts', 'eps_sweep', 'black_box')


def check_names(checks: Union[bool, str, Sequence[str], None]) -> List[str]:
    """The names `checks=` asks for (True / 'fast', 'full', False, or names among CHECKS); others are refused."""
    if checks is None or checks is False:
        return []
    if checks is True or checks == 'fast':
        return list(FAST_CHECKS)
    if checks == 'full':
        return list(CHECKS)
    names = [checks] if isinstance(checks, str) else list(checks)
    unknown = [c for c in names if c not in CHECKS]
    if unknown:
        raise ValueError(f'Unknown check(s) {", ".join(map(repr, unknown))}; checks= takes True / "fast", "full", '
                         f'False, or names among: {", ".join(CHECKS)}.')
    return names


def fast_checks(names: Sequence[str], model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_outputs: int,
                seed: int) -> List[dict]:
    """The checks of the model itself on the first batch `x, y`, before any attack runs."""
    fast = dict(logits=lambda: check_logits(model, x), deterministic=lambda: check_deterministic(model, x),
                input_gradients=lambda: check_input_gradients(model, x, y))
    out = [fast[c]() for c in fast if c in names]
    if 'unbounded' in names:
        torch.manual_seed(seed)
        out.append(check_unbounded(model, x[:100], y[:100], n_outputs))
    return out


def full_checks(names: Sequence[str], model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
                seed: int, rank: int = 0, world: int = 1) -> List[dict]:
    """The attack's own sanity checks on the probe `x, y` (clean-correct points), in the order of CHECKS.

    Each check seeds itself, so its numbers do not depend on where it runs: with `world` > 1 ranks, the
    j-th check runs on rank j mod world and every rank gets them all."""
    eps, norm = threat.eps, threat.norm
    runs = dict(steps_convergence=lambda: check_steps_convergence(model, x, y, eps, norm, seed=seed),
                restarts=lambda: check_restarts(model, x, y, eps, norm, seed=seed),
                eps_sweep=lambda: check_eps_sweep(model, x, y, eps, norm, seed=seed),
                black_box=lambda: check_black_box(model, x, y, eps, norm, seed=seed))
    todo = [name for name in CHECKS if name in names and name in runs]
    mine = {}
    for j, name in enumerate(todo):
        if j % world != rank:
            continue
        if len(x) == 0:
            mine[name] = dict(name=name.replace('_', ' '), status='WARN', detail='not run: no clean-correct points.')
            continue
        t = time.time()
        mine[name] = runs[name]()
        _logger.info('%s: check %s %s (%.1f s): %s', threat.id, mine[name]['name'], mine[name]['status'],
                     time.time() - t, mine[name]['detail'])
    done = {k: v for part in all_gather(mine, world) for k, v in part.items()}
    return [done[name] for name in todo]


def batch_checks(names: Sequence[str], records: Sequence[Dict[str, Any]], specs: Sequence[str],
                 threat: ThreatModel, low_precision: Optional[str] = None) -> List[dict]:
    """The checks over every batch's record: each attack's budget, the points attacked again in fp32 when the
    attacks ran in `low_precision` (how, e.g. 'bf16 autocast (amp)'), and AutoAttack's flags."""
    out = []
    if 'budget' in names:
        out = [check_budget(*merge_budget([r['budget'][s] for r in records]), threat.eps, threat.norm, s)
               for s in specs]
    if low_precision and names:
        out += [_low_precision_check(s, sum(r['reattacked'][s] for r in records), low_precision) for s in specs]
    if 'autoattack_flags' in names:
        flags = dict.fromkeys(w for r in records for w in r['warnings'])
        out += [dict(name='autoattack flag', status='WARN', detail=w) for w in flags]
    return out


def _low_precision_check(spec: str, again: int, how: str) -> dict:
    return dict(name=f'low precision ({spec})', status='PASS',
                detail=f'the attack ran under {how}; {again} point{"s" * (again != 1)} broken in low precision but '
                       f'not in fp32 {"was" if again == 1 else "were"} attacked again in fp32; every decision counted '
                       'was made in fp32.')


def merge_budget(parts: Sequence[Optional[List[float]]]) -> List[float]:
    """The budget statistics of several batches as one: largest size, smallest and largest pixel, total count."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return [0.0, float('inf'), float('-inf'), 0]
    return [max(p[0] for p in parts), min(p[1] for p in parts), max(p[2] for p in parts),
            sum(int(p[3]) for p in parts)]
