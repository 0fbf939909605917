"""The timm model interface shared by robust_zoo's own small-image networks."""
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from timm.layers import ClassifierHead
from torch import nn

from ._normalize import InputNormalize

__all__ = ['SmallImageNet', 'make_stages']


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
        return dict(stem=r'^normalize|^conv_stem|^bn1',
                    blocks=r'^stages\.(\d+)' if coarse else r'^stages\.(\d+)\.(\d+)')

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


def make_stages(
        block: Callable[[int, int, int], nn.Module],
        depths: Sequence[int],
        widths: Sequence[int],
        in_chs: int,
) -> Tuple[nn.Sequential, List[Dict[str, Any]]]:
    """Stages of `block(in_chs, out_chs, stride)`: stride 1 for the first stage, 2 for the first block of the
    others. Returns the stages and their timm `feature_info` entries (modules `stages.<i>`)."""
    stages, feature_info = [], []
    for i, (n, w) in enumerate(zip(depths, widths)):
        stride = 1 if i == 0 else 2
        stages.append(nn.Sequential(*[block(in_chs if j == 0 else w, w, stride if j == 0 else 1) for j in range(n)]))
        in_chs = w
        feature_info.append(dict(num_chs=w, reduction=2 ** i, module=f'stages.{i}'))
    return nn.Sequential(*stages), feature_info
