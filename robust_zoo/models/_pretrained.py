"""Published robust_zoo weights as timm pretrained cfgs (timm's `_pretrained` side of loading).

A published model is one folder `<cards_dir()>/<arch>.<tag>/` (timm's naming, as in `timm/resnet50.a1_in1k`)
holding exactly what its Hub repo `<org>/<arch>.<tag>` holds: `model.safetensors`, timm's `config.json`, the
model card and the evaluation records. `robust_zoo/published.json` indexes them (name -> architecture, tag,
hf_hub_id, sha256, headline numbers), so an installed package knows the tags and the weights' hashes. The family
files call `with_published` in their `generate_default_cfgs`, so every published `<arch>.<tag>` is a timm
pretrained cfg; `robust_zoo.models._hub.resolve_weights` finds and checks its file. Where the cards folder is:
`robust_zoo.settings.cards_dir()`.
"""
import dataclasses
import difflib
import json
import logging
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from timm.models import _registry

from .. import settings
from .._io import PathLike
from ..layers import ACTIVATIONS

__all__ = ['DEFAULT_ORG', 'MODEL_CARDS_DIR', 'PUBLISHED_INDEX', 'WEIGHTS_NAME', 'cards_dir', 'hf_org', 'index_path',
           'MARKS', 'caveat_marks', 'load_published', 'not_published', 'register_published', 'stronger_text',
           'with_published']

_logger = logging.getLogger(__name__)

MODEL_CARDS_DIR = settings.cards_dir()  # the default at import; robust_zoo.settings says how it is chosen
PUBLISHED_INDEX = Path(os.environ.get('ROBUST_ZOO_PUBLISHED_INDEX')
                       or Path(__file__).resolve().parents[1] / 'published.json')
DEFAULT_ORG = 'robust-zoo'
WEIGHTS_NAME = 'model.safetensors'
_INDEX_KEYS = ('architecture', 'tag', 'hf_hub_id', 'sha256')

_state: Dict[str, Any] = dict(index_path=PUBLISHED_INDEX, cards_dir=MODEL_CARDS_DIR, index=None)


_BASE_CFGS: Dict[str, Any] = {}  # arch -> its untagged (no-weights) cfg, for the families that take published cfgs


def _arch_of(name: str) -> Optional[str]:
    """robust_zoo/<arch>[.tag] or <arch>[.tag] -> arch; None for hf-hub: / local-dir: names."""
    if ':' in name:
        return None
    if name.startswith('robust_zoo/'):
        name = name[len('robust_zoo/'):]
    return name.split('.', 1)[0]


def _activation_of(arch: str) -> Tuple[str, str]:
    """'resnet20_capped_relu_at' -> ('resnet20', 'capped_relu')."""
    for act in sorted(ACTIVATIONS, key=len, reverse=True):
        if arch.endswith(f'_{act}_at'):
            return arch[:-len(f'_{act}_at')], act
    return arch[:-3] if arch.endswith('_at') else arch, 'silu' if arch.endswith('_at') else ''


def hf_org() -> str:
    """The Hub organisation of published repos: env ROBUST_ZOO_HF_ORG, default `robust-zoo`."""
    return os.environ.get('ROBUST_ZOO_HF_ORG') or DEFAULT_ORG


def index_path() -> Path:
    """The published index in use (PUBLISHED_INDEX unless `register_published(index_path)` changed it)."""
    return Path(_state['index_path'])


def cards_dir() -> Path:
    """The model-cards folder in use (MODEL_CARDS_DIR unless `register_published(cards_dir=...)` changed it)."""
    return Path(_state['cards_dir'])


