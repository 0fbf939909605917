"""Where robust_zoo finds and keeps weights: settings read at call time, never the package's own install tree.

- `cards_dir()`: the published model-card folders (`<arch>.<tag>/model.safetensors`, config, card). Set it with
  ROBUST_ZOO_MODEL_CARDS. Unset, it is the repository's `model_cards/` when robust_zoo runs from a source
  checkout (a developer's clone, where the published folders live in git), else `cache_dir() / 'model_cards'`.
- `cache_dir()`: the user's robust_zoo cache, ROBUST_ZOO_CACHE, else `$XDG_CACHE_HOME/robust_zoo`
  (`~/.cache/robust_zoo`). Weights fetched and converted from other authors' releases go to
  `fetched_dir()` = `cache_dir() / 'fetched'`, one `<arch>.<tag>/` folder each, laid out like a card folder.
- `download_base_url()`: where `robust-zoo fetch` downloads the sources' Google Drive files from,
  ROBUST_ZOO_DOWNLOAD_BASE_URL, else Google Drive's `https://drive.usercontent.google.com` (tests serve a
  loopback server there).
"""
import os
from pathlib import Path
from typing import Optional

__all__ = ['cache_dir', 'cards_dir', 'checkout_root', 'download_base_url', 'fetched_dir']


def checkout_root() -> Optional[Path]:
    """The source checkout robust_zoo runs from (its pyproject.toml names robust-zoo), or None when installed."""
    root = Path(__file__).resolve().parents[1]
    pyproject = root / 'pyproject.toml'
    try:
        if pyproject.is_file() and 'name = "robust-zoo"' in pyproject.read_text():
            return root
    except OSError:
        pass
    return None


def cache_dir() -> Path:
    """The user's robust_zoo cache (ROBUST_ZOO_CACHE, else $XDG_CACHE_HOME/robust_zoo, else ~/.cache/robust_zoo)."""
    if os.environ.get('ROBUST_ZOO_CACHE'):
        return Path(os.environ['ROBUST_ZOO_CACHE']).expanduser()
    base = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
    return Path(base).expanduser() / 'robust_zoo'


def cards_dir() -> Path:
    """The published model-card folders: ROBUST_ZOO_MODEL_CARDS, else a checkout's model_cards/, else the cache's."""
    if os.environ.get('ROBUST_ZOO_MODEL_CARDS'):
        return Path(os.environ['ROBUST_ZOO_MODEL_CARDS']).expanduser()
    root = checkout_root()
    if root is not None and (root / 'model_cards').is_dir():
        return root / 'model_cards'
    return cache_dir() / 'model_cards'


def fetched_dir() -> Path:
    """Where `robust-zoo fetch` keeps converted weights of other authors: `cache_dir() / 'fetched'`."""
    return cache_dir() / 'fetched'


GDRIVE_BASE_URL = 'https://drive.usercontent.google.com'


def download_base_url() -> str:
    """Base URL of Google Drive downloads (`<base>/download?id=...`): ROBUST_ZOO_DOWNLOAD_BASE_URL, else Drive's."""
    return (os.environ.get('ROBUST_ZOO_DOWNLOAD_BASE_URL') or GDRIVE_BASE_URL).rstrip('/')
