"""Verified weights for every robust_zoo pretrained cfg (timm's `_hub` side of loading): one resolver.

`resolve_file(name, filename)` finds a file of any `<arch>.<tag>` and checks it:
- published tags (`robust_zoo/published.json`): `<cards_dir()>/<arch>.<tag>/` when the file is there (a checkout,
  or a cards folder named by ROBUST_ZOO_MODEL_CARDS), else the Hub repo `hf_hub_id` through `hf_hub_download`
  (its cache first; HF_HUB_OFFLINE=1 keeps it to the cache); the weights' sha256 must be the index's;
- converted tags (`robust_zoo.convert` targets): `settings.fetched_dir()`, then the cards folder, then the Hub
  repo `<org>/<name>`; a folder's `conversion.json` sha256, when it has one, must match; a missing file raises
  the message that says how to fetch or convert it;
- Sparta banks (`sparta_bank.safetensors` of a published Sparta model): the cards folder, else the Hub repo; the
  sha256 must be the index's `bank_sha256` (or, for cards written before the index kept it, the card's Files table).
`resolve_weights(variant, cfg)` is what `_builder` calls for `pretrained=True`; `resolve_bank` is what
`robust_zoo.sparta_bank` calls for a Sparta bank named by a published model.
"""
import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from huggingface_hub import constants, hf_hub_download

from .. import settings
from .._io import PathLike, sha256_file
from ..convert import missing_weights_message
from ..convert.fetch import default_target, fetch_command
from ._pretrained import WEIGHTS_NAME, _activation_of, _arch_of, _index, cards_dir, hf_org, index_path

__all__ = ['BANK_FILE', 'PublishedWeightsError', 'check_weights_belong', 'default_converted_cfg',
           'published_bank_sha256', 'resolve_bank', 'resolve_file', 'resolve_weights', 'verify_published_bank',
           'weights_metadata']

BANK_FILE = 'sparta_bank.safetensors'  # a Sparta model's bank, inside its published repo folder
_SOURCE_KEYS = ('file', 'url', 'hf_hub_id', 'state_dict')


class PublishedWeightsError(RuntimeError):
    """Weights that are missing, corrupt, or not the published ones (the message says what to do)."""


def _caller_chose(overlay: Optional[Mapping[str, Any]]) -> bool:
    """Weights given on purpose (`pretrained_cfg_overlay` with a source) are the caller's: nothing is checked."""
    return bool(overlay) and any(overlay.get(k) for k in _SOURCE_KEYS)


def _verify(path: Path, name: str, expected: str, where: str, fix: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        what = 'Sparta bank' if path.name == BANK_FILE else 'weights'
        raise PublishedWeightsError(
            f'{path} is not the published {what} of robust_zoo/{name}: its sha256 is {actual}, {where} records '
            f'{expected}. The file is corrupt, truncated or was replaced. {fix} To load other weights on purpose, '
            f'pass pretrained_cfg_overlay=dict(file=...).')


def _split_revision(hub_id: str) -> Tuple[str, Optional[str]]:
    repo, _, revision = hub_id.partition('@')
    return repo, revision or None


def _download(repo_id: str, filename: str, cache_dir: Optional[PathLike], name: str, local: Optional[Path]) -> Path:
    """The Hub's (or its cache's) copy of `filename`, or the one clear error saying where it was looked for."""
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, cache_dir=cache_dir))
    except Exception as e:  # offline, not cached, no such repo, network: all say the same thing to the user
        where = f'not in {local.parent} and ' if local is not None else ''
        if constants.HF_HUB_OFFLINE:
            folder = local.parent if local is not None else cards_dir() / name
            how = (f'HF_HUB_OFFLINE=1 is set: unset it to download {filename} from https://huggingface.co/'
                   f'{repo_id}, or put the repo folder at {folder} (or set ROBUST_ZOO_MODEL_CARDS to a folder '
                   f'that holds {name}/).')
        else:
            how = f'check the network and that https://huggingface.co/{repo_id} exists.'
        raise PublishedWeightsError(
            f'robust_zoo/{name}: the published {filename} is {where}not in the Hugging Face cache, and could not be '
            f'downloaded ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}). {how}') from e


def _conversion_sha(folder: Path) -> Optional[str]:
    try:
        return json.loads((folder / 'conversion.json').read_text()).get('sha256')
    except (OSError, ValueError, AttributeError):
        return None


