"""`evaluate(model, threat_model)`: clean and adversarial accuracy under a standardized threat model.

The call composes three parts: the protocol (`protocol.py`: the threat model, its attacks and their settings, the
examples), the run (`runner.py`: batches, resume, shards, fp32 re-checks) and the checks (`checklist.py`, which
runs those of `checks.py`); the record is `result.EvalRecord`.
"""
import os
import time
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..threat_models import ThreatModel, get_threat_model
from .checklist import CHECKS, FAST_CHECKS, check_names
from .protocol import (
    Protocol, attack_settings, check_n, dataset_checks, load_eval_data, make_attack, protocol_data, resolve,
)
from .result import EvalRecord, software_versions, wilson_interval
from .runner import Outcome, Run, compiled_for_attacks, evaluation_mode
from .state import EvalStateError

__all__ = ['CHECKS', 'EvalStateError', 'FAST_CHECKS', 'attack_settings', 'compiled_for_attacks', 'evaluate',
           'load_eval_data', 'make_attack']

_load_data = load_eval_data  # the former private name
_EVAL_MODE = dict(name='eval mode', status='WARN', detail='the model was in train mode; it was evaluated in eval mode.')


def evaluate(
        model: nn.Module,
        threat_model: Union[str, ThreatModel],
        *,
        data: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
        attacks: Optional[Sequence[str]] = None,
        n_examples: Optional[int] = None,
        batch_size: int = 250,
        seed: int = 0,
        checks: Union[bool, str, Sequence[str]] = True,
        model_name: Optional[str] = None,
        data_dir: Optional[str] = None,
        probe: int = 100,
        progress: Optional[bool] = None,
        state_path: Optional[Union[str, 'os.PathLike[str]']] = None,
        amp: bool = False,
        distributed: Optional[bool] = None,
        compile: bool = False,
        weights_sha256: str = '',
) -> EvalRecord:
    """Clean accuracy, accuracy under each attack, and the per-sample worst case, on the first `n_examples`.

    Defaults come from the threat model's protocol. Every attack runs on every clean-correct point, so each
    per-attack number stands alone; the model is evaluated in eval mode, with its parameters not requiring
    gradients (its mode and flags are restored). Attacks of the protocol that robust_zoo cannot run are skipped
    and reported as a WARN check, never silently. The same seed and batch size give the same numbers.

    - `data`: (images in [0, 1], labels); without it, the test split is read from `data_dir` (see
      `robust_zoo.data.create_dataset`) or from the dataset's default location.
    - `attacks`: names for `make_attack` (default: the threat model's); `n_examples`, `batch_size`, `seed`.
    - `checks`: True / 'fast', 'full' (on the first `probe` clean-correct points), False, or names among `CHECKS`;
      each a dict {name, status: PASS | WARN | FAIL, detail[, data]} in `EvalRecord.checks`
      (`robust_zoo.evaluation.checklist` says what each one tests).
    - `amp`: attacks under bf16 autocast (so may the caller's `torch.autocast`); every counted decision is still
      made in fp32, and points broken only in low precision are attacked again in fp32. `compile`: attacks query
      `torch.compile(model)`, made once per model.
    - `state_path`: a resumable state, written after every batch; a rerun with the same file skips the finished
      batches, a file of another evaluation raises `EvalStateError`.
    - `distributed`: under torchrun every rank evaluates its share of the batches and returns the same record
      (default: whenever a process group is initialized; False: this rank alone).
      `robust_zoo.evaluation.runner` says how seeding, precision, compile, resume and shards work.
    - `model_name` names the model in the record (default: its architecture). The record names the weights it
      measured: `weights_digest` (the parameter digest of `model`, always) and `weights_sha256` (pass the sha256
      of the safetensors file the model was loaded from, where there is one), so that `robust-zoo card` can refuse
      to publish its numbers beside other weights.
    - `progress`: a tqdm bar on rank 0 (default: when stderr is a terminal); every batch is also logged to the
      `robust_zoo.evaluate` logger.
    """
    t0 = time.time()
    threat = get_threat_model(threat_model)
    names = check_names(checks)
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
    check_n(n_examples)
    proto = resolve(threat, attacks, seed)
    found = proto.checks + dataset_checks(model, threat)
    x, y, data_checks = protocol_data(threat, n_examples, data, data_dir)
    found += data_checks + ([dict(_EVAL_MODE)] if model.training else [])
    with evaluation_mode(model):
        run = Run(model, proto, x, y, batch_size=batch_size, seed=seed, checks=names, probe=probe, amp=amp,
                  compile=compile, distributed=distributed, state_path=state_path)
        outcome = run.run(t0, progress)
    return _record(model, model_name, proto, outcome, found + outcome.checks, seed, weights_sha256)


def _record(model: nn.Module, model_name: Optional[str], proto: Protocol, outcome: Outcome, checks: list,
            seed: int, weights_sha256: str) -> EvalRecord:
    """The record of a finished run; the robust accuracy is the per-sample worst case over the attacks."""
    n = len(outcome.clean)
    robust = outcome.clean.clone()
    for ok in outcome.attacks.values():
        robust &= ok
    k = int(robust.sum())
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    return EvalRecord(
        model=model_name or cfg.get('architecture', type(model).__name__),
        threat_model=proto.record,
        n_examples=n,
        clean_accuracy=int(outcome.clean.sum()) / n,
        robust_accuracy=k / n,
        attacks={spec: int(ok.sum()) / n for spec, ok in outcome.attacks.items()},
        confidence_interval=wilson_interval(k, n),
        checks=checks,
        seed=seed,
        versions=software_versions(),
        seconds=outcome.seconds,
        weights_digest=outcome.weights_digest,
        attack_settings={spec: s for spec, s in proto.settings.items() if s},
        weights_sha256=weights_sha256,
    )
