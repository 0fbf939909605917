"""Activations for robust models; importing this package registers their names with timm."""
from .capped import CappedReLU
from .fused import fused_activations_enabled, set_fused_activations
from .parametric import PSoftplus, PSSiLU
from .registry import (
    ACTIVATIONS, ROBUST_ACTIVATIONS, SHARED_BY_DEFAULT, act_name, create_act_layer, get_act_layer,
    make_act_factory, register_timm_activations,
)
from .shared import SharedActivation
from .smooth import ParametricSoftplus, ReLUSmoothGrad, SmoothReLU, relu_smoothgrad
from .sparta import Sparta
from .swap import SWAPPABLE_ACTIVATIONS, is_activation, swap_activations

register_timm_activations()

__all__ = [
    'ACTIVATIONS', 'ROBUST_ACTIVATIONS', 'SHARED_BY_DEFAULT', 'SWAPPABLE_ACTIVATIONS', 'CappedReLU',
    'ParametricSoftplus', 'PSoftplus', 'PSSiLU', 'ReLUSmoothGrad', 'SharedActivation', 'SmoothReLU', 'Sparta',
    'act_name', 'create_act_layer', 'fused_activations_enabled', 'get_act_layer', 'is_activation',
    'make_act_factory', 'register_timm_activations', 'relu_smoothgrad', 'set_fused_activations',
    'swap_activations',
]
