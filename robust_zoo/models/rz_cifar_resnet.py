"""He et al.'s CIFAR ResNets (ResNet-20/32/56, "Deep Residual Learning", sec. 4.2) for 28x28 and 32x32.

Depth 6n + 2: a 3x3 stem of 16 channels, three stages of n basic blocks (16, 32, 64 channels, strides
1, 2, 2), global average pooling and a linear classifier; shortcuts are parameter-free (option A:
stride-2 subsampling and zero channel padding), as in the paper, so ResNet-20 has ~0.27M parameters.
The stage widths do not change with depth, which makes ResNet-20 -> 32 -> 56 the small analogue of
Sparta's ResNet-18 -> ResNet-34 transfer. Default cfg: Fashion-MNIST (in_chans 1, 28x28).
"""
from functools import partial
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from timm.models import checkpoint_seq, generate_default_cfgs
from torch import nn

from ._pretrained import with_published
from ..layers import ACTIVATIONS
from ._base import SmallImageNet, make_stages
from ._builder import build_at_model, register_act_variants, rz_cfg

__all__ = ['CifarResNet']

FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)


class BasicBlock(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, stride: int, act_layer: Callable[..., nn.Module]):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = act_layer(inplace=True)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.act2 = act_layer(inplace=True)
        self.stride, self.pad = stride, out_chs - in_chs

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class CifarResNet(SmallImageNet):
    """ResNet-(6n+2) taking images in [0, 1]."""

    def __init__(self, depth: int = 20, num_classes: int = 10, in_chans: int = 3,
                 widths: Sequence[int] = (16, 32, 64), global_pool: str = 'avg', drop_rate: float = 0.0,
                 act_layer: Callable[..., nn.Module] = nn.ReLU, input_mean=FASHION_MNIST_MEAN,
                 input_std=FASHION_MNIST_STD, shared_act=None):
        super().__init__(input_mean, input_std, in_chans, num_classes, shared_act)
        if (depth - 2) % 6:
            raise ValueError(f'CifarResNet depth must be 6n + 2 (20, 32, 56, ...), got {depth}.')
        n = (depth - 2) // 6
        self.conv_stem = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = act_layer(inplace=True)
        self.stages, stage_info = make_stages(
            partial(BasicBlock, act_layer=act_layer), (n,) * len(widths), widths, widths[0])
        self.feature_info = [dict(num_chs=widths[0], reduction=1, module='act1'), *stage_info]
        self._init_head(widths[-1], global_pool, drop_rate)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv_stem(self.normalize(x))))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)


def _create(depth: int, arch: str, variant: str, pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return build_at_model(
        CifarResNet, variant, pretrained, depth=depth,
        feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3)), **kwargs)


def _cfg(**kwargs: Any):
    return rz_cfg(
        dataset='fashion-mnist', threat_model='fashion-mnist-linf', input_size=(1, 28, 28), num_classes=10,
        input_mean=FASHION_MNIST_MEAN, input_std=FASHION_MNIST_STD, first_conv='conv_stem',
        classifier='head.fc', pool_size=(7, 7), **kwargs)


_DEPTHS = {'resnet20': 20, 'resnet32': 32, 'resnet56': 56}

# Published weights (robust_zoo/published.json) come first as `<arch>.<tag>` cfgs: hf_hub_id, and `file` when the
# checkout's model_cards/<arch>.<tag>/model.safetensors exists; robust_zoo.models._pretrained.register_published
# re-registers them.
default_cfgs = generate_default_cfgs(with_published(
    {f'{arch}_{act}_at': _cfg() for arch in _DEPTHS for act in ACTIVATIONS}))

for _arch, _depth in _DEPTHS.items():
    register_act_variants(
        globals(), _arch, partial(_create, _depth), ACTIVATIONS,
        f"He et al.'s CIFAR ResNet-{_depth} (option A shortcuts), inputs in [0, 1]; "
        'default cfg: Fashion-MNIST 1x28x28, threat model fashion-mnist-linf.')
