"""The `robust_zoo/` namespace for `timm.create_model`.

timm >= 1.0.29 rejects model names containing '/' unless they start with `hf-hub:` or `local-dir:`
(older timm silently used the basename). robust_zoo wraps `timm.models._factory.parse_model_name`, which
`create_model` looks up at call time, so that exactly `robust_zoo/<name>[.<tag>]` resolves to robust_zoo's
registered `<name>`; every other name goes to timm's own parser unchanged. An unknown name or tag is refused there,
with the names or tags that exist.
"""
import difflib
from typing import List, Optional, Tuple

from timm.models import _factory
from timm.models import list_models as _timm_list_models
from timm.models import get_arch_pretrained_cfgs, list_modules, split_model_name_tag

__all__ = ['PREFIX', 'install_prefix', 'list_models', 'robust_model_names']

PREFIX = 'robust_zoo/'


def robust_model_names() -> List[str]:
    """Names of every model robust_zoo registered (no prefix)."""
    return _timm_list_models(module=_robust_modules())


def _robust_modules() -> List[str]:
    """robust_zoo's model files are named `rz_<family>.py`, distinct from timm's module names."""
    return [m for m in list_modules() if m.startswith('rz_')]


def _parse_robust_name(model_name: str) -> Tuple[Optional[str], str]:
    name = model_name[len(PREFIX):]
    arch, tag = split_model_name_tag(name)
    known = robust_model_names()
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(PREFIX + c for c in close)}?" if close else ''
        raise RuntimeError(
            f'Unknown model ({model_name}): robust_zoo has no model {arch!r}.{hint} '
            f"List them with robust_zoo.list_models('*_at').")
    if tag and f'{arch}.{tag}' not in get_arch_pretrained_cfgs(arch):
        tags = [n.split('.', 1)[1] for n in get_arch_pretrained_cfgs(arch) if '.' in n]
        raise RuntimeError(
            f'Invalid pretrained tag ({tag}) for {PREFIX}{arch}: '
            + (f"its tags are {', '.join(tags)}; each published one with its accuracy: robust-zoo list --results "
               f"'{arch}.*'." if tags else f'it has no tagged weights; use {PREFIX}{arch}.'))
    return None, name


def _wrap(parse):
    def parse_model_name(model_name: str) -> Tuple[Optional[str], str]:
        if model_name.startswith(PREFIX):
            return _parse_robust_name(model_name)
        return parse(model_name)

    parse_model_name.__wrapped__ = parse
    parse_model_name.__doc__ = parse.__doc__
    parse_model_name._robust_zoo = True
    return parse_model_name


def install_prefix() -> None:
    """Make `timm.create_model('robust_zoo/...')` work. Idempotent."""
    if not getattr(_factory.parse_model_name, '_robust_zoo', False):
        _factory.parse_model_name = _wrap(_factory.parse_model_name)


def list_models(pattern: str = '*', pretrained: bool = False) -> List[str]:
    """robust_zoo's models as `robust_zoo/<name>` names, filtered by a shell-style `pattern`.

    With `pretrained=True`, lists `robust_zoo/<name>.<tag>` for every published set of weights.
    `pattern` may be given with or without the prefix.
    """
    pattern = pattern[len(PREFIX):] if pattern.startswith(PREFIX) else pattern
    return [PREFIX + n for n in _timm_list_models(pattern, module=_robust_modules(), pretrained=pretrained)]
