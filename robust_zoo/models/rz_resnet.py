"""ImageNet-scale ResNets, ResNeXt and Wide ResNet for adversarial training (timm's ResNet).

The architecture is timm's `ResNet` (stride on the 3x3 conv, as in SAT's ResNet-50), with input
normalization inside the model. SAT (Xie et al.) trains ResNet-50 and ResNeXt-152 32x8d at Linf 4/255.

Tagged cfgs `resnet50_<act>_at.sat_in1k` are SAT's released TensorFlow checkpoints converted by
`robust-zoo convert sat-resnet50` (robust_zoo/convert/sat.py, which documents what was checked in the
source). Their `arch_args` build the network those weights need, also with pretrained=False: TF 'SAME'
stem max-pooling (`stem_pool='tf_same'`), tanh-approximated GELU (`gelu_approximate='tanh'`) and
softplus with alpha 1 (`act_kwargs`); their inputs are scaled to [-1, 1] (mean 0.5, std 0.5).
"""
from functools import partial
from typing import Any, Callable, Dict

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers.activations import GELU, GELUTanh
from timm.layers.pool2d_same import MaxPool2dSame
from timm.models import generate_default_cfgs
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from ..layers import ACTIVATIONS
from ._builder import build_at_model, register_act_variants, rz_cfg
from ._normalize import NormalizedInputMixin

__all__ = ['ResNetAT', 'SAT_RESNET50_ACTIVATIONS']

STEM_POOLS = ('', 'tf_same')
GELU_APPROXIMATIONS = ('none', 'tanh')


class ResNetAT(NormalizedInputMixin, ResNet):
    """timm's ResNet taking images in [0, 1].

    `stem_pool='tf_same'` makes the stem max-pool (3x3, stride 2) pad like TensorFlow's 'SAME' (only what the
    output size needs, at the bottom/right, with -inf) instead of 1 on every side: for even feature maps the
    two pick different windows, so TF checkpoints need it. `gelu_approximate='tanh'` builds every GELU as
    the tanh approximation (TF's and SAT's `gelu_fn`); the activation's name cannot say that.
    """

    def __init__(self, *, input_mean, input_std, shared_act=None, stem_pool: str = '', gelu_approximate: str = 'none',
                 **kwargs: Any):
        if stem_pool not in STEM_POOLS:
            raise ValueError(f'stem_pool must be one of {STEM_POOLS}, got {stem_pool!r}.')
        if gelu_approximate not in GELU_APPROXIMATIONS:
            raise ValueError(f'gelu_approximate must be one of {GELU_APPROXIMATIONS}, got {gelu_approximate!r}.')
        if gelu_approximate == 'tanh':
            kwargs['act_layer'] = partial(_tanh_gelu, kwargs.get('act_layer') or nn.ReLU)
        super().__init__(**kwargs)
        if stem_pool == 'tf_same':
            self.maxpool = MaxPool2dSame(3, stride=2)
        self._init_robust(input_mean, input_std, kwargs.get('in_chans', 3), shared_act)


def _tanh_gelu(act_layer: Callable[..., nn.Module], **kwargs: Any) -> nn.Module:
    act = act_layer(**kwargs)
    return GELUTanh() if isinstance(act, (GELU, nn.GELU)) else act


_ARCHS = {
    'resnet18': dict(block=BasicBlock, layers=(2, 2, 2, 2)),
    'resnet34': dict(block=BasicBlock, layers=(3, 4, 6, 3)),
    'resnet50': dict(block=Bottleneck, layers=(3, 4, 6, 3)),
    'resnet101': dict(block=Bottleneck, layers=(3, 4, 23, 3)),
    'resnet152': dict(block=Bottleneck, layers=(3, 8, 36, 3)),
    'resnext152_32x8d': dict(block=Bottleneck, layers=(3, 8, 36, 3), cardinality=32, base_width=8),
    'wide_resnet50_2': dict(block=Bottleneck, layers=(3, 4, 6, 3), base_width=128),
}

# SAT's released ResNet-50s (ResNet/download_resnet.py); mish has no robust_zoo activation
SAT_RESNET50_ACTIVATIONS = ('relu', 'silu', 'gelu', 'elu', 'smoothrelu', 'softplus')
_SAT_ACT_ARGS: Dict[str, Dict[str, Any]] = {
    'gelu': dict(gelu_approximate='tanh'),  # resnet_model.gelu_fn: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    'softplus': dict(act_kwargs=dict(alpha=1.0)),  # tf.nn.softplus: log(1 + exp(x))
}


def _create_resnet(arch: str, variant: str, pretrained: bool = False, **kwargs: Any) -> ResNetAT:
    return build_at_model(ResNetAT, variant, pretrained, **dict(_ARCHS[arch], **kwargs))


def _cfg(**kwargs: Any):
    kwargs.setdefault('threat_model', 'imagenet-linf')
    kwargs.setdefault('input_mean', IMAGENET_DEFAULT_MEAN)
    kwargs.setdefault('input_std', IMAGENET_DEFAULT_STD)
    return rz_cfg(dataset='imagenet-1k', first_conv='conv1', classifier='fc', pool_size=(7, 7), **kwargs)


def _sat_cfg(act: str):
    """SAT weights converted by `robust-zoo convert sat-resnet50`: pretrained=True loads model_cards/<name>/, else
    the Hub repo <org>/<name> (robust_zoo.models._builder; no Hub id here, as nothing is published yet). The
    source's eval pipeline (ResNet/third_party/imagenet_utils.py) resizes the short side to 256 bicubically
    and center-crops 224, then scales to [-1, 1] (ResNet/adv_model.py: image * 2/255 - 1)."""
    return _cfg(
        threat_model='imagenet-linf-sat', input_mean=(0.5, 0.5, 0.5), input_std=(0.5, 0.5, 0.5),
        interpolation='bicubic', crop_pct=0.875, license='mit',
        origin_url='https://github.com/cihangxie/SmoothAdversarialTraining', paper_ids='arXiv:2006.14536',
        paper_name='Smooth Adversarial Training', arch_args=dict(stem_pool='tf_same', **_SAT_ACT_ARGS.get(act, {})))


default_cfgs = generate_default_cfgs({
    **{f'{arch}_{act}_at': _cfg() for arch in _ARCHS for act in ACTIVATIONS},
    **{f'resnet50_{act}_at.sat_in1k': _sat_cfg(act) for act in SAT_RESNET50_ACTIVATIONS},
})

for _arch in _ARCHS:
    register_act_variants(
        globals(), _arch, _create_resnet, ACTIVATIONS,
        f'{_arch} (timm ResNet) for ImageNet, inputs in [0, 1], threat model imagenet-linf.')
