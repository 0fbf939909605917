"""The resumable state of an evaluation, and the helpers that shard one over `torch.distributed` ranks.

`evaluate(..., state_path=...)` writes a small JSON file after every batch (atomically: a run killed at
any instant leaves the previous or the next state, never half of one): the run's fingerprint, and per
finished batch the per-example outcomes (clean and under each attack, as '0'/'1' strings), the budget of
each attack's adversarial examples and AutoAttack's flags. Per-batch seeding makes a batch's outcome
independent of what ran before it, so a rerun skips the finished batches and ends with the numbers of an
uninterrupted run. A state whose fingerprint differs (other weights, data, attacks, seed, batch size, ...)
is refused, never mixed in. JSON only: nothing is unpickled.
"""
import hashlib
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import nn

from .._io import atomic_write_text, parameter_digest

__all__ = ['STATE_FORMAT', 'EvalStateError', 'bits', 'data_digest', 'fingerprint', 'from_bits', 'load_state',
           'rank_world', 'save_state']

STATE_FORMAT = 'robust_zoo.eval_state/1'

#: fingerprint fields, as named in the error message of a mismatch
_FIELDS = dict(model='the model weights (parameter digest)', data='the data (digest of the images and labels)',
               threat_model='the threat model', attacks='the attacks', n_examples='the number of examples',
               batch_size='the batch size', seed='the seed', checks='the checks', probe='the probe size',
               amp='amp', compile='compile',
               autoattack_subset="the AutoAttack subset's settings (now the standard version's)")


class EvalStateError(ValueError):
    """A state file that is unreadable or belongs to another evaluation."""


def bits(mask: torch.Tensor) -> str:
    """A bool mask as a string of '0' and '1'."""
    return (mask.detach().cpu().to(torch.uint8) + ord('0')).numpy().tobytes().decode('ascii')


def from_bits(s: str) -> torch.Tensor:
    """The bool mask of a string written by `bits`."""
    if not s:
        return torch.zeros(0, dtype=torch.bool)
    return torch.frombuffer(bytearray(s.encode('ascii')), dtype=torch.uint8) == ord('1')


def _hash_tensor(h: 'hashlib._Hash', t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f'{t.dtype}{tuple(t.shape)}'.encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def data_digest(x: torch.Tensor, y: torch.Tensor) -> str:
    """sha256 over the images and labels (dtype, shape and bytes)."""
    h = hashlib.sha256()
    _hash_tensor(h, x)
    _hash_tensor(h, y)
    return h.hexdigest()


def fingerprint(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, threat: Dict[str, Any],
                attacks: Sequence[str], batch_size: int, seed: int, checks: Sequence[str], probe: Optional[int],
                amp: bool, **extra: Any) -> Dict[str, Any]:
    """What makes two evaluations the same: equal fingerprints, equal per-batch outcomes. `extra`: further
    settings that change outcomes (e.g. compile=True), recorded only when set, so older state files still match."""
    return dict(model=parameter_digest(model), data=data_digest(x, y), threat_model=threat, attacks=list(attacks),
                n_examples=len(y), batch_size=batch_size, seed=seed, checks=list(checks), probe=probe, amp=amp,
                **extra)


def load_state(path: 'os.PathLike | str', expected: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The state at `path` (None if there is no file), after checking that it belongs to this evaluation."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, ValueError) as e:
        raise EvalStateError(f'evaluation state {path} could not be read ({e}): delete it to start over.') from e
    if not isinstance(state, dict) or state.get('format') != STATE_FORMAT:
        raise EvalStateError(f'{path} is not a robust_zoo evaluation state (expected format {STATE_FORMAT!r}); '
                             'pass another state path.')
    found = state.get('fingerprint', {})
    differ = [k for k in expected if found.get(k) != expected[k]]
    if differ:
        what = ', '.join(_FIELDS.get(k, k) for k in differ)
        raise EvalStateError(f'{path} holds another evaluation ({what} differ{"s" * (len(differ) == 1)}); its '
                             'results are not mixed into this one. Delete the file to start over, or pass another '
                             'state path.')
    return state


def save_state(path: 'os.PathLike | str', state: Dict[str, Any]) -> None:
    """Write the state as JSON, atomically."""
    atomic_write_text(path, json.dumps(dict(state, format=STATE_FORMAT), indent=1))


# --- torch.distributed ------------------------------------------------------------------------------------

def rank_world(distributed: Optional[bool] = None) -> Tuple[int, int]:
    """(rank, world size): (0, 1) unless `distributed` (by default: whenever a process group is initialized)."""
    initialized = dist.is_available() and dist.is_initialized()
    if distributed and not initialized:
        raise ValueError('distributed=True needs an initialized torch.distributed process group (e.g. torchrun and '
                         'torch.distributed.init_process_group).')
    if distributed is False or not initialized:
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def all_gather(obj: Any, world: int) -> List[Any]:
    """Every rank's `obj`, in rank order (a list of one without distributed)."""
    if world == 1:
        return [obj]
    out: List[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any, world: int) -> Any:
    """Rank 0's `obj`, on every rank."""
    if world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
