"""Dataset loading: real Debian Fashion-MNIST files, tiny fake copies of the other formats, integrity
checks, a pickle loader that cannot run code, clear errors."""
import gzip
import io
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from robust_zoo.data import (
    DATASETS,
    FASHION_MNIST_DIR,
    DatasetError,
    ImageTensorDataset,
    create_dataset,
    load_dataset,
    load_fashion_mnist,
)
from robust_zoo.threat_models import get_threat_model

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


# ---------------------------------------------------------------------------------------------------------------
# create_dataset / load_dataset on tiny fake copies of the real on-disk formats


def _write_idx(path, arr, gz=False):
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    raw = bytes([0, 0, 8, arr.ndim]) + b''.join(d.to_bytes(4, 'big') for d in arr.shape) + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(f'{path}.gz', 'wb') as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def _fake_mnist(root, split='test', n=5, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    images, labels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)
    prefix = 'train' if split == 'train' else 't10k'
    _write_idx(root / f'{prefix}-images-idx3-ubyte', images, gz)
    _write_idx(root / f'{prefix}-labels-idx1-ubyte', labels, gz)
    return images, labels


def test_mnist_idx_raw_and_gz_in_both_layouts(tmp_path):
    test_imgs, test_lbls = _fake_mnist(tmp_path, 'test', n=5)
    train_imgs, train_lbls = _fake_mnist(tmp_path / 'MNIST' / 'raw', 'train', n=7, gz=True, seed=1)
    ds = create_dataset('mnist', 'test', tmp_path)
    assert isinstance(ds, ImageTensorDataset) and len(ds) == 5
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (5, 1, 28, 28)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(test_imgs)) and ds.labels.tolist() == test_lbls.tolist()
    x, y = load_dataset('mnist', 'train', tmp_path, n=3)
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(x, torch.from_numpy(train_imgs[:3]).unsqueeze(1).float() / 255)
    assert y.tolist() == train_lbls[:3].tolist()
    img, label = ds[2]
    assert img.shape == (1, 28, 28) and img.dtype == torch.float32 and isinstance(label, int)
    assert 0 <= img.min() and img.max() <= 1 and label == test_lbls[2]
    xb, yb = ds.batch(torch.tensor([4, 0]))
    assert torch.equal(xb[1], ds[0][0]) and yb.tolist() == [test_lbls[4], test_lbls[0]]


def test_mnist_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(DatasetError, match='download=True'):
        create_dataset('mnist', 'test')
    with pytest.raises(DatasetError, match='t10k-images-idx3-ubyte') as info:
        create_dataset('mnist', 'test', tmp_path)
    assert str(tmp_path / 'MNIST' / 'raw') in str(info.value) and 'download=True' in str(info.value)


def test_truncated_idx_file_is_rejected(tmp_path):
    _fake_mnist(tmp_path, 'test', n=4)
    path = tmp_path / 't10k-images-idx3-ubyte'
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetError, match='truncated') as info:
        create_dataset('mnist', 'test', tmp_path)
    assert str(path) in str(info.value)


def test_truncated_gzip_is_rejected(tmp_path):
    _fake_mnist(tmp_path, 'test', n=4, gz=True)
    path = tmp_path / 't10k-images-idx3-ubyte.gz'
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DatasetError, match='t10k-images-idx3-ubyte.gz'):
        create_dataset('mnist', 'test', tmp_path)


def test_mismatched_label_file_is_rejected(tmp_path):
    _fake_mnist(tmp_path, 'test', n=4)
    _write_idx(tmp_path / 't10k-labels-idx1-ubyte', np.zeros(3, np.uint8))
    with pytest.raises(DatasetError, match='3 labels for 4 images'):
        create_dataset('mnist', 'test', tmp_path)


