"""Croce, Andriushchenko and Hein's small CNN ("LeNetSmall"; "Provable robustness of ReLU networks via
maximization of linear regions", AISTATS 2019; github.com/max-andr/provable-robustness-max-linear-regions,
`models.py`, class `LeNetSmall`).

conv 16 4x4 stride 2 -> act -> conv 32 4x4 stride 2 -> act -> flatten -> FC 100 -> act -> FC classes, all with
biases, no normalization layers, no pooling. Their TF 'SAME' padding on a 28x28 input pads one pixel on every
side at both convolutions (28 -> 14 -> 7), so `padding=1` here is the same network. Weights start as theirs:
He truncated normal (std sqrt(2 / fan_in), cut at 2 std, as TF's `truncated_normal`), biases zero.
robust_zoo's one change: the input normalization (Fashion-MNIST mean/std) is the model's first layer, as in
every robust_zoo model, so inputs are [0, 1] images exactly as in the paper.

`lenet_small` is their network. `lenet_wide` is robust_zoo's wider sibling (2x channels, FC 512), the same
layout with ~10x the multiply-adds, for a stronger model at a small cost. Default cfg: Fashion-MNIST 1x28x28.
"""
import math
from typing import Any, Callable, Tuple, Union

import torch
from timm.layers import to_2tuple, trunc_normal_
from timm.models import generate_default_cfgs
from torch import nn

from ..layers import ACTIVATIONS
from ._base import SmallImageNet
from ._builder import build_at_model, register_act_variants, rz_cfg
from ._pretrained import with_published
from .rz_cifar_resnet import FASHION_MNIST_MEAN, FASHION_MNIST_STD

__all__ = ['LeNetSmall']


class LeNetSmall(SmallImageNet):
    """Two strided 4x4 convolutions and two fully connected layers, on images in [0, 1]."""

    def __init__(self, channels: Tuple[int, int] = (16, 32), hidden: int = 100, num_classes: int = 10,
                 in_chans: int = 1, img_size: Union[int, Tuple[int, int]] = 28, drop_rate: float = 0.0,
                 act_layer: Callable[..., nn.Module] = nn.ReLU, input_mean=FASHION_MNIST_MEAN,
                 input_std=FASHION_MNIST_STD, shared_act=None, global_pool: str = ''):
        super().__init__(input_mean, input_std, in_chans, num_classes, shared_act)
        if global_pool:  # timm's save_for_hf records global_pool='' in config.json; only '' exists here
            raise ValueError(f'lenet has no spatial pooling: global_pool must be empty, got {global_pool!r}.')
        c1, c2 = channels
        h, w = (math.ceil(math.ceil(s / 2) / 2) for s in to_2tuple(img_size))  # TF 'SAME' with stride 2, twice
        self.stages = nn.Sequential(
            nn.Conv2d(in_chans, c1, 4, 2, 1), act_layer(inplace=True),
            nn.Conv2d(c1, c2, 4, 2, 1), act_layer(inplace=True),
            nn.Flatten(), nn.Linear(c2 * h * w, hidden), act_layer(inplace=True),
        )
        self.feature_info = [dict(num_chs=c1, reduction=2, module='stages.1'),
                             dict(num_chs=c2, reduction=4, module='stages.3')]
        self._init_head(hidden, global_pool='', drop_rate=drop_rate)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                std = math.sqrt(2.0 / (m.weight[0].numel()))
                trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.normalize(x))


def _create(arch: str, variant: str, pretrained: bool = False, **kwargs: Any) -> LeNetSmall:
    if kwargs.get('features_only'):
        raise ValueError(f'{variant} ends in fully connected layers: features_only is not supported.')
    arch_kwargs = dict(lenet_small=dict(channels=(16, 32), hidden=100), lenet_wide=dict(channels=(32, 64), hidden=512))
    return build_at_model(LeNetSmall, variant, pretrained, **{**arch_kwargs[arch], **kwargs})


def _cfg(**kwargs: Any):
    return rz_cfg(
        dataset='fashion-mnist', threat_model='fashion-mnist-linf', input_size=(1, 28, 28), num_classes=10,
        input_mean=FASHION_MNIST_MEAN, input_std=FASHION_MNIST_STD, fixed_input_size=True,
        first_conv='stages.0', classifier='head.fc', **kwargs)


# published `<arch>_<act>_at.<tag>` cfgs first (robust_zoo/published.json; see rz_cifar_resnet.py)
default_cfgs = generate_default_cfgs(with_published({
    f'{arch}_{act}_at': _cfg() for arch in ('lenet_small', 'lenet_wide') for act in ACTIVATIONS
}))

register_act_variants(
    globals(), 'lenet_small', _create, ACTIVATIONS,
    'Croce et al. (AISTATS 2019) LeNetSmall: conv 16 4x4/2, conv 32 4x4/2, FC 100, FC classes; inputs in [0, 1]; '
    'default cfg: Fashion-MNIST, threat model fashion-mnist-linf.')
register_act_variants(
    globals(), 'lenet_wide', _create, ACTIVATIONS,
    'LeNetSmall at 2x width (conv 32 4x4/2, conv 64 4x4/2, FC 512, FC classes); inputs in [0, 1]; '
    'default cfg: Fashion-MNIST, threat model fashion-mnist-linf.')
