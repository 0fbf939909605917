"""A small fully connected network in the style of the capped-ReLU paper (Sooksatra et al., arXiv 2405.03777).

The paper studies capped ReLU on fully connected MNIST networks; its exact layer sizes are not public.
robust_zoo's choice: `mlp3` = flatten -> 256 -> act -> 256 -> act -> classes (3 linear layers, no
normalization layers), which keeps every activation on the path of the attack. Default cfg:
Fashion-MNIST 1x28x28 (fixed input size).
"""
from typing import Any, Callable, Sequence, Tuple, Union

import torch
from timm.layers import to_2tuple
from timm.models import generate_default_cfgs
from torch import nn

from ._pretrained import with_published
from ..layers import ACTIVATIONS
from ._base import SmallImageNet
from ._builder import build_at_model, register_act_variants, rz_cfg
from .rz_cifar_resnet import FASHION_MNIST_MEAN, FASHION_MNIST_STD

__all__ = ['MLP']


class MLP(SmallImageNet):
    """Fully connected network on flattened images in [0, 1]."""

    def __init__(self, hidden: Sequence[int] = (256, 256), num_classes: int = 10, in_chans: int = 1,
                 img_size: Union[int, Tuple[int, int]] = 28, drop_rate: float = 0.0,
                 act_layer: Callable[..., nn.Module] = nn.ReLU, input_mean=FASHION_MNIST_MEAN,
                 input_std=FASHION_MNIST_STD, shared_act=None, global_pool: str = ''):
        super().__init__(input_mean, input_std, in_chans, num_classes, shared_act)
        if global_pool:  # timm's save_for_hf records global_pool='' in config.json; only '' exists here
            raise ValueError(f'mlp3 has no spatial pooling: global_pool must be empty, got {global_pool!r}.')
        h, w = to_2tuple(img_size)
        layers, in_features = [], in_chans * h * w
        for width in hidden:
            layers += [nn.Linear(in_features, width), act_layer(inplace=True)]
            in_features = width
        self.stages = nn.Sequential(*layers)
        self._init_head(in_features, global_pool='', drop_rate=drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.normalize(x).flatten(1))


def _create(arch: str, variant: str, pretrained: bool = False, **kwargs: Any) -> MLP:
    if kwargs.get('features_only'):
        raise ValueError(f'{variant} is fully connected and has no feature maps: features_only is not supported.')
    return build_at_model(MLP, variant, pretrained, **kwargs)


# published `mlp3_<act>_at.<tag>` cfgs first (robust_zoo/published.json; see rz_cifar_resnet.py)
default_cfgs = generate_default_cfgs(with_published({
    f'mlp3_{act}_at': rz_cfg(
        dataset='fashion-mnist', threat_model='fashion-mnist-linf', input_size=(1, 28, 28), num_classes=10,
        input_mean=FASHION_MNIST_MEAN, input_std=FASHION_MNIST_STD, fixed_input_size=True,
        first_conv='stages.0', classifier='head.fc')
    for act in ACTIVATIONS
}))

register_act_variants(
    globals(), 'mlp3', _create, ACTIVATIONS,
    'Small fully connected net (784-256-256-10, capped-ReLU paper style), inputs in [0, 1]; '
    'default cfg: Fashion-MNIST, threat model fashion-mnist-linf.')
