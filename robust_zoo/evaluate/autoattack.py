"""AutoAttack (Croce & Hein 2020) through the authors' package `pyautoattack`, behind a thin adapter.

The adapter runs `pyautoattack.AutoAttack(...).run_standard_evaluation` on one batch at a time (the
evaluator's batches are its resumable units; pyautoattack 0.2.0's own `state_path` resume is broken),
forwards the `auto-attack` log to robust_zoo's evaluation log, and keeps AutoAttack's own warnings
(e.g. Square, a black-box attack, beating the white-box ones) so the evaluator can report them as checks.
AutoAttack sees the model's logits as fp32, so it also runs under `torch.autocast` (its Square attack mixes
the logits with fp32 buffers). AutoAttack already runs each of its attacks only on the points that the
previous ones left robust.
"""
import logging
from typing import Callable, List, Optional

import torch
from torch import nn

__all__ = ['VERSIONS', 'autoattack']

VERSIONS = ('standard', 'plus', 'rand')
_logger = logging.getLogger('robust_zoo.evaluate.autoattack')


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


def autoattack(eps: float, norm: str, version: str = 'standard', attacks: Optional[List[str]] = None,
               seed: int = 0, warnings: Optional[List[str]] = None) -> Callable:
    """An attack `(model, x, y) -> x_adv` running AutoAttack `version` (or `custom` with `attacks`);
    AutoAttack's warnings are appended to `warnings`."""
    from pyautoattack import AutoAttack

    warnings = warnings if warnings is not None else []

    def attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        aa_logger = logging.getLogger('auto-attack')
        handler, level, propagate = _Forward(warnings), aa_logger.level, aa_logger.propagate
        aa_logger.addHandler(handler)
        aa_logger.setLevel(logging.DEBUG)
        aa_logger.propagate = False
        try:
            kwargs = dict(attacks=list(attacks), version='custom') if attacks else dict(version=version)
            adversary = AutoAttack(_Fp32Logits(model), device=x.device, eps=eps, norm=norm, seed=seed, **kwargs)
            x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=len(x))
        finally:
            aa_logger.removeHandler(handler)
            aa_logger.setLevel(level)
            aa_logger.propagate = propagate
        return x_adv.detach()

    return attack
