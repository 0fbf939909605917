"""Fashion-MNIST loading: real Debian files, integrity checks, clear errors."""
import gzip
import shutil

import pytest
import torch

from robust_zoo.data import FASHION_MNIST_DIR, DatasetError, load_fashion_mnist

needs_fmnist = pytest.mark.skipif(
    not (FASHION_MNIST_DIR / 't10k-images-idx3-ubyte.gz').exists(),
    reason='Debian dataset-fashion-mnist not installed (make setup installs it)')


@needs_fmnist
def test_test_split_is_10k_images_in_unit_range():
    x, y = load_fashion_mnist('test')
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (10000,) and y.dtype == torch.int64
    assert x.min() == 0 and x.max() == 1
    assert sorted(y.unique().tolist()) == list(range(10))
    assert torch.bincount(y).tolist() == [1000] * 10


@needs_fmnist
def test_first_n_images():
    x, y = load_fashion_mnist('train', n=100)
    assert x.shape == (100, 1, 28, 28)
    assert y[:5].tolist() == [9, 0, 0, 3, 0]  # Fashion-MNIST's published first training labels


def _copy_test_split(dst, decompress=False):
    for name in ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'):
        src = FASHION_MNIST_DIR / f'{name}.gz'
        if decompress:
            with gzip.open(src) as f, open(dst / name, 'wb') as g:
                shutil.copyfileobj(f, g)
        else:
            shutil.copy(src, dst / f'{name}.gz')


@needs_fmnist
def test_torchvision_layout_is_found(tmp_path):
    raw = tmp_path / 'FashionMNIST' / 'raw'
    raw.mkdir(parents=True)
    _copy_test_split(raw, decompress=True)
    x, _ = load_fashion_mnist('test', root=tmp_path, n=10)
    assert torch.equal(x, load_fashion_mnist('test', n=10)[0])


@needs_fmnist
def test_corrupt_file_is_rejected(tmp_path):
    _copy_test_split(tmp_path, decompress=True)
    path = tmp_path / 't10k-images-idx3-ubyte'
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match='corrupt'):
        load_fashion_mnist('test', root=tmp_path)


def test_missing_dataset_says_how_to_install(tmp_path):
    with pytest.raises(DatasetError, match='apt-get install dataset-fashion-mnist'):
        load_fashion_mnist('test', root=tmp_path)


def test_bad_split():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        load_fashion_mnist('val')
