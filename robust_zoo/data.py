"""Datasets for training and evaluation: Fashion-MNIST, MNIST, CIFAR-10/100 and ImageNet (ImageFolder).

`create_dataset(name, split, root, n)` returns a `torch.utils.data.Dataset` whose items are (float CHW
image in [0, 1], int label); no normalization is applied, models normalize inside (RobustBench's
convention). The small datasets are held in memory as uint8 (`ImageTensorDataset`, with a fast
`batch(idx)`); ImageNet is read lazily from an `ImageFolder`. `load_dataset` returns the first `n`
examples of a split as float tensors, as the evaluator wants them.

Fashion-MNIST defaults to Debian's `dataset-fashion-mnist` (md5-checked). The other datasets have no
default location here: pass the folder holding them as `root` (`--data-dir` on the CLI). Files are
sanity-checked (headers, sizes, label ranges) and a missing or corrupt file raises `DatasetError`
naming it (the readers of the files are in `_dataset_files.py`; CIFAR's pickles are read with a restricted
unpickler that cannot run code).
"""
import logging
import math
from pathlib import Path
from typing import Any, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from ._dataset_files import (
    FASHION_MNIST_DIR, DatasetError, PathLike, check_split, read_cifar, read_fashion_mnist, read_mnist,
)

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


# --------------------------------------------------------------------------------------------------------------
# In-memory dataset


class ImageTensorDataset(Dataset):
    """uint8 N x C x H x W images and int64 labels held in memory.

    Items are (float32 C x H x W image in [0, 1], int label); `batch(idx)` slices many at once, which is much
    faster than a DataLoader over items.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: Optional[tuple] = None):
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

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int]:
        return self.images[i].float().div_(255), int(self.labels[i])

    def batch(self, idx: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Float images in [0, 1] and int64 labels of the examples `idx` (a tensor, list or slice)."""
        if isinstance(idx, list):
            idx = torch.as_tensor(idx, dtype=torch.long)
        return self.images[idx].float().div_(255), self.labels[idx]

    def __repr__(self) -> str:
        return f'{type(self).__name__}(n={len(self)}, image_shape={tuple(self.images.shape[1:])})'


def load_fashion_mnist(
        split: str = 'test',
        root: Optional[PathLike] = None,
        n: Optional[int] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 N x 1 x 28 x 28 in [0, 1] and int64 labels; the first `n` if given.

    Files are checked against their known md5, so a truncated or wrong file fails loudly.
    """
    images, labels = read_fashion_mnist(split, root)
    if n is not None:
        images, labels = images[:n], labels[:n]
    x = torch.from_numpy(images.copy()).unsqueeze(1).float().div_(255)
    return x, torch.from_numpy(labels.astype(np.int64))


# --------------------------------------------------------------------------------------------------------------
# ImageNet


def _imagenet(split: str, root: Optional[PathLike], img_size: Optional[int], transform: Any = None) -> Dataset:
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


def _digits(split: str) -> Tuple[np.ndarray, np.ndarray]:
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
        root: Optional[PathLike] = None,
        n: Optional[int] = None,
        *,
        img_size: Optional[int] = None,
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
    check_split(split)
    if n is not None and n < 0:
        raise ValueError(f'n must be >= 0, got {n}.')
    if transform is not None and key != 'imagenet':
        raise ValueError(f'transform= prepares ImageNet images; {key} comes as tensors.')
    if key == 'imagenet':
        ds = _imagenet(split, root, img_size, transform)
        return Subset(ds, _class_interleaved(ds.targets, n)) if n is not None else ds
    if key == 'fashion-mnist':
        images, labels = read_fashion_mnist(split, root)
        images, classes = images[:, None], FASHION_MNIST_CLASSES
    elif key == 'mnist':
        (images, labels), classes = read_mnist(split, root), tuple(str(i) for i in range(10))
    elif key == 'digits':
        (images, labels), classes = _digits(split), tuple(str(i) for i in range(10))
    else:
        (images, labels), classes = read_cifar(key, split, root), CIFAR10_CLASSES if key == 'cifar10' else None
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
        root: Optional[PathLike] = None,
        n: Optional[int] = None,
        *,
        workers: int = 0,
        transform: Any = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
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
