"""Shared build path of every robust_zoo entrypoint: activation resolution, pretrained cfg, weights check."""
import contextlib
import dataclasses
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Dict, Optional, Sequence, Type

import torch
from timm.models import build_model_with_cfg, get_pretrained_cfg, register_model
from timm.models._builder import resolve_pretrained_cfg
from timm.models._pretrained import PretrainedCfg
from torch import nn

from ..layers import SHARED_BY_DEFAULT, act_name, make_act_factory
from ..sparta_bank import load_bank
from ._hub import default_converted_cfg, resolve_weights

__all__ = ['RobustPretrainedCfg', 'rz_cfg', 'build_at_model', 'register_act_variants']


@dataclass
class RobustPretrainedCfg(PretrainedCfg):
    """timm's PretrainedCfg plus what robust weights are for: the dataset and the standardized threat model.

    `mean`/`std` stay (0,)*C / (1,)*C because normalization is inside the model; the dataset's real
    constants are `input_mean`/`input_std`, passed to the model and stored in its `normalize` buffers.
    `arch_args` are constructor arguments these weights need (e.g. TF 'same' padding for converted TF
    checkpoints): the tag selects them, so `<arch>.<tag>` builds the right network with or without weights.
    """
    dataset: Optional[str] = None
    threat_model: Optional[str] = None
    input_mean: Optional[Sequence[float]] = None
    input_std: Optional[Sequence[float]] = None
    arch_args: Optional[Dict[str, Any]] = None


def rz_cfg(*, dataset: str, threat_model: str, input_mean, input_std, input_size=(3, 224, 224),
           num_classes: int = 1000, **kwargs: Any) -> RobustPretrainedCfg:
    """A pretrained cfg for a model taking [0, 1] images: mean 0 / std 1 outside, the dataset's inside."""
    chans = input_size[0]
    cfg = dict(
        input_size=input_size, num_classes=num_classes, mean=(0.0,) * chans, std=(1.0,) * chans,
        interpolation='bilinear', crop_pct=1.0 if input_size[-1] <= 64 else 0.875,
        dataset=dataset, threat_model=threat_model, input_mean=tuple(input_mean), input_std=tuple(input_std),
        license='apache-2.0',
    )
    cfg.update(kwargs)
    return RobustPretrainedCfg(**cfg)


def _as_robust_cfg(variant: str, pretrained_cfg: Any) -> Any:
    """timm hands saved configs (local-dir:, hf-hub:) over as dicts, which timm's PretrainedCfg rejects
    for our keys; robust keys a saved config lacks come from the registered cfg of `variant`."""
    if isinstance(pretrained_cfg, dict):
        fields = {f.name for f in dataclasses.fields(RobustPretrainedCfg)}
        cfg = {k: v for k, v in pretrained_cfg.items() if k in fields}
        default = get_pretrained_cfg(variant)
        for key in ('dataset', 'threat_model', 'input_mean', 'input_std', 'arch_args'):
            if cfg.get(key) is None and default is not None:
                cfg[key] = getattr(default, key, None)
        return RobustPretrainedCfg(**cfg)
    return pretrained_cfg


