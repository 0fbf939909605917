"""robust_zoo: adversarially robust image models and robustness activations for timm."""
from . import layers, models
from .layers import swap_activations

__version__ = '0.1.0'
