"""Smooth Adversarial Training (Xie et al., arXiv:2006.14536): the authors' TensorFlow checkpoints.

Source code read: github.com/cihangxie/SmoothAdversarialTraining at 988c080 (MIT license, both the repo's
LICENSE and EfficientNet/LICENSE), and tensorpack (github.com/tensorpack/tensorpack) for its layers' variable
names. Both readers are name-based (`tf_checkpoint.py`: reading, layouts, the all-or-nothing check): every name
must be mapped, or ignored by one of the documented patterns below; anything else is a ConversionError.

ResNet-50, source `sat-resnet50` (ResNet/resnet_model.py, nets.py, adv_model.py, main.py, download_resnet.py)
--------------------------------------------------------------------------------------------------------------
* Checkpoints: tensorpack ModelSaver files `Res50-<act>.{index,data-00000-of-00001,meta}`; activations relu,
  silu, gelu, elu, smoothrelu, softplus and mish (robust_zoo has no mish: not converted).
* Graph: NCHW (`argscope(..., data_format='NCHW')`). Stem: `fixed_padding(image, 7)` (3 on each side), conv0
  7x7/2 'valid' (= PyTorch padding 3), BN, activation, `MaxPooling('pool0', 3, strides=2, padding='SAME')`:
  TF 'SAME' pads only what the output needs, at the bottom/right, so on even maps its windows differ from
  PyTorch's padding=1; the tag builds `ResNetAT(stem_pool='tf_same')` (timm's MaxPool2dSame, -inf padding).
* Bottleneck `resnet_bottleneck`: conv1 1x1, conv2 3x3 with the stride (`fixed_padding(l, 3)` + 'valid' when
  the stride is 2, 'same' otherwise: both are PyTorch's padding 1), conv3 1x1 (BN gamma zero-initialised, no
  activation), `convshortcut` 1x1 with the stride where the channels change ('same' never pads a 1x1 conv),
  activation after the sum. That is timm's Bottleneck (stride on the 3x3 conv, `downsample` conv + BN).
  Groups: group{0..3} of (3, 4, 6, 3) blocks, widths 64..512 x 4; `group`/`res2_bottleneck` give ResNeXt
  (split convs, W of shape [3, 3, in/groups, out]); this reader is depth- and group-generic.
* Variables (tensorpack Conv2D/BatchNorm/FullyConnected): `<conv>/W` [kh, kw, in, out], `<conv>/bn/gamma`,
  `/beta`, `/mean/EMA`, `/variance/EMA` (the moving statistics; tensorpack BatchNorm epsilon 1e-5, momentum
  0.9, as PyTorch's defaults), `linear/W` [2048, 1000], `linear/b`; convs have no bias. BNActivation runs
  inside the conv's variable scope, so SmoothReLU's `smoothrelu_beta` (shape [1], initialised 20,
  b = beta**2, `relu(x - log(|x| b + 1) / b)`) is `conv0/`, `<block>/conv1/`, `<block>/conv2/` and, for the
  block output, `<block>/smoothrelu_beta`: one per activation site, as robust_zoo's SmoothReLU `beta_raw`.
* Only SmoothReLU leaves a trace in a checkpoint (its betas): otherwise the target's name decides the activation,
  as the download script's name does (Res50-<act>); a smoothrelu checkpoint and a non-smoothrelu target (or the
  reverse) fail on the betas.
* Mapping: conv0 -> conv1, conv0/bn -> bn1, group{g}/block{b}/conv{k} -> layer{g+1}.{b}.conv{k} / bn{k},
  convshortcut -> downsample.0 / .1, smoothrelu_beta -> act1 / act2 / act3 .beta_raw, linear -> fc.
* Activations (resnet_model.activation_list): relu; silu = tf.nn.swish = x sigmoid(x) (nn.SiLU); elu
  (alpha 1, nn.ELU); softplus = tf.nn.softplus = log(1 + exp(x)): robust_zoo's softplus with
  `act_kwargs=dict(alpha=1.0)` (its default is 10); gelu = `gelu_fn`, the tanh approximation:
  `ResNetAT(gelu_approximate='tanh')`. The tag's `arch_args` set these; the loader refuses a model without them.
* Input: tensorpack's dataflow reads BGR with cv2 (main.py says so; `image_preprocess` leaves the
  `tf.reverse` commented out) and `image * 2/255 - 1` (adv_model.py). robust_zoo models take RGB in [0, 1]:
  the model's InputNormalize has mean 0.5 / std 0.5 (the same map) and the conversion reverses conv0's input
  channels, so the stem sees the channels in the source's order. Eval preprocessing (imagenet_utils.py):
  bicubic resize of the short side to 256, center crop 224 (the tag's crop_pct 0.875, bicubic).
* Ignored by design (RESNET_IGNORED): `global_step`, `learning_rate` (ImageNetModel.optimizer's variable),
  `*/Momentum` (MomentumOptimizer slots), `EMA/*` (tensorpack moving summaries of training statistics).

EfficientNet, source `sat-efficientnet` (EfficientNet/efficientnet_builder.py, efficientnet_model.py,
utils.py, main.py, download_efficientnet.py)
------------------------------------------------------------------------------------------------------------
* Checkpoints: efficientnet-b0 ... b7, efficientnet-bL1 and efficientnet-bL1-enhanced (`<name>.{index,
  data-00000-of-00001,meta}`). The README evaluates them with `--batch_norm_epsilon=1e-5` (PyTorch's
  default; the builder's own default is 1e-3), `--sat_preprocessing=True` (RGB `image * 2/255 - 1`, no
  channel swap: TF decodes JPEGs as RGB) and `--moving_average_decay=0`, except L1-Enhanced with 0.9999:
  main.py then restores every weight and BN statistic from its `<name>/ExponentialMovingAverage` shadow
  (`ema.variables_to_restore(utils.get_ema_vars())`). Eval crop: res / (res + 32) of the short side, bicubic.
* Scaling (efficientnet_params): b0-b7 as timm, bL1 = (3.9, 3.7, 600, 0.5); round_filters / round_repeats
  (ceil) are timm's round_channels / decode_arch_def(depth_trunc='ceil'). Blocks: the seven stages of
  _DEFAULT_BLOCKS_ARGS (stage 0 expand ratio 1 = timm's 'ds' block), SE from the block's input channels,
  swish everywhere (SE included), sigmoid gate, skip when stride 1 and channels equal.
* Padding: every conv is TF 'same' (stem 3x3/2, depthwise k/s): the tag builds `pad_type='same'`.
* Variables (tf.layers names, numbered in call order within a block): `efficientnet-<size>/stem/conv2d/kernel`,
  `stem/tpu_batch_normalization/{gamma,beta,moving_mean,moving_variance}` (utils.BatchNormalization keeps
  that name; it declares them [1, 1, 1, 1, C]: accepted, as is [C]), `blocks_<i>/conv2d/kernel` (expand),
  `depthwise_conv2d/depthwise_kernel` [k, k, C, 1], `se/conv2d/{kernel,bias}` (reduce), `se/conv2d_1` (expand),
  `conv2d_1/kernel` (project; `conv2d` in expand-ratio-1 blocks) and `tpu_batch_normalization{,_1,_2}` in call
  order; `head/conv2d/kernel`, `head/tpu_batch_normalization`, `head/dense/{kernel,bias}`.
* Mapping: blocks_<i> is the i-th block of timm's `blocks` in order; ds: depthwise -> conv_dw, BN -> bn1,
  se -> se.conv_reduce / se.conv_expand, conv2d -> conv_pw, BN_1 -> bn2; ir: conv2d -> conv_pw, BN -> bn1,
  depthwise -> conv_dw, BN_1 -> bn2, se, conv2d_1 -> conv_pwl, BN_2 -> bn3; head -> conv_head, bn2, classifier.
* Ignored by design (EFFICIENTNET_IGNORED): `global_step`, `*/RMSProp`, `*/RMSProp_1`, `*/Momentum`
  (utils.build_optimizer's slots), and the shadows `*/ExponentialMovingAverage` when the raw weights are used
  (or the raw weights when the target uses the average: L1-Enhanced).

Reported numbers (the targets): the README's ResNet-50 table (clean and PGD-10/20/50 accuracy; no row for
softplus or mish) and the abstract's headline numbers: ResNet-50 ReLU 68.8 / 33.0 (accuracy = SAT's 69.7 minus
the stated 0.9) and SiLU 69.7 / 42.3, EfficientNet-L1 82.2 / 58.6, which the README's table gives to
L1-Enhanced. The abstract's attack is recorded as PGD-200, the protocol robust_zoo's `imagenet-linf-sat`
ascribes to the paper. The README's EfficientNet table has clean accuracy only: it is in the targets' notes.

tests/test_convert_sat.py checks all of this against TF forward passes on checkpoints with these names.
"""
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from . import ConversionError, Reported, Source, Target, register_source, register_target
from .tf_checkpoint import (
    PathLike, Plan, TFCheckpoint, checkpoint_prefix, finish_plan, ignored, state_dict_from,
)