def load_published(index_path: Optional[PathLike] = None) -> Dict[str, Dict[str, Any]]:
    """Read a published index (default: the one in use): repo name -> entry. A missing file is an empty index."""
    path = Path(index_path) if index_path is not None else Path(_state['index_path'])
    if not path.is_file():
        return {}
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f'{path} is not a readable published index ({e}); restore it from git.') from e
    if not isinstance(index, dict):
        raise ValueError(f'{path} must hold a JSON object (repo name -> entry), not {type(index).__name__}.')
    for name, entry in index.items():
        missing = [k for k in _INDEX_KEYS if not (isinstance(entry, dict) and entry.get(k))]
        if missing:
            raise ValueError(f'{path}: entry {name!r} lacks {missing}.')
        if name != f"{entry['architecture']}.{entry['tag']}":
            raise ValueError(f"{path}: entry {name!r} must be named <architecture>.<tag> "
                             f"({entry['architecture']}.{entry['tag']}).")
    return index


def _index() -> Dict[str, Dict[str, Any]]:
    if _state['index'] is None:
        try:
            _state['index'] = load_published()
        except ValueError as e:  # never break `import robust_zoo` over the index: say it, publish nothing
            _logger.warning('robust_zoo: no published weights registered: %s', e)
            _state['index'] = {}
    return _state['index']


_CFG_KEYS = ('num_classes', 'input_size', 'dataset', 'threat_model', 'input_mean', 'input_std', 'label_names')


def _published_cfg(base: Any, name: str, entry: Mapping[str, Any], folder: Path) -> Any:
    """The family's cfg with the published weights' own fields (the index's copy of their config.json's)."""
    weights = folder / name / WEIGHTS_NAME
    fields = {k: tuple(v) if isinstance(v, list) else v
              for k, v in (entry.get('pretrained_cfg') or {}).items() if k in _CFG_KEYS}
    return dataclasses.replace(base, **fields, hf_hub_id=entry['hf_hub_id'],
                               file=str(weights) if weights.is_file() else None)


def with_published(cfgs: Dict[str, Any]) -> Dict[str, Any]:
    """For a family file's `generate_default_cfgs`: its untagged cfgs, with every published `<arch>.<tag>`
    of the index in use first. The first becomes timm's default tag: weights for the family's own dataset
    (its untagged cfg's) before weights for another (e.g. the digits transfer baselines), adversarially trained
    weights before standard-trained ones (a baseline published for comparison is never a robust model's default),
    then the lowest seed, then the tag. An architecture with published weights loses its untagged, weightless cfg,
    as in timm; the others keep it."""
    out: Dict[str, Any] = {}
    published = defaultdict(list)
    for name, entry in _index().items():
        published[entry['architecture']].append((name, entry))
    for key, cfg in cfgs.items():
        arch = key.split('.', 1)[0]
        _BASE_CFGS.setdefault(arch, cfg)
        if arch in published:
            order = sorted(published[arch], key=lambda item: (
                item[1]['dataset'] != getattr(cfg, 'dataset', None), item[1].get('train_attack') == 'none',
                item[1].get('seed', 0), item[1]['tag']))
            for name, entry in order:
                out[name] = _published_cfg(cfg, name, entry, cards_dir())
        else:
            out[key] = cfg
    return out


def register_published(index_path: Optional[PathLike] = None, cards_dir: Optional[PathLike] = None) -> List[str]:
    """(Re)register timm pretrained cfgs for a published index (default: env ROBUST_ZOO_PUBLISHED_INDEX or
    the package's `published.json`) and model-cards folder (default: MODEL_CARDS_DIR).

    Family files do this at import; call it after writing or moving cards, or to point robust_zoo at other
    ones (tests). Returns the registered `robust_zoo/<arch>.<tag>` names."""
    path = Path(index_path) if index_path is not None else PUBLISHED_INDEX
    index = load_published(path)
    unknown = sorted({e['architecture'] for e in index.values()} - set(_BASE_CFGS))
    if unknown:
        raise ValueError(f'{path}: {unknown} take no published cfgs (families that do: rz_cifar_resnet, rz_mlp).')
    before = dict(_state)
    _state.update(index_path=path, cards_dir=Path(cards_dir) if cards_dir is not None else MODEL_CARDS_DIR,
                  index=index)
    touched = {e['architecture'] for e in index.values()} | {
        a for a in _BASE_CFGS if any('.' in n for n in _registry._model_with_tags.get(a, ()))}
    try:
        for arch in sorted(touched):
            default = _registry.generate_default_cfgs(with_published({arch: _BASE_CFGS[arch]}))[arch]
            _register_default_cfg(arch, default)
    except Exception:
        _state.update(before)
        raise
    return [f'robust_zoo/{name}' for name in index]


