"""The files of the small datasets, read and checked: IDX files (Fashion-MNIST, MNIST) and CIFAR-10/100 batches.

Every reader checks what it reads (md5 where the files are known, headers, sizes, label ranges) and raises
`DatasetError` naming the file and what to do. CIFAR's python batches are pickles: they are read with a restricted
unpickler that only rebuilds numpy arrays, dicts, lists and strings, so a malicious file cannot run code.
`robust_zoo.data` builds datasets from these arrays.
"""
import gzip
import hashlib
import io
import math
import os
import pickle
import zlib
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np

__all__ = ['FASHION_MNIST_DIR', 'DatasetError', 'check_split', 'read_cifar', 'read_fashion_mnist', 'read_mnist']

PathLike = Union[str, os.PathLike]
Arrays = Tuple[np.ndarray, np.ndarray]

FASHION_MNIST_DIR = Path('/usr/share/datasets/fashion-mnist')
_SPLITS = ('train', 'test')

# md5 of the decompressed files (Debian re-gzipped them, so the .gz md5s differ from upstream's)
_FILES = {
    'train': (('train-images-idx3-ubyte', 'f4a8712d7a061bf5bd6d2ca38dc4d50a'),
              ('train-labels-idx1-ubyte', '9018921c3c673c538a1fc5bad174d6f9')),
    'test': (('t10k-images-idx3-ubyte', '8181f5470baa50b63fa0f6fddb340f0a'),
             ('t10k-labels-idx1-ubyte', '15d484375f8d13e6eb1aabb0c3f46965')),
}


class DatasetError(RuntimeError):
    """A dataset is missing or corrupt; the message says how to fix it."""


def check_split(split: str) -> None:
    if split not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")


# --- IDX files (MNIST, Fashion-MNIST) ---------------------------------------------------------------------------

def _read_bytes(path: Path) -> bytes:
    """The file's contents, decompressed if it is a .gz; an unreadable file raises DatasetError naming it."""
    try:
        if path.suffix == '.gz':
            with gzip.open(path, 'rb') as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f'{path} is corrupt or truncated ({e}); download it again.') from e


def _read_idx(path: Path, md5: Optional[str] = None, ndim: Optional[int] = None) -> np.ndarray:
    """A uint8 IDX file (http://yann.lecun.com/exdb/mnist/ format), checked against `md5` if given."""
    raw = _read_bytes(path)
    if md5 is not None and hashlib.md5(raw).hexdigest() != md5:
        raise DatasetError(f'{path} is corrupt (md5 mismatch). Reinstall it: '
                           '`sudo apt-get install --reinstall dataset-fashion-mnist`.')
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or (ndim is not None and raw[3] != ndim):
        raise DatasetError(f'{path} is not a uint8 IDX file with {ndim} dimensions (bad header {raw[:4]!r}); '
                           'download it again.')
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f'{path} is truncated ({len(raw)} bytes, shorter than its header); download it again.')
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], 'big') for i in range(ndim))
    expected = header + math.prod(shape)
    if len(raw) != expected:
        raise DatasetError(f'{path} is truncated or corrupt: its header says {shape} ({expected} bytes) but it has '
                           f'{len(raw)} bytes; download it again.')
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(root: Path, name: str) -> Path:
    """Debian's layout (`root/<name>.gz`) or torchvision's (`root/FashionMNIST/raw/<name>[.gz]`)."""
    for cand in (root / f'{name}.gz', root / name, root / 'FashionMNIST' / 'raw' / name,
                 root / 'FashionMNIST' / 'raw' / f'{name}.gz'):
        if cand.is_file():
            return cand
    raise DatasetError(
        f'Fashion-MNIST file {name}(.gz) not found under {root}. Install Debian\'s copy with '
        f'`sudo apt-get install dataset-fashion-mnist` (files land in {FASHION_MNIST_DIR}), or pass the '
        f'folder holding the idx files (or a torchvision FashionMNIST root) as `root` / --data-dir.')


def read_fashion_mnist(split: str, root: Optional[PathLike] = None) -> Arrays:
    """uint8 N x 28 x 28 images and labels of a Fashion-MNIST split, from `root` or Debian's copy, md5-checked."""
    check_split(split)
    root = Path(root) if root is not None else FASHION_MNIST_DIR
    (img_name, img_md5), (lbl_name, lbl_md5) = _FILES[split]
    return _read_idx(_find(root, img_name), img_md5), _read_idx(_find(root, lbl_name), lbl_md5)


