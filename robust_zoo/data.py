"""Datasets: Fashion-MNIST from Debian's `dataset-fashion-mnist` (the dataset robust_zoo trains on here)."""
import gzip
import hashlib
import os
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch

__all__ = ['FASHION_MNIST_DIR', 'FASHION_MNIST_CLASSES', 'DatasetError', 'load_fashion_mnist']

FASHION_MNIST_DIR = Path('/usr/share/datasets/fashion-mnist')
FASHION_MNIST_CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker',
                         'Bag', 'Ankle boot')

# md5 of the decompressed files (Debian re-gzipped them, so the .gz md5s differ from upstream's)
_FILES = {
    'train': (('train-images-idx3-ubyte', 'f4a8712d7a061bf5bd6d2ca38dc4d50a'),
              ('train-labels-idx1-ubyte', '9018921c3c673c538a1fc5bad174d6f9')),
    'test': (('t10k-images-idx3-ubyte', '8181f5470baa50b63fa0f6fddb340f0a'),
             ('t10k-labels-idx1-ubyte', '15d484375f8d13e6eb1aabb0c3f46965')),
}


class DatasetError(RuntimeError):
    """A dataset is missing or corrupt; the message says how to fix it."""


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


def _read_idx(path: Path, md5: str) -> np.ndarray:
    raw = gzip.open(path, 'rb').read() if path.suffix == '.gz' else path.read_bytes()
    if hashlib.md5(raw).hexdigest() != md5:
        raise DatasetError(f'{path} is corrupt (md5 mismatch). Reinstall it: '
                           '`sudo apt-get install --reinstall dataset-fashion-mnist`.')
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], 'big') for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(
        split: str = 'test',
        root: Optional[Union[str, os.PathLike]] = None,
        n: Optional[int] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 N x 1 x 28 x 28 in [0, 1] and int64 labels; the first `n` if given.

    Files are checked against their known md5, so a truncated or wrong file fails loudly.
    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    root = Path(root) if root is not None else FASHION_MNIST_DIR
    (img_name, img_md5), (lbl_name, lbl_md5) = _FILES[split]
    images = _read_idx(_find(root, img_name), img_md5)
    labels = _read_idx(_find(root, lbl_name), lbl_md5)
    if n is not None:
        images, labels = images[:n], labels[:n]
    x = torch.from_numpy(images.copy()).unsqueeze(1).float().div_(255)
    return x, torch.from_numpy(labels.astype(np.int64))
