"""Which training recipe a run used, and how a card names it."""
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from .records import _activation_of, _arch_of

# recipe values that say how a run executes, not what it learns from: precision (train_at.py --amp falls back to
# fp32 where bf16 is emulated), compiled activation kernels (same math) and checkpoint frequency; a run's card
# states its precision
EXECUTION_KEYS = ('amp', 'amp_dtype', 'fused_act', 'checkpoint_interval')


def _find_recipe(args: Mapping[str, Any]) -> Optional[Path]:
    """The train/configs/*.yaml the run was trained with, as far as its args tell (args.yaml does not record -c):
    every recipe key except `model` equal to the run's, the same base architecture, the most keys; None when
    none or several fit equally."""
    folder = Path(__file__).resolve().parents[2] / 'train' / 'configs'
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


def _recorded_recipe(config: Path) -> Optional[Path]:
    """The recipe train_at.py recorded (an absolute path on the training machine): that file inside this
    checkout, else this checkout's train/configs/ file of the same name (a run made in another clone), else the
    file itself where it exists."""
    root = Path(__file__).resolve().parents[2]
    if config.is_file() and config.resolve().is_relative_to(root):
        return config
    local = root / 'train' / 'configs' / config.name
    return local if local.is_file() else config if config.is_file() else None


def _repo_relative(path: Path) -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)