_MNIST_FILES = {'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
                'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')}


def read_mnist(split: str, root: Optional[PathLike]) -> Arrays:
    """uint8 N x 1 x 28 x 28 images and labels of an MNIST split, from the idx files under `root`."""
    how = ('Get them with `torchvision.datasets.MNIST(root, download=True)` on a machine with internet (or the '
           'four idx .gz files from a mirror of http://yann.lecun.com/exdb/mnist/), copy the folder here and pass '
           'it as `root` (data_dir= in evaluate, --data-dir on the CLI).')
    if root is None:
        raise DatasetError(f'MNIST has no default location on this machine. {how}')
    root = Path(root)
    dirs = (root, root / 'MNIST' / 'raw')
    paths = []
    for name in _MNIST_FILES[split]:
        cands = [d / f for d in dirs for f in (name, f'{name}.gz')]
        found = next((c for c in cands if c.is_file()), None)
        if found is None:
            raise DatasetError(f'MNIST {split} file {name}(.gz) not found; looked for '
                               f'{", ".join(str(c) for c in cands)}. {how}')
        paths.append(found)
    images, labels = _read_idx(paths[0], ndim=3), _read_idx(paths[1], ndim=1)
    if images.shape[1:] != (28, 28):
        raise DatasetError(f'{paths[0]} holds images of shape {images.shape[1:]}, not 28 x 28: not MNIST.')
    _check_labels(labels, 10, paths[1], n_images=len(images))
    return images[:, None], labels


def _check_labels(labels: np.ndarray, num_classes: int, path: Path, n_images: int) -> None:
    if len(labels) != n_images:
        raise DatasetError(f'{path} has {len(labels)} labels for {n_images} images; the files do not match.')
    if len(labels) and int(labels.max()) >= num_classes:
        raise DatasetError(f'{path} has label {int(labels.max())}, outside 0..{num_classes - 1}: not this dataset.')


# --- CIFAR-10 / CIFAR-100 ---------------------------------------------------------------------------------------

def _latin1_encode(text: str, encoding: str = 'latin1') -> bytes:
    """`_codecs.encode` as protocol-2 pickles use it for bytes, restricted to latin-1."""
    if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
        raise DatasetError(f'pickle asked for _codecs.encode({type(text).__name__}, {encoding!r}); not allowed.')
    return text.encode('latin1')