def _cifar_rows(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def _fake_cifar10(root, per_batch=3, protocol=pickle.DEFAULT_PROTOCOL):
    """cifar-10-batches-py as torchvision downloads it: dicts with b'data' (N, 3072) uint8 and b'labels'."""
    folder = root / 'cifar-10-batches-py'
    folder.mkdir(parents=True)
    batches = {}
    for i, name in enumerate([f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']):
        data, labels = _cifar_rows(per_batch, i), [(i + j) % 10 for j in range(per_batch)]
        with open(folder / name, 'wb') as f:
            pickle.dump({b'batch_label': name.encode(), b'labels': labels, b'data': data,
                         b'filenames': [b'x.png'] * per_batch}, f, protocol=protocol)
        batches[name] = data, labels
    return batches


def _write_cifar_bin(path, data, *label_columns):
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = np.stack([np.asarray(c, np.uint8) for c in label_columns], 1)
    path.write_bytes(np.concatenate([labels, data], 1).tobytes())


@pytest.mark.parametrize('protocol', [2, 5])
def test_cifar10_python_batches(tmp_path, protocol):
    batches = _fake_cifar10(tmp_path, protocol=protocol)
    ds = create_dataset('cifar10', 'train', tmp_path)
    assert ds.images.shape == (15, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.labels.tolist() == [label for i in range(1, 6) for label in batches[f'data_batch_{i}'][1]]
    data = batches['data_batch_2'][0]
    assert torch.equal(ds.images[3:6], torch.from_numpy(data).reshape(3, 3, 32, 32))  # batches in order
    x, y = load_dataset('cifar10', 'test', tmp_path, n=2)
    test = batches['test_batch'][0]
    assert x.shape == (2, 3, 32, 32) and y.tolist() == batches['test_batch'][1][:2]
    # a row is the R plane, then G, then B, each 32 x 32 row-major
    for c, h, w in [(0, 0, 0), (0, 0, 31), (0, 1, 0), (1, 2, 3), (2, 31, 31)]:
        assert x[1, c, h, w] == test[1, c * 1024 + h * 32 + w] / 255
    # root may also be the batches folder itself
    assert torch.equal(load_dataset('cifar10', 'test', tmp_path / 'cifar-10-batches-py')[0], load_dataset(
        'cifar10', 'test', tmp_path)[0])


def test_cifar10_channel_order_on_a_solid_image(tmp_path):
    row = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.full(1024, 30)]).astype(np.uint8)[None]
    folder = tmp_path / 'cifar-10-batches-py'
    folder.mkdir()
    with open(folder / 'test_batch', 'wb') as f:
        pickle.dump({b'data': row, b'labels': [7]}, f)
    x, y = load_dataset('cifar10', 'test', tmp_path)
    assert (x[0, 0] == 10 / 255).all() and (x[0, 1] == 20 / 255).all() and (x[0, 2] == 30 / 255).all()
    assert y.tolist() == [7]


class _Py2Pickler(pickle._Pickler):
    """Writes strings as Python 2's cPickle did (BINSTRING), like the real CIFAR python files."""
    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        b = obj.encode('latin1') if isinstance(obj, str) else obj
        self.write(pickle.SHORT_BINSTRING + bytes([len(b)]) + b if len(b) < 256
                   else pickle.BINSTRING + len(b).to_bytes(4, 'little') + b)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str


def test_cifar10_python2_style_pickle(tmp_path):
    data = _cifar_rows(2, 0)
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump({'batch_label': 'testing batch 1 of 1', 'labels': [3, 9], 'data': data})
    raw = buf.getvalue().replace(b'cnumpy._core.multiarray\n', b'cnumpy.core.multiarray\n')  # numpy 1 name
    assert b'cnumpy.core.multiarray\n_reconstruct' in raw
    (tmp_path / 'test_batch').write_bytes(raw)
    ds = create_dataset('cifar10', 'test', tmp_path)
    assert torch.equal(ds.images, torch.from_numpy(data).reshape(2, 3, 32, 32)) and ds.labels.tolist() == [3, 9]


def test_cifar10_binary_matches_python(tmp_path):
    batches = _fake_cifar10(tmp_path / 'py')
    for name, (data, labels) in batches.items():
        _write_cifar_bin(tmp_path / 'bin' / 'cifar-10-batches-bin' / f'{name}.bin', data, labels)
    for split in ('train', 'test'):
        a, b = create_dataset('cifar10', split, tmp_path / 'py'), create_dataset('cifar10', split, tmp_path / 'bin')
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert len(create_dataset('cifar10', 'train', tmp_path / 'bin' / 'cifar-10-batches-bin', n=4)) == 4


def test_cifar100_python_and_binary_use_fine_labels(tmp_path):
    data, fine, coarse = _cifar_rows(4, 3), [99, 0, 42, 7], [19, 0, 5, 1]
    folder = tmp_path / 'cifar-100-python'
    folder.mkdir()
    with open(folder / 'test', 'wb') as f:
        pickle.dump({b'filenames': [b'a.png'] * 4, b'fine_labels': fine, b'coarse_labels': coarse, b'data': data}, f)
    _write_cifar_bin(tmp_path / 'cifar-100-binary' / 'test.bin', data, coarse, fine)
    x, y = load_dataset('cifar100', 'test', tmp_path)
    assert y.tolist() == fine and torch.equal(x, torch.from_numpy(data).reshape(4, 3, 32, 32).float() / 255)
    ds = create_dataset('cifar100', 'test', tmp_path / 'cifar-100-binary', n=3)
    assert ds.labels.tolist() == fine[:3] and torch.equal(ds.images, torch.from_numpy(data[:3]).reshape(3, 3, 32, 32))


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize('how', ['os.system', 'eval'])
def test_malicious_pickle_is_refused_without_running(tmp_path, how):
    marker = tmp_path / 'pwned'
    payload = (_Evil(os.system, f'touch {marker}') if how == 'os.system'
               else _Evil(eval, f'open({str(marker)!r}, "w").close()'))
    folder = tmp_path / 'cifar-10-batches-py'
    folder.mkdir()
    with open(folder / 'test_batch', 'wb') as f:
        pickle.dump({b'data': _cifar_rows(1, 0), b'labels': [0], b'x': payload}, f)
    with pytest.raises(DatasetError, match='refusing') as info:
        create_dataset('cifar10', 'test', tmp_path)
    assert 'test_batch' in str(info.value)
    assert not marker.exists()


def test_truncated_or_wrong_pickle_is_rejected(tmp_path):
    batches = _fake_cifar10(tmp_path)
    path = tmp_path / 'cifar-10-batches-py' / 'test_batch'
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DatasetError, match='corrupt or truncated'):
        create_dataset('cifar10', 'test', tmp_path)
    path.write_bytes(pickle.dumps({b'data': batches['test_batch'][0].reshape(-1)[:100], b'labels': [0]}))
    with pytest.raises(DatasetError, match="'data' must be a uint8 N x 3072"):
        create_dataset('cifar10', 'test', tmp_path)


def test_truncated_cifar_binary_is_rejected(tmp_path):
    path = tmp_path / 'test_batch.bin'
    _write_cifar_bin(path, _cifar_rows(2, 0), [1, 2])
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DatasetError, match='truncated'):
        create_dataset('cifar10', 'test', tmp_path)


