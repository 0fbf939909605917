"""Wide ResNets (WRN-d-k) for 32x32 images, in the two layouts that published robust checkpoints use.

WRN-d-k (Zagoruyko & Komodakis 2016; Madry et al., TRADES, RobustBench): a 3x3 stem conv of 16 channels
(stride 1, padding 1), three stages of n = (d - 4) / 6 pre-activation blocks of widths 16k, 32k, 64k
(strides 1, 2, 2), a final BN-act, global average pooling and a linear classifier. A block is
BN-act-conv3x3(stride)-BN-act-conv3x3 plus a shortcut: the input itself, or, where the shape changes, a 1x1
conv (stride, no padding) of the *activated* input. Convs have no bias; BatchNorm has PyTorch's defaults
(eps 1e-5, momentum 0.1), as in both RobustBench implementations below (checked in robustbench 1.1.1).

`style` selects the one place where those implementations compute different functions:

* 'wrn' (default): every 3x3 conv zero-pads 1 on each side: the PyTorch WRN of Madry/TRADES and Dai et al.'s
  PAF WideResNet (RobustBench `paf_wide_resnet.PAF_WideResNet`).
* 'dm': DeepMind's WRN (RobustBench `dm_wide_resnet.DMWideResNet`, ported from JAX) emulates TF 'SAME'
  padding: a stride-2 3x3 conv pads (0, 1), i.e. only the bottom row and the right column; stride-1 convs
  pad 1 on each side as in 'wrn'.

Details checked against both RobustBench classes (numerically, in tests/test_convert_robustbench.py):

* Input normalization: PAF_WideResNet has none (it takes [0, 1] images as they are), so its tags set
  input_mean 0 / input_std 1. DMWideResNet computes `(x - mean) / std` first with non-persistent buffers
  (not in its state dict) CIFAR10_MEAN (0.4914, 0.4822, 0.4465) / CIFAR10_STD (0.2471, 0.2435, 0.2616),
  the same constants as this family's default cfg. Its optional input `padding` (zeros added before
  normalizing) is 0 for every CIFAR-10 model here and is not reproduced.
* Shortcut convs: both build one when in_planes != out_planes, here when stride != 1 or the width changes;
  the same blocks for any WRN (each stride-2 block also widens).
* Pooling: both use `avg_pool2d(out, 8)`, which is global average pooling for 32x32 inputs; this family
  pools globally, so other input sizes work too (and differ from the sources there).
* Activations: PAF_WideResNet passes ONE PSSiLU module to every site, the final BN-act included; the
  `*_pssilu_at` entrypoints share one as well (`model.shared_act`, act_shared=True by default).
  DMWideResNet's Swish is x * sigmoid(x), i.e. nn.SiLU (`*_silu_at`).
* PAF's dropout between the two convs (dropRate) is 0 in the published models and not implemented.

The block is rz_preact_resnet's PreActBlock, and module names (conv_stem,
stages.<i>.<j>.{bn1,conv1,bn2,conv2,shortcut}, norm, head.fc) are those of rz_preact_resnet's PreActResNet,
which built the `wrn_*` names before, so weights saved from it load here unchanged. Tagged cfgs (`.rb_*`) are
RobustBench weights converted by `robust-zoo convert` (robust_zoo/convert/robustbench.py); their `arch_args`
select the style, so the tagged name builds the right network with pretrained=False too.
Default cfg: CIFAR-10, threat model cifar10-linf.
"""
from functools import partial
from typing import Any, Callable, Dict, Optional, Sequence

from timm.models import generate_default_cfgs
from torch import nn

from ..layers import ACTIVATIONS
from ._builder import build_at_model, register_act_variants, rz_cfg
from .rz_preact_resnet import PreActBlock, PreActResNet

__all__ = ['WideResNet', 'WRN_STYLES', 'CIFAR10_MEAN', 'CIFAR10_STD']

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
WRN_STYLES = ('wrn', 'dm')


