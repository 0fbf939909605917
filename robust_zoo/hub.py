"""Published robust_zoo models as Hugging Face Hub repo folders: write them from a training run, push them,
register their pretrained cfgs with timm (the README leaderboard built from them: robust_zoo.leaderboard).

A published model is one folder `model_cards/<arch>.<tag>/` at the repository root (timm's naming, as in
`timm/resnet50.a1_in1k`), holding exactly what its Hub repo `<org>/<arch>.<tag>` holds: `model.safetensors`,
timm's `config.json`, the model card `README.md`, the run's `args.yaml` / `summary.csv`, the evaluation
records `eval_results.json`, and plots. `robust_zoo/published.json` indexes the published folders
(name -> architecture, tag, hf_hub_id, sha256, headline numbers) so an installed package knows the tags and
the weights' hashes; the card (its model-index metadata) is the one source of truth for results.

Loading `timm.create_model('robust_zoo/<arch>.<tag>', pretrained=True)` takes, in this order:
1. `<MODEL_CARDS_DIR>/<arch>.<tag>/model.safetensors` when it exists (a checkout; offline), sha256-checked;
2. else the Hugging Face Hub repo `hf_hub_id` through `hf_hub_download` (its cache first; HF_HUB_OFFLINE=1
   keeps it to the cache), sha256-checked.
"""
import csv
import dataclasses
import difflib
import hashlib
import json
import logging
import math
import os
import re
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from . import settings

__all__ = [
    'MODEL_CARDS_DIR', 'PUBLISHED_INDEX', 'PublishedWeightsError', 'cards_dir', 'check_weights_belong', 'hf_org',
    'index_path', 'load_published', 'not_published', 'push_card_repo', 'register_published', 'repo_files',
    'resolve_published_weights', 'sha256_file', 'unpublish', 'unpublish_target', 'weights_metadata',
    'with_published', 'write_card_repo',
]

_logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

MODEL_CARDS_DIR = settings.cards_dir()  # the default at import; robust_zoo.settings says how it is chosen
PUBLISHED_INDEX = Path(os.environ.get('ROBUST_ZOO_PUBLISHED_INDEX') or Path(__file__).with_name('published.json'))
DEFAULT_ORG = 'robust-zoo'
WEIGHTS_NAME = 'model.safetensors'

_TAG_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_-]*$')
_REPO_ID_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$')
_INDEX_KEYS = ('architecture', 'tag', 'hf_hub_id', 'sha256')

# dataset id (robust_zoo.data) -> (Hub dataset id for model-index, display name, one-line description)
_DATASETS = {
    'fashion-mnist': ('fashion_mnist', 'Fashion-MNIST',
                      'Fashion-MNIST (Xiao et al. 2017, MIT license): 60,000 training and 10,000 test 28x28 grey '
                      'images of 10 clothing classes. robust_zoo reads the files of Debian\'s `dataset-fashion-mnist` '
                      '(md5-checked).'),
    'mnist': ('mnist', 'MNIST', 'MNIST: 60,000 training and 10,000 test 28x28 grey digits.'),
    'cifar10': ('cifar10', 'CIFAR-10', 'CIFAR-10: 50,000 training and 10,000 test 32x32 colour images, 10 classes.'),
    'cifar100': ('cifar100', 'CIFAR-100', 'CIFAR-100: 50,000 training and 10,000 test 32x32 colour images, 100 '
                 'classes.'),
    'digits': ('digits', 'digits',
               "scikit-learn's bundled handwritten digits (`sklearn.datasets.load_digits`, 1,797 real 8x8 images of "
               '10 classes, BSD-3-Clause), upsampled bilinearly to 28x28 by robust_zoo; fixed split (a permutation '
               'seeded with 0): 1,297 training and 500 test images.'),
}

# the training data's terms, for the card's License section (other datasets: "has its own license")
_DATA_LICENSES = {
    'fashion-mnist': 'Fashion-MNIST has its own license (MIT).',
    'digits': "The digits are scikit-learn's copy (BSD-3-Clause) of the test part of UCI's Optical Recognition of "
              'Handwritten Digits data set (Alpaydin and Kaynak 1998), which has its own terms.',
}

# --- the published index and timm's registry ----------------------------------------------------------------

_state: Dict[str, Any] = dict(index_path=PUBLISHED_INDEX, cards_dir=MODEL_CARDS_DIR, index=None)
_BASE_CFGS: Dict[str, Any] = {}  # arch -> its untagged (no-weights) cfg, for the families that take published cfgs


