"""Datasets for training and evaluation: Fashion-MNIST, MNIST, CIFAR-10/100 and ImageNet (ImageFolder).

`create_dataset(name, split, root, n)` returns a `torch.utils.data.Dataset` whose items are (float CHW
image in [0, 1], int label); no normalization is applied, models normalize inside (RobustBench's
convention). The small datasets are held in memory as uint8 (`ImageTensorDataset`, with a fast
`batch(idx)`); ImageNet is read lazily from an `ImageFolder`. `load_dataset` returns the first `n`
examples of a split as float tensors, as the evaluator wants them.

Fashion-MNIST defaults to Debian's `dataset-fashion-mnist` (md5-checked). The other datasets have no
default location here: pass the folder holding them as `root` (`--data-dir` on the CLI). Files are
sanity-checked (headers, sizes, label ranges) and a missing or corrupt file raises `DatasetError`
naming it. CIFAR's python batches are pickles: they are read with a restricted unpickler that only
rebuilds numpy arrays, dicts, lists and strings, so a malicious file cannot run code.
"""
import gzip
import hashlib
import io
import logging
import math
import os
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

__all__ = [
    'DATASETS',
    'DEFAULT_ROOTS',
    'DIGITS_CLASSES',
    'FASHION_MNIST_CLASSES',
    'FASHION_MNIST_DIR',
    'LABEL_NAMES',
    'NUM_CLASSES',
    'DatasetError',
    'ImageTensorDataset',
    'create_dataset',
    'load_dataset',
    'load_fashion_mnist',
]

_logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

FASHION_MNIST_DIR = Path('/usr/share/datasets/fashion-mnist')
FASHION_MNIST_CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker',
                         'Bag', 'Ankle boot')
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')

# Names as in robust_zoo.threat_models ('imagenet-1k' is accepted for 'imagenet').
DATASETS = ('fashion-mnist', 'mnist', 'cifar10', 'cifar100', 'imagenet', 'digits')
_ALIASES = {'imagenet-1k': 'imagenet', 'imagenet1k': 'imagenet', 'fashionmnist': 'fashion-mnist',
            'cifar-10': 'cifar10', 'cifar-100': 'cifar100'}
DIGITS_CLASSES = tuple(str(d) for d in range(10))
# class names a model card records as timm's label_names (datasets absent here get none)
LABEL_NAMES = {'fashion-mnist': FASHION_MNIST_CLASSES, 'mnist': DIGITS_CLASSES, 'digits': DIGITS_CLASSES,
               'cifar10': CIFAR10_CLASSES}
NUM_CLASSES = {'fashion-mnist': 10, 'mnist': 10, 'cifar10': 10, 'cifar100': 100, 'imagenet': 1000, 'digits': 10}
# Datasets with a known location on this machine; the others need `root`.
DEFAULT_ROOTS = {'fashion-mnist': FASHION_MNIST_DIR, 'digits': Path('sklearn.datasets.load_digits')}
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


# --------------------------------------------------------------------------------------------------------------
# In-memory dataset


class ImageTensorDataset(Dataset):
    """uint8 N x C x H x W images and int64 labels held in memory.

    Items are (float32 C x H x W image in [0, 1], int label); `batch(idx)` slices many at once, which is much
    faster than a DataLoader over items.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: tuple | None = None):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f'images must be uint8 N x C x H x W, got {images.dtype} {tuple(images.shape)}.')
        labels = torch.as_tensor(labels).long()
        if labels.shape != (len(images),):
            raise ValueError(f'{len(images)} images but labels of shape {tuple(labels.shape)}.')
        self.images = images
        self.labels = labels
        self.classes = classes

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i].float().div_(255), int(self.labels[i])

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Float images in [0, 1] and int64 labels of the examples `idx` (a tensor, list or slice)."""
        if isinstance(idx, list):
            idx = torch.as_tensor(idx, dtype=torch.long)
        return self.images[idx].float().div_(255), self.labels[idx]

    def __repr__(self) -> str:
        return f'{type(self).__name__}(n={len(self)}, image_shape={tuple(self.images.shape[1:])})'


# --------------------------------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST)


def _read_bytes(path: Path) -> bytes:
    """The file's contents, decompressed if it is a .gz; an unreadable file raises DatasetError naming it."""
    try:
        if path.suffix == '.gz':
            with gzip.open(path, 'rb') as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f'{path} is corrupt or truncated ({e}); download it again.') from e


def _read_idx(path: Path, md5: str | None = None, ndim: int | None = None) -> np.ndarray:
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


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")


