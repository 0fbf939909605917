"""AutoAttack (Croce & Hein 2020) through the authors' package `pyautoattack`, behind a thin adapter.

The adapter runs `pyautoattack.AutoAttack(...).run_standard_evaluation` on one batch at a time (the
evaluator's batches are its resumable units; pyautoattack 0.2.0's own `state_path` resume is broken),
forwards the `auto-attack` log to robust_zoo's evaluation log, and keeps AutoAttack's own warnings
(e.g. Square, a black-box attack, beating the white-box ones) so the evaluator can report them as checks.
AutoAttack sees the model's logits as fp32, so it also runs under `torch.autocast` (its Square attack mixes
the logits with fp32 buffers). AutoAttack already runs each of its attacks only on the points that the
previous ones left robust.

A subset of AutoAttack's attacks (e.g. `apgd-ce+apgd-t`) runs with the settings of the `standard` version
for the threat model's norm (Linf/L2: APGD-CE and APGD-DLR 1 restart, APGD-T 9 target classes, FAB-T 9,
Square 5,000 queries), as the AutoAttack README sets them for subsets and as RobustBench's "APGD-CE +
APGD-T" means: pyautoattack's `version='custom'` defaults would give APGD-CE 5 restarts (5x its iterations on
robust points) and FAB 5, so a subset would not be the corresponding part of AutoAttack standard.
"""
import logging
from typing import TYPE_CHECKING, Callable, List, Optional

import torch
from torch import nn

if TYPE_CHECKING:  # pyautoattack is imported only when AutoAttack runs
    from pyautoattack import AutoAttack

__all__ = ['ATTACKS', 'VERSIONS', 'autoattack', 'is_autoattack', 'is_subset']

VERSIONS = ('standard', 'plus', 'rand')
ATTACKS = ('apgd-ce', 'apgd-t', 'apgd-dlr', 'fab', 'fab-t', 'square')
_logger = logging.getLogger('robust_zoo.evaluation.autoattack')


class _Forward(logging.Handler):
    def __init__(self, warnings: List[str]):
        super().__init__(logging.DEBUG)
        self.warnings = warnings

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if 'warning' in message.lower() or record.levelno >= logging.WARNING:
            self.warnings.append(message.strip())
        _logger.info('auto-attack: %s', message)


class _Fp32Logits(nn.Module):
    """The model with its logits cast to fp32 (a no-op outside autocast)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).float()


def is_subset(spec: str) -> bool:
    """Whether attack `spec` names AutoAttack's attacks alone (`apgd-ce`, `apgd-ce+apgd-t`, ...)."""
    return all(p in ATTACKS for p in spec.lower().split('+'))


def is_autoattack(spec: str) -> bool:
    """Whether attack `spec` is AutoAttack (`autoattack-<version>`) or a subset of its attacks: an attack stronger
    than PGD at the same budget, which cards and the leaderboard state beside PGD's numbers."""
    spec = spec.lower()
    return (spec.startswith('autoattack-') and spec[len('autoattack-'):] in VERSIONS) or is_subset(spec)


def _restrict(adversary: "AutoAttack", attacks: Optional[List[str]]) -> "AutoAttack":
    """`adversary` (built with its `version`) restricted to `attacks` when given, keeping that version's
    per-attack settings; pyautoattack's `custom` version would reset them to its constructor defaults."""
    if attacks:
        adversary.version = f'{adversary.version} (subset)'  # for its log
        adversary.attacks_to_run = list(attacks)
    return adversary


def autoattack(eps: float, norm: str, version: str = 'standard', attacks: Optional[List[str]] = None,
               seed: int = 0, warnings: Optional[List[str]] = None) -> Callable:
    """An attack `(model, x, y) -> x_adv` running AutoAttack `version`, or only `attacks` with the standard
    version's settings (module docstring); AutoAttack's warnings are appended to `warnings`."""
    from pyautoattack import AutoAttack

    warnings = warnings if warnings is not None else []

    def attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        aa_logger = logging.getLogger('auto-attack')
        handler, level, propagate = _Forward(warnings), aa_logger.level, aa_logger.propagate
        aa_logger.addHandler(handler)
        aa_logger.setLevel(logging.DEBUG)
        aa_logger.propagate = False
        try:
            adversary = _restrict(AutoAttack(_Fp32Logits(model), device=x.device, eps=eps, norm=norm, seed=seed,
                                             version=version), attacks)
            x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=len(x))
        finally:
            aa_logger.removeHandler(handler)
            aa_logger.setLevel(level)
            aa_logger.propagate = propagate
        return x_adv.detach()

    return attack