__all__ = [
    'RESNET_IGNORED', 'EFFICIENTNET_IGNORED', 'EMA_SUFFIX', 'TFCheckpoint', 'checkpoint_prefix', 'load_sat_resnet',
    'load_sat_efficientnet', 'plan_sat_resnet', 'plan_sat_efficientnet',
]

ORIGIN_URL = 'https://github.com/cihangxie/SmoothAdversarialTraining'
PAPER = 'Xie, Tan, Gong, Yuille, Le: Smooth Adversarial Training (arXiv:2006.14536, 2020)'
LICENSE = 'mit'
THREAT_MODEL = 'imagenet-linf-sat'
EMA_SUFFIX = '/ExponentialMovingAverage'

# (pattern, why) of variables that are in the checkpoints by design and are no part of the network
RESNET_IGNORED: Tuple[Tuple[str, str], ...] = (
    (r'^global_step$', "the trainer's step counter"),
    (r'^learning_rate$', "ImageNetModel.optimizer's learning-rate variable (ResNet/third_party/imagenet_utils.py)"),
    (r'/Momentum$', 'MomentumOptimizer slots, one per trainable variable'),
    (r'^EMA/', "tensorpack add_moving_summary's running averages of training statistics"),
)
EFFICIENTNET_IGNORED: Tuple[Tuple[str, str], ...] = (
    (r'^global_step$', "the trainer's step counter"),
    (r'/(RMSProp|RMSProp_1|Momentum)$', 'optimizer slots of EfficientNet/utils.build_optimizer'),
)


