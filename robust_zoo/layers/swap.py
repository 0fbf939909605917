"""Swap the activation modules of any `nn.Module`, timm's or not."""
from typing import Any, Iterable, Optional, Tuple, Type, Union

from timm.layers import activations as _timm_act
from timm.layers import activations_me as _timm_act_me
from torch import nn

from .registry import ROBUST_ACTIVATIONS, act_name, make_act_factory
from .shared import SharedActivation

__all__ = ['SWAPPABLE_ACTIVATIONS', 'is_activation', 'swap_activations']

# Hidden-unit activations. Gates (Sigmoid, Tanh, Hardsigmoid in squeeze-excite) are deliberately absent.
SWAPPABLE_ACTIVATIONS: Tuple[Type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Softplus, nn.Hardswish,
    _timm_act.Swish, _timm_act.Mish, _timm_act.PReLU, _timm_act.GELU, _timm_act.GELUTanh,
    _timm_act.QuickGELU, _timm_act.HardSwish, _timm_act.HardMish,
    _timm_act_me.SwishMe, _timm_act_me.MishMe, _timm_act_me.HardSwishMe, _timm_act_me.HardMishMe,
    SharedActivation, *ROBUST_ACTIVATIONS.values(),
)


def is_activation(module: nn.Module, types: Iterable[Type[nn.Module]] = SWAPPABLE_ACTIVATIONS) -> bool:
    """Whether `module` is a hidden-unit activation that `swap_activations` replaces."""
    return isinstance(module, tuple(types))


def swap_activations(
        model: nn.Module,
        to: Union[str, Type[nn.Module]],
        *,
        shared: bool = False,
        act_kwargs: Optional[dict] = None,
        types: Iterable[Type[nn.Module]] = SWAPPABLE_ACTIVATIONS,
) -> nn.Module:
    """Replace every activation module of `model` (in place) with a new `to` activation; returns `model`.

    Works on any module tree, including activations inside timm's `BatchNormAct2d` and `SqueezeExcite`
    (their sigmoid gates are not activations in this sense and are kept). `shared=True` builds one
    instance, registered as `model.shared_act`, used at every site (Dai et al.'s mode); otherwise each
    site gets its own parameters. Activations called functionally inside `forward` (`F.relu(x)`) are not
    modules and cannot be swapped; a model with no activation module raises ValueError.
    On robust_zoo models the choice is recorded in the model args, so a saved config rebuilds the swap.
    """
    types = tuple(types)
    # the owner of a shared activation (`model.shared_act`) is not a use site; its sites are SharedActivations.
    # remove_duplicate=False: one instance registered at several places (a reused nn.ReLU) is swapped at each.
    old_shared = model._modules.get('shared_act')
    sites = [(name, mod) for name, mod in model.named_modules(remove_duplicate=False)
             if name and mod is not old_shared and is_activation(mod, types)]
    if not sites:
        raise ValueError(
            f'No activation modules of types {[t.__name__ for t in types]} found in {type(model).__name__}; '
            'activations called functionally in forward() (e.g. F.relu) cannot be swapped.')
    swapped = {id(mod) for _, mod in sites}
    if old_shared is not None and any(
            isinstance(m, SharedActivation) and m.shared is old_shared and id(m) not in swapped
            for m in model.modules()):
        raise ValueError(
            'model.shared_act is used at sites that `types` leaves out, which would orphan its parameters; '
            'include SharedActivation in `types` to swap the shared activation.')
    factory, proto = make_act_factory(to, act_kwargs, shared)
    for name, _ in sites:
        parent_name, _, attr = name.rpartition('.')
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, factory(inplace=False))
    if old_shared is not None:
        del model._modules['shared_act']
    if proto is not None:
        model.shared_act = proto
    _record_act_args(model, to, act_kwargs, shared)
    return model


def _record_act_args(model: nn.Module, to: Any, act_kwargs: Optional[dict], shared: bool) -> None:
    """Update timm's reconstruction args (`model._model_args`) on models whose builder understands them."""
    if not getattr(model, 'accepts_act_args', False):
        return
    args = {k: v for k, v in getattr(model, '_model_args', {}).items() if k != 'act_kwargs'}
    args.update(act_layer=act_name(to), act_shared=shared)
    if act_kwargs:
        args['act_kwargs'] = dict(act_kwargs)
    model._model_args = args