def resolve_file(name: str, filename: str = WEIGHTS_NAME, *, cache_dir: Optional[PathLike] = None,
                 local: Optional[PathLike] = None, hub_only: bool = False) -> Path:
    """The verified local path of `filename` of `<arch>.<tag>` `name` (published or converted), downloading it
    from the Hub when no local copy exists. `local`: the published file's expected place (default: the cards
    folder's); `hub_only`: the Hub's copy only. Raises `PublishedWeightsError` saying where it looked and what
    to do."""
    entry = _index().get(name)
    if entry is None:
        return _converted_file(name, filename, cache_dir)
    path = None if hub_only else Path(local) if local is not None else cards_dir() / name / filename
    expected = _expected_sha256(name, filename, entry)
    if path is not None and path.is_file():
        if expected:
            _verify(path, name, expected, f'the published index {index_path()}',
                    f'Restore it with `git checkout -- {path}`, or delete it to load the published copy from the Hub '
                    f"({entry['hf_hub_id']}).")
        return path
    repo_id = _split_revision(entry['hf_hub_id'])[0]
    downloaded = _download(repo_id, filename, cache_dir, name, path)
    if expected:
        _verify(downloaded, name, expected, f'the published index {index_path()}',
                'Delete it from the Hugging Face cache and load again, or upgrade robust_zoo if the Hub repo '
                f'{repo_id} was updated after this release.')
    return downloaded


def _expected_sha256(name: str, filename: str, entry: Mapping[str, Any]) -> Optional[str]:
    """The sha256 the index publishes for `filename` of `name`: the weights' `sha256`, a bank's `bank_sha256`."""
    if filename == WEIGHTS_NAME:
        return entry['sha256']
    return published_bank_sha256(cards_dir() / name) if filename == BANK_FILE else None


def _converted_file(name: str, filename: str, cache_dir: Optional[PathLike]) -> Path:
    """A conversion target's file: fetched, else converted into the cards folder, else the Hub's."""
    message = missing_weights_message(name)
    if message is None:
        raise PublishedWeightsError(f'robust_zoo/{name} has no published or converted weights. Models with weights: '
                                    'robust_zoo.list_models(pretrained=True).')
    for folder in (settings.fetched_dir() / name, cards_dir() / name):
        path = folder / filename
        if path.is_file():
            expected = _conversion_sha(folder) if filename == WEIGHTS_NAME else None
            if expected:
                _verify(path, name, expected, str(folder / 'conversion.json'),
                        'Convert or fetch it again (the command below), or delete the folder.\n' + message)
            return path
    try:
        return _download(f'{hf_org()}/{name}', filename, cache_dir, name, None)
    except PublishedWeightsError as e:
        raise PublishedWeightsError(message) from e


def resolve_weights(variant: str, cfg: Any, *, cache_dir: Optional[PathLike] = None,
                    overlay: Optional[Mapping[str, Any]] = None) -> Any:
    """`cfg` for `pretrained=True`, with `file` set to the verified local weights of `<variant>.<tag>`.

    Weights the caller chose (`pretrained_cfg_overlay` with a source) and a cfg with a `state_dict` pass
    unchanged. `hf-hub:<repo>` of a published repo (no `@revision`) has its cached file checked, and
    `local-dir:` of a published folder in the cards folder its `model.safetensors`. A safetensors file given in
    the overlay must not be another architecture's or activation's (`check_weights_belong`)."""
    if overlay and overlay.get('file') and str(overlay['file']).endswith('.safetensors'):
        check_weights_belong(overlay['file'], variant)
    if cfg.state_dict is not None or _caller_chose(overlay):
        return cfg
    name = f'{variant}.{cfg.tag}' if cfg.tag else variant
    if missing_weights_message(name) is not None:  # a conversion target
        return dataclasses.replace(cfg, file=str(resolve_file(name, cache_dir=cache_dir)), hf_hub_id=None)
    if not cfg.has_weights:
        raise PublishedWeightsError(
            f'No pretrained weights are published for robust_zoo/{name} yet. Models with weights: '
            f'robust_zoo.list_models(pretrained=True). Use pretrained=False to train it, or give weights with '
            f'pretrained_cfg_overlay=dict(file="model.safetensors") (robust-zoo eval --checkpoint FILE).'
            + _conversion_hint(variant))
    index = _index()
    if cfg.source == 'local-dir':
        folder = Path(cfg.file).resolve() if cfg.file else None
        for published in index:
            if folder is not None and folder == (cards_dir() / published).resolve():
                if not (folder / WEIGHTS_NAME).is_file():
                    raise PublishedWeightsError(
                        f'{folder} has no {WEIGHTS_NAME}: restore the folder from git, or load robust_zoo/{published} '
                        f"from the Hub (hf-hub:{index[published]['hf_hub_id']}).")
                resolve_file(published)
        return cfg
    by_hub_id = {e['hf_hub_id']: n for n, e in index.items()}
    repo_id, revision = _split_revision(cfg.hf_hub_id or '')
    if repo_id not in by_hub_id:
        return cfg
    if cfg.source == 'hf-hub':
        if revision is None:
            resolve_file(by_hub_id[repo_id], cache_dir=cache_dir, hub_only=True)
        return cfg
    return dataclasses.replace(cfg, file=str(resolve_file(by_hub_id[repo_id], cache_dir=cache_dir, local=cfg.file)))


