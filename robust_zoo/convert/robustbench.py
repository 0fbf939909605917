"""RobustBench's CIFAR-10 Wide ResNets -> robust_zoo's `wrn_*` models (robust_zoo/models/rz_wide_resnet.py).

Two sources, one per RobustBench architecture class (robustbench 1.1.1, `robustbench/model_zoo/`):

* `robustbench-paf-wrn`: `architectures/paf_wide_resnet.PAF_WideResNet` as built by `pssilu_wrn_28_10`
  (Dai2021Parameterizing): 3x3 convs padded 1 on each side, no input normalization, ONE PSSiLU module at
  every activation site. Its state dict holds that module's alpha/beta (shape (1,)) once per site
  (`activation.*` and `block<s>.layer.<j>.activation.*`); all copies must be equal and become the model's
  shared `shared_act.alpha/beta` (shape ()). Target tags: style 'wrn', input_mean 0 / input_std 1.
* `robustbench-dm-wrn`: `architectures/dm_wide_resnet.DMWideResNet(depth, width, activation_fn=Swish or
  nn.SiLU, mean=CIFAR10_MEAN, std=CIFAR10_STD)` (Gowal2020Uncovering_*, Rebuffi2021Fixing_*,
  Wang2023Better_*, per `model_zoo/cifar10.py`): stride-2 convs pad the bottom/right only (TF 'SAME'),
  inputs normalized inside with CIFAR10_MEAN (0.4914, 0.4822, 0.4465) / CIFAR10_STD (0.2471, 0.2435,
  0.2616), which are non-persistent buffers: the state dict has none, and our `normalize` buffers keep
  those constants from the tag's cfg. Swish (x * sigmoid(x)) is nn.SiLU. Target tags: style 'dm'.

Both use nn.BatchNorm2d defaults (eps 1e-5, momentum 0.1). Names map one to one (below); every checkpoint
tensor must be used and every model tensor filled, with equal shapes. One allowance, the one PyTorch's own
`load_state_dict` makes: a checkpoint without any `num_batches_tracked` (PyTorch < 0.4.1) gets zeros.

Files are read with `torch.load(weights_only=True)`: tensors and plain containers only, never code. The
state dict may be the file itself or under 'state_dict' / 'model_state_dict' (robust_paf's train.py saves epoch, arch,
state_dict, best_prec1, optimizer, swadict), with or without DataParallel's 'module.' prefix and a wrapper's
'model.' prefix (what RobustBench's `load_model` strips for these models).
"""
import re
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Sequence

import torch
from torch import nn

from . import ConversionError, Reported, Source, Target, listing, register_source, register_target

__all__ = ['read_state_dict', 'map_state_dict', 'PAF_SOURCE', 'DM_SOURCE']

PAF_SOURCE, DM_SOURCE = 'robustbench-paf-wrn', 'robustbench-dm-wrn'
_CIFAR10_MEAN, _CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
_RB_INFO = 'https://github.com/RobustBench/robustbench/blob/master/model_info/cifar10/Linf/{}.json'
_DM_PT = 'https://storage.googleapis.com/dm-adversarial-robustness/{}.pt'
_WRAPPERS = ('state_dict', 'model_state_dict')


def read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    """The state dict in a PyTorch checkpoint, loaded without running pickled code; unwrapped, 'module.'-free."""
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # weights_only refusals and foreign bytes are both UnpicklingError; truncated files vary
        text = str(e)
        refused = re.search(r'Unsupported global: GLOBAL (\S+)', text)
        if refused:
            raise ConversionError(
                f'{path}: not a plain state dict: it pickles {refused.group(1)}, which torch.load(weights_only=True) '
                f'refused to build. robust_zoo never runs code from checkpoints; if you trust the file, load it '
                f'yourself and torch.save its state_dict().') from e
        detail = re.search(r'WeightsUnpickler error:\s*([^\n]+)', text)
        reason = detail.group(1).strip() if detail else (text.strip().splitlines() or [''])[0]
        raise ConversionError(f'{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {reason}); a truncated '
                              f'download, or a web page saved instead of the file?') from e
    for key in _WRAPPERS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise ConversionError(f'{path}: holds a {type(obj).__name__}, not a state dict (a dict of tensors, possibly '
                              f'under {" or ".join(repr(k) for k in _WRAPPERS)}).')
    others = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if others:
        raise ConversionError(f'{path}: not a state dict: {len(others)} entries are not tensors '
                              f'({", ".join(others[:8])}{", ..." if len(others) > 8 else ""}).')
    state = dict(obj)
    for prefix in ('module.', 'model.'):  # DataParallel's, then a wrapper module's (RobustBench strips both)
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


