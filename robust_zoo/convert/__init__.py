"""Converters: the field's published robust weights, from other frameworks and names, into robust_zoo models.

A *source* knows one file format and the names of one reference architecture; a *target* is a robust_zoo
model name with a tag (`resnet50_silu_at.sat_in1k`) whose weights come from a source. Conversion is all or
nothing: every tensor of the checkpoint must map to exactly one parameter or buffer of the target, with the
same shape after the documented layout change; anything left over or missing is a `ConversionError` that
names it. Converted models take RGB images in [0, 1] like every robust_zoo model: channel order and input
scaling of the source are folded into the model (see each source's docstring).

    robust-zoo fetch resnet50_silu_at.sat_in1k      # download from the authors' release, convert (fetch.py)
    robust-zoo convert sat-resnet50 ckpt/model-xxx.index --model resnet50_silu_at.sat_in1k --card  # a file you have
    timm.create_model('robust_zoo/resnet50_silu_at.sat_in1k', pretrained=True)

Sources register themselves with `register_source` / `register_target` in their modules
(`sat.py`, `robustbench.py`); importing this package imports them. Heavy readers (TensorFlow) are imported
only inside a source's `load`, so listing sources never needs them.
"""
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .. import settings
from ..models._pretrained import cards_dir, hf_org

__all__ = ['ConversionError', 'Reported', 'Source', 'Target', 'SOURCES', 'TARGETS', 'register_source',
           'register_target', 'convert', 'check_state_dict', 'listing', 'missing_weights_message', 'converted_markdown']

PathLike = Union[str, Path]


class ConversionError(ValueError):
    """A checkpoint that cannot be converted: unmapped or missing names, wrong shapes, wrong format."""


@dataclass(frozen=True)
class Reported:
    """A number the source's authors REPORTED (not measured by robust_zoo): shown as such on cards."""
    clean: float
    robust: float
    attack: str
    threat_model: str
    n_examples: int
    reference: str


@dataclass(frozen=True)
class Source:
    """One checkpoint format + reference architecture.

    `load(checkpoint, model) -> state_dict` reads the checkpoint and returns the target model's complete state
    dict (every key of `model.state_dict()`), raising ConversionError for any tensor it cannot map.
    """
    id: str
    description: str
    files: str
    load: Callable[[Path, nn.Module], Dict[str, torch.Tensor]]
    requires: str = ''


@dataclass(frozen=True)
class Target:
    """A robust_zoo model name (with tag) whose weights a source provides."""
    name: str
    source: str
    origin_url: str
    download: str
    license: str
    paper: str
    reported: Tuple[Reported, ...] = ()
    eval_threat_models: Tuple[str, ...] = ()
    notes: str = ''
    extra: Mapping[str, Any] = field(default_factory=dict)


SOURCES: Dict[str, Source] = {}
TARGETS: Dict[str, Target] = {}
_SOURCE_MODULES = ('sat', 'robustbench')


def register_source(source: Source) -> Source:
    SOURCES[source.id] = source
    return source


def register_target(target: Target) -> Target:
    TARGETS[target.name] = target
    return target


def _load_sources() -> None:
    for name in _SOURCE_MODULES:
        try:
            importlib.import_module(f'{__name__}.{name}')
        except ModuleNotFoundError as e:
            if e.name != f'{__name__}.{name}':
                raise


def listing(names: Sequence[str], n: int = 8) -> str:
    """The first `n` names, and how many there are in all: error messages name tensors without flooding."""
    return ', '.join(names[:n]) + (f', ... ({len(names)} in all)' if len(names) > n else '')