def default_converted_cfg(variant: str, cfg: Any, overlay: Optional[Mapping[str, Any]] = None) -> Any:
    """An untagged name without weights of its own means its default converted tag (resnet50_silu_at ->
    .sat_in1k) once that is on this machine (fetched, or converted into the cards folder); else `cfg` unchanged."""
    if cfg.tag or cfg.has_weights or cfg.state_dict is not None or _caller_chose(overlay):
        return cfg
    default = default_target(variant)
    if default is None or not any((root / default / WEIGHTS_NAME).is_file()
                                  for root in (settings.fetched_dir(), cards_dir())):
        return cfg
    from timm.models._builder import resolve_pretrained_cfg
    return resolve_pretrained_cfg(variant, default.split('.', 1)[1], dict(overlay or {}))


def _conversion_hint(variant: str) -> str:
    """For an untagged name whose weights exist elsewhere (e.g. resnet50_silu_at -> .sat_in1k): the one command."""
    default = default_target(variant)
    if default is None:
        return ''
    return (f' Converted weights of other authors exist for it: `{fetch_command(default)}` downloads and converts '
            f'{default}, which robust_zoo/{variant} then loads (robust-zoo convert --list shows the others).')


def weights_metadata(arch: str, activation: Optional[str] = None) -> Dict[str, str]:
    """The safetensors metadata robust_zoo writes with weights: the architecture and activation they belong to."""
    arch = _arch_of(arch) or arch
    return dict(architecture=arch, activation=activation or _activation_of(arch)[1])


def check_weights_belong(path: PathLike, arch: str, activation: Optional[str] = None) -> None:
    """Refuse a weights file whose safetensors metadata names another architecture or activation than the model
    it is loaded into (same-shaped weights of a ReLU net load silently into a SiLU one); files without that
    metadata pass."""
    from ..training.checkpoint import CheckpointError, read_weights_metadata
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


def published_bank_sha256(folder: Path) -> Optional[str]:
    """The sha256 a card folder published for its bank: the published index's `bank_sha256`, else its card's
    Files table (cards written before the index kept it); None when neither says."""
    entry = _index().get(folder.name) or {}
    if entry.get('bank_sha256'):
        return entry['bank_sha256']
    readme = folder / 'README.md'
    text = readme.read_text(errors='replace') if readme.is_file() else ''
    match = re.search(rf'^\| `{re.escape(BANK_FILE)}` \| [\d,]+ \| `([0-9a-f]{{64}})` \|$', text, re.M)
    return match.group(1) if match else None


def verify_published_bank(path: Path) -> None:
    """Refuse a bank in a card folder whose sha256 is not the published one (tampered, truncated, replaced)."""
    expected = published_bank_sha256(path.parent)
    if expected is None:
        raise PublishedWeightsError(
            f'{path} is in the card folder {path.parent.name}, whose card and index record no sha256 for it: it cannot '
            'be verified. Restore the folder from git, or rewrite the card (robust-zoo card --force).')
    _verify(path, path.parent.name, expected, 'the card', f'Restore it with `git checkout -- {path}`.')


def resolve_bank(name: str, cache_dir: Optional[PathLike] = None) -> Optional[Path]:
    """The verified Sparta bank file of the published model `name` (its cards folder, else its Hub repo), or None
    when `name` is neither a published model nor a cards folder holding a bank."""
    local = cards_dir() / name / BANK_FILE
    if local.is_file():
        verify_published_bank(local)
        return local
    if name not in _index():
        return None
    return resolve_file(name, BANK_FILE, cache_dir=cache_dir)