class PublishedWeightsError(RuntimeError):
    """Published weights are missing, corrupt, or not the published ones."""


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
    (its untagged cfg's) before weights for another (e.g. the digits transfer baselines), then the lowest
    seed, then the tag. An architecture with published weights loses its untagged, weightless cfg, as in
    timm; the others keep it."""
    out: Dict[str, Any] = {}
    published = defaultdict(list)
    for name, entry in _index().items():
        published[entry['architecture']].append((name, entry))
    for key, cfg in cfgs.items():
        arch = key.split('.', 1)[0]
        _BASE_CFGS.setdefault(arch, cfg)
        if arch in published:
            order = sorted(published[arch], key=lambda item: (
                item[1]['dataset'] != getattr(cfg, 'dataset', None), item[1].get('seed', 0), item[1]['tag']))
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
    from timm.models import _registry

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
    import sys

    from timm.models import _registry

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


# --- verified loading ---------------------------------------------------------------------------------------

def sha256_file(path: PathLike) -> str:
    """Hex sha256 of a file, read every time: a cache keyed on size and mtime is fooled by a file rewritten with
    the same size within one timestamp tick, and a published file must never pass on a stale digest."""
    digest = hashlib.sha256()
    with Path(path).open('rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, name: str, entry: Mapping[str, Any], fix: str) -> None:
    actual = sha256_file(path)
    if actual != entry['sha256']:
        raise PublishedWeightsError(
            f"{path} is not the published weights of robust_zoo/{name}: its sha256 is {actual}, the published "
            f"index {_state['index_path']} records {entry['sha256']}. The file is corrupt, truncated or was "
            f"replaced. {fix} To load other weights on purpose, pass pretrained_cfg_overlay=dict(file=...).")


def _split_revision(hub_id: str) -> Tuple[str, Optional[str]]:
    repo, _, revision = hub_id.partition('@')
    return repo, revision or None


def _download(name: str, entry: Mapping[str, Any], cache_dir: Optional[PathLike], local: Optional[Path]) -> Path:
    from huggingface_hub import constants, hf_hub_download

    repo_id = entry['hf_hub_id']
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=WEIGHTS_NAME, cache_dir=cache_dir))
    except Exception as e:  # offline, not cached, no such repo, network: all say the same thing to the user
        where = f'not in {local} and ' if local is not None else ''
        if constants.HF_HUB_OFFLINE:
            how = (f'HF_HUB_OFFLINE=1 is set: unset it to download {WEIGHTS_NAME} from https://huggingface.co/'
                   f'{repo_id}, or put the repo folder at {local.parent if local is not None else cards_dir() / name}.')
        else:
            how = f'check the network and that https://huggingface.co/{repo_id} exists.'
        raise PublishedWeightsError(
            f'robust_zoo/{name}: the published weights are {where}not in the Hugging Face cache, and could not be '
            f'downloaded ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}). {how}') from e


def weights_metadata(arch: str, activation: Optional[str] = None) -> Dict[str, str]:
    """The safetensors metadata robust_zoo writes with weights: the architecture and activation they belong to."""
    arch = _arch_of(arch) or arch
    return dict(architecture=arch, activation=activation or _activation_of(arch)[1])


def check_weights_belong(path: PathLike, arch: str, activation: Optional[str] = None) -> None:
    """Refuse a weights file whose safetensors metadata names another architecture or activation than the model
    it is loaded into (same-shaped weights of a ReLU net load silently into a SiLU one); files without that
    metadata pass."""
    from .training.checkpoint import CheckpointError, read_weights_metadata
    meta = read_weights_metadata(path)
    theirs = meta.get('architecture') or _arch_of(meta.get('arch') or '') or ''
    ours = _arch_of(arch) or arch
    their_act = meta.get('activation') or (_activation_of(theirs)[1] if theirs else '')
    our_act = activation or _activation_of(ours)[1]
    if theirs and ours and theirs != ours:
        raise CheckpointError(f'{path} holds weights of {theirs} (activation {their_act or "unknown"}), not of {ours} '
                              f'(activation {our_act or "unknown"}): they would load into the wrong model. Evaluate '
                              f'them as robust_zoo/{theirs}.')
    if their_act and our_act and their_act != our_act:
        raise CheckpointError(f'{path} holds weights trained with activation {their_act}, not {our_act} of {ours}: '
                              f'build the model with act_layer={their_act!r}.')


def resolve_published_weights(variant: str, cfg: Any, *, cache_dir: Optional[PathLike] = None,
                              overlay: Optional[Mapping[str, Any]] = None) -> Any:
    """Where the weights of a published cfg come from, sha256-checked against the published index.

    Returns `cfg`, with `file` set to the verified local file for registry names (`robust_zoo/<arch>.<tag>`).
    Unpublished cfgs, and weights the caller chose (`pretrained_cfg_overlay` with a source), pass unchanged.
    `hf-hub:<repo>` of a published repo (no `@revision`) has its cached file checked too, and `local-dir:` of
    a published folder in the model-cards folder its `model.safetensors`.
    """
    if overlay and overlay.get('file') and str(overlay['file']).endswith('.safetensors'):
        check_weights_belong(overlay['file'], variant)
    index = _index()
    if not index or cfg.state_dict is not None:
        return cfg
    if overlay and any(overlay.get(k) for k in ('file', 'url', 'hf_hub_id', 'state_dict')):
        return cfg
    by_hub_id = {e['hf_hub_id']: (n, e) for n, e in index.items()}
    if cfg.source == 'local-dir':
        folder = Path(cfg.file).resolve() if cfg.file else None
        for name, entry in index.items():
            if folder is not None and folder == (cards_dir() / name).resolve():
                weights = folder / WEIGHTS_NAME
                if not weights.is_file():
                    raise PublishedWeightsError(f'{folder} has no {WEIGHTS_NAME}: restore the folder from git, or load '
                                                f"robust_zoo/{name} from the Hub (hf-hub:{entry['hf_hub_id']}).")
                _verify(weights, name, entry, f'Restore it with `git checkout -- {weights}`.')
        return cfg
    repo_id, revision = _split_revision(cfg.hf_hub_id or '')
    if repo_id not in by_hub_id:
        return cfg
    name, entry = by_hub_id[repo_id]
    if cfg.source == 'hf-hub':
        if revision is None:
            path = _download(name, entry, cache_dir, None)
            _verify(path, name, entry, f'Delete it from the Hugging Face cache and load again, or upgrade robust_zoo '
                                       f'if the Hub repo {repo_id} was updated after this release.')
        return cfg
    local = Path(cfg.file) if cfg.file else cards_dir() / name / WEIGHTS_NAME
    if local.is_file():
        _verify(local, name, entry, f'Restore it with `git checkout -- {local}`, or delete it to load the '
                                    f"published copy from the Hub ({entry['hf_hub_id']}).")
        return dataclasses.replace(cfg, file=str(local))
    path = _download(name, entry, cache_dir, local)
    _verify(path, name, entry, 'Delete it from the Hugging Face cache and load again, or upgrade robust_zoo if the '
                               f'Hub repo {repo_id} was updated after this release.')
    return dataclasses.replace(cfg, file=str(path))


# --- writing a card repo from a training run ----------------------------------------------------------------

def _read_json(path: PathLike, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f'{what} {path} does not exist.')
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f'{what} {path} is not valid JSON ({e}).') from e


def _as_record(obj: Any, source: str) -> Dict[str, Any]:
    """An EvalResult dict, bare or inside train_at.py's final_eval.json (`evaluation`)."""
    if isinstance(obj, dict) and isinstance(obj.get('evaluation'), dict):
        obj = obj['evaluation']
    need = ('model', 'threat_model', 'n_examples', 'clean_accuracy', 'robust_accuracy', 'attacks',
            'confidence_interval')
    if not isinstance(obj, dict) or any(k not in obj for k in need):
        raise ValueError(f'{source} is not an evaluation record (robust_zoo.evaluate(...).to_dict()): it needs '
                         f'{", ".join(need)}.')
    return obj


def _arch_of(name: str) -> Optional[str]:
    """robust_zoo/<arch>[.tag] or <arch>[.tag] -> arch; None for hf-hub: / local-dir: names."""
    if ':' in name:
        return None
    if name.startswith('robust_zoo/'):
        name = name[len('robust_zoo/'):]
    return name.split('.', 1)[0]


def _activation_of(arch: str) -> Tuple[str, str]:
    """'resnet20_capped_relu_at' -> ('resnet20', 'capped_relu')."""
    from .layers import ACTIVATIONS
    for act in sorted(ACTIVATIONS, key=len, reverse=True):
        if arch.endswith(f'_{act}_at'):
            return arch[:-len(f'_{act}_at')], act
    return arch[:-3] if arch.endswith('_at') else arch, 'silu' if arch.endswith('_at') else ''


def _wilson(acc: float, n: int) -> Tuple[float, float]:
    """95% Wilson interval of an accuracy over n points (a seed mean need not be k / n: no rounding)."""
    from .evaluation.result import wilson_interval
    return wilson_interval(acc * n, n)  # type: ignore[arg-type]  (the formula only needs p = acc)


def _protocols(record: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """One entry per (threat model, attack protocol) of a record: clean, each attack, and the per-example worst
    case when there are several attacks. Intervals: the record's own for the worst case, Wilson otherwise."""
    t, n = record['threat_model'], int(record['n_examples'])
    base = dict(threat_model=t['id'], norm=t['norm'], eps=t['eps'], n_examples=n, seed=record.get('seed', 0))
    rows = [dict(base, kind='clean', attack='none', value=record['clean_accuracy'],
                 ci=_wilson(record['clean_accuracy'], n))]
    for attack, acc in record['attacks'].items():
        rows.append(dict(base, kind='robust', attack=attack, value=acc, ci=_wilson(acc, n)))
    if len(record['attacks']) > 1:
        rows.append(dict(base, kind='robust', attack='worst-case', attacks=list(record['attacks']),
                         value=record['robust_accuracy'], ci=tuple(record['confidence_interval'])))
    elif record['attacks']:
        only = rows[-1]
        if not math.isclose(only['value'], record['robust_accuracy'], abs_tol=1e-12):
            raise ValueError(f"record for {record['model']}: robust_accuracy {record['robust_accuracy']} differs from "
                             f"its only attack's {only['value']}.")
        only['ci'] = tuple(record['confidence_interval'])
    return rows


def _protocol_label(p: Mapping[str, Any]) -> str:
    if p['kind'] == 'clean':
        return f"clean, n={p['n_examples']}"
    attack = f"worst case of {', '.join(p['attacks'])}" if p['attack'] == 'worst-case' else p['attack']
    return f"{attack}, n={p['n_examples']}"


def _metric_config(p: Mapping[str, Any]) -> str:
    return f"{p['threat_model']} {p['attack'] if p['kind'] == 'robust' else 'clean'} n={p['n_examples']}"


def _eval_results(records: Sequence[Mapping[str, Any]], dataset: str) -> List[Any]:
    from huggingface_hub import EvalResult
    hub_id, display, _ = _DATASETS.get(dataset, (dataset, dataset, ''))
    out = []
    for record in records:
        for p in _protocols(record):
            args = dict(threat_model=p['threat_model'], norm=p['norm'], eps=p['eps'], attack=p['attack'],
                        n_examples=p['n_examples'], eval_seed=p['seed'], wilson95=[float(p['ci'][0]), float(p['ci'][1])])
            if p.get('attacks'):
                args['attacks'] = p['attacks']
            out.append(EvalResult(
                task_type='image-classification', dataset_type=hub_id, dataset_name=display, dataset_split='test',
                metric_type='accuracy' if p['kind'] == 'clean' else 'robust_accuracy', metric_value=p['value'],
                metric_name=('clean accuracy' if p['kind'] == 'clean' else f"robust accuracy ({_protocol_label(p)})"),
                metric_config=_metric_config(p), metric_args=args))
    return out


def _pct(x: float) -> str:
    return f'{100 * x:.1f}%'


def _md_cell(text: Any) -> str:
    return str(text).replace('|', '\\|').replace('\n', ' ')


# recipe values that say how a run executes, not what it learns from: precision (train_at.py --amp falls back to
# fp32 where bf16 is emulated), compiled activation kernels (same math) and checkpoint frequency; a run's card
# states its precision
EXECUTION_KEYS = ('amp', 'amp_dtype', 'fused_act', 'checkpoint_interval')


def _find_recipe(args: Mapping[str, Any]) -> Optional[Path]:
    """The train/configs/*.yaml the run was trained with, as far as its args tell (args.yaml does not record -c):
    every recipe key except `model` equal to the run's, the same base architecture, the most keys; None when
    none or several fit equally."""
    import yaml
    folder = Path(__file__).resolve().parents[1] / 'train' / 'configs'
    base = _activation_of(_arch_of(str(args.get('model', ''))) or '')[0]
    fits = []
    for path in sorted(folder.glob('*.yaml')) if folder.is_dir() else []:
        try:
            recipe = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        model = _arch_of(str(recipe.get('model', '')))
        if recipe and all(args.get(k) == v for k, v in recipe.items()
                          if k != 'model' and k not in EXECUTION_KEYS) \
                and (not model or _activation_of(model)[0] == base):
            fits.append((len(recipe), path))
    fits.sort(reverse=True)
    return fits[0][1] if fits and (len(fits) == 1 or fits[0][0] > fits[1][0]) else None


def _summary_rows(summary: Path) -> List[Dict[str, str]]:
    """A run's per-epoch `summary.csv` rows (none when the run has no such file)."""
    if not summary.is_file():
        return []
    with summary.open(newline='') as f:
        return list(csv.DictReader(f))


def _plot_training(rows: Sequence[Mapping[str, str]], out: Path) -> Optional[Path]:
    if not rows:
        return None
    plt = _pyplot()
    epochs = [int(r['epoch']) + 1 for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3))
    if 'train_loss' in rows[0]:
        ax1.plot(epochs, [float(r['train_loss']) for r in rows], 'o-', label='train loss (adversarial)')
    ax1.set_xlabel('epoch')
    ax1.set_title('training loss')
    for key, label in (('train_adv_acc', 'train, adversarial'), ('train_clean_acc', 'train, clean'),
                       ('eval_clean_acc', 'validation, clean'), ('eval_robust_acc', 'validation, robust')):
        if key in rows[0] and rows[0][key] not in ('', None):
            ax2.plot(epochs, [float(r[key]) for r in rows], 'o-', label=label)
    ax2.set_xlabel('epoch')
    for ax in (ax1, ax2):
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax2.set_ylim(0, 1)
    ax2.set_title('accuracy')
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _plot_evaluation(records: Sequence[Mapping[str, Any]], title: str, out: Path) -> Path:
    plt = _pyplot()
    protocols = [p for r in records for p in _protocols(r)]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(protocols) + 1), 3))
    xs = range(len(protocols))
    values = [p['value'] for p in protocols]
    err = [[v - p['ci'][0] for v, p in zip(values, protocols)], [p['ci'][1] - v for v, p in zip(values, protocols)]]
    ax.bar(xs, values, yerr=err, capsize=3, color=['tab:gray' if p['kind'] == 'clean' else 'tab:blue' for p in protocols])
    import textwrap
    ax.set_xticks(list(xs), ['\n'.join(textwrap.wrap(_protocol_label(p), 14)) for p in protocols], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel('accuracy (Wilson 95%)')
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


_CURVES = {'accuracy_vs_steps': 'robust accuracy vs PGD steps (the steps-convergence check)',
           'accuracy_vs_eps': 'robust accuracy vs budget eps (the eps-sweep check)'}


def _plot_curves(records: Sequence[Mapping[str, Any]], folder: Path) -> List[Tuple[str, str]]:
    """The evaluator's accuracy-vs-steps and accuracy-vs-eps plots from the last record whose `checks='full'`
    carry those curves; a plot no record supports is removed (a card never shows a stale one)."""
    from .evaluation.plots import save_eval_plots
    with_curves = [r for r in records if any(c.get('data') and c.get('name') in ('steps convergence', 'eps sweep')
                                             for c in r.get('checks', []))]
    written = save_eval_plots(with_curves[-1], out_dir=folder) if with_curves else {}
    for stem in _CURVES:
        if stem not in written and (folder / f'{stem}.png').exists():
            (folder / f'{stem}.png').unlink()
    probes = {c['name']: c['data'].get('n') for c in (with_curves[-1]['checks'] if with_curves else [])
              if c.get('data')}
    check = {'accuracy_vs_steps': 'steps convergence', 'accuracy_vs_eps': 'eps sweep'}
    return [(f'{stem}.png', f'{text}, on its {probes.get(check[stem])} probe points')
            for stem, text in _CURVES.items() if stem in written]


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise RuntimeError('plots need matplotlib: pip install matplotlib') from e
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def write_card_repo(run_dir: PathLike, *, tag: str, evaluations: Optional[Sequence[Union[PathLike, Mapping]]] = None,
                    out_root: Optional[PathLike] = None, plots: Optional[Sequence[PathLike]] = None,
                    index_path: Optional[PathLike] = None, org: Optional[str] = None,
                    recipe: Optional[PathLike] = None, force: bool = False, keep_evaluations: bool = True) -> Path:
    """Write the Hub repo folder `<out_root>/<arch>.<tag>/` of a train/train_at.py run and index it.

    `evaluations`: EvalResult records (JSON files or dicts, bare or as train_at.py's final_eval.json); default:
    the run's final_eval.json. Every number in the card comes from them. `plots`: extra PNGs to ship (a
    training-curve and an evaluation plot are drawn from summary.csv and the records). `index_path`: the
    published index to update (default: the one in use, normally `robust_zoo/published.json`). `org`: Hub
    organisation (default `hf_org()`). `recipe`: the yaml the run was trained with (default: the
    train/configs/*.yaml the run's args match, if any). Returns the folder.

    Nothing published is lost or mislabelled: every record must have measured the run's weights (its
    `weights_digest` or `weights_sha256`); an already published `<arch>.<tag>` is replaced only with `force`, and
    then its evaluation records of the same weights are kept (`keep_evaluations=False` drops them). The folder is
    written beside the old one and swapped in, then the index is written atomically: on any error both stay as
    they were.
    """
    import timm
    import yaml
    from huggingface_hub import ModelCard, ModelCardData
    from timm.models._hub import save_config_for_hf

    from .data import LABEL_NAMES, NUM_CLASSES
    from .training import AttackConfig, atomic_write_text, load_weights

    run = Path(run_dir)
    if not _TAG_RE.match(tag or ''):
        raise ValueError(f'tag {tag!r} must be letters, digits, _ and - (e.g. fmnist_s0): it becomes <arch>.<tag>.')
    if not (run / 'args.yaml').is_file() or not (run / WEIGHTS_NAME).is_file():
        raise ValueError(f'{run} is not a finished train/train_at.py run: it needs args.yaml and {WEIGHTS_NAME}.')
    args = yaml.safe_load((run / 'args.yaml').read_text()) or {}
    arch = _arch_of(str(args.get('model', '')))
    if not arch or arch not in _BASE_CFGS:
        raise ValueError(f"{run}/args.yaml: model {args.get('model')!r} is not a robust_zoo model that takes published "
                         f'weights (families: rz_cifar_resnet, rz_mlp).')
    final = _read_json(run / 'final_eval.json', 'run record') if (run / 'final_eval.json').is_file() else {}
    if evaluations is None:
        if 'evaluation' not in final:
            raise ValueError(f'{run}/final_eval.json holds no evaluation record: pass evaluations=[...] '
                             f'(robust-zoo card --eval result.json).')
        evaluations = [final]
    sources = [f'evaluation record {i + 1}' if isinstance(e, Mapping) else str(e) for i, e in enumerate(evaluations)]
    records = [_as_record(e, src) if isinstance(e, Mapping) else _as_record(_read_json(e, 'evaluation'), src)
               for e, src in zip(evaluations, sources)]
    if not records:
        raise ValueError('a card needs at least one evaluation record.')
    for r in records:
        other = _arch_of(r['model'])
        if other is not None and other != arch:
            raise ValueError(f"an evaluation record is for {r['model']}, not the run's model robust_zoo/{arch}.")
    dataset = args.get('dataset') or records[0]['threat_model']['dataset']
    threat = records[0]['threat_model']
    base, activation = _activation_of(arch)
    model_kwargs = {k: v for k, v in dict(args.get('model_kwargs') or {}).items() if v is not None}
    if model_kwargs.get('act_layer') in (activation, None):
        model_kwargs.pop('act_layer', None)
    # a Sparta bank loaded at build time is provenance only: its values are in the weights
    bank_args = {k: model_kwargs.pop(k) for k in list(model_kwargs) if k.startswith('sparta_bank')}
    if model_kwargs or args.get('smooth_backward', 'none') != 'none':
        extra = dict(model_kwargs, **({'smooth_backward': args['smooth_backward']}
                                      if args.get('smooth_backward', 'none') != 'none' else {}))
        raise ValueError(f"{run} was trained with {extra}: `robust_zoo/{arch}.{tag}` rebuilds the registry's {arch} "
                         f'without them, so its weights would load into another model. Publish runs of a registered '
                         f'architecture as it is (model_kwargs empty; e.g. --model robust_zoo/<arch>_<act>_at).')

    # the model the weights belong to: timm's own export logic writes config.json
    state = load_weights(run / WEIGHTS_NAME)
    in_chans = args.get('in_chans') or (state['normalize.mean'].shape[1] if 'normalize.mean' in state else None)
    num_classes = args.get('num_classes') or NUM_CLASSES.get(dataset)
    kwargs = {k: v for k, v in dict(model_kwargs, num_classes=num_classes, in_chans=in_chans).items() if v is not None}
    model = timm.create_model(arch, act_layer=activation, **kwargs)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f'{run}/{WEIGHTS_NAME} does not fit robust_zoo/{arch} built from args.yaml '
                         f'({str(e).splitlines()[0]}).') from e
    org = org or hf_org()
    name = f'{arch}.{tag}'
    hf_hub_id = f'{org}/{name}'
    if not _REPO_ID_RE.match(hf_hub_id):
        raise ValueError(f'{hf_hub_id!r} is not a valid Hub repo id (ORG/NAME).')
    # the dataset's own class names, never ones inherited from the registry's default cfg (another dataset's)
    label_names = LABEL_NAMES.get(dataset)
    label_names = list(label_names) if label_names and len(label_names) == model.num_classes else None
    pretrained_cfg = dict(
        hf_hub_id=hf_hub_id, tag=tag, dataset=dataset, threat_model=threat['id'],
        input_mean=[float(f'{v:.7g}') for v in model.normalize.mean.flatten().tolist()],
        input_std=[float(f'{v:.7g}') for v in model.normalize.std.flatten().tolist()])
    # the keys set here always come last, in this order, whatever the registry's cfg held: config.json is
    # byte-stable across rewrites
    model.pretrained_cfg = {k: v for k, v in model.pretrained_cfg.items()
                            if k not in ('label_names', 'label_descriptions', 'label_offset', *pretrained_cfg)}

    out = Path(out_root) if out_root is not None else cards_dir()
    index_file = Path(index_path) if index_path is not None else Path(_state['index_path'])
    index = load_published(index_file)
    _refuse_replacing(out / name, index.get(name), force)
    records += _checked_records(run, model, records, sources, out / name, index.get(name), keep_evaluations)
    folder = _staging_folder(out, name)
    try:
        shutil.copyfile(run / WEIGHTS_NAME, folder / WEIGHTS_NAME)
        save_config_for_hf(model, folder / 'config.json',
                           model_config=dict(pretrained_cfg=pretrained_cfg, **({'label_names': label_names}
                                                                               if label_names else {})))
        shutil.copyfile(run / 'args.yaml', folder / 'args.yaml')
        summary = _summary_rows(run / 'summary.csv')
        if (run / 'summary.csv').is_file():
            shutil.copyfile(run / 'summary.csv', folder / 'summary.csv')
        (folder / 'eval_results.json').write_text(json.dumps(records, indent=2) + '\n')
        images = []
        for plot in plots or []:
            plot = Path(plot)
            if not plot.is_file() or plot.suffix.lower() != '.png':
                raise ValueError(f'plot {plot} is not a PNG file.')
            shutil.copyfile(plot, folder / plot.name)
            images.append((plot.name, plot.stem.replace('_', ' ')))
        try:
            if _plot_training(summary, folder / 'training_curves.png'):
                images.insert(0, ('training_curves.png', 'training curves (summary.csv)'))
            _plot_evaluation(records, f'{name}: {threat["id"]}', folder / 'evaluation.png')
            images.insert(1 if images and images[0][0] == 'training_curves.png' else 0,
                          ('evaluation.png', 'evaluation: accuracy per protocol with Wilson 95% intervals'))
            images += _plot_curves(records, folder)
        except RuntimeError as e:  # matplotlib missing: the card says so
            _logger.warning('no plots drawn: %s', e)
        sha = sha256_file(folder / WEIGHTS_NAME)
        from .sparta import BANK_FILE, save_bank, sparta_units
        bank = _bank_provenance(bank_args, model, out, name) if bank_args.get('sparta_bank') else None
        if sparta_units(model) and not (bank and bank['frozen']):
            # a Sparta model publishes its trained units as a reusable bank (a frozen one is its source's bank)
            save_bank(model, folder / BANK_FILE, source_model=arch, dataset=dataset, threat_model=threat['id'],
                      recipe=str(args.get('config') or ''), repo=name,
                      **({'loaded_bank': json.dumps(bank_args)} if bank_args else {}))
        elif (folder / BANK_FILE).is_file():
            (folder / BANK_FILE).unlink()

        if recipe is None and args.get('config'):
            recipe = _recorded_recipe(Path(args['config']))
        recipe_path = Path(recipe) if recipe is not None else _find_recipe(args)
        attack_cfg = None
        if args.get('attack', 'none') != 'none':
            attack_cfg = AttackConfig(attack=args['attack'], eps=args.get('attack_eps', 0.1),
                                      steps=args.get('attack_steps', 10), step_size=args.get('attack_step'),
                                      norm=args.get('attack_norm', 'Linf'))
        overfit = _overfitting(summary, args, final)
        rz = dict(architecture=arch, base_architecture=base, activation=activation, tag=tag, seed=args.get('seed', 0),
                  dataset=dataset, threat_model=threat['id'], norm=threat['norm'], eps=threat['eps'],
                  train_attack=args.get('attack'), train_eps=args.get('attack_eps'), epochs=args.get('epochs'),
                  precision=f"{args.get('amp_dtype', 'bfloat16')} autocast" if args.get('amp') else 'fp32',
                  recipe=_repo_relative(recipe_path) if recipe_path else None, sha256=sha,
                  **({'checks_not_passed': not_passed} if (not_passed := _checks_not_passed(records)) else {}),
                  **({'stopped_early': True, 'epochs_run': final.get('epochs_run'),
                      'kept_epoch': (final.get('best') or {}).get('epoch')} if final.get('stopped_early') else {}),
                  **({'catastrophic_overfitting': overfit} if overfit else {}),
                  **({'sparta_bank': {k: v for k, v in bank.items() if k != 'pairs'}} if bank else {}))
        card_data = ModelCardData(
            model_name=name, license='apache-2.0', library_name='timm', pipeline_tag='image-classification',
            datasets=[_DATASETS.get(dataset, (dataset,))[0]],
            tags=['image-classification', 'timm', 'robust_zoo', 'adversarial-robustness', 'adversarial-training',
                  dataset, activation],
            eval_results=_eval_results(records, dataset), robust_zoo=rz)
        body = _card_body(name=name, hf_hub_id=hf_hub_id, arch=arch, activation=activation, model=model, args=args,
                          final=final, records=records, dataset=dataset, images=images, sha=sha, folder=folder,
                          recipe_path=recipe_path, attack_cfg=attack_cfg, run=run, bank=bank, overfit=overfit)
        card = ModelCard.from_template(card_data, template_str='---\n{{ card_data }}\n---\n\n' + body)
        (folder / 'README.md').write_text(str(card).rstrip('\n') + '\n')

        head = _headline(records)
        clean, robust = head['clean_accuracy'], head['robust_accuracy']
        index[name] = dict(architecture=arch, tag=tag, hf_hub_id=hf_hub_id, sha256=sha,
                           size=(folder / WEIGHTS_NAME).stat().st_size, dataset=dataset, threat_model=threat['id'],
                           activation=activation, seed=args.get('seed', 0), clean_accuracy=clean,
                           robust_accuracy=robust,
                           n_examples=head['n_examples'], attacks=list(head['attacks']),
                           **({'stronger': stronger} if (stronger := _stronger_index_entries(records, head)) else {}),
                           **({'caveats': caveats} if (caveats := _caveats(rz)) else {}),
                           **({'bank_sha256': sha256_file(folder / BANK_FILE)}
                              if (folder / BANK_FILE).is_file() else {}),
                           pretrained_cfg={k: v for k, v in _config_cfg(folder).items() if k in _CFG_KEYS})
        text = json.dumps(dict(sorted(index.items())), indent=2) + '\n'
        _swap_in(folder, out / name, lambda: atomic_write_text(index_file, text))
    finally:
        if folder.exists():
            shutil.rmtree(folder)
    folder = out / name
    if index_file.resolve() == Path(_state['index_path']).resolve() and out.resolve() == cards_dir().resolve():
        register_published(index_file, cards_dir())  # loadable at once in this process
    return folder


