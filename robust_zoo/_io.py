"""File and digest helpers shared by training, evaluation, Sparta banks and publishing (a leaf module: it imports
nothing of robust_zoo, so any module may import it without a cycle).

Every write is atomic: a temporary file in the target's folder, flushed to disk and renamed over the target
(`os.replace`), so a process killed at any instant leaves the old or the new file, never half of one. Weights
are safetensors only; nothing here unpickles.
"""
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = ['PathLike', 'UnreadableFileError', 'atomic_write', 'atomic_write_bytes', 'atomic_write_json',
           'atomic_write_text', 'check_safetensors', 'load_safetensors', 'parameter_digest', 'save_safetensors',
           'sha256_file', 'unreadable_message']

PathLike = Union[str, os.PathLike]


class UnreadableFileError(RuntimeError):
    """A file that is missing or cannot be read as what it should be (the message says which and why)."""


def atomic_write(path: PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(tmp_path)`, fsync, then rename onto `path`; the temp file is removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)
        write(tmp)
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    """`path` holds `text` or its previous content, never a truncated mix: for records whose presence means
    finished work (final_eval.json, evaluation records, resumable state, the published index)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """`path` holds `data` or its previous content."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_json(path: PathLike, obj: Any, indent: Optional[int] = 2) -> Path:
    """`obj` as JSON (with a final newline), atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent) + '\n')


def save_safetensors(tensors: Dict[str, torch.Tensor], path: PathLike,
                     metadata: Optional[Dict[str, str]] = None) -> Path:
    """Write tensors (moved to the CPU, made contiguous) as safetensors, atomically."""
    tensors = {k: v.detach().to('cpu').contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_safetensors(path: PathLike, error: type = UnreadableFileError) -> Dict[str, torch.Tensor]:
    """Read a safetensors file; a missing or corrupt one raises `error` saying so."""
    path = Path(path)
    if not path.is_file():
        raise error(f'weights file {path} does not exist.')
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise error(unreadable_message(path, e)) from e


def check_safetensors(path: PathLike, error: type = UnreadableFileError) -> Path:
    """`path` if its safetensors header parses (the tensors are not read), else `error` saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise error(f'weights file {path} does not exist.')
    try:
        with safe_open(str(path), framework='pt') as f:
            f.keys()
    except (SafetensorError, OSError, ValueError) as e:
        raise error(unreadable_message(path, e)) from e
    return path


def unreadable_message(path: PathLike, e: Exception) -> str:
    return (f'{path} is not a readable safetensors file ({e}); it may be truncated or corrupt: re-download it or use '
            'another checkpoint.')


def sha256_file(path: PathLike) -> str:
    """Hex sha256 of a file, read every time: a cache keyed on size and mtime is fooled by a file rewritten with
    the same size within one timestamp tick, and a published file must never pass on a stale digest."""
    digest = hashlib.sha256()
    with Path(path).open('rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def parameter_digest(model: nn.Module) -> str:
    """sha256 over all parameters and buffers, in state-dict order (exact, bitwise)."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
