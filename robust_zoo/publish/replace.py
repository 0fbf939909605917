"""Replacing and withdrawing published cards without losing anything: a card is replaced only when asked to,
keeps its evaluation records of the same weights, is written beside the old folder and swapped in, and the index
is written atomically after it (on any error both stay as they were)."""
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .._io import PathLike, atomic_write_text, parameter_digest, sha256_file
from ..evaluation.result import RecordWeightsError, check_record_weights
from ..models import _pretrained
from ..models._pretrained import WEIGHTS_NAME, cards_dir, load_published, not_published, register_published
from .records import _read_json

__all__ = ['unpublish', 'unpublish_target']


def unpublish(name: str, *, index_path: Optional[PathLike] = None, out_root: Optional[PathLike] = None) -> Path:
    """Withdraw a published model: delete its card folder `<out_root>/<name>/` and its index entry, e.g. when
    its recipe was superseded (a table must never mix budgets). The Hub repo, if pushed, is not touched.
    Every input is checked first (`unpublish_target`); the index is written atomically and the folder removed
    only after it. Returns the removed folder."""
    index_file, folder, name = unpublish_target(name, index_path=index_path, out_root=out_root)
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
    if index_file.resolve() == _pretrained.index_path().resolve() and root.resolve() == cards_dir().resolve():
        register_published(index_file, cards_dir())
    return folder


def unpublish_target(name: str, *, index_path: Optional[PathLike] = None,
                     out_root: Optional[PathLike] = None) -> Tuple[Path, Path, str]:
    """(index file, card folder, bare name) of a published model, after checking that both exist; touches nothing.
    Raises KeyError naming the published models when `name` is not one of them, ValueError when its card folder
    is not under `out_root` (a wrong --out)."""
    index_file = Path(index_path) if index_path is not None else _pretrained.index_path()
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
