"""ImageNet-scale ResNets, ResNeXt and Wide ResNet for adversarial training (timm's ResNet).

The architecture is timm's `ResNet` (stride on the 3x3 conv, as in SAT's ResNet-50), with input
normalization inside the model. SAT (Xie et al.) trains ResNet-50 and ResNeXt-152 32x8d at Linf 4/255.
"""
from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import generate_default_cfgs
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from ..layers import ACTIVATIONS
from ._builder import build_at_model, register_act_variants, rz_cfg
from ._normalize import NormalizedInputMixin

__all__ = ['ResNetAT']


class ResNetAT(NormalizedInputMixin, ResNet):
    """timm's ResNet taking images in [0, 1]."""

    def __init__(self, *, input_mean, input_std, shared_act=None, **kwargs: Any):
        super().__init__(**kwargs)
        self._init_robust(input_mean, input_std, kwargs.get('in_chans', 3), shared_act)


_ARCHS = {
    'resnet18': dict(block=BasicBlock, layers=(2, 2, 2, 2)),
    'resnet34': dict(block=BasicBlock, layers=(3, 4, 6, 3)),
    'resnet50': dict(block=Bottleneck, layers=(3, 4, 6, 3)),
    'resnet101': dict(block=Bottleneck, layers=(3, 4, 23, 3)),
    'resnet152': dict(block=Bottleneck, layers=(3, 8, 36, 3)),
    'resnext152_32x8d': dict(block=Bottleneck, layers=(3, 8, 36, 3), cardinality=32, base_width=8),
    'wide_resnet50_2': dict(block=Bottleneck, layers=(3, 4, 6, 3), base_width=128),
}


def _create_resnet(arch: str, variant: str, pretrained: bool = False, **kwargs: Any) -> ResNetAT:
    return build_at_model(ResNetAT, variant, pretrained, **dict(_ARCHS[arch], **kwargs))


def _cfg(**kwargs: Any):
    return rz_cfg(
        dataset='imagenet-1k', threat_model='imagenet-linf', input_mean=IMAGENET_DEFAULT_MEAN,
        input_std=IMAGENET_DEFAULT_STD, first_conv='conv1', classifier='fc', pool_size=(7, 7), **kwargs)


default_cfgs = generate_default_cfgs({
    f'{arch}_{act}_at': _cfg() for arch in _ARCHS for act in ACTIVATIONS
})

for _arch in _ARCHS:
    register_act_variants(
        globals(), _arch, _create_resnet, ACTIVATIONS,
        f'{_arch} (timm ResNet) for ImageNet, inputs in [0, 1], threat model imagenet-linf.')
