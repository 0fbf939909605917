"""Which training recipe a run used, and how a card names it.

The card writers take the recipe as an argument; these helpers find it in a recipes folder the caller names (the
`robust-zoo card` command: `train/configs` of the current directory, as in a checkout). The package never looks in
its own install tree.
"""
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from .._io import PathLike
from .records import _activation_of, _arch_of

__all__ = ['EXECUTION_KEYS', 'find_recipe', 'run_recipe']

# recipe values that say how a run executes, not what it learns from: precision (train_at.py --amp falls back to
# fp32 where bf16 is emulated), compiled activation kernels (same math) and checkpoint frequency; a run's card
# states its precision
EXECUTION_KEYS = ('amp', 'amp_dtype', 'fused_act', 'checkpoint_interval')


def find_recipe(args: Mapping[str, Any], folder: PathLike) -> Optional[Path]:
    """The `folder/*.yaml` recipe a run was trained with, as far as its args tell (args.yaml does not record -c):
    every recipe key except `model` and EXECUTION_KEYS equal to the run's, the same base architecture, the most
    keys; None when none or several fit equally."""
    folder = Path(folder)
    base = _activation_of(_arch_of(str(args.get('model', ''))) or '')[0]
    fits = []
    for path in sorted(folder.glob('*.yaml')) if folder.is_dir() else []:
        try:
            recipe = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        model = _arch_of(str(recipe.get('model', '')))
        if recipe and all(args.get(k) == v for k, v in recipe.items() if k != 'model' and k not in EXECUTION_KEYS) \
                and (not model or _activation_of(model)[0] == base):
            fits.append((len(recipe), path))
    fits.sort(reverse=True)
    return fits[0][1] if fits and (len(fits) == 1 or fits[0][0] > fits[1][0]) else None


def run_recipe(run_dir: PathLike, folder: Optional[PathLike] = None) -> Optional[Path]:
    """The recipe of the train_at.py run in `run_dir`, as far as can be told. train_at.py records it (`config` in
    args.yaml) as a path on the machine it ran on: that file where it lies in `folder`, else `folder`'s file of the
    same name (a run made in another clone), else the recorded file itself where it exists; without a record, the
    recipe of `folder` the run's args match (`find_recipe`). `folder`: a recipes folder, e.g. a checkout's
    train/configs (None: only the recorded file). None when nothing fits or the run has no readable args.yaml."""
    try:
        args = yaml.safe_load((Path(run_dir) / 'args.yaml').read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    folder = Path(folder) if folder is not None else None
    if args.get('config'):
        config = Path(args['config'])
        if folder is not None and config.is_file() and config.resolve().is_relative_to(folder.resolve()):
            return config
        if folder is not None and (folder / config.name).is_file():
            return folder / config.name
        return config if config.is_file() else None
    return find_recipe(args, folder) if folder is not None else None


def _relative(path: PathLike) -> str:
    """How a card names a file: relative to the current directory where it lies below it (a checkout's
    train/configs/x.yaml), else as given."""
    try:
        return Path(path).resolve().relative_to(Path.cwd()).as_posix()
    except ValueError:
        return str(path)
