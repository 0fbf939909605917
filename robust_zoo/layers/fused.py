"""Optional fused kernels for the parametric activations, through `torch.compile`.

In eager PyTorch a parametric activation is a chain of elementwise kernels (PSSiLU: abs, mul, sigmoid,
sub, mul, div, then as many in backward), each one a pass over the feature map, where SiLU is a single
native kernel. On activation-bound networks (ResNet-20 on 28x28) that chain costs more than the
convolutions. `set_fused_activations(True)` compiles each activation's core into fused forward and
backward kernels; the math is unchanged. Kernels are specialized to each feature-map shape (static
shapes measured faster than dynamic ones on CPU), so a network compiles a few per batch size, a few
seconds each; the per-function recompile limit is raised to 64 shapes for that. It needs a working
`torch.compile` (a C++ compiler on CPU), so it is off by default and meant for long training runs.
"""
from typing import Callable, Dict

import torch

__all__ = ['fusable', 'set_fused_activations', 'fused_activations_enabled']

_enabled = False
_MAX_SHAPES = 64
_compiled: Dict[Callable, Callable] = {}


def set_fused_activations(enabled: bool = True) -> None:
    """Turn compiled activation kernels on or off for every robust_zoo activation in this process."""
    global _enabled
    _enabled = bool(enabled)
    if _enabled:
        import torch._dynamo.config as dynamo_config
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, _MAX_SHAPES)


def fused_activations_enabled() -> bool:
    return _enabled


def fusable(fn: Callable) -> Callable:
    """Run `fn` compiled when fused activations are enabled, eagerly otherwise (and inside a compile)."""
    def wrapper(*args):
        if _enabled and not torch.compiler.is_compiling():
            compiled = _compiled.get(fn)
            if compiled is None:
                compiled = _compiled[fn] = torch.compile(fn, dynamic=False)
            return compiled(*args)
        return fn(*args)

    wrapper.__wrapped__ = fn
    wrapper.__doc__ = fn.__doc__
    wrapper.__name__ = fn.__name__
    return wrapper