def _numpy_pickle_globals() -> dict:
    """The callables numpy's pickles of arrays need, under the module names of numpy 1 and numpy 2."""
    arr = np.zeros(1, dtype=np.uint8)
    reconstruct = arr.__reduce__()[0]  # numpy(._)core.multiarray._reconstruct
    frombuffer = arr.__reduce_ex__(5)[0]  # numpy(._)core.numeric._frombuffer (protocol 5)
    scalar = np.uint8(0).__reduce__()[0]  # numpy(._)core.multiarray.scalar
    allowed = {('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): np.dtype, ('_codecs', 'encode'): _latin1_encode}
    for core in ('numpy.core', 'numpy._core'):
        allowed[(f'{core}.multiarray', '_reconstruct')] = reconstruct
        allowed[(f'{core}.multiarray', 'scalar')] = scalar
        allowed[(f'{core}.numeric', '_frombuffer')] = frombuffer
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds only numpy arrays and builtin containers; any other global raises DatasetError.

    Plain `pickle.load` on a downloaded file can run arbitrary code (a pickle may call any importable
    function); this one can only call numpy's array constructors.
    """
    _allowed: Optional[dict] = None

    def find_class(self, module: str, name: str):
        if _RestrictedUnpickler._allowed is None:
            _RestrictedUnpickler._allowed = _numpy_pickle_globals()
        try:
            return _RestrictedUnpickler._allowed[(module, name)]
        except KeyError:
            raise DatasetError(f'refusing to load {module}.{name} from a pickle: a CIFAR batch holds only numpy '
                               'arrays and lists; this file is not one (it may be malicious).') from None


def _unpickle(path: Path) -> dict:
    """A CIFAR python batch: a dict with str keys (bytes keys of Python 2 pickles are decoded)."""
    try:
        with open(path, 'rb') as f:
            obj = _RestrictedUnpickler(io.BytesIO(f.read()), encoding='bytes').load()
    except DatasetError as e:
        raise DatasetError(f'{path}: {e}') from None
    except Exception as e:  # truncated or corrupt: UnpicklingError, EOFError, ValueError, ...
        raise DatasetError(f'{path} is corrupt or truncated ({type(e).__name__}: {e}); download it again.') from e
    if not isinstance(obj, dict):
        raise DatasetError(f'{path} holds a {type(obj).__name__}, not a CIFAR batch dict.')
    return {k.decode('latin1') if isinstance(k, bytes) else k: v for k, v in obj.items()}


_CIFAR = {
    # name: (title, python dir, python files, binary dir, binary files, label bytes, label key, url file)
    'cifar10': ('CIFAR-10', 'cifar-10-batches-py',
                {'train': [f'data_batch_{i}' for i in range(1, 6)], 'test': ['test_batch']},
                'cifar-10-batches-bin',
                {'train': [f'data_batch_{i}.bin' for i in range(1, 6)], 'test': ['test_batch.bin']},
                1, 'labels', 'CIFAR10'),
    'cifar100': ('CIFAR-100', 'cifar-100-python', {'train': ['train'], 'test': ['test']},
                 'cifar-100-binary', {'train': ['train.bin'], 'test': ['test.bin']},
                 2, 'fine_labels', 'CIFAR100'),
}


def _cifar_python_batch(path: Path, label_key: str, num_classes: int) -> Arrays:
    entry = _unpickle(path)
    data, labels = entry.get('data'), entry.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f'{data.dtype} {data.shape}' if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"{path}: 'data' must be a uint8 N x 3072 array, got {desc}.")
    if not isinstance(labels, (list, np.ndarray)):
        raise DatasetError(f'{path}: no {label_key!r} list (keys: {sorted(map(str, entry))}).')
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DatasetError(f'{path}: {label_key!r} are not integers ({e}).') from None
    if labels.ndim != 1 or (len(labels) and labels.min() < 0):
        raise DatasetError(f'{path}: {label_key!r} must be non-negative integers.')
    _check_labels(labels, num_classes, path, n_images=len(data))
    return data.reshape(-1, 3, 32, 32), labels


def _cifar_binary_batch(path: Path, label_bytes: int, num_classes: int) -> Arrays:
    raw = path.read_bytes()
    record = label_bytes + 3072
    if len(raw) == 0 or len(raw) % record:
        raise DatasetError(f'{path} is truncated or corrupt: {len(raw)} bytes is not a multiple of the '
                           f'{record}-byte record; download it again.')
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
    labels = rows[:, label_bytes - 1].astype(np.int64)  # CIFAR-100: coarse, fine; use fine
    _check_labels(labels, num_classes, path, n_images=len(rows))
    return rows[:, label_bytes:].reshape(-1, 3, 32, 32), labels


def read_cifar(name: str, split: str, root: Optional[PathLike]) -> Arrays:
    """uint8 N x 3 x 32 x 32 images and labels of a CIFAR-10 (`name` 'cifar10') or CIFAR-100 split, from its python
    or binary batches under `root`."""
    title, py_dir, py_files, bin_dir, bin_files, label_bytes, label_key, tv = _CIFAR[name]
    num_classes = 10 if name == 'cifar10' else 100
    how = (f'Get it with `torchvision.datasets.{tv}(root, download=True)` on a machine with internet (or download '
           f'and extract the python or binary version from https://www.cs.toronto.edu/~kriz/cifar.html), copy '
           f'the folder here and pass it as `root` (data_dir= in evaluate, --data-dir on the CLI).')
    if root is None:
        raise DatasetError(f'{title} has no default location on this machine. {how}')
    root = Path(root)
    layouts = [(root / py_dir, py_files[split], False), (root / bin_dir, bin_files[split], True),
               (root, py_files[split], False), (root, bin_files[split], True)]
    for folder, files, binary in layouts:
        if all((folder / f).is_file() for f in files):
            break
    else:
        looked = '; '.join(f'{folder}/{{{",".join(files)}}}' for folder, files, _ in layouts)
        raise DatasetError(f'{title} {split} files not found; looked for {looked}. {how}')
    parts = [_cifar_binary_batch(folder / f, label_bytes, num_classes) if binary
             else _cifar_python_batch(folder / f, label_key, num_classes) for f in files]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