def _refuse_replacing(folder: Path, entry: Optional[Mapping[str, Any]], force: bool) -> None:
    """A published card (an index entry or a card folder with files) is replaced only when asked to."""
    if force or (entry is None and not (folder.is_dir() and any(folder.iterdir()))):
        return
    raise ValueError(f'{folder.name} is already published ({folder}' + (', and in the index' if entry else '')
                     + '); nothing was changed. Pass --force (force=True) to replace it: its evaluation records of '
                       'the same weights are kept, --drop-old-evals drops them. Or pick another --tag, or withdraw it '
                       f'first (robust-zoo unpublish {folder.name}).')


def _checked_records(run: Path, model: Any, records: Sequence[Mapping[str, Any]], sources: Sequence[str],
                     folder: Path, entry: Optional[Mapping[str, Any]], keep: bool) -> List[Dict[str, Any]]:
    """Refuse a record of other weights than the run's; return the records of the card being replaced at `folder`
    that measured the same weights and are not among `records` (none when `keep` is False). An older record that
    names no weights counts as the weights published under this name (the index entry's sha256): it passes only
    when the run's weights are those (e.g. a card rewritten from a run restored from it)."""
    from .evaluation.result import RecordWeightsError, check_record_weights
    from .training import parameter_digest

    sha, digest = sha256_file(run / WEIGHTS_NAME), parameter_digest(model)
    published = (entry or load_published().get(folder.name) or {}).get('sha256')  # this index's, else the one in use
    for record, source in zip(records, sources):  # an older record naming no weights: only for the published ones
        check_record_weights(record, source, sha256=sha, digest=digest, fallback=published)
    previous = folder / 'eval_results.json'
    if not keep or not previous.is_file():
        return []
    old = _read_json(previous, 'the published evaluation records')
    fallback = (entry or {}).get('sha256') or (sha256_file(folder / WEIGHTS_NAME)
                                               if (folder / WEIGHTS_NAME).is_file() else None)
    seen = {_record_key(r) for r in records}
    kept = []
    for i, record in enumerate(old if isinstance(old, list) else [], 1):
        try:
            check_record_weights(record, f'record {i} of {previous}', sha256=sha, digest=digest, fallback=fallback)
        except RecordWeightsError:
            attacks = '+'.join(record.get('attacks', {})) or 'clean'
            raise ValueError(f'--force keeps the evaluation records of {folder.name}, but record {i} of {previous} '
                             f"({attacks}, n={record.get('n_examples')}) measured other weights than the run's "
                             f'{run / WEIGHTS_NAME} (sha256 {sha}; the card being replaced published sha256 '
                             f'{fallback}). Pass --drop-old-evals (keep_evaluations=False) to replace the card without '
                             'them (they are lost), or publish the run under another --tag; nothing was '
                             'changed.') from None
        if _record_key(record) not in seen:
            seen.add(_record_key(record))
            kept.append(record if record.get('weights_digest') or record.get('weights_sha256')
                        else dict(record, weights_sha256=sha))
    return kept