def build_at_model(
        model_cls: Type[nn.Module],
        variant: str,
        pretrained: bool = False,
        *,
        default_act: str,
        act_layer: Any = None,
        act_kwargs: Optional[Dict[str, Any]] = None,
        act_shared: Optional[bool] = None,
        **kwargs: Any,
) -> nn.Module:
    """Build a robust_zoo model with timm's `build_model_with_cfg`.

    `act_layer` (a name or class, default: the activation in the model name), `act_kwargs` (its
    constructor arguments) and `act_shared` (one instance for the whole network; default True for
    PSSiLU/PSoftplus as in Dai et al., else False) are JSON-serializable, so timm records them and a
    saved config rebuilds the same model. `sparta_bank` (a bank file or a published bank's name) loads
    trained Sparta units into the model, frozen unless `sparta_bank_freeze=False`, mapped with
    `sparta_bank_mapping` (see `robust_zoo.sparta_bank`).
    """
    pretrained_cfg = _as_robust_cfg(variant, kwargs.pop('pretrained_cfg', None))
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg, kwargs.get('pretrained_cfg_overlay'))
    if pretrained:  # before arch_args: an untagged name may mean its converted tag, once that is on this machine
        cfg = default_converted_cfg(variant, cfg, kwargs.get('pretrained_cfg_overlay'))
    arch_args = dict(getattr(cfg, 'arch_args', None) or {})
    if act_kwargs is None:
        act_kwargs = arch_args.pop('act_kwargs', None)
    arch_args.pop('act_kwargs', None)
    for key, value in arch_args.items():
        kwargs.setdefault(key, value)

    act_layer = default_act if act_layer is None else act_layer
    bank = (kwargs.pop('sparta_bank', None), kwargs.pop('sparta_bank_mapping', 'relative-depth'),
            kwargs.pop('sparta_bank_freeze', True))
    if act_shared is None:
        act_shared = act_name(act_layer) in SHARED_BY_DEFAULT
    if act_shared and kwargs.get('features_only'):
        raise ValueError('features_only=True is not supported with act_shared=True; pass act_shared=False.')
    factory, shared = make_act_factory(act_layer, act_kwargs, act_shared)

    if pretrained:  # published, converted or fetched weights: found and sha256-checked by the one resolver
        cfg = resolve_weights(variant, cfg, cache_dir=kwargs.get('cache_dir'),
                              overlay=kwargs.get('pretrained_cfg_overlay'))
    device, dtype = kwargs.pop('device', None), kwargs.pop('dtype', None)
    kwargs.pop('pretrained_cfg_overlay', None)
    kwargs['pretrained_filter_fn'] = partial(_adapt_normalize, filter_fn=kwargs.get('pretrained_filter_fn'))
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = build_model_with_cfg(
            model_cls, variant, pretrained, pretrained_cfg=cfg, act_layer=factory, shared_act=shared,
            input_mean=cfg.input_mean, input_std=cfg.input_std, **kwargs)
    if bank[0] is not None:
        load_bank(model, bank[0], mapping=bank[1], freeze=bank[2])
    if dtype is not None:
        model.to(dtype)
    model.accepts_act_args = True
    return model


def _adapt_normalize(state_dict: Dict[str, Any], model: nn.Module, filter_fn: Optional[Callable] = None):
    """Pretrained weights for a model built with other `in_chans`: timm adapts the first conv, and the saved
    `normalize` constants get InputNormalize's rule (the channel average), else loading fails on their shape."""
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, model)
    for name in ('mean', 'std'):
        key, target = f'normalize.{name}', getattr(model.normalize, name)
        if key in state_dict and state_dict[key].shape != target.shape:
            state_dict[key] = state_dict[key].mean(1, keepdim=True).expand(target.shape).clone()
    return state_dict


def register_act_variants(
        module_globals: Dict[str, Any],
        arch: str,
        create_fn: Callable[..., nn.Module],
        activations: Sequence[str],
        doc: str,
        alias_act: Optional[str] = None,
) -> None:
    """Register `<arch>_<act>_at` for every activation, as timm entrypoints defined in the calling module.

    `create_fn(arch, variant, pretrained, default_act=..., **kwargs)` builds the model. With `alias_act`,
    `<arch>_at` is registered too, meaning that activation (e.g. SAT's `efficientnet_l1_at` is SiLU).
    Entrypoints are generated (architectures x 11 activations) but are ordinary module-level functions:
    timm groups them by module and `help()` shows their docstring.
    """
    variants = [(f'{arch}_{act}_at', act) for act in activations]
    if alias_act:
        variants.append((f'{arch}_at', alias_act))
    for name, act in variants:
        entrypoint = _make_entrypoint(create_fn, arch, name, act, module_globals['__name__'], doc)
        module_globals[name] = register_model(entrypoint)


def _make_entrypoint(create_fn: Callable[..., nn.Module], arch: str, name: str, act: str, module: str, doc: str):
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return create_fn(arch, name, pretrained, default_act=act, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = module
    entrypoint.__doc__ = f'{doc} Activation: {act}.'
    return entrypoint
