"""An evaluation's resumable state across ranks: the file read once on rank 0 and shared, written by rank 0
(JSON, atomically) after every batch, in `state.py`'s format.

A fingerprint ties a state file to one run: the model's parameter digest, a digest of the data, the threat model,
attacks, number of examples, batch size, seed, checks and the full checks' probe size, amp, compile, and for an
AutoAttack subset its settings. A rerun with the same file skips the finished batches and ends with the numbers of
an uninterrupted run (`seconds` adds up the runs); a file of another evaluation raises `EvalStateError` (a
ValueError): delete it to start over. Fields are added to the fingerprint only when set, so a state written by an
older robust_zoo resumes as long as the run is the same.
"""
import logging
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from .autoattack import is_subset
from .protocol import Protocol
from .result import software_versions
from .state import EvalStateError, all_gather, broadcast, fingerprint, load_state, save_state

__all__ = ['open_state', 'run_fingerprint', 'write_state']

_logger = logging.getLogger('robust_zoo.evaluate')
PathLike = Union[str, 'os.PathLike[str]']


def run_fingerprint(model: nn.Module, x: torch.Tensor, y: torch.Tensor, proto: Protocol, *, batch_size: int,
                    seed: int, checks: Sequence[str], probe: Optional[int], amp: bool, compile: bool,
                    ) -> Dict[str, Any]:
    """What makes a state file this run's; `probe` is None unless full checks run."""
    # an older robust_zoo ran subsets with pyautoattack's custom settings: not resumed
    subset = any(map(is_subset, proto.attacks))
    return fingerprint(model, x, y, threat=dict(proto.record, step_size=proto.threat.step_size),
                       attacks=list(proto.attacks), batch_size=batch_size, seed=seed, checks=checks, probe=probe,
                       amp=amp, **({'compile': True} if compile else {}),
                       **({'autoattack_subset': 'standard settings'} if subset else {}))


def open_state(state_path: Optional[PathLike], expected: Dict[str, Any], rank: int, world: int,
               n_batches: int, threat_id: str) -> Dict[str, Any]:
    """The state to resume (rank 0 reads it, every rank gets it), a fresh one, or {} without `state_path`. Ranks
    that hold different weights or data are refused."""
    if world > 1 and len({(f['model'], f['data']) for f in all_gather(expected, world)}) > 1:
        raise ValueError('the ranks hold different model weights or data: every rank must evaluate the same '
                         'model on the same data (load the same checkpoint everywhere).')
    if state_path is None:
        return {}
    loaded, error = None, None
    if rank == 0:
        try:
            loaded = load_state(state_path, expected)
        except EvalStateError as e:
            error = str(e)
    loaded, error = broadcast((loaded, error), world)
    if error:
        raise EvalStateError(error)
    if loaded:
        _logger.info('%s: resuming from %s (%d of %d batches done)', threat_id, state_path, len(loaded['batches']),
                     n_batches)
    return loaded or dict(fingerprint=expected, batches={})


def write_state(state_path: PathLike, state: Dict[str, Any], records: Dict[int, Dict[str, Any]],
                pre_checks: Optional[List[dict]], post_checks: Optional[List[dict]], prior_seconds: float,
                t0: float) -> None:
    """The state with the batches done so far, the checks, and the seconds of every run (this one since `t0`)."""
    save_state(state_path, dict(state, batches={str(k): records[k] for k in sorted(records)},
                                pre_checks=pre_checks, post_checks=post_checks,
                                seconds=round(prior_seconds + time.time() - t0, 2), versions=software_versions()))