def _record_key(record: Mapping[str, Any]) -> Tuple[Any, ...]:
    """What makes two evaluation records the same evaluation."""
    return (record['threat_model'].get('id'), record['n_examples'], record.get('seed', 0),
            json.dumps(record['attacks'], sort_keys=True), record['clean_accuracy'])


def _staging_folder(out: Path, name: str) -> Path:
    """A new hidden folder beside `out/name` where a card is written before it is swapped in."""
    import tempfile
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f'.{name}.', suffix='.new', dir=out))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    return staging


def _swap_in(staging: Path, folder: Path, write_index: Any) -> None:
    """Put the fully written `staging` folder in place of `folder`, then `write_index()`; on any error the
    previous folder is back in place (and `staging` holds the new one, for the caller to remove)."""
    old = folder.with_name(f'.{folder.name}.{os.getpid()}.old') if folder.exists() else None
    if old is not None:
        os.replace(folder, old)
    try:
        os.replace(staging, folder)
        write_index()
    except BaseException:
        if not staging.exists() and folder.exists():
            os.replace(folder, staging)
        if old is not None:
            os.replace(old, folder)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def not_published(name: str, index: Mapping[str, Any], where: str = '') -> str:
    """The error message for a name that is not in the published `index`: its closest published names (not all
    of them) and the command that lists them."""
    if not index:
        return f'{name!r} is not published{where}: no model is published yet.'
    close = difflib.get_close_matches(name, list(index), n=3, cutoff=0.5)
    return (f'{name!r} is not published{where}.' + (f" Did you mean {', '.join(close)}?" if close else '')
            + ' `robust-zoo list --results` lists every published model with its numbers.')