def _register_default_cfg(arch: str, default_cfg: Any) -> None:
    """What timm's `register_model` does with a module's `default_cfgs[arch]`, for an already registered arch
    (timm has no public API to change the pretrained cfgs of a registered model)."""
    for name in _registry._model_with_tags.pop(arch, []) + [arch]:
        _registry._model_pretrained_cfgs.pop(name, None)
        _registry._model_has_pretrained.discard(name)
    for tag_idx, tag in enumerate(default_cfg.tags):
        name_tag = f'{arch}.{tag}' if tag else arch
        cfg = dataclasses.replace(default_cfg.cfgs[tag], architecture=arch, tag=tag or None)
        if tag_idx == 0:
            _registry._model_pretrained_cfgs[arch] = cfg
            if cfg.has_weights:
                _registry._model_has_pretrained.add(arch)
        if tag:
            _registry._model_pretrained_cfgs[name_tag] = cfg
            if cfg.has_weights:
                _registry._model_has_pretrained.add(name_tag)
        _registry._model_with_tags[arch].append(name_tag)
    _registry._model_default_cfgs[arch] = default_cfg
    module = sys.modules.get(_registry.model_entrypoint(arch).__module__)
    if module is not None and isinstance(getattr(module, 'default_cfgs', None), dict):
        module.default_cfgs[arch] = default_cfg


def not_published(name: str, index: Mapping[str, Any], where: str = '') -> str:
    """The error message for a name that is not in the published `index`: its closest published names (not all
    of them) and the command that lists them."""
    if not index:
        return f'{name!r} is not published{where}: no model is published yet.'
    close = difflib.get_close_matches(name, list(index), n=3, cutoff=0.5)
    return (f'{name!r} is not published{where}.' + (f" Did you mean {', '.join(close)}?" if close else '')
            + ' `robust-zoo list --results` lists every published model with its numbers.')


def stronger_text(entry: Mapping[str, Any]) -> str:
    """'; stronger: apgd-ce+apgd-t 0.719 (n=1000), ...' for the stronger records of a published index entry ('' when
    none ran): appended to a line that states the headline number."""
    stronger = [f"{'+'.join(s['attacks'])} {s['robust_accuracy']:.3f} (n={s['n_examples']})"
                for s in entry.get('stronger', ())]
    return '; stronger: ' + ', '.join(stronger) if stronger else ''


# The marks a model is read with (table, plot, `robust-zoo list --results`), keyed by the index's `caveats`, with
# the leaderboard row's key for the same warning and a line that explains the mark.
MARKS = {
    'checks_not_passed': ('(!)', 'checks', 'a sanity check of the evaluator warned or failed: the robust accuracy '
                                           'may be overstated (see the card)'),
    'stopped_early': ('(e)', 'stopped_early', 'training stopped early on catastrophic overfitting; the card names '
                                              'the epoch kept'),
    'catastrophic_overfitting': ('(co)', 'overfit', 'the shipped weights overfit catastrophically '
                                                    '(robust_zoo/training/overfitting.py; see the card)'),
}


def caveat_marks(caveats: Optional[Mapping[str, Any]]) -> List[str]:
    """The marks of a published index entry's `caveats`, in the table's order."""
    return [mark for key, (mark, _, _) in MARKS.items() if (caveats or {}).get(key)]
