"""Pushing a card repo folder to the Hugging Face Hub (a dry run unless asked)."""
import os
from pathlib import Path
from typing import List, Optional, Tuple

import huggingface_hub

from .._io import PathLike, sha256_file
from ..models._pretrained import WEIGHTS_NAME, hf_org
from .records import _REPO_ID_RE, _read_json


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
    api = huggingface_hub.HfApi(token=token)
    api.create_repo(repo_id, repo_type='model', private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, repo_type='model', folder_path=str(folder),
                      allow_patterns=[f for f, _, _ in files],
                      commit_message=commit_message or f'Upload {folder.name} (robust_zoo)')
    return files