def unpublish(name: str, *, index_path: Optional[PathLike] = None, out_root: Optional[PathLike] = None) -> Path:
    """Withdraw a published model: delete its card folder `<out_root>/<name>/` and its index entry, e.g. when
    its recipe was superseded (a table must never mix budgets). The Hub repo, if pushed, is not touched.
    Every input is checked first (`unpublish_target`); the index is written atomically and the folder removed
    only after it. Returns the removed folder."""
    index_file, folder, name = unpublish_target(name, index_path=index_path, out_root=out_root)
    from .training import atomic_write_text
    index = load_published(index_file)
    del index[name]
    doomed = folder.with_name(f'.{folder.name}.{os.getpid()}.removed')
    os.replace(folder, doomed)
    try:
        atomic_write_text(index_file, json.dumps(dict(sorted(index.items())), indent=2) + '\n')
    except BaseException:
        os.replace(doomed, folder)
        raise
    shutil.rmtree(doomed)
    root = folder.parent
    if index_file.resolve() == Path(_state['index_path']).resolve() and root.resolve() == cards_dir().resolve():
        register_published(index_file, cards_dir())
    return folder


def unpublish_target(name: str, *, index_path: Optional[PathLike] = None,
                     out_root: Optional[PathLike] = None) -> Tuple[Path, Path, str]:
    """(index file, card folder, bare name) of a published model, after checking that both exist; touches nothing.
    Raises KeyError naming the published models when `name` is not one of them, ValueError when its card folder
    is not under `out_root` (a wrong --out)."""
    index_file = Path(index_path) if index_path is not None else Path(_state['index_path'])
    root = Path(out_root) if out_root is not None else cards_dir()
    index = load_published(index_file)
    name = name.removeprefix('robust_zoo/')
    if name not in index:
        raise KeyError(not_published(name, index, f' in {index_file}'))
    folder = root / name
    if not (folder / 'README.md').is_file() and not (folder / WEIGHTS_NAME).is_file():
        where = f'{root} does not exist' if not root.is_dir() else f'{root} has no card folder {name}/'
        raise ValueError(f'{where}: is --out right? {name} is in {index_file}, and its card folder should be in the '
                         f'model-cards folder ({cards_dir()} unless --out says otherwise); nothing was changed.')
    return index_file, folder, name