# --- planning: names and shapes only -----------------------------------------------------------------------------

_TP_BN = {'gamma': 'weight', 'beta': 'bias', 'mean/EMA': 'running_mean', 'variance/EMA': 'running_var'}
_RESNET_RULES: Tuple[Tuple[str, Callable[[re.Match], Tuple[str, str]]], ...] = (
    (r'conv0/W', lambda m: ('conv1.weight', 'conv_bgr')),
    (r'conv0/bn/(gamma|beta|mean/EMA|variance/EMA)', lambda m: (f'bn1.{_TP_BN[m[1]]}', 'vec')),
    (r'conv0/smoothrelu_beta', lambda m: ('act1.beta_raw', 'scalar')),
    (r'group(\d+)/block(\d+)/conv([123])/W', lambda m: (f'{_block(m)}conv{m[3]}.weight', 'conv')),
    (r'group(\d+)/block(\d+)/conv([123])/bn/(gamma|beta|mean/EMA|variance/EMA)',
     lambda m: (f'{_block(m)}bn{m[3]}.{_TP_BN[m[4]]}', 'vec')),
    (r'group(\d+)/block(\d+)/conv([12])/smoothrelu_beta', lambda m: (f'{_block(m)}act{m[3]}.beta_raw', 'scalar')),
    (r'group(\d+)/block(\d+)/smoothrelu_beta', lambda m: (f'{_block(m)}act3.beta_raw', 'scalar')),
    (r'group(\d+)/block(\d+)/convshortcut/W', lambda m: (f'{_block(m)}downsample.0.weight', 'conv')),
    (r'group(\d+)/block(\d+)/convshortcut/bn/(gamma|beta|mean/EMA|variance/EMA)',
     lambda m: (f'{_block(m)}downsample.1.{_TP_BN[m[3]]}', 'vec')),
    (r'linear/W', lambda m: ('fc.weight', 'dense')),
    (r'linear/b', lambda m: ('fc.bias', 'vec')),
)


