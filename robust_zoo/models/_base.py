"""The timm model interface shared by robust_zoo's own small-image networks."""
from typing import Any, Dict, Optional, Sequence

import torch
from timm.layers import ClassifierHead
from torch import nn

from ._normalize import InputNormalize

__all__ = ['SmallImageNet']


class SmallImageNet(nn.Module):
    """Base for CIFAR / 28x28 networks: normalization first, a timm `ClassifierHead` last.

    Subclasses build their trunk, set `self.num_features` and call `_init_head`, and implement
    `forward_features`; fine-tuning works through timm's `reset_classifier` / `get_classifier`.
    """

    def __init__(self, input_mean: Sequence[float], input_std: Sequence[float], in_chans: int,
                 num_classes: int, shared_act: Optional[nn.Module] = None):
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.grad_checkpointing = False
        self.normalize = InputNormalize(input_mean, input_std, in_chans)
        if shared_act is not None:
            self.shared_act = shared_act

    def _init_head(self, num_features: int, global_pool: str = 'avg', drop_rate: float = 0.0) -> None:
        self.num_features = self.head_hidden_size = num_features
        self.drop_rate = drop_rate
        self.head = ClassifierHead(num_features, self.num_classes, pool_type=global_pool, drop_rate=drop_rate)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^normalize|^conv_stem|^bn1', blocks=r'^stages\.(\d+)' if coarse else r'^stages\.(\d+)\.(\d+)')

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
