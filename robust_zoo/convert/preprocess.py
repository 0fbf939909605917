"""Evaluation preprocessing of the converted sources: the reported accuracies were measured on images resized the
source's way, which is not timm's (PIL bicubic with antialiasing).

* SAT ResNet-50 (`sat-resnet50`; ResNet/third_party/imagenet_utils.py `fbresnet_augmentor(False)`): tensorpack's
  `ResizeShortestEdge(256, cv2.INTER_CUBIC)` (the long side `int(scale * w + 0.5)`), then `CenterCrop(224)` at
  `int((h - 224) * 0.5)`. cv2's cubic resize is Keys' kernel (a = -0.75) at half-pixel centers, edges replicated,
  no antialiasing, in 11-bit fixed point for uint8 images: `cv2_cubic_resize` computes it in float and rounds, so
  it may differ from cv2 by one grey level where cv2's fixed point rounds the other way.
* SAT EfficientNet (`sat-efficientnet`; EfficientNet/preprocessing.py `_decode_and_center_crop`): a center crop
  of `int(res / (res + 32) * min(h, w))` pixels at `((h - crop + 1) // 2)`, then TF 1's
  `tf.image.resize_bicubic` to res x res: Keys' kernel (a = -0.75) on the legacy grid (source = dest * scale, no
  half-pixel offset), weights at fractions rounded to 1/1024 (TF's table), edges replicated, float output
  (`tf1_resize_bicubic`).
* RobustBench's CIFAR-10 models: the 32 x 32 test images as they are (`source_transform` returns None).

`source_transform(name)` is the transform of a target (PIL image -> float CHW tensor in [0, 1]; values the
cubic kernel pushes past the range are clipped, as robust_zoo's threat models keep inputs in [0, 1]).
"""
from typing import Callable, Optional, Tuple

import numpy as np
import torch

__all__ = ['cv2_cubic_resize', 'tf1_resize_bicubic', 'source_transform', 'describe_source_transform']

_A = -0.75  # Keys' cubic convolution parameter of both cv2 and TF 1


def _keys(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    return np.where(t <= 1, ((_A + 2) * t - (_A + 3)) * t * t + 1,
                    np.where(t < 2, ((_A * t - 5 * _A) * t + 8 * _A) * t - 4 * _A, 0.0))


def _weights(n_in: int, n_out: int, half_pixel: bool) -> np.ndarray:
    """The n_out x n_in matrix of a 1-D cubic resize, edge pixels replicated."""
    if half_pixel:
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    else:  # TF 1 (resize_bicubic_op.cc): float32 positions, weights from a table of 1024 fractions (lrintf)
        src = np.arange(n_out, dtype=np.float32) * np.float32(n_in / n_out)
    base = np.floor(src).astype(np.int64)
    frac = (src - base).astype(np.float64)
    if not half_pixel:
        frac = np.rint(frac * 1024) / 1024
    w = np.zeros((n_out, n_in))
    for k in range(-1, 3):
        idx = np.clip(base + k, 0, n_in - 1)
        np.add.at(w, (np.arange(n_out), idx), _keys(frac - k))
    return w


def _resize(image: np.ndarray, size: Tuple[int, int], half_pixel: bool) -> np.ndarray:
    """H x W x C float64 -> size[0] x size[1] x C, separable: rows then columns."""
    rows = _weights(image.shape[0], size[0], half_pixel)
    cols = _weights(image.shape[1], size[1], half_pixel)
    out = np.tensordot(rows, image.astype(np.float64), axes=(1, 0))  # out_h x W x C
    return np.tensordot(out, cols, axes=(1, 1)).transpose(0, 2, 1)  # out_h x out_w x C


def cv2_cubic_resize(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """`cv2.resize(image, (w, h), interpolation=cv2.INTER_CUBIC)` of an H x W x C uint8 image, to the grey level."""
    return np.clip(np.rint(_resize(image, size, half_pixel=True)), 0, 255).astype(np.uint8)


def tf1_resize_bicubic(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """TF 1's `tf.image.resize_bicubic([image], size)[0]` (align_corners=False, legacy grid), float32."""
    return _resize(image, size, half_pixel=False).astype(np.float32)


def _sat_resnet(image: np.ndarray, size: int = 224, short: int = 256) -> np.ndarray:
    h, w = image.shape[:2]
    scale = short / min(h, w)
    nh, nw = (short, int(scale * w + 0.5)) if h < w else (int(scale * h + 0.5), short)
    image = cv2_cubic_resize(image, (nh, nw))
    top, left = int((nh - size) * 0.5), int((nw - size) * 0.5)
    return image[top:top + size, left:left + size].astype(np.float32)


def _sat_efficientnet(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    crop = int(size / (size + 32) * float(min(h, w)))
    top, left = (h - crop + 1) // 2, (w - crop + 1) // 2
    return tf1_resize_bicubic(image[top:top + crop, left:left + crop], (size, size))


def describe_source_transform(name: str) -> Optional[str]:
    """One line for the card: how `robust-zoo eval` prepares images for target `name`, None for timm's own."""
    from . import TARGETS, _load_sources
    _load_sources()
    target = TARGETS.get(name)
    if target is None:
        return None
    if target.source == 'sat-resnet50':
        return ("the source's: shortest edge to 256 with cv2's cubic resize (no antialiasing), center crop 224 "
                '(robust_zoo.convert.preprocess)')
    if target.source == 'sat-efficientnet':
        return ("the source's: center crop of res / (res + 32) of the shortest edge, TF 1 resize_bicubic to res "
                '(no antialiasing; robust_zoo.convert.preprocess)')
    return None


def source_transform(name: str, input_size: Optional[int] = None) -> Optional[Callable]:
    """The eval transform of target `name` (PIL image -> float tensor C x H x W in [0, 1]), None when the source
    evaluates with the dataset's own images (RobustBench) or `name` is no conversion target."""
    if describe_source_transform(name) is None:
        return None
    from . import TARGETS
    source = TARGETS[name].source
    if input_size is None:
        import timm
        input_size = timm.get_pretrained_cfg(name).input_size[-1]

    def transform(img) -> torch.Tensor:
        image = np.asarray(img.convert('RGB'), dtype=np.uint8)
        out = _sat_resnet(image, input_size) if source == 'sat-resnet50' else _sat_efficientnet(image, input_size)
        return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)) / 255.).float().clamp_(0, 1)

    transform.__doc__ = describe_source_transform(name)
    return transform