def _block(m: re.Match) -> str:
    return f'layer{int(m[1]) + 1}.{int(m[2])}.'


def plan_sat_resnet(shapes: Mapping[str, Sequence[int]], model: nn.Module, source: str = 'sat-resnet50') -> Plan:
    """model key -> (tensorpack variable, layout) for a ResNetAT, from the checkpoint's names and shapes alone."""
    mapped, unmapped = {}, []
    for name in shapes:
        if ignored(name, RESNET_IGNORED):
            continue
        for pattern, rule in _RESNET_RULES:
            m = re.fullmatch(pattern, name)
            if m:
                mapped[name] = rule(m)
                break
        else:
            unmapped.append(name)
    return finish_plan(source, model, shapes, mapped, unmapped)


_TF_BN = {'gamma': 'weight', 'beta': 'bias', 'moving_mean': 'running_mean', 'moving_variance': 'running_var'}
_SE = {'se/conv2d/kernel': ('se.conv_reduce.weight', 'conv'), 'se/conv2d/bias': ('se.conv_reduce.bias', 'vec'),
       'se/conv2d_1/kernel': ('se.conv_expand.weight', 'conv'), 'se/conv2d_1/bias': ('se.conv_expand.bias', 'vec')}
# per block type: conv layers and BN layers (call order) of the source -> timm module names
_EFFICIENTNET_BLOCKS = {
    'DepthwiseSeparableConv': (
        {'depthwise_conv2d/depthwise_kernel': ('conv_dw.weight', 'dw'), 'conv2d/kernel': ('conv_pw.weight', 'conv')},
        ('bn1', 'bn2')),
    'InvertedResidual': (
        {'conv2d/kernel': ('conv_pw.weight', 'conv'), 'depthwise_conv2d/depthwise_kernel': ('conv_dw.weight', 'dw'),
         'conv2d_1/kernel': ('conv_pwl.weight', 'conv')},
        ('bn1', 'bn2', 'bn3')),
}
_BN_LAYER = re.compile(r'tpu_batch_normalization(?:_(\d+))?/(gamma|beta|moving_mean|moving_variance)')


def _efficientnet_blocks(model: nn.Module) -> List[Tuple[str, str]]:
    """(module prefix, block type) of timm's blocks in the source's flat order `blocks_<i>`."""
    out = []
    for s, stage in enumerate(model.blocks):
        for j, block in enumerate(stage):
            out.append((f'blocks.{s}.{j}.', type(block).__name__))
    return out


def _efficientnet_key(rest: str, blocks: List[Tuple[str, str]]) -> Optional[Tuple[str, str]]:
    m = re.fullmatch(r'(stem|head)/(.+)', rest)
    if m:
        part, leaf = m[1], m[2]
        convs = {'stem': {'conv2d/kernel': ('conv_stem.weight', 'conv')},
                 'head': {'conv2d/kernel': ('conv_head.weight', 'conv'), 'dense/kernel': ('classifier.weight', 'dense'),
                          'dense/bias': ('classifier.bias', 'vec')}}[part]
        if leaf in convs:
            return convs[leaf]
        bn = _BN_LAYER.fullmatch(leaf)
        if bn and bn[1] is None:
            return f'{"bn1" if part == "stem" else "bn2"}.{_TF_BN[bn[2]]}', 'vec'
        return None
    m = re.fullmatch(r'blocks_(\d+)/(.+)', rest)
    if not m:
        return None
    idx, leaf = int(m[1]), m[2]
    if idx >= len(blocks):
        return f'blocks_{idx} (the model has {len(blocks)} blocks)', 'vec'
    prefix, kind = blocks[idx]
    if kind not in _EFFICIENTNET_BLOCKS:
        return None
    convs, bns = _EFFICIENTNET_BLOCKS[kind]
    if leaf in convs or leaf in _SE:
        key, layout = convs.get(leaf) or _SE[leaf]
        return prefix + key, layout
    bn = _BN_LAYER.fullmatch(leaf)
    if bn:
        n = int(bn[1] or 0)
        return (f'{prefix}{bns[n]}.{_TF_BN[bn[2]]}', 'vec') if n < len(bns) else (f'{prefix}bn (#{n})', 'vec')
    return None