def _overfitting(rows: Sequence[Mapping[str, str]], args: Mapping[str, Any],
                 final: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The card's record of catastrophic overfitting (`robust_zoo.training.overfitting`), None where the run's
    summary.csv `rows` show none: the epochs that show it, the epoch whose weights ship, and whether that one does."""
    from .training import CO_GAP, catastrophic_overfitting_epochs, kept_epoch
    epochs = catastrophic_overfitting_epochs(rows, args.get('attack', 'none'), args.get('val_attack', 'pgd-10'))
    if not epochs:
        return None
    kept = kept_epoch(rows, (final.get('best') or {}).get('epoch'), bool(args.get('early_stop_robust')))
    row = next(r for r in rows if int(r['epoch']) == (kept if kept in epochs else epochs[-1]))
    return dict(epochs=epochs, kept_epoch=kept, kept_weights_affected=kept in epochs, gap_threshold=CO_GAP,
                epoch=int(row['epoch']), train_adv_acc=round(float(row['train_adv_acc']), 4),
                val_robust_acc=round(float(row['eval_robust_acc']), 4))


def _kept(args: Mapping[str, Any], final: Mapping[str, Any]) -> str:
    """Which epoch's weights the card ships, and why (epochs counted from 0, as in the run's log)."""
    if not args.get('early_stop_robust'):
        return 'last epoch'
    best = final.get('best') or {}
    if best.get('epoch') is None or best.get('epoch', -1) < 0:
        return 'best validation robust accuracy (early stopping on)'
    return (f"best validation robust accuracy (early stopping on): epoch {best['epoch']} (counted from 0), "
            f"validation {args.get('val_attack', 'pgd-10')} accuracy {best['robust_acc']:.3f}")


def _config_cfg(folder: Path) -> Dict[str, Any]:
    """The pretrained cfg a card's config.json gives timm (top-level num_classes / label_names included)."""
    config = json.loads((folder / 'config.json').read_text())
    cfg = dict(config.get('pretrained_cfg') or {})
    for key in ('num_classes', 'label_names'):
        if key in config:
            cfg[key] = config[key]
    return cfg


def _recorded_recipe(config: Path) -> Optional[Path]:
    """The recipe train_at.py recorded (an absolute path on the training machine): that file inside this
    checkout, else this checkout's train/configs/ file of the same name (a run made in another clone), else the
    file itself where it exists."""
    root = Path(__file__).resolve().parents[1]
    if config.is_file() and config.resolve().is_relative_to(root):
        return config
    local = root / 'train' / 'configs' / config.name
    return local if local.is_file() else config if config.is_file() else None


def _repo_relative(path: Path) -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)


def _bank_provenance(bank_args: Mapping[str, Any], model: Any, cards_root: Path, name: str) -> Dict[str, Any]:
    """Where a transferred model's Sparta units come from: the published bank they were loaded from (found by
    equal tensors among the cards, so the card can name it), the mapping, and for a frozen bank a check that the
    trained weights still hold exactly the bank's values."""
    import torch

    from .sparta import BANK_FILE, bank_mapping, read_bank, resolve_bank, sparta_units
    path = resolve_bank(bank_args['sparta_bank'])
    units, meta = read_bank(path)
    source = None
    for candidate in sorted(Path(cards_root).glob(f'[!.]*/{BANK_FILE}')):  # not a card being written
        other, other_meta = read_bank(candidate)
        if candidate.parent.name != name and 'loaded_bank' not in other_meta and other.keys() == units.keys() \
                and all(torch.equal(other[u][p], units[u][p]) for u in units for p in units[u]):
            source, meta = candidate.parent.name, other_meta  # the published bank's own provenance
            break
    if source is None:
        raise ValueError(f'the Sparta bank this run loaded ({path}) is not published under {cards_root}: publish the '
                         f'run it comes from first (robust-zoo card RUN --tag ...), so that this card can name it.')
    mapping = bank_args.get('sparta_bank_mapping', 'relative-depth')
    frozen = bool(bank_args.get('sparta_bank_freeze', True))
    targets = sparta_units(model)
    pairs = bank_mapping(list(units), list(targets), mapping)
    mean = {p: torch.stack([u[p] for u in units.values()]).mean(0) for p in ('beta', 'attn.weight', 'attn.bias')}
    equal = all(torch.equal(targets[t].state_dict()[p], (mean if s == '*' else units[s])[p])
                for t, s in pairs.items() for p in ('beta', 'attn.weight', 'attn.bias'))
    if frozen and not equal:
        raise ValueError(f"the run loaded {source}'s Sparta bank frozen, but its weights' Sparta units differ from the "
                         f'bank: they were trained after all, so the card would misstate them.')
    return dict(source=source, source_model=meta.get('source_model'), source_dataset=meta.get('dataset'),
                source_threat_model=meta.get('threat_model'), mapping=mapping, frozen=frozen,
                units_equal_bank=equal, n_units=len(pairs), pairs=pairs)


def _headline(records: List[dict]) -> dict:
    """The record a card and the published index state first: the one on the most test images (the most precise;
    for the zoo PGD-20 on all 10,000), the run's own final evaluation on ties."""
    return max(records, key=lambda r: r['n_examples'])