_STAGE = re.compile(r'^stages\.(\d+)\.(\d+)\.(bn1|conv1|bn2|conv2|shortcut)\.(.+)$')
_PAF_BLOCK = {'bn1': 'bn1', 'conv1': 'conv1', 'bn2': 'bn2', 'conv2': 'conv2', 'shortcut': 'convShortcut'}
_DM_BLOCK = {'bn1': 'batchnorm_0', 'conv1': 'conv_0', 'bn2': 'batchnorm_1', 'conv2': 'conv_1', 'shortcut': 'shortcut'}


def _paf_names(key: str, model: nn.Module) -> List[str]:
    """PAF_WideResNet name(s) of one of our tensors; the shared PSSiLU has one name per activation site."""
    m = _STAGE.match(key)
    if m:
        s, j, module, param = m.groups()
        return [f'block{int(s) + 1}.layer.{j}.{_PAF_BLOCK[module]}.{param}']
    if key.startswith('shared_act.'):
        param = key[len('shared_act.'):]
        blocks = [f'block{s + 1}.layer.{j}' for s, stage in enumerate(model.stages) for j in range(len(stage))]
        return [f'activation.{param}'] + [f'{b}.activation.{param}' for b in blocks]
    for ours, theirs in (('conv_stem.', 'conv1.'), ('norm.', 'bn1.'), ('head.fc.', 'fc.')):
        if key.startswith(ours):
            return [theirs + key[len(ours):]]
    return []


def _dm_names(key: str, model: nn.Module) -> List[str]:
    """DMWideResNet name of one of our tensors."""
    m = _STAGE.match(key)
    if m:
        s, j, module, param = m.groups()
        return [f'layer.{s}.block.{j}.{_DM_BLOCK[module]}.{param}']
    for ours, theirs in (('conv_stem.', 'init_conv.'), ('norm.', 'batchnorm.'), ('head.fc.', 'logits.')):
        if key.startswith(ours):
            return [theirs + key[len(ours):]]
    return []


def _check_model(model: nn.Module, source: str, style: str, mean: Sequence[float], std: Sequence[float]) -> None:
    """The target must compute the source's function: its style and its input normalization."""
    if getattr(model, 'style', None) != style:
        raise ConversionError(f'{source}: the target must be a robust_zoo WideResNet built with style={style!r} '
                              f'(a tag of rz_wide_resnet sets it), not {type(model).__name__} '
                              f'style={getattr(model, "style", None)!r}.')
    have = (model.normalize.mean.flatten().tolist(), model.normalize.std.flatten().tolist())
    if not all(torch.allclose(torch.tensor(a), torch.tensor(b, dtype=torch.float32))
               for a, b in zip(have, (mean, std))):
        raise ConversionError(f'{source}: the target normalizes inputs with mean {have[0]} / std {have[1]}, the '
                              f'source with mean {list(mean)} / std {list(std)}.')


def map_state_dict(state: Mapping[str, torch.Tensor], model: nn.Module, source: str) -> Dict[str, torch.Tensor]:
    """The complete state dict of `model` from a RobustBench state dict of `source`'s class; every source
    tensor used, every model tensor filled (`normalize.*` from the model), shapes equal (a (1,) PSSiLU
    parameter fills our scalar); else ConversionError naming the tensors."""
    names: Callable[[str, nn.Module], List[str]] = {PAF_SOURCE: _paf_names, DM_SOURCE: _dm_names}[source]
    target = model.state_dict()
    plan: Dict[str, List[str]] = {k: names(k, model) for k in target if not k.startswith('normalize.')}
    unmappable = [k for k, v in plan.items() if not v]
    if unmappable:
        raise ConversionError(f'{source}: the source architecture has nothing for {", ".join(unmappable[:8])} '
                              f'({type(model).__name__} with another activation?).')
    wanted = {s for srcs in plan.values() for s in srcs}
    given = set(state)
    if not any(k.endswith('.num_batches_tracked') for k in given):
        wanted = {s for s in wanted if not s.endswith('.num_batches_tracked')}
    missing, unexpected = sorted(wanted - given), sorted(given - wanted)
    problems = []
    if missing:
        problems.append(f'{len(missing)} tensors of {source} are missing ({listing(missing)})')
    if unexpected:
        problems.append(f'{len(unexpected)} checkpoint tensors have no place in the model ({listing(unexpected)})')
    out: Dict[str, torch.Tensor] = {}
    shapes: List[str] = []
    for key, srcs in plan.items():
        present = [s for s in srcs if s in given]
        if not present:
            if key.endswith('.num_batches_tracked') and srcs[0] not in wanted:
                out[key] = torch.zeros_like(target[key], device='cpu')
            continue
        value = state[present[0]]
        differ = [s for s in present[1:] if state[s].shape != value.shape or not torch.equal(state[s], value)]
        if differ:
            problems.append(f'{key} is one module shared by the whole network, but the checkpoint holds different '
                            f'values at {present[0]} and {", ".join(differ[:4])}')
        if tuple(value.shape) != tuple(target[key].shape):
            if value.numel() == 1 and target[key].numel() == 1:
                value = value.reshape(target[key].shape)
            else:
                shapes.append(f'{present[0]} {tuple(value.shape)} -> {key} {tuple(target[key].shape)}')
                continue
        out[key] = value
    if shapes:
        problems.append(f'{len(shapes)} shapes differ ({"; ".join(shapes[:8])})')
    if problems:
        raise ConversionError(f'{source}: the checkpoint does not fit {type(model).__name__}-{_depth_width(model)}: '
                              + '; '.join(problems) + '.')
    for key in target:
        if key.startswith('normalize.'):
            out[key] = target[key].detach().clone()
    return out