def check_state_dict(state: Mapping[str, torch.Tensor], model: nn.Module, source: str) -> None:
    """Raise ConversionError unless `state` has exactly the model's keys with the model's shapes."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f'{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}' for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f'{len(missing)} model tensors got no value ({listing(missing)})')
    if unexpected:
        problems.append(f'{len(unexpected)} converted tensors have no place in the model ({listing(unexpected)})')
    if shapes:
        problems.append(f'{len(shapes)} shapes differ ({listing(shapes)})')
    if problems:
        raise ConversionError(f'{source}: the checkpoint does not fit {type(model).__name__}: ' + '; '.join(problems))


def _target(name: str) -> Target:
    _load_sources()
    name = name.split('/', 1)[1] if name.startswith('robust_zoo/') else name
    if name not in TARGETS:
        raise ConversionError(f'{name!r} is not a conversion target; targets: {", ".join(sorted(TARGETS))}.')
    return TARGETS[name]


def convert(source: str, checkpoint: PathLike, model_name: str) -> nn.Module:
    """The target model `model_name` (e.g. 'resnet50_silu_at.sat_in1k') with the weights of `checkpoint`,
    read by `source` (see `robust-zoo convert --help`), in eval mode."""
    import timm
    _load_sources()
    if source not in SOURCES:
        raise ConversionError(f'unknown source {source!r}; sources: {", ".join(sorted(SOURCES))}.')
    target = _target(model_name)
    if target.source != source:
        raise ConversionError(f'{target.name} is converted from source {target.source!r}, not {source!r}.')
    path = Path(checkpoint)
    if not (path.exists() or list(path.parent.glob(path.name + '*'))):
        raise ConversionError(f'{path}: no such checkpoint. {SOURCES[source].files}')
    model = timm.create_model(f'robust_zoo/{target.name}', pretrained=False)
    state = SOURCES[source].load(path, model)
    check_state_dict(state, model, source)
    model.load_state_dict(state, strict=True)
    return model.eval()


def missing_weights_message(name: str) -> Optional[str]:
    """The error text for `pretrained=True` on a conversion target whose weights are not here, else None."""
    _load_sources()
    target = TARGETS.get(name)
    if target is None:
        return None
    return (f'robust_zoo/{name}: the weights are converted from {target.origin_url} and are not on this machine. '
            f'Fetch them (download, convert, verify into {settings.fetched_dir() / name}/): `robust-zoo fetch {name}`. '
            f'By hand: {target.download} Convert: `robust-zoo convert {target.source} CHECKPOINT --model {name} '
            f'--card` (writes {cards_dir() / name}/, which pretrained=True then loads). Or load the converted repo '
            f'from the Hugging Face Hub: hf-hub:{hf_org()}/{name} (needs a network, or HF_HUB_OFFLINE=1 with it in '
            f'the cache).')


def list_targets() -> List[Target]:
    _load_sources()
    return [TARGETS[k] for k in sorted(TARGETS)]


def targets_markdown() -> str:
    """The README's table of conversion targets: name, source, paper, the source's REPORTED numbers."""
    from ..threat_models import get_threat_model
    lines = ['| robust_zoo name | source (`robust-zoo convert SOURCE`) | paper | reported clean % | reported robust % '
             '(attack; threat model) |', '|---|---|---|---|---|']
    for t in list_targets():
        clean = '/'.join(dict.fromkeys(f'{100 * r.clean:.2f}' for r in t.reported)) or '-'
        robust = ', '.join(f'{100 * r.robust:.2f} ({r.attack}; {get_threat_model(r.threat_model).id})'
                           for r in t.reported) or '-'
        lines.append(f'| `{t.name}` | `{t.source}` | {t.paper} | {clean} | {robust} |')
    return '\n'.join(lines)


def converted_markdown() -> str:
    """docs/converted.md: every target with its fetch command, size, the source's license and REPORTED numbers."""
    import re

    import timm

    from ..threat_models import get_threat_model
    from .fetch import default_target
    rows = []
    for t in list_targets():
        model = timm.create_model(f'robust_zoo/{t.name}', device='meta')
        params = sum(v.numel() for k, v in model.state_dict().items() if v.is_floating_point())
        clean_only = re.search(r'reports ([\d.]+)% clean accuracy', t.notes)
        reported = '<br>'.join(f'{100 * r.clean:.2f} / {100 * r.robust:.2f} ({r.attack}, '
                               f'{get_threat_model(r.threat_model).id})' for r in t.reported) or (
            f'{clean_only[1]} / not reported' if clean_only else 'not reported')
        default = ' (default of `robust_zoo/' + t.name.split('.')[0] + '`)' if default_target(
            t.name.split('.')[0]) == t.name else ''
        rows.append(f'| `{t.name}`{default} | `robust-zoo fetch {t.name}` | `{t.source}` | {params / 1e6:.1f}M, '
                    f'{4 * params / 2 ** 20:.0f} MiB | {t.license} | {reported} |')
    return """# Converted weights

Robust weights published by other authors, converted to robust_zoo models. robust_zoo does not ship them: one
command downloads the authors' release from where their own scripts take it (SAT's `download_*.py`, RobustBench's
model zoo: Google Drive), converts it (every tensor mapped, or an error naming it), verifies the result and keeps
it in your cache (`ROBUST_ZOO_CACHE`, default `~/.cache/robust_zoo`, under `fetched/<name>/`):

```bash
robust-zoo fetch resnet50_silu_at.sat_in1k
python -c "import timm, robust_zoo; timm.create_model('robust_zoo/resnet50_silu_at', pretrained=True)"
```

An untagged name (`robust_zoo/resnet50_silu_at`) loads its default converted tag once that is fetched: the first
listed for its architecture, or RobustBench's best (Wang et al. 2023) for the `wrn_*_silu_at` models. SAT sources
are TensorFlow checkpoints: `pip install "robust-zoo[convert-tf]"` first. Without a network (or when Google Drive
refuses: over quota), download the files the error names yourself and run `robust-zoo fetch NAME --from FOLDER`.
`ROBUST_ZOO_DOWNLOAD_BASE_URL` replaces Google Drive's download host (the tests serve a loopback server).

Numbers are those the source **reported**; robust_zoo has not measured them (each card gives the `robust-zoo eval`
command that does). Size: parameters and the converted `model.safetensors` (float32); the download is the
authors' file, which may be larger (optimizer slots in SAT's checkpoints).

| name | fetch | source | size | license | reported clean / robust % (attack, threat model) |
|---|---|---|---|---|---|
""" + '\n'.join(rows) + '\n'