def _efficientnet_size(prefix: str) -> str:
    """'efficientnet-b3' -> 'b3', 'efficientnet-bL1' -> 'l1' (the source's --model_name)."""
    size = prefix[len('efficientnet-'):].lower()
    return 'l1' if size == 'bl1' else size


def plan_sat_efficientnet(shapes: Mapping[str, Sequence[int]], model: nn.Module, ema: bool = False,
                          source: str = 'sat-efficientnet') -> Plan:
    """model key -> (TF variable, layout) for an EfficientNetAT; with `ema`, every weight and BN statistic
    comes from its `<name>/ExponentialMovingAverage` shadow (the source's L1-Enhanced evaluation)."""
    blocks = _efficientnet_blocks(model)
    prefixes = sorted({n.split('/', 1)[0] for n in shapes if re.match(r'efficientnet-[^/]+/', n)})
    if len(prefixes) > 1:
        raise ConversionError(f'{source}: the checkpoint holds several networks ({", ".join(prefixes)}).')
    arch = (getattr(model, 'pretrained_cfg', None) or {}).get('architecture') or ''
    want = re.match(r'efficientnet_(b\d|l1)_', arch)
    if prefixes and want and _efficientnet_size(prefixes[0]) != want[1]:
        raise ConversionError(f'{source}: the checkpoint is {prefixes[0]}, the target {arch} is EfficientNet-'
                              f'{want[1].upper()}; download the matching checkpoint.')
    mapped, unmapped = {}, []
    for name in shapes:
        if ignored(name, EFFICIENTNET_IGNORED):
            continue
        is_shadow = name.endswith(EMA_SUFFIX)
        base = name[:-len(EMA_SUFFIX)] if is_shadow else name
        if is_shadow and not ema:
            continue  # the raw weights are used
        if ema and not is_shadow and base + EMA_SUFFIX in shapes:
            continue  # replaced by its shadow
        pre, _, rest = base.partition('/')
        key = _efficientnet_key(rest, blocks) if prefixes and pre == prefixes[0] else None
        if key is None:
            unmapped.append(name)
        elif ema and not is_shadow:
            unmapped.append(f'{name} (has no {EMA_SUFFIX} shadow, which this target uses)')
        else:
            mapped[name] = key
    return finish_plan(source, model, shapes, mapped, unmapped)


# --- loading ---------------------------------------------------------------------------------------------------------

def _check_input_scaling(model: nn.Module, source: str, example: str) -> None:
    norm = getattr(model, 'normalize', None)
    half = torch.tensor(0.5)
    if norm is None or not (torch.allclose(norm.mean.detach().float().cpu(), half)
                            and torch.allclose(norm.std.detach().float().cpu(), half)):
        raise ConversionError(f'{source}: SAT scales inputs to [-1, 1] (image * 2/255 - 1), so the model needs '
                              f'input_mean = input_std = 0.5: build it from its tag ({example}).')


def _check_resnet(model: nn.Module, source: str) -> None:
    """The loader maps names; these are the things a wrongly built model would get wrong silently."""
    from timm.layers.activations import GELU
    from timm.layers.pool2d_same import MaxPool2dSame

    from ..layers import ParametricSoftplus
    example = 'robust_zoo/resnet50_silu_at.sat_in1k'
    _check_input_scaling(model, source, example)
    if not isinstance(getattr(model, 'maxpool', None), MaxPool2dSame):
        raise ConversionError(f"{source}: SAT's stem max-pool pads like TF 'SAME'; build the model with "
                              f"stem_pool='tf_same' (its tag does: {example}).")
    for name, m in model.named_modules():
        if isinstance(m, GELU) or (isinstance(m, nn.GELU) and m.approximate != 'tanh'):
            raise ConversionError(f"{source}: {name} is the exact GELU; SAT's gelu_fn is the tanh approximation: "
                                  f"build with gelu_approximate='tanh' (robust_zoo/resnet50_gelu_at.sat_in1k).")
        if isinstance(m, ParametricSoftplus) and m.alpha != 1.0:
            raise ConversionError(f"{source}: {name} is softplus with alpha {m.alpha}; SAT's is tf.nn.softplus "
                                  f"(alpha 1): build robust_zoo/resnet50_softplus_at.sat_in1k.")