class WideResNet(PreActResNet):
    """WRN-depth-width taking images in [0, 1]; `style` 'wrn' or 'dm' (see the module docstring). The
    pre-activation ResNet of `rz_preact_resnet.py` with WRN stages and blocks, hence the same module names."""

    def __init__(self, depth: int = 28, width: int = 10, style: str = 'wrn', num_classes: int = 10, in_chans: int = 3,
                 global_pool: str = 'avg', drop_rate: float = 0.0, act_layer: Callable[..., nn.Module] = nn.ReLU,
                 input_mean: Sequence[float] = CIFAR10_MEAN, input_std: Sequence[float] = CIFAR10_STD,
                 shared_act: Optional[nn.Module] = None):
        if (depth - 4) % 6 or depth < 10:
            raise ValueError(f'WideResNet depth must be 6n + 4 (10, 16, 28, 34, 70, ...), got {depth}.')
        if style not in WRN_STYLES:
            raise ValueError(f'WideResNet style must be one of {WRN_STYLES}, got {style!r}.')
        super().__init__(
            layers=((depth - 4) // 6,) * 3, widths=(16 * width, 32 * width, 64 * width), stem_width=16,
            num_classes=num_classes, in_chans=in_chans, global_pool=global_pool, drop_rate=drop_rate,
            act_layer=act_layer, input_mean=input_mean, input_std=input_std, shared_act=shared_act,
            block=partial(PreActBlock, style=style))
        self.style = style


_ARCHS = {
    'wrn_28_10': dict(depth=28, width=10),
    'wrn_34_10': dict(depth=34, width=10),
    'wrn_70_16': dict(depth=70, width=16),
}


def _create(arch: str, variant: str, pretrained: bool = False, **kwargs: Any) -> WideResNet:
    return build_at_model(WideResNet, variant, pretrained,
                          feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2)),
                          **dict(_ARCHS[arch], **kwargs))


def _cfg(**kwargs: Any):
    kwargs.setdefault('input_mean', CIFAR10_MEAN)
    kwargs.setdefault('input_std', CIFAR10_STD)
    return rz_cfg(dataset='cifar10', threat_model='cifar10-linf', input_size=(3, 32, 32), num_classes=10,
                  first_conv='conv_stem', classifier='head.fc', **kwargs)


def _rb_cfg(name: str, paper_id: str, license: str, style: str, mean: Sequence[float] = CIFAR10_MEAN,
            std: Sequence[float] = CIFAR10_STD):
    """A RobustBench model converted by `robust-zoo convert`: pretrained=True loads model_cards/<name>/ (what
    `robust-zoo convert --card` writes), else the Hub repo <org>/<name> (see robust_zoo.models._builder)."""
    return _cfg(input_mean=mean, input_std=std, arch_args=dict(style=style),
                license=license, paper_ids=f'arXiv:{paper_id}', origin_url='https://robustbench.github.io/')


_PAF = dict(style='wrn', mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # PAF_WideResNet: no input normalization
_DM = dict(style='dm')

# name.tag -> (arXiv id, license of the authors' release, architecture); the sources are in convert/robustbench.py
_RB_TAGS: Dict[str, Any] = {
    'wrn_28_10_pssilu_at.rb_dai2021': ('2110.05626', 'unknown', _PAF),
    'wrn_70_16_silu_at.rb_gowal2020_70_16_extra': ('2010.03593', 'apache-2.0', _DM),
    'wrn_70_16_silu_at.rb_gowal2020_70_16': ('2010.03593', 'apache-2.0', _DM),
    'wrn_28_10_silu_at.rb_gowal2020_28_10_extra': ('2010.03593', 'apache-2.0', _DM),
    'wrn_70_16_silu_at.rb_rebuffi2021_70_16_extra': ('2103.01946', 'apache-2.0', _DM),
    'wrn_70_16_silu_at.rb_rebuffi2021_70_16_ddpm': ('2103.01946', 'apache-2.0', _DM),
    'wrn_28_10_silu_at.rb_rebuffi2021_28_10_ddpm': ('2103.01946', 'apache-2.0', _DM),
    'wrn_70_16_silu_at.rb_wang2023_70_16': ('2302.04638', 'mit', _DM),
    'wrn_28_10_silu_at.rb_wang2023_28_10': ('2302.04638', 'mit', _DM),
}


default_cfgs = generate_default_cfgs({
    **{f'{arch}_{act}_at': _cfg() for arch in _ARCHS for act in ACTIVATIONS},
    **{name: _rb_cfg(name, paper_id, license, **arch) for name, (paper_id, license, arch) in _RB_TAGS.items()},
})

for _arch, _args in _ARCHS.items():
    register_act_variants(
        globals(), _arch, _create, ACTIVATIONS,
        f"WRN-{_args['depth']}-{_args['width']} (pre-activation Wide ResNet), inputs in [0, 1]; default cfg: CIFAR-10, "
        f"threat model cifar10-linf; `style='dm'` gives DeepMind's TF-'SAME' stride-2 padding.")
