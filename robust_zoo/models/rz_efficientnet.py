"""EfficientNet B0-B7 and L1 for adversarial training (timm's EfficientNet and block builder).

SAT (Xie et al., sec. 5.2) scales EfficientNet with SiLU up to L1, which its code defines as width 3.9,
depth 3.7, resolution 600, dropout 0.5 (~273M parameters, as Noisy Student's L1); timm has L2 but no L1.
`efficientnet_<size>_at` is the SiLU model (the paper's activation); `efficientnet_<size>_<act>_at`
swaps it, including the activations inside BatchNormAct2d and squeeze-excite (their sigmoid gates stay).
Convolutions use PyTorch padding by default.

Tagged cfgs `efficientnet_<size>_silu_at.sat_in1k` (b0-b7, l1) and `efficientnet_l1_silu_at.sat_enhanced_in1k`
(EfficientNet-L1-Enhanced, evaluated with the exponential moving average of its weights) are SAT's released
TensorFlow checkpoints converted by `robust-zoo convert sat-efficientnet` (robust_zoo/convert/sat.py documents
what was checked in the source). Their `arch_args` give TF 'same' padding (`pad_type='same'`), also with
pretrained=False; BatchNorm keeps PyTorch's eps 1e-5, the value SAT's README evaluates them with; their inputs
are scaled to [-1, 1] (mean 0.5, std 0.5).
"""
from functools import partial
from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import generate_default_cfgs
from timm.models._efficientnet_builder import decode_arch_def, round_channels
from timm.models.efficientnet import EfficientNet
from torch import nn

from ..layers import ACTIVATIONS
from ._builder import build_at_model, register_act_variants, rz_cfg
from ._normalize import NormalizedInputMixin

__all__ = ['EfficientNetAT', 'SAT_EFFICIENTNET_TAGS']


class EfficientNetAT(NormalizedInputMixin, EfficientNet):
    """timm's EfficientNet taking images in [0, 1]."""

    def __init__(self, *, input_mean, input_std, shared_act=None, **kwargs: Any):
        super().__init__(**kwargs)
        self._init_robust(input_mean, input_std, kwargs.get('in_chans', 3), shared_act)


# EfficientNet's stage table (Tan & Le 2019), the one timm's `_gen_efficientnet` decodes
_ARCH_DEF = [
    ['ds_r1_k3_s1_e1_c16_se0.25'],
    ['ir_r2_k3_s2_e6_c24_se0.25'],
    ['ir_r2_k5_s2_e6_c40_se0.25'],
    ['ir_r3_k3_s2_e6_c80_se0.25'],
    ['ir_r3_k5_s1_e6_c112_se0.25'],
    ['ir_r4_k5_s2_e6_c192_se0.25'],
    ['ir_r1_k3_s1_e6_c320_se0.25'],
]

# size: (width multiplier, depth multiplier, resolution, dropout)
_SIZES = {
    'b0': (1.0, 1.0, 224, 0.2), 'b1': (1.0, 1.1, 240, 0.2), 'b2': (1.1, 1.2, 260, 0.3),
    'b3': (1.2, 1.4, 300, 0.3), 'b4': (1.4, 1.8, 380, 0.4), 'b5': (1.6, 2.2, 456, 0.4),
    'b6': (1.8, 2.6, 528, 0.5), 'b7': (2.0, 3.1, 600, 0.5), 'l1': (3.9, 3.7, 600, 0.5),
}


def _create(arch: str, variant: str, pretrained: bool = False, **kwargs: Any) -> EfficientNetAT:
    width, depth, _, dropout = _SIZES[arch.rpartition('_')[2]]
    round_chs_fn = partial(round_channels, multiplier=width, divisor=8)
    kwargs.setdefault('drop_rate', dropout)
    return build_at_model(
        EfficientNetAT, variant, pretrained,
        block_args=decode_arch_def(_ARCH_DEF, depth), num_features=round_chs_fn(1280), stem_size=32,
        round_chs_fn=round_chs_fn, norm_layer=nn.BatchNorm2d,
        feature_cfg=dict(flatten_sequential=True), **kwargs)


def _cfg(res: int, **kwargs: Any):
    kwargs.setdefault('threat_model', 'imagenet-linf')
    kwargs.setdefault('input_mean', IMAGENET_DEFAULT_MEAN)
    kwargs.setdefault('input_std', IMAGENET_DEFAULT_STD)
    return rz_cfg(
        dataset='imagenet-1k', input_size=(3, res, res), pool_size=(res // 32, res // 32),
        first_conv='conv_stem', classifier='classifier', **kwargs)


# SAT's released EfficientNets (EfficientNet/download_efficientnet.py): name.tag -> size
SAT_EFFICIENTNET_TAGS = {
    **{f'efficientnet_{s}_silu_at.sat_in1k': s for s in _SIZES},
    'efficientnet_l1_silu_at.sat_enhanced_in1k': 'l1',
}


def _sat_cfg(size: str):
    """SAT weights converted by `robust-zoo convert sat-efficientnet`: pretrained=True loads model_cards/<name>/,
    else the Hub repo <org>/<name> (robust_zoo.models._builder; no Hub id here, as nothing is published yet). The
    source's eval pipeline (EfficientNet/preprocessing.py) center-crops res / (res + 32) of the short side and
    resizes bicubically; `--sat_preprocessing` (EfficientNet/main.py) scales RGB to [-1, 1]."""
    res = _SIZES[size][2]
    return _cfg(
        res, threat_model='imagenet-linf-sat', input_mean=(0.5, 0.5, 0.5), input_std=(0.5, 0.5, 0.5),
        interpolation='bicubic', crop_pct=res / (res + 32), license='mit',
        origin_url='https://github.com/cihangxie/SmoothAdversarialTraining', paper_ids='arXiv:2006.14536',
        paper_name='Smooth Adversarial Training', arch_args=dict(pad_type='same'))


default_cfgs = generate_default_cfgs({
    **{f'efficientnet_{s}_{act}_at': _cfg(v[2]) for s, v in _SIZES.items() for act in ACTIVATIONS},
    **{f'efficientnet_{s}_at': _cfg(v[2]) for s, v in _SIZES.items()},
    **{name: _sat_cfg(size) for name, size in SAT_EFFICIENTNET_TAGS.items()},
})

for _size, (_w, _d, _res, _drop) in _SIZES.items():
    _doc = (f'EfficientNet-{_size.upper()} (width {_w}, depth {_d}, {_res}px, dropout {_drop}), inputs in [0, 1], '
            'threat model imagenet-linf.')
    register_act_variants(globals(), f'efficientnet_{_size}', _create, ACTIVATIONS, _doc, alias_act='silu')
