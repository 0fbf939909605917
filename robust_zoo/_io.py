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
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = ['PathLike', 'UnreadableFileError', 'atomic_write', 'atomic_write_bytes', 'atomic_write_json',
           'atomic_write_text', 'check_safetensors', 'exclusive_lock', 'load_safetensors', 'lock_holder',
           'parameter_digest', 'save_safetensors', 'sha256_file', 'unreadable_message']

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


@contextmanager
def exclusive_lock(path: PathLike) -> Iterator[bool]:
    """Hold an exclusive flock(2) on `path` (created, this pid written in it) for the `with` block; yields False at
    once while another live process holds it. Parallel workers use it to never train or evaluate the same run.
    A dead holder's lock is free at once (the kernel releases it), so no takeover can race. The file is removed on
    release; a process that locked a file just removed (its inode no longer at the path) drops it and tries again.
    POSIX only (fcntl, imported here so that the library itself still imports on Windows)."""
    import fcntl
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield True
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def lock_holder(path: PathLike) -> Optional[int]:
    """The pid of the live process holding `exclusive_lock(path)`, -1 if it has not written its pid yet, or None:
    a lock file left behind by a killed process holds nobody."""
    import fcntl
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            return int(os.pread(fd, 64, 0).split()[0])
        except (ValueError, IndexError):
            return -1
    finally:
        os.close(fd)
    return None