def _stronger_index_entries(records: Sequence[Mapping[str, Any]], first: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """What the index keeps of each AutoAttack (or APGD) record other than the headline one: attacks, n and robust
    accuracy, so that `robust-zoo list --results` and the main job can name the attack to trust beside the headline."""
    from .evaluation.autoattack import is_autoattack
    return [dict(attacks=list(r['attacks']), n_examples=r['n_examples'], robust_accuracy=r['robust_accuracy'])
            for r in records if r is not first and any(is_autoattack(a) for a in r['attacks'])]


def stronger_text(entry: Mapping[str, Any]) -> str:
    """'; stronger: apgd-ce+apgd-t 0.719 (n=1000), ...' for the stronger records of a published index entry ('' when
    none ran): appended to a line that states the headline number."""
    stronger = [f"{'+'.join(s['attacks'])} {s['robust_accuracy']:.3f} (n={s['n_examples']})"
                for s in entry.get('stronger', ())]
    return '; stronger: ' + ', '.join(stronger) if stronger else ''


def _stronger_attacks_text(records: Sequence[Mapping[str, Any]], first: Mapping[str, Any]) -> str:
    """Sentences for the card's summary on each AutoAttack record (or a subset: APGD) other than the headline one,
    with PGD's number on the same test images where a record has it: usually fewer images than the headline, but
    the stronger attack is the one to trust ('' when there is none)."""
    from .evaluation.autoattack import is_autoattack
    out = ''
    for r in records:
        strong = [a for a in r['attacks'] if is_autoattack(a)]
        if r is first or not strong:
            continue
        lo, hi = r['confidence_interval']
        out += (f" Under the stronger {' and '.join(strong)}, on the first {r['n_examples']} test images: robust "
                f"accuracy {_pct(r['robust_accuracy'])} (Wilson 95% {_pct(lo)} to {_pct(hi)})")
        same = [(a, v) for q in records if q is not r and q['n_examples'] == r['n_examples']
                and q['threat_model']['id'] == r['threat_model']['id']
                for a, v in q['attacks'].items() if not is_autoattack(a)]
        out += (', against ' + ', '.join(f'{a} {_pct(v)}' for a, v in same) + ' on the same images.' if same else '.')
    return out


def _card_body(*, name, hf_hub_id, arch, activation, model, args, final, records, dataset, images, sha, folder,
               recipe_path, attack_cfg, run, bank=None, overfit=None) -> str:
    import timm

    _, display, data_text = _DATASETS.get(dataset, (dataset, dataset, f'{dataset}.'))
    first = _headline(records)
    t = first['threat_model']
    summary_doc = (timm.models.model_entrypoint(arch).__doc__ or arch).split(';')[0].rstrip('.')
    n_params = sum(p.numel() for p in model.parameters())
    lo, hi = first['confidence_interval']
    attacks = ', '.join(first['attacks']) or 'none'
    train = (f"{args.get('attack')} at {args.get('attack_norm', 'Linf')} eps {args.get('attack_eps'):g}"
             if attack_cfg else 'no attack (standard training)')
    lines = [
        f'# {name}',
        '',
        f'{summary_doc}, with **{activation}** activations, adversarially trained on {display} ({train}, seed '
        f"{args.get('seed', 0)}) with robust_zoo. Inputs are images in [0, 1]: normalization is the first layer of the "
        'model.',
        '',
        f"Under the `{t['id']}` threat model ({t['norm']}, eps {t['eps']:g}), on the first {first['n_examples']} test "
        f"images: **robust accuracy {_pct(first['robust_accuracy'])}** (worst case per image over {attacks}; Wilson 95% "
        f"{_pct(lo)} to {_pct(hi)}), clean accuracy {_pct(first['clean_accuracy'])} (Wilson 95% "
        f"{_pct(_wilson(first['clean_accuracy'], first['n_examples'])[0])} to "
        f"{_pct(_wilson(first['clean_accuracy'], first['n_examples'])[1])})."
        + _stronger_attacks_text(records, first)
        + (f' Every other evaluation ({len(records) - 1} more) is under *Evaluation*.' if len(records) > 1 else ''),
        '',
        '## How to load',
        '',
        '```python',
        'import timm',
        'import robust_zoo  # registers the architecture, its activations and the robust_zoo/ prefix',
        '',
        f"model = timm.create_model('robust_zoo/{name}', pretrained=True).eval()",
        '# or, from this Hub repo or a local copy of it:',
        f"model = timm.create_model('hf-hub:{hf_hub_id}', pretrained=True).eval()",
        f"model = timm.create_model('local-dir:model_cards/{name}', pretrained=True).eval()",
        '',
        'cfg = timm.data.resolve_data_config(model=model)  # mean 0 / std 1: feed images in [0, 1]',
        'transform = timm.data.create_transform(**cfg)',
        '```',
        '',
        f"`robust_zoo/{name}` loads `model_cards/{name}/{WEIGHTS_NAME}` of a robust_zoo checkout when it is there, "
        f'else this Hub repo (through the Hugging Face cache; `HF_HUB_OFFLINE=1` keeps it offline), and checks the '
        f"file's sha256 against the package's published index either way.",
        '',
        '## Model',
        '',
        '| | |',
        '|---|---|',
        f'| architecture | `{arch}` ({summary_doc}) |',
        f'| activation | `{activation}` |',
        f'| parameters | {n_params:,} |',
        f"| input | {'x'.join(str(s) for s in model.pretrained_cfg['input_size'])}, values in [0, 1] |",
        f'| normalization (inside the model) | mean {tuple(round(float(v), 4) for v in model.normalize.mean.flatten())}, '
        f'std {tuple(round(float(v), 4) for v in model.normalize.std.flatten())} |',
        f'| classes | {model.num_classes} ({display}) |',
        '',
        '## Training',
        '',
        '| | |',
        '|---|---|',
    ]
    if recipe_path:
        lines.append(f'| recipe | `{_repo_relative(recipe_path)}` (flags on top of it: `args.yaml`) |')
    if attack_cfg:
        lines += [
            f"| attack | {args['attack']}, {attack_cfg.norm} eps {attack_cfg.eps:g}, step {attack_cfg.resolved_step_size:.4g}"
            + (f", {attack_cfg.steps} steps" if args['attack'] not in ('fgsm-rs', 'n-fgsm') else '')
            + (', noise 2 eps, no projection' if args['attack'] == 'n-fgsm' else '')
            + (f", TRADES beta {args.get('trades_beta')}" if args['attack'] == 'trades' else '') + ' |',
            f"| batch norm during the attack | {args.get('bn_mode', 'train')} |",
        ]
    else:
        lines.append('| attack | none |')
    epochs_run = final.get('epochs_run')
    lines += [
        f"| epochs | {args.get('epochs')}" + (f' (ran {epochs_run}' + (', stopped early: catastrophic overfitting'
                                                                        if final.get('stopped_early') else '') + ')'
                                                if epochs_run is not None and epochs_run != args.get('epochs') else '')
        + ' |',
        f"| batch | {args.get('batch_size')} x {final.get('world_size', 1)} process(es) |",
        f"| optimizer | {args.get('opt')}, lr {args.get('lr')}, momentum {args.get('momentum')}, weight decay "
        f"{args.get('weight_decay')} |",
        f"| schedule | {args.get('sched')}" + (' per update' if args.get('sched_on_updates') else ' per epoch')
        + (f", warmup {args.get('warmup_epochs')} epochs" if args.get('warmup_epochs') else '') + ' |',
        f"| precision | {(args.get('amp_dtype', 'bfloat16') + ' autocast') if args.get('amp') else 'fp32'} |",
        f"| EMA | {'decay ' + str(args.get('model_ema_decay')) if args.get('model_ema') else 'no'} |",
        f"| checkpoint kept | {_kept(args, final)} |",
        f"| seed | {args.get('seed', 0)} |",
        *_recipe_change_rows(args),
        '',
        '<details><summary>args.yaml (every flag of the run)</summary>',
        '',
        '```yaml',
        (run / 'args.yaml').read_text().rstrip('\n'),
        '```',
        '',
        '</details>',
        '',
        'Reproduce with `python train/train_at.py '
        + (f'-c {_repo_relative(recipe_path)} --model {args.get("model")} --seed {args.get("seed", 0)}'
           if recipe_path else '-c args.yaml') + (f' --model-kwargs sparta_bank={bank["source"]}' if bank else '')
        + '`' + ('' if recipe_path else ' (the args.yaml of this repo)') + '.',
        '',
        '## Data',
        '',
        data_text,
        (f"Training used the first {args['train_samples']:,} images of the training split"
         if args.get('train_samples') else 'Training used the training split')
        + (f"; its last {args['val_samples']:,} images were held out for validation ({args.get('val_attack')}) and "
           'never trained on' if args.get('val_samples') else '')
        + '. The evaluation uses the first n images of the test split.',
        '',
        '## Evaluation',
        '',
        'Every number below comes from a `robust_zoo.evaluate(...)` record shipped in `eval_results.json`. Each '
        'attack runs on every clean-correct image; the worst case counts an image as robust only if it survives '
        'every attack. Intervals are 95% Wilson score intervals over the n test images (they do not include '
        'seed-to-seed variation). The record number is the one the sanity checks below name.',
        '',
        '| record | threat model | norm | eps | attack | n | accuracy | Wilson 95% |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for i, record in enumerate(records, 1):
        for p in _protocols(record):
            attack = 'none (clean)' if p['kind'] == 'clean' else (
                f"worst case of {', '.join(p['attacks'])}" if p['attack'] == 'worst-case' else p['attack'])
            lines.append(f"| {i} | `{p['threat_model']}` | {p['norm']} | {p['eps']:g} | {attack} | {p['n_examples']} | "
                         f"{_pct(p['value'])} | {_pct(p['ci'][0])} to {_pct(p['ci'][1])} |")
    from .evaluation.autoattack import is_subset
    subsets = sorted({a for record in records for a in record.get('attacks', {}) if is_subset(a)})
    if subsets:
        lines += ['', f"{', '.join(subsets)}: AutoAttack's attacks alone (the authors' `pyautoattack`) with the settings "
                      'of AutoAttack standard (for Linf and L2: APGD-CE 1 restart, APGD-T 9 target classes, FAB-T 9, Square 5,000 '
                      'queries), so each is that part of AutoAttack standard.']
    for i, record in enumerate(records):
        versions = ', '.join(f'{k} {v}' for k, v in record.get('versions', {}).items())
        lines += ['', f"Sanity checks of record {i + 1} (`{record['threat_model']['id']}`, n = {record['n_examples']}, "
                      f"seed {record.get('seed', 0)}" + (f'; {versions}' if versions else '') + '):', '',
                  '| check | status | detail |', '|---|---|---|']
        lines += [f"| {_md_cell(c.get('name'))} | {_md_cell(c.get('status'))} | {_md_cell(c.get('detail'))} |"
                  for c in record.get('checks', [])] or ['| (none run) | | |']
    if images:
        lines += ['', '## Plots', '']
        lines += [f'![{alt}]({file})' for file, alt in images]
    if bank:
        src_data = _DATASETS.get(bank['source_dataset'], (None, bank['source_dataset']))[1]
        lines += ['', '## Sparta bank (transferred)', '',
                  f"This model's {bank['n_units']} Sparta activations were not trained here: they were loaded from the "
                  f"published bank of [`{bank['source']}`](../{bank['source']}) ({bank['source_model']} adversarially "
                  f"trained on {src_data} under `{bank['source_threat_model']}`) with the `{bank['mapping']}` mapping "
                  + ('and kept frozen while the rest of the network was trained. The shipped weights hold exactly the '
                     "bank's values (checked when this card was written)." if bank['frozen'] else
                     'and trained further with the rest of the network.'),
                  '', '<details><summary>unit mapping (target unit: bank unit)</summary>', '',
                  '| unit of this model | bank unit |', '|---|---|']
        lines += [f'| `{t}` | `{s}` |' for t, s in bank['pairs'].items()]
        lines += ['', '</details>']
    if (folder / 'sparta_bank.safetensors').is_file():
        lines += ['', '## Sparta bank', '',
                  f'`sparta_bank.safetensors` holds this model\'s trained Sparta units on their own, to reuse them '
                  f'(frozen) in another CNN: `timm.create_model("robust_zoo/resnet56_sparta_at", sparta_bank="{name}")` '
                  'or `robust_zoo.sparta.load_bank(model, ...)`; the unit mapping is documented in `robust_zoo/sparta.py`.']
    from .evaluation.autoattack import is_autoattack
    aa_parts = list(dict.fromkeys(a for r in records for a in r['attacks'] if is_autoattack(a)))
    full_aa = any(a.startswith('autoattack-') for a in aa_parts)
    lines += [
        '',
        '## Limitations',
        '',
        f"- Robustness is measured, not certified, and only for `{t['id']}` ({t['norm']}, eps {t['eps']:g}) on "
        f'{display}: accuracies under attack are upper bounds on the true robust accuracy.',
    ]
    if not aa_parts:
        lines.append('- No AutoAttack evaluation is in these records: stronger attacks can lower the numbers.')
    elif not full_aa:
        lines.append(f"- Only part of AutoAttack ran ({', '.join(aa_parts)}), not the whole of AutoAttack standard "
                     '(APGD-CE, APGD-T, FAB-T, Square): the rest can lower the numbers further.')
    for i, record in enumerate(records):  # a check that did not pass is a limitation of the numbers it checks
        lines += [f"- Sanity check `{c.get('name')}` of record {i + 1} ({c.get('status')}): {c.get('detail')}"
                  for c in record.get('checks', []) if c.get('status') in ('WARN', 'FAIL')]
    if overfit:
        epochs = ', '.join(str(e) for e in overfit['epochs'])
        seen = (f"at epoch {overfit['epoch']} its {args.get('attack')} training accuracy {overfit['train_adv_acc']:.3f} "
                f"was more than {overfit['gap_threshold']:g} above its validation {args.get('val_attack', 'pgd-10')} "
                f"accuracy {overfit['val_robust_acc']:.3f}")
        if overfit['kept_weights_affected']:
            lines.append(f'- **This run overfit catastrophically** (Wong et al. 2020): {seen}, and the shipped weights '
                         f'are from that epoch (epochs showing it, from 0: {epochs}). Its robust accuracy shows a '
                         'failure of single-step training, not what the activation can reach; the README gives its '
                         'verdicts with and without such runs (rule: `robust_zoo/training/overfitting.py`).')
        else:
            lines.append(f'- Catastrophic overfitting appeared at epoch(s) {epochs} (Wong et al. 2020; {seen}); the '
                         f"shipped weights are from epoch {overfit['kept_epoch']}, before it.")
    lines += [
        f"- The evaluation covers the first {', '.join(str(n) for n in sorted({r['n_examples'] for r in records}))} test images "
        '(see the Wilson intervals); one training seed.',
        f'- A small research model for {display}; not for deployment or other data.',
        '',
        '## License',
        '',
        f'Apache-2.0 (weights and code). {_DATA_LICENSES.get(dataset, f"{display} has its own license.")}',
        '',
        '## Files',
        '',
        f'`{WEIGHTS_NAME}` sha256: `{sha}`',
        '',
        '| file | bytes | sha256 |',
        '|---|---|---|',
    ]
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.name != 'README.md'):
        lines.append(f'| `{path.name}` | {path.stat().st_size:,} | `{sha256_file(path)}` |')
    return '\n'.join(lines) + '\n'


def _recipe_change_rows(args: Mapping[str, Any]) -> List[str]:
    """The Training table's rows for the recipe changes a resumed run recorded (train_at.py --allow-recipe-change):
    the flags above are the last ones; before epoch N some were different."""
    rows = []
    for change in args.get('recipe_changes') or []:
        diffs = ', '.join(f'{k} {v.get("was")!r} -> {v.get("now")!r}' for k, v in (change.get('changes') or {}).items())
        rows.append(f"| recipe changed from epoch {change.get('from_epoch')} (counted from 0) | {_md_cell(diffs)} |")
    return rows


def _caveats(rz: Mapping[str, Any]) -> Dict[str, Any]:
    """What the index keeps of a card's warnings, so that a listing of the numbers carries them too: the sanity
    checks that did not pass, an early stop, catastrophic overfitting in the shipped weights."""
    co = rz.get('catastrophic_overfitting') or {}
    return {k: v for k, v in (('checks_not_passed', rz.get('checks_not_passed')),
                              ('stopped_early', rz.get('stopped_early')),
                              ('catastrophic_overfitting', co.get('kept_weights_affected'))) if v}


def _checks_not_passed(records: Sequence[Mapping[str, Any]]) -> List[str]:
    """'<check> <STATUS>' for every sanity check of the records that warned or failed (each once)."""
    return list(dict.fromkeys(f"{c.get('name')} {c.get('status')}" for r in records for c in r.get('checks', [])
                              if c.get('status') in ('WARN', 'FAIL')))


# --- pushing ------------------------------------------------------------------------------------------------

def repo_files(repo_dir: PathLike) -> List[Tuple[str, int, str]]:
    """(file, bytes, sha256) of every file of a card repo folder (hidden files excluded), sorted."""
    folder = Path(repo_dir)
    paths = sorted(p for p in folder.rglob('*') if p.is_file()
                   and not any(part.startswith('.') for part in p.relative_to(folder).parts))
    return [(str(p.relative_to(folder)), p.stat().st_size, sha256_file(p)) for p in paths]


def push_card_repo(repo_dir: PathLike, repo_id: Optional[str] = None, *, dry_run: bool = True,
                   token: Optional[str] = None, private: bool = False,
                   commit_message: Optional[str] = None) -> List[Tuple[str, int, str]]:
    """Upload a card repo folder to the Hub; a dry run (the default) only lists what would go.

    Returns (file, bytes, sha256) per file. `repo_id` (ORG/NAME, default: the folder's config.json hf_hub_id)
    must match the folder's name and its config. The token is `token` or env HF_TOKEN and is never printed."""
    folder = Path(repo_dir)
    missing = [f for f in (WEIGHTS_NAME, 'config.json', 'README.md') if not (folder / f).is_file()]
    if not folder.is_dir() or missing:
        raise ValueError(f'{folder} is not a card repo folder (robust-zoo card): it lacks {missing or "everything"}.')
    config = _read_json(folder / 'config.json', 'config')
    recorded = (config.get('pretrained_cfg') or {}).get('hf_hub_id')
    repo_id = repo_id or recorded
    if not repo_id or not _REPO_ID_RE.match(repo_id) or '--' in repo_id or '..' in repo_id:
        raise ValueError(f'repo id {repo_id!r} must be ORG/NAME (letters, digits, -, _, .), e.g. '
                         f'{hf_org()}/{folder.name}.')
    if repo_id.split('/')[1] != folder.name or (recorded and recorded != repo_id):
        raise ValueError(f'{folder} is the card of {recorded or folder.name}; pushing it to {repo_id} would publish '
                         f'wrong loading instructions. Rewrite it for that org (ROBUST_ZOO_HF_ORG=... robust-zoo card) '
                         f'or push to {recorded}.')
    files = repo_files(folder)
    if dry_run:
        return files
    token = token or os.environ.get('HF_TOKEN')
    if not token:
        raise RuntimeError('no Hugging Face token: set HF_TOKEN (a write token from https://huggingface.co/settings/'
                           'tokens) or pass token=...; nothing was uploaded.')
    from huggingface_hub import HfApi
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type='model', private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, repo_type='model', folder_path=str(folder), allow_patterns=[f for f, _, _ in files],
                      commit_message=commit_message or f'Upload {folder.name} (robust_zoo)')
    return files
