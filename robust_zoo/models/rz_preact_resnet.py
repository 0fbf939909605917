"""Pre-activation ResNet-18 for 32x32 images (He et al. 2016, identity mappings): the network of Fast AT
(Wong et al. 2020) and of most CIFAR-10 adversarial-training baselines; 64-channel stem, stages of 64, 128,
256, 512, pre-activation blocks (BN-act-conv-BN-act-conv) with 1x1 projection shortcuts where the shape
changes, a final BN-act, global average pooling, a linear classifier. Default cfg: CIFAR-10. The Wide
ResNets of the robustness literature are in `rz_wide_resnet.py` (same module names).
"""
from functools import partial
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from timm.models import checkpoint_seq, generate_default_cfgs
from torch import nn

from ..layers import ACTIVATIONS
from ._base import SmallImageNet, make_stages
from ._builder import build_at_model, register_act_variants, rz_cfg

__all__ = ['PreActBlock', 'PreActResNet', 'CIFAR10_MEAN', 'CIFAR10_STD']

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)


class PreActBlock(nn.Module):
    """BN-act-conv3x3(stride)-BN-act-conv3x3 plus a shortcut: the input, or a 1x1 conv of the *activated* input
    where the shape changes (as in every robust pre-act ResNet / WRN checkpoint). `style='dm'`: a stride-2 conv
    pads only the bottom row and right column (TF 'SAME', DeepMind's WRN); 'wrn' pads 1 on every side."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, act_layer: Callable[..., nn.Module],
                 style: str = 'wrn'):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.act1 = act_layer(inplace=True)
        self.pad = (0, 1, 0, 1) if style == 'dm' and stride == 2 else None
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 0 if self.pad else 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.act2 = act_layer(inplace=True)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)
        needs_proj = stride != 1 or in_chs != out_chs
        self.shortcut = nn.Conv2d(in_chs, out_chs, 1, stride, bias=False) if needs_proj else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        if self.pad is not None:
            out = F.pad(out, self.pad)
        out = self.conv1(out)
        out = self.conv2(self.act2(self.bn2(out)))
        return out + shortcut


class PreActResNet(SmallImageNet):
    """Pre-activation ResNet taking images in [0, 1]; the first stage has stride 1, the others 2."""

    def __init__(self, layers: Sequence[int] = (2, 2, 2, 2), widths: Sequence[int] = (64, 128, 256, 512),
                 stem_width: int = 64, num_classes: int = 10, in_chans: int = 3, global_pool: str = 'avg',
                 drop_rate: float = 0.0, act_layer: Callable[..., nn.Module] = nn.ReLU,
                 input_mean=CIFAR10_MEAN, input_std=CIFAR10_STD, shared_act=None,
                 block: Callable[..., nn.Module] = PreActBlock):
        super().__init__(input_mean, input_std, in_chans, num_classes, shared_act)
        self.conv_stem = nn.Conv2d(in_chans, stem_width, 3, 1, 1, bias=False)
        self.stages, self.feature_info = make_stages(
            partial(block, act_layer=act_layer), layers, widths, stem_width)
        self.norm = nn.BatchNorm2d(widths[-1])
        self.act = act_layer(inplace=True)
        self._init_head(widths[-1], global_pool, drop_rate)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_stem(self.normalize(x))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.stages, x)
        else:
            x = self.stages(x)
        return self.act(self.norm(x))


_ARCHS = {
    'preact_resnet18': dict(layers=(2, 2, 2, 2), widths=(64, 128, 256, 512), stem_width=64),
}


def _create(arch: str, variant: str, pretrained: bool = False, **kwargs: Any) -> PreActResNet:
    args = _ARCHS[arch]
    feature_cfg = dict(flatten_sequential=True, out_indices=tuple(range(len(args['layers']))))
    return build_at_model(PreActResNet, variant, pretrained, feature_cfg=feature_cfg, **dict(args, **kwargs))


def _cfg(**kwargs: Any):
    return rz_cfg(
        dataset='cifar10', threat_model='cifar10-linf', input_size=(3, 32, 32), num_classes=10,
        input_mean=CIFAR10_MEAN, input_std=CIFAR10_STD, first_conv='conv_stem', classifier='head.fc', **kwargs)


default_cfgs = generate_default_cfgs({f'{arch}_{act}_at': _cfg() for arch in _ARCHS for act in ACTIVATIONS})

for _arch in _ARCHS:
    register_act_variants(
        globals(), _arch, _create, ACTIVATIONS,
        f'{_arch} (pre-activation ResNet), inputs in [0, 1]; default cfg: CIFAR-10, threat model cifar10-linf.')