def load_sat_resnet(checkpoint: PathLike, model: nn.Module) -> Dict[str, torch.Tensor]:
    """The state dict of a ResNetAT (built from its `.sat_in1k` tag) from a SAT tensorpack checkpoint."""
    _check_resnet(model, 'sat-resnet50')
    ckpt = TFCheckpoint(checkpoint)
    return state_dict_from(plan_sat_resnet(ckpt.shapes, model), ckpt, model)


def _target_extra(model: nn.Module) -> Mapping[str, Any]:
    from . import TARGETS
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    name = f'{cfg.get("architecture")}.{cfg.get("tag")}' if cfg.get('tag') else cfg.get('architecture')
    target = TARGETS.get(name)
    return target.extra if target is not None else {}


def load_sat_efficientnet(checkpoint: PathLike, model: nn.Module,
                          ema: Optional[bool] = None) -> Dict[str, torch.Tensor]:
    """The state dict of an EfficientNetAT (built from its `.sat_*` tag) from a SAT EfficientNet checkpoint;
    `ema` defaults to what the target's tag says (True for L1-Enhanced)."""
    from timm.layers import Conv2dSame
    source = 'sat-efficientnet'
    _check_input_scaling(model, source, 'robust_zoo/efficientnet_b0_silu_at.sat_in1k')
    if not isinstance(getattr(model, 'conv_stem', None), Conv2dSame):
        raise ConversionError(f"{source}: SAT's convs use TF 'same' padding; build the model with pad_type='same' "
                              f'(its tag does: robust_zoo/efficientnet_b0_silu_at.sat_in1k).')
    if not isinstance(getattr(model.bn1, 'act', None), nn.SiLU):
        raise ConversionError(f'{source}: SAT EfficientNets use swish (SiLU) everywhere; build an '
                              f'efficientnet_<size>_silu_at.sat_* model.')
    ema = bool(_target_extra(model).get('ema', False)) if ema is None else ema
    ckpt = TFCheckpoint(checkpoint)
    return state_dict_from(plan_sat_efficientnet(ckpt.shapes, model, ema=ema), ckpt, model)


# --- registry ----------------------------------------------------------------------------------------------------

_FILES = ('a TensorFlow checkpoint: <prefix>.index + <prefix>.data-00000-of-00001 (+ .meta), as written by {script}; '
          'give the .index file, the .data file, the prefix or its folder.')

register_source(Source(
    id='sat-resnet50', description="SAT's ResNet-50s (tensorpack, name-based TF checkpoints, NCHW, BGR input)",
    files=_FILES.format(script='ResNet/download_resnet.py --model_name Res50-<act>'), load=load_sat_resnet,
    requires='robust-zoo[convert-tf]'))
register_source(Source(
    id='sat-efficientnet',
    description="SAT's EfficientNet-B0..B7 and L1 (TF EfficientNet code, name-based checkpoints)",
    files=_FILES.format(script='EfficientNet/download_efficientnet.py --model_name efficientnet-<size>'),
    load=load_sat_efficientnet, requires='robust-zoo[convert-tf]'))

_README = 'SAT README, ResNet-50 table'
_README_NOTE = ('The README table evaluates untargeted PGD at eps 4/255, step 1/255, from a random start '
                '(ResNet/main.py, adv_model.py) with its own loader; its headers say "error rate" but the values are '
                'accuracies.')
_ABSTRACT = 'Xie et al. 2020, arXiv:2006.14536, abstract (also the SAT README introduction)'
# README table: clean, PGD-10, PGD-20, PGD-50 (%); softplus and mish are released without numbers
_RESNET50_README = {
    'relu': (68.7, 35.3, 33.7, 33.1), 'silu': (69.7, 43.0, 42.2, 41.9), 'elu': (69.0, 41.6, 40.9, 40.7),
    'gelu': (69.9, 42.6, 41.8, 41.5), 'smoothrelu': (69.3, 41.3, 40.4, 40.1),
}
# abstract: ResNet-50 robustness 33.0% -> 42.3% (ReLU -> SAT) with +0.9% accuracy; EfficientNet-L1 82.2% / 58.6%
_RESNET50_PAPER = {'relu': (68.8, 33.0), 'silu': (69.7, 42.3)}
# README EfficientNet table: clean accuracy only (robustness "TODO")
_EFFICIENTNET_CLEAN = {'b0': 65.2, 'b1': 68.6, 'b2': 70.3, 'b3': 73.1, 'b4': 75.9, 'b5': 77.8, 'b6': 79.2, 'b7': 79.8,
                       'l1': 80.7, 'l1-enhanced': 82.2}


