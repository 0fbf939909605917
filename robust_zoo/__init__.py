"""robust_zoo: adversarially robust image models and robustness activations for timm.

Importing registers robust_zoo's activations in timm's activation factory, its `<arch>_<act>_at` models
in timm's registry, and the `robust_zoo/` model-name prefix for `timm.create_model`.
"""
from . import layers, models
from .layers import create_act_layer, get_act_layer, swap_activations
from .models import list_models
from .threat_models import THREAT_MODELS, get_threat_model
from .convert.fetch import fetch
from .evaluation import evaluate  # the function: robust_zoo.evaluate(model, 'fashion-mnist-linf', ...)

__version__ = '0.1.0'

__all__ = ['layers', 'models', 'create_act_layer', 'get_act_layer', 'get_threat_model', 'list_models',
           'swap_activations', 'THREAT_MODELS', 'evaluate', 'fetch']
