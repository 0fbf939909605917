"""Converted targets are evaluated with their source's resize (robust_zoo/convert/preprocess.py): cv2's INTER_CUBIC
for SAT's ResNet-50s, TF 1's resize_bicubic for SAT's EfficientNets, compared here with cv2 and TensorFlow
themselves on images the tests make; timm's antialiased PIL resize gives other pixels."""
import importlib.util

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import robust_zoo  # noqa: F401  (registers the models)
from robust_zoo.convert import TARGETS, list_targets
from robust_zoo.convert.preprocess import cv2_cubic_resize, source_transform, tf1_resize_bicubic
from robust_zoo.data import load_dataset

HAS_CV2 = importlib.util.find_spec('cv2') is not None
HAS_TF = importlib.util.find_spec('tensorflow') is not None
list_targets()


def _photo(h=131, w=173, seed=0):
    """A smooth image with some edges: a coarse random grid blown up, plus a sharp bar."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, (1, 3, 9, 12)))
    img = torch.nn.functional.interpolate(coarse, size=(h, w), mode='bilinear', align_corners=False)[0]
    img = img.permute(1, 2, 0).numpy()
    img[h // 3:h // 3 + 5] = 255
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


@pytest.mark.skipif(not HAS_CV2, reason='opencv-python-headless is not installed (the dev extra has it)')
@pytest.mark.parametrize('size', [(256, 338), (64, 80), (300, 150)])
def test_cv2_cubic_resize_is_cv2s(size):
    import cv2
    for image in (_photo(), np.random.default_rng(1).integers(0, 256, (131, 173, 3), dtype=np.uint8)):
        want = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_CUBIC).astype(int)
        got = cv2_cubic_resize(image, size).astype(int)
        assert np.abs(want - got).max() <= 1 and (want != got).mean() < 1e-3  # cv2's 11-bit fixed point


@pytest.mark.skipif(not HAS_TF, reason='TensorFlow is not installed: run `make .venv/.test-extras`')
@pytest.mark.parametrize('size', [(224, 224), (64, 64), (600, 600)])
def test_tf1_resize_bicubic_is_tensorflows(size):
    import tensorflow as tf
    for image in (_photo(), np.random.default_rng(1).integers(0, 256, (131, 173, 3), dtype=np.uint8)):
        want = tf.compat.v1.image.resize_bicubic(image[None].astype(np.float32), size).numpy()[0]
        assert np.abs(want - tf1_resize_bicubic(image, size)).max() < 1e-3


@pytest.mark.skipif(not HAS_CV2, reason='opencv-python-headless is not installed (the dev extra has it)')
def test_sat_resnet_transform_is_the_sources_pipeline():
    """tensorpack's ResizeShortestEdge(256, INTER_CUBIC) + CenterCrop(224), and not timm's transform."""
    import cv2
    image = _photo(300, 451)
    nh, nw = 256, int(256 / 300 * 451 + 0.5)
    want = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_CUBIC)
    top, left = int((nh - 224) * 0.5), int((nw - 224) * 0.5)
    want = torch.from_numpy(want[top:top + 224, left:left + 224].transpose(2, 0, 1) / 255.).float()
    got = source_transform('resnet50_silu_at.sat_in1k')(Image.fromarray(image))
    assert got.shape == (3, 224, 224) and (got - want).abs().max() <= 1 / 255 + 1e-6
    cfg = timm.data.resolve_data_config({}, model=timm.create_model('robust_zoo/resnet50_silu_at.sat_in1k'))
    timm_way = timm.data.create_transform(**cfg)(Image.fromarray(image))
    assert (timm_way - want).abs().max() > 10 / 255  # antialiased PIL bicubic: other pixels


@pytest.mark.skipif(not HAS_TF, reason='TensorFlow is not installed: run `make .venv/.test-extras`')
def test_sat_efficientnet_transform_is_the_sources_pipeline():
    """preprocessing._decode_and_center_crop: crop res / (res + 32) of the short side, TF 1 resize_bicubic."""
    import tensorflow as tf
    image = _photo(300, 451)
    crop = int(240 / (240 + 32) * 300)
    top, left = (300 - crop + 1) // 2, (451 - crop + 1) // 2
    want = tf.compat.v1.image.resize_bicubic(image[None, top:top + crop, left:left + crop].astype(np.float32),
                                             (240, 240)).numpy()[0]
    want = torch.from_numpy(np.clip(want, 0, 255).transpose(2, 0, 1) / 255.).float()
    got = source_transform('efficientnet_b1_silu_at.sat_in1k')(Image.fromarray(image))
    assert got.shape == (3, 240, 240) and (got - want).abs().max() < 1e-5


def test_robustbench_targets_keep_the_test_images_as_they_are():
    assert all(source_transform(n) is None for n, t in TARGETS.items() if t.source.startswith('robustbench'))
    assert source_transform('resnet50_silu_at') is None  # not a conversion target


def test_imagenet_eval_data_go_through_the_sources_transform(tmp_path):
    for i, cls in enumerate(('n01440764', 'n01443537')):
        (tmp_path / 'val' / cls).mkdir(parents=True)
        Image.fromarray(_photo(300, 451, seed=i)).save(tmp_path / 'val' / cls / 'a.png')
    transform = source_transform('resnet50_silu_at.sat_in1k')
    x, y = load_dataset('imagenet', 'test', tmp_path, transform=transform)
    assert x.shape == (2, 3, 224, 224) and y.tolist() == [0, 1]
    assert torch.equal(x[0], transform(Image.open(tmp_path / 'val' / 'n01440764' / 'a.png')))
    with pytest.raises(ValueError, match='prepares ImageNet images'):
        load_dataset('cifar10', 'test', tmp_path, transform=transform)