def _fashion_mnist_uint8(split: str, root: PathLike | None) -> tuple[np.ndarray, np.ndarray]:
    _check_split(split)
    root = Path(root) if root is not None else FASHION_MNIST_DIR
    (img_name, img_md5), (lbl_name, lbl_md5) = _FILES[split]
    return _read_idx(_find(root, img_name), img_md5), _read_idx(_find(root, lbl_name), lbl_md5)


def load_fashion_mnist(
        split: str = 'test',
        root: PathLike | None = None,
        n: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 N x 1 x 28 x 28 in [0, 1] and int64 labels; the first `n` if given.

    Files are checked against their known md5, so a truncated or wrong file fails loudly.
    """
    images, labels = _fashion_mnist_uint8(split, root)
    if n is not None:
        images, labels = images[:n], labels[:n]
    x = torch.from_numpy(images.copy()).unsqueeze(1).float().div_(255)
    return x, torch.from_numpy(labels.astype(np.int64))


_MNIST_FILES = {'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
                'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')}


def _mnist(split: str, root: PathLike | None) -> tuple[np.ndarray, np.ndarray]:
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


# --------------------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100


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
    _allowed: dict | None = None

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


def _cifar_python_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
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


def _cifar_binary_batch(path: Path, label_bytes: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    raw = path.read_bytes()
    record = label_bytes + 3072
    if len(raw) == 0 or len(raw) % record:
        raise DatasetError(f'{path} is truncated or corrupt: {len(raw)} bytes is not a multiple of the '
                           f'{record}-byte record; download it again.')
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
    labels = rows[:, label_bytes - 1].astype(np.int64)  # CIFAR-100: coarse, fine; use fine
    _check_labels(labels, num_classes, path, n_images=len(rows))
    return rows[:, label_bytes:].reshape(-1, 3, 32, 32), labels


def _cifar(name: str, split: str, root: PathLike | None) -> tuple[np.ndarray, np.ndarray]:
    title, py_dir, py_files, bin_dir, bin_files, label_bytes, label_key, tv = _CIFAR[name]
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
    parts = [_cifar_binary_batch(folder / f, label_bytes, NUM_CLASSES[name]) if binary
             else _cifar_python_batch(folder / f, label_key, NUM_CLASSES[name]) for f in files]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# --------------------------------------------------------------------------------------------------------------
# ImageNet


def _imagenet(split: str, root: PathLike | None, img_size: int | None, transform: Any = None) -> Dataset:
    from torchvision import datasets, transforms
    how = ('Pass the ImageNet folder as `root` (data_dir= in evaluate, --data-dir on the CLI): it must hold '
           '`train/` and/or `val/` with one sub-folder per class (synset ids, so that sorted order gives the '
           'standard 1000 class indices; arrange val/ that way, e.g. with valprep.sh), or be such a class-folder '
           'directory itself.')
    if root is None:
        raise DatasetError(f'ImageNet has no default location on this machine. {how}')
    root = Path(root)
    sub = 'train' if split == 'train' else 'val'
    if (root / sub).is_dir():
        folder = root / sub
    elif root.is_dir() and not (root / 'train').is_dir() and not (root / 'val').is_dir():
        folder = root  # the class folders themselves
    else:
        raise DatasetError(f'ImageNet {split} folder not found: looked for {root / sub}. {how}')
    if img_size is None:
        resize, crop = 256, 224  # RobustBench's Res256Crop224
    else:
        resize, crop = math.floor(img_size / 0.875), img_size
    if transform is None:
        transform = transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(crop), transforms.ToTensor()])
    try:
        ds = datasets.ImageFolder(str(folder), transform=transform)
    except (FileNotFoundError, OSError) as e:
        raise DatasetError(f'ImageNet {split} folder {folder} holds no class folders with images ({e}). {how}') from e
    if len(ds.classes) != NUM_CLASSES['imagenet']:
        _logger.warning('%s has %d class folders, not 1000: labels are indices into its sorted folder names and '
                        'will not match a 1000-class model.', folder, len(ds.classes))
    return ds


# --------------------------------------------------------------------------------------------------------------
# Factory


DIGITS_TEST_SIZE = 500


def _digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 0..16) as 1x28x28 uint8.

    Upsampled bilinearly (align_corners=False) from 8x8 to 28x28 and scaled to 0..255, so 28x28 models and
    Fashion-MNIST-trained Sparta banks apply unchanged. The split is fixed: a permutation seeded with 0; its
    last 500 images are the test split, the first 1,297 the train split.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DatasetError('the digits dataset comes with scikit-learn: pip install scikit-learn '
                           '(or robust-zoo[digits]).') from e
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    x = torch.nn.functional.interpolate(x, size=(28, 28), mode='bilinear', align_corners=False)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(0)).numpy()
    idx = perm[-DIGITS_TEST_SIZE:] if split == 'test' else perm[:-DIGITS_TEST_SIZE]
    return images[idx], d.target[idx].astype(np.int64)


def _class_interleaved(targets: list, n: int) -> list:
    """Indices ordered by (rank within its class, class), cut to n: a class-balanced prefix."""
    seen: dict = {}
    keyed = []
    for i, t in enumerate(targets):
        keyed.append((seen.get(t, 0), t, i))
        seen[t] = seen.get(t, 0) + 1
    return [i for _, _, i in sorted(keyed)[:n]]


def _canonical(name: str) -> str:
    key = name.lower().replace('_', '-')
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; available: {', '.join(DATASETS)} ('imagenet-1k' = 'imagenet').")
    return key


def create_dataset(
        name: str,
        split: str = 'train',
        root: PathLike | None = None,
        n: int | None = None,
        *,
        img_size: int | None = None,
        transform: Any = None,
) -> Dataset:
    """The `split` ('train' or 'test') of dataset `name` (see DATASETS); its first `n` examples if given.

    Items are (float32 C x H x W in [0, 1], int label), unnormalized. Fashion-MNIST, MNIST and CIFAR come
    back as an in-memory `ImageTensorDataset` (with `batch(idx)`); `img_size` must then be their native size
    or None. ImageNet is a lazy `torchvision.datasets.ImageFolder` over `root/train` or, for 'test',
    `root/val` (or `root` itself when it is the class-folder directory), resized to 256 and center-cropped
    to 224 (RobustBench's Res256Crop224), or resized to floor(img_size / 0.875) and cropped to `img_size`,
    or prepared by `transform` (PIL image -> C x H x W in [0, 1]; a converted source's own resize, see
    robust_zoo.convert.preprocess).

    `n` takes the first n examples in the split's order, deterministically. For ImageNet the order
    interleaves the classes (the first image of every class, then the second of every class, ...), so
    `n=5000` spans all 1,000 classes with 5 images each, like RobustBench's subset, though not its exact
    file list.
    """
    key = _canonical(name)
    _check_split(split)
    if n is not None and n < 0:
        raise ValueError(f'n must be >= 0, got {n}.')
    if transform is not None and key != 'imagenet':
        raise ValueError(f'transform= prepares ImageNet images; {key} comes as tensors.')
    if key == 'imagenet':
        ds = _imagenet(split, root, img_size, transform)
        return Subset(ds, _class_interleaved(ds.targets, n)) if n is not None else ds
    if key == 'fashion-mnist':
        images, labels = _fashion_mnist_uint8(split, root)
        images, classes = images[:, None], FASHION_MNIST_CLASSES
    elif key == 'mnist':
        (images, labels), classes = _mnist(split, root), tuple(str(i) for i in range(10))
    elif key == 'digits':
        (images, labels), classes = _digits(split), tuple(str(i) for i in range(10))
    else:
        (images, labels), classes = _cifar(key, split, root), CIFAR10_CLASSES if key == 'cifar10' else None
    if img_size is not None and img_size != images.shape[-1]:
        raise ValueError(f'{key} images are {images.shape[-1]} x {images.shape[-1]}; img_size={img_size} is not '
                         'supported (resize inside the model instead).')
    if n is not None:
        images, labels = images[:n], labels[:n]
    images = np.require(images, requirements=['C', 'W'])  # copies read-only file buffers
    return ImageTensorDataset(torch.from_numpy(images),
                              torch.from_numpy(labels.astype(np.int64)), classes=classes)


def load_dataset(
        name: str,
        split: str = 'test',
        root: PathLike | None = None,
        n: int | None = None,
        *,
        workers: int = 0,
        transform: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` examples of a split as float32 images in [0, 1] (N x C x H x W) and int64 labels.

    For ImageNet the `n` transformed images are decoded and stacked (about 0.6 MB each at 224 x 224), with
    `workers` DataLoader processes if > 0. See `create_dataset` for the datasets, `root` and `transform`.
    """
    ds = create_dataset(name, split, root, n, transform=transform)
    if isinstance(ds, ImageTensorDataset):
        return ds.batch(slice(None))
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=False, num_workers=workers)
    x = y = None
    start = 0
    for xb, yb in loader:
        if x is None:
            x = torch.empty((len(ds), *xb.shape[1:]), dtype=xb.dtype)
            y = torch.empty(len(ds), dtype=torch.int64)
        x[start:start + len(xb)], y[start:start + len(xb)] = xb, yb
        start += len(xb)
    if x is None:
        return torch.empty(0, 3, 0, 0), torch.empty(0, dtype=torch.int64)
    return x, y