def _frac(percent: float) -> float:
    return round(percent / 100, 4)


def _resnet50_reported(act: str) -> Tuple[Reported, ...]:
    out = []
    if act in _RESNET50_README:
        clean, *robust = _RESNET50_README[act]
        out += [Reported(_frac(clean), _frac(r), f'PGD-{k}', THREAT_MODEL, 50000, _README)
                for k, r in zip((10, 20, 50), robust)]
    if act in _RESNET50_PAPER:
        clean, robust = _RESNET50_PAPER[act]
        out.append(Reported(_frac(clean), _frac(robust), 'PGD-200', THREAT_MODEL, 50000, _ABSTRACT))
    return tuple(out)


_ACT_NOTES = {
    'gelu': "SAT's GELU is the tanh approximation (the tag builds gelu_approximate='tanh').",
    'softplus': "SAT's softplus is tf.nn.softplus, log(1 + exp(x)) (the tag sets alpha=1; robust_zoo's default is "
                'alpha=10). The README reports no numbers for it.',
    'smoothrelu': "Each activation site has its own learned beta (SAT's smoothrelu_beta).",
}

for _act in ('relu', 'silu', 'gelu', 'elu', 'smoothrelu', 'softplus'):
    register_target(Target(
        name=f'resnet50_{_act}_at.sat_in1k', source='sat-resnet50', origin_url=ORIGIN_URL,
        download=f'`python ResNet/download_resnet.py --model_name Res50-{_act}` in {ORIGIN_URL} (gdown from Google '
                 f'Drive; writes Res50-{_act}/Res50-{_act}.index and .data-00000-of-00001).',
        license=LICENSE, paper=PAPER, reported=_resnet50_reported(_act), eval_threat_models=(THREAT_MODEL,),
        notes=' '.join(filter(None, (
            f'SAT ResNet-50 with {_act}, adversarially trained at Linf 4/255 (PGD). The source reads BGR images '
            'scaled to [-1, 1]: the model normalizes with mean = std = 0.5 and its stem conv takes RGB (channels '
            'reversed at conversion).', _ACT_NOTES.get(_act), _README_NOTE if _act in _RESNET50_README else ''))),
        extra=dict(source_name=f'Res50-{_act}')))

for _size, _clean in _EFFICIENTNET_CLEAN.items():
    _enhanced = _size == 'l1-enhanced'
    _arch = 'l1' if _enhanced else _size
    _src = 'efficientnet-bL1' + ('-enhanced' if _enhanced else '') if _arch == 'l1' else f'efficientnet-{_size}'
    register_target(Target(
        name=f'efficientnet_{_arch}_silu_at.{"sat_enhanced_in1k" if _enhanced else "sat_in1k"}',
        source='sat-efficientnet',
        origin_url=ORIGIN_URL,
        download=f'`python EfficientNet/download_efficientnet.py --model_name {_src}` in {ORIGIN_URL} (gdown from '
                 f'Google Drive; writes {_src}/{_src}.index and .data-00000-of-00001).',
        license=LICENSE, paper=PAPER, eval_threat_models=(THREAT_MODEL,),
        reported=(Reported(0.822, 0.586, 'PGD-200', THREAT_MODEL, 50000, _ABSTRACT),) if _enhanced else (),
        notes=(f'SAT EfficientNet-{_arch.upper()} (SiLU), adversarially trained at Linf 4/255. TF "same" padding, '
               f'BN eps 1e-5 and [-1, 1] RGB inputs as the README evaluates it. The README reports {_clean}% clean '
               'accuracy'
               + (' with the exponential moving average of the weights, which this conversion takes.' if _enhanced
                  else ' and no robustness for it (TODO in the README).')),
        extra=dict(source_name=_src, ema=_enhanced)))
