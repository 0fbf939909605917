"""robust_zoo model families; importing registers every `<arch>_<act>_at` entrypoint with timm."""
from . import rz_cifar_resnet, rz_efficientnet, rz_lenet, rz_mlp, rz_preact_resnet, rz_resnet, rz_wide_resnet  # noqa: F401  (register)
from ._builder import RobustPretrainedCfg
from ._normalize import InputNormalize
from ._prefix import PREFIX, install_prefix, list_models, robust_model_names

install_prefix()

__all__ = ['PREFIX', 'InputNormalize', 'RobustPretrainedCfg', 'install_prefix', 'list_models', 'robust_model_names']