def test_cifar_missing_files_name_the_paths(tmp_path):
    with pytest.raises(DatasetError, match='CIFAR10') as info:
        create_dataset('cifar10', 'test', tmp_path)
    assert str(tmp_path / 'cifar-10-batches-py') in str(info.value) and 'test_batch.bin' in str(info.value)
    with pytest.raises(DatasetError, match='no default location'):
        create_dataset('cifar100', 'test')


def _fake_imagenet(root, split_dir='val', size=(40, 30)):
    from PIL import Image
    colors = {'n01440764': [(255, 0, 0), (0, 255, 0)], 'n01443537': [(0, 0, 255), (10, 20, 30)]}
    for cls, cols in colors.items():
        (root / split_dir / cls).mkdir(parents=True)
        for i, c in enumerate(cols):
            Image.new('RGB', size, c).save(root / split_dir / cls / f'{i}.png')
    return [c for cols in colors.values() for c in cols]


def test_imagenet_folder(tmp_path):
    colors = _fake_imagenet(tmp_path)
    x, y = load_dataset('imagenet-1k', 'test', tmp_path)
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32 and y.tolist() == [0, 0, 1, 1]
    for img, c in zip(x, colors):
        assert torch.allclose(img, torch.tensor(c).float().div(255).view(3, 1, 1).expand(3, 224, 224))
    ds = create_dataset('imagenet', 'test', tmp_path / 'val', n=3, img_size=16)  # class folders directly
    assert len(ds) == 3 and ds[2][0].shape == (3, 16, 16)
    assert [ds[i][1] for i in range(3)] == [0, 1, 0]  # a prefix interleaves the classes
    with pytest.raises(DatasetError) as info:
        create_dataset('imagenet', 'train', tmp_path)
    assert str(tmp_path / 'train') in str(info.value)


def test_unknown_dataset_and_split():
    with pytest.raises(ValueError, match='Unknown dataset .*' + ', '.join(DATASETS)):
        create_dataset('svhn')
    with pytest.raises(ValueError, match="'train' or 'test'"):
        create_dataset('mnist', 'val')


def test_img_size_must_match_small_datasets(tmp_path):
    _fake_mnist(tmp_path, 'test', n=2)
    assert len(create_dataset('mnist', 'test', tmp_path, img_size=28)) == 2
    with pytest.raises(ValueError, match='img_size'):
        create_dataset('mnist', 'test', tmp_path, img_size=32)


@needs_fmnist
def test_fashion_mnist_through_the_factory():
    x, y = load_dataset('fashion-mnist', 'test', n=50)
    ref = load_fashion_mnist('test', n=50)
    assert torch.equal(x, ref[0]) and torch.equal(y, ref[1])
    assert len(create_dataset('fashion-mnist', 'train', n=10)) == 10


def test_evaluator_loads_the_threat_models_dataset(tmp_path):
    from robust_zoo.evaluation.evaluator import _load_data
    batches = _fake_cifar10(tmp_path)
    x, y = _load_data(get_threat_model('cifar10-linf'), 2, tmp_path)
    assert x.shape == (2, 3, 32, 32) and y.tolist() == batches['test_batch'][1][:2]
    with pytest.raises(ValueError, match='data_dir='):
        _load_data(get_threat_model('cifar10-linf'), 2)


def test_digits_fixed_split_upsampled_to_28x28():
    pytest.importorskip('sklearn')
    train, test = create_dataset('digits', 'train'), create_dataset('digits', 'test')
    assert (len(train), len(test)) == (1297, 500)
    x, y = test.batch(torch.arange(len(test)))
    assert x.shape == (500, 1, 28, 28) and 0 <= x.min() and x.max() <= 1 and set(y.tolist()) == set(range(10))
    again, _ = load_dataset('digits', 'test')
    assert torch.equal(again, x)  # the split is fixed
    # no image of the test split is in the train split
    ids = lambda ds: {tuple(ds.images[i].flatten().tolist()) for i in range(len(ds))}  # noqa: E731
    assert not ids(train) & ids(test)
