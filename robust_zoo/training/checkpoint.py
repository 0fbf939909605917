"""Atomic, safe training checkpoints (the file helpers are `robust_zoo._io`'s).

Every file is written to a temporary name in the same folder, flushed to disk and renamed over the
target (`os.replace`), so a run killed at any instant leaves either the old or the new file, never half
of one. Weights are safetensors. The training state (optimizer, scheduler, EMA, counters) is a torch file
holding only tensors and plain containers, read back with `torch.load(weights_only=True)`: nothing is
unpickled beyond that safe subset.
"""
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from .._io import (PathLike, atomic_write, atomic_write_text, check_safetensors, load_safetensors, save_safetensors,
                   unreadable_message)

__all__ = ['CheckpointError', 'STATE_FORMAT', 'atomic_write', 'atomic_write_text', 'check_weights_file',
           'load_train_state', 'load_weights', 'read_weights_metadata', 'save_train_state', 'save_weights']

STATE_FORMAT = 'robust_zoo.train_state/1'


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not belong to this run."""


def save_weights(state_dict: Dict[str, torch.Tensor], path: PathLike,
                 metadata: Optional[Dict[str, str]] = None) -> Path:
    """Write a state dict as safetensors, atomically."""
    return save_safetensors(state_dict, path, metadata)


def load_weights(path: PathLike) -> Dict[str, torch.Tensor]:
    """Read safetensors weights, with a clear error for a missing or corrupt file."""
    return load_safetensors(path, CheckpointError)


def check_weights_file(path: PathLike) -> Path:
    """`path` if it is a readable safetensors file (its header is parsed, the tensors are not read), else a
    `CheckpointError` that says what is wrong; other formats are refused, as robust_zoo never unpickles weights."""
    path = Path(path)
    if path.is_file() and path.suffix != '.safetensors':
        raise CheckpointError(f'{path} is not a .safetensors file: robust_zoo loads weights only as safetensors (it '
                              'never unpickles .pth/.bin files); save them with safetensors.torch.save_file.')
    return check_safetensors(path, CheckpointError)


def read_weights_metadata(path: PathLike) -> Dict[str, str]:
    """The safetensors header metadata of a weights file ({} when it has none); robust_zoo writes `architecture`
    and `activation` there (and train_at.py `arch`, its --model), so that a loader can refuse other weights."""
    try:
        with safe_open(str(path), framework='pt') as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(unreadable_message(path, e)) from e


def save_train_state(path: PathLike, state: Dict[str, Any]) -> Path:
    """Write the training state (tensors, numbers, strings, lists and dicts only), atomically."""
    return atomic_write(path, lambda tmp: torch.save(dict(state, format=STATE_FORMAT), tmp))


def load_train_state(path: PathLike, arch: Optional[str] = None) -> Dict[str, Any]:
    """Read a training state written by `save_train_state` with the safe `weights_only` loader.

    With `arch`, a state saved for another model raises `CheckpointError` instead of loading half of it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint {path} does not exist.')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        raise CheckpointError(f'{path} could not be read as a robust_zoo training checkpoint ({type(e).__name__}: '
                              f'{str(e).splitlines()[0] if str(e) else ""}). It may be corrupt or not a '
                              f'checkpoint of train_at.py; only tensors and plain values are ever loaded.') from e
    if not isinstance(state, dict) or state.get('format') != STATE_FORMAT:
        raise CheckpointError(f'{path} is not a robust_zoo training checkpoint (expected format {STATE_FORMAT!r}).')
    if arch is not None and state.get('arch') != arch:
        raise CheckpointError(f'{path} was saved for model {state.get("arch")!r}, not {arch!r}: resume with the '
                              f'same --model, or start a new run in another --output folder.')
    return state


def load_model_state(model: nn.Module, state_dict: Dict[str, torch.Tensor], source: str) -> None:
    """`load_state_dict` with a clear error when the tensors do not fit the model."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:
        raise CheckpointError(f'{source} does not fit this model: {str(e).splitlines()[0]} '
                              f'(was it saved for another architecture or number of classes?)') from e
