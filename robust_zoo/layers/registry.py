"""Activation names -> classes, and their registration in timm's activation factory.

timm has no public API to add activation names: `timm.layers.get_act_layer` looks names up in the
module-level dict `timm.layers.create_act._ACT_LAYER_DEFAULT`, so robust_zoo adds its names there
(only names timm does not already define; registration is idempotent).
"""
import difflib
import inspect
from functools import partial
from typing import Any, Callable, Dict, Optional, Tuple, Type, Union

from timm.layers import create_act as _timm_create_act
from timm.layers import get_act_layer as _timm_get_act_layer
from torch import nn

from .capped import CappedReLU
from .parametric import PSoftplus, PSSiLU
from .shared import SharedActivation
from .smooth import ParametricSoftplus, ReLUSmoothGrad, SmoothReLU
from .sparta import Sparta

__all__ = [
    'ACTIVATIONS', 'ROBUST_ACTIVATIONS', 'SHARED_BY_DEFAULT', 'get_act_layer', 'create_act_layer',
    'make_act_factory', 'register_timm_activations', 'act_name',
]

# robust_zoo's own activations, added to timm's factory under these names
ROBUST_ACTIVATIONS: Dict[str, Type[nn.Module]] = {
    'softplus': ParametricSoftplus,
    'smoothrelu': SmoothReLU,
    'pssilu': PSSiLU,
    'psoftplus': PSoftplus,
    'sparta': Sparta,
    'capped_relu': CappedReLU,
    'relu_smoothgrad': ReLUSmoothGrad,
}

# every activation name robust_zoo builds `_at` models for: timm's baselines, then robust_zoo's own
ACTIVATIONS: Tuple[str, ...] = ('relu', 'softplus', 'smoothrelu', 'silu', 'gelu', 'elu', *[
    n for n in ROBUST_ACTIVATIONS if n not in ('softplus', 'smoothrelu')])

# activations whose paper shares one instance across the whole network (Dai et al.)
SHARED_BY_DEFAULT = frozenset({'pssilu', 'psoftplus'})


def register_timm_activations() -> None:
    """Add robust_zoo's names to timm's activation factory; names timm already defines are left alone."""
    table = _timm_create_act._ACT_LAYER_DEFAULT
    for name, cls in ROBUST_ACTIVATIONS.items():
        table.setdefault(name, cls)


def _unknown_act_error(name: str) -> ValueError:
    valid = sorted(set(ACTIVATIONS) | set(_timm_create_act._ACT_LAYER_DEFAULT))
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ''
    return ValueError(
        f"Unknown activation {name!r}.{hint} robust_zoo activations: {', '.join(ACTIVATIONS)}; "
        f"timm also knows: {', '.join(n for n in valid if n not in ACTIVATIONS)}.")


def get_act_layer(name: Union[str, Type[nn.Module], Callable, None]) -> Optional[Callable[..., nn.Module]]:
    """Resolve an activation name (case-insensitive) or class; unknown names raise with the valid ones."""
    if name is None or not isinstance(name, str):
        return name
    try:
        return _timm_get_act_layer(name.lower())
    except KeyError:
        raise _unknown_act_error(name) from None


def create_act_layer(name: Union[str, Type[nn.Module]], **act_kwargs: Any) -> nn.Module:
    """Instantiate an activation; a bad keyword names the activation and the arguments it accepts."""
    cls = get_act_layer(name)
    try:
        return cls(**act_kwargs)
    except TypeError as e:
        params = [p for p in inspect.signature(cls).parameters if p not in ('self', 'inplace')]
        raise TypeError(
            f'Bad arguments {act_kwargs} for activation {act_name(cls)!r}: {e}. '
            f'It accepts: {", ".join(params) or "no arguments"}.') from None


def act_name(act: Union[str, Type[nn.Module], nn.Module, Callable]) -> str:
    """The registry name of an activation class or instance (its class name if unregistered)."""
    if isinstance(act, str):
        return act.lower()
    if isinstance(act, SharedActivation):
        act = act.shared
    cls = act if isinstance(act, type) else type(act)
    if isinstance(act, partial):
        cls = act.func
    for table in (ROBUST_ACTIVATIONS, _timm_create_act._ACT_LAYER_DEFAULT):
        for n, c in table.items():
            if c is cls:
                return n
    return getattr(cls, '__name__', str(cls))


def make_act_factory(
        act_layer: Union[str, Type[nn.Module]],
        act_kwargs: Optional[Dict[str, Any]] = None,
        shared: bool = False,
) -> Tuple[Callable[..., nn.Module], Optional[nn.Module]]:
    """A timm-compatible `act_layer(inplace=...)` callable, and the shared instance if `shared`.

    With `shared=True` every call returns a `SharedActivation` view of one instance, which the caller
    must register exactly once on the model (robust_zoo models keep it as `model.shared_act`).
    """
    act_kwargs = dict(act_kwargs or {})
    proto = create_act_layer(act_layer, **act_kwargs)  # validates name and arguments now, not deep in a build
    if shared:
        return (lambda *args, **kwargs: SharedActivation(proto)), proto
    cls = get_act_layer(act_layer)
    if not _accepts_inplace(cls):  # e.g. nn.GELU, nn.Tanh: timm blocks still call act_layer(inplace=True)
        return partial(_drop_inplace, cls, act_kwargs), None
    return (partial(cls, **act_kwargs) if act_kwargs else cls), None


def _accepts_inplace(cls: Callable) -> bool:
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return True
    return 'inplace' in params


def _drop_inplace(cls: Callable[..., nn.Module], act_kwargs: Dict[str, Any], inplace: Any = None) -> nn.Module:
    return cls(**act_kwargs)