def _depth_width(model: nn.Module) -> str:
    stages = getattr(model, 'stages', None)
    if stages is None:
        return '?'
    return f'{6 * len(stages[0]) + 4}-{stages[0][0].conv1.out_channels // 16}'


def _load_paf(path: Path, model: nn.Module) -> Dict[str, torch.Tensor]:
    _check_model(model, PAF_SOURCE, 'wrn', (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    return map_state_dict(read_state_dict(path), model, PAF_SOURCE)


def _load_dm(path: Path, model: nn.Module) -> Dict[str, torch.Tensor]:
    _check_model(model, DM_SOURCE, 'dm', _CIFAR10_MEAN, _CIFAR10_STD)
    return map_state_dict(read_state_dict(path), model, DM_SOURCE)


_FILES = ("RobustBench's .pt for the model, as robustbench.utils.load_model(MODEL_ID, dataset='cifar10', "
          "threat_model='Linf') saves it: models/cifar10/Linf/<MODEL_ID>.pt (a state dict of {}, plain or under "
          "'state_dict'/'model_state_dict', 'module.' prefixes allowed; read with weights_only=True).")

register_source(Source(
    id=PAF_SOURCE,
    description="RobustBench's PAF_WideResNet (Dai et al. 2021: WRN, one PSSiLU shared network-wide), PyTorch .pt",
    files=_FILES.format('robustbench.model_zoo.architectures.paf_wide_resnet.PAF_WideResNet'),
    load=_load_paf))

register_source(Source(
    id=DM_SOURCE,
    description="RobustBench's DMWideResNet (DeepMind's WRN: Swish/SiLU, TF-'SAME' stride-2 padding, CIFAR-10 "
                'mean/std inside), PyTorch .pt',
    files=_FILES.format('robustbench.model_zoo.architectures.dm_wide_resnet.DMWideResNet'),
    load=_load_dm))


def _target(name: str, source: str, rb_id: str, gdrive_id: str, paper: str, license: str, clean: float, robust: float,
            dm_file: str = '', notes: str = '', default: bool = False) -> None:
    download = (f"RobustBench model '{rb_id}' (cifar10, Linf): robustbench.utils.load_model('{rb_id}', "
                f"dataset='cifar10', threat_model='Linf') saves models/cifar10/Linf/{rb_id}.pt; it is the Google "
                f'Drive file {gdrive_id} (`gdown {gdrive_id}`).')
    if dm_file:
        download += (f" DeepMind's own PyTorch copy: {_DM_PT.format(dm_file)} (the same class's state dict for "
                     f"DeepMind's eval.py; not checked to be the same file).")
    register_target(Target(
        name=name, source=source, origin_url=_RB_INFO.format(rb_id), download=download, license=license, paper=paper,
        reported=(Reported(clean=clean, robust=robust, attack='AutoAttack (standard)', threat_model='cifar10-linf',
                           n_examples=10000,
                           reference=f'RobustBench leaderboard, model_info/cifar10/Linf/{rb_id}.json'),),
        eval_threat_models=('cifar10-linf',),
        notes=f"RobustBench id: {rb_id}. {notes}".strip(),
        extra=dict(robustbench_id=rb_id, gdrive_id=gdrive_id, **({'default': True} if default else {}))))


_GOWAL = ('Gowal et al. 2020, "Uncovering the Limits of Adversarial Training against Norm-Bounded Adversarial '
          'Examples", arXiv:2010.03593')
_REBUFFI = 'Rebuffi et al. 2021, "Fixing Data Augmentation to Improve Adversarial Robustness", arXiv:2103.01946'
_WANG = 'Wang et al. 2023 (ICML), "Better Diffusion Models Further Improve Adversarial Training", arXiv:2302.04638'
_DM_LICENSE = 'apache-2.0'  # the deepmind-research repository's license; the checkpoint links state no other terms
_EXTRA = 'Trained with additional external data (RobustBench: additional_data).'

_target('wrn_28_10_pssilu_at.rb_dai2021', PAF_SOURCE, 'Dai2021Parameterizing', '1eO-MNXQSAoCuNFjIbdCheprT4Beqo9Zv',
        'Dai, Mahloujifar & Mittal 2021, "Parameterizing Activation Functions for Adversarial Robustness", '
        'arXiv:2110.05626', 'unknown', 0.8702, 0.6155,
        notes='WRN-28-10 with one network-wide PSSiLU; ~6M synthetic images in training (RobustBench footnote). '
              "The authors' code (github.com/dash29/robust_paf) states no license.")
_target('wrn_70_16_silu_at.rb_gowal2020_70_16_extra', DM_SOURCE, 'Gowal2020Uncovering_70_16_extra',
        '1GxryYj_Or-VCDca0wgiFLz4ssXSZXQoJ', _GOWAL, _DM_LICENSE, 0.9110, 0.6588, 'cifar10_linf_wrn70-16_with', _EXTRA)
_target('wrn_70_16_silu_at.rb_gowal2020_70_16', DM_SOURCE, 'Gowal2020Uncovering_70_16',
        '1DVwKclibqzniE2Ss5_g6BY77ChG8QKzl', _GOWAL, _DM_LICENSE, 0.8529, 0.5720, 'cifar10_linf_wrn70-16_without')
_target('wrn_28_10_silu_at.rb_gowal2020_28_10_extra', DM_SOURCE, 'Gowal2020Uncovering_28_10_extra',
        '1MBAWGxiZxKt-GfqEqtLcXcd3tAxPhvV2', _GOWAL, _DM_LICENSE, 0.8948, 0.6280, 'cifar10_linf_wrn28-10_with', _EXTRA)
_target('wrn_70_16_silu_at.rb_rebuffi2021_70_16_extra', DM_SOURCE, 'Rebuffi2021Fixing_70_16_cutmix_extra',
        '1qKDTp6IJ1BUXZaRtbYuo_t0tuDl_4mLg', _REBUFFI, _DM_LICENSE, 0.9223, 0.6658,
        'cifar10_linf_wrn70-16_cutmix_external', 'CutMix; trained with additional external data (RobustBench: '
        'additional_data).')
_target('wrn_70_16_silu_at.rb_rebuffi2021_70_16_ddpm', DM_SOURCE, 'Rebuffi2021Fixing_70_16_cutmix_ddpm',
        '1-8CWRT-OFWyrz4T4s0I2mbFjPg8K_MUi', _REBUFFI, _DM_LICENSE, 0.8854, 0.6425,
        'cifar10_linf_wrn70-16_cutmix_ddpm_v2', 'CutMix; 1M DDPM-generated images in training.')
_target('wrn_28_10_silu_at.rb_rebuffi2021_28_10_ddpm', DM_SOURCE, 'Rebuffi2021Fixing_28_10_cutmix_ddpm',
        '1-0EChXbc6pOvx26O17av263bCeqIAz6s', _REBUFFI, _DM_LICENSE, 0.8733, 0.6075,
        'cifar10_linf_wrn28-10_cutmix_ddpm_v2', 'CutMix; 1M DDPM-generated images in training.')
_target('wrn_70_16_silu_at.rb_wang2023_70_16', DM_SOURCE, 'Wang2023Better_WRN-70-16',
        '1-RF7ZSS-PAh6bfQcuqx4lh9bc9BUGnap', _WANG, 'mit', 0.9325, 0.7069, default=True,
        notes='50M generated images in training (RobustBench footnote); nn.SiLU in RobustBench, not Swish.')
_target('wrn_28_10_silu_at.rb_wang2023_28_10', DM_SOURCE, 'Wang2023Better_WRN-28-10',
        '1-6MYKJdECDVGaWjj6GgqvaT95BGKhUvI', _WANG, 'mit', 0.9244, 0.6731, default=True,
        notes='20M generated images in training (RobustBench footnote); nn.SiLU in RobustBench, not Swish.')
