"""One activation instance used at many places in a network (Dai et al.'s network-wide PSSiLU)."""
import torch
from torch import nn

__all__ = ['SharedActivation']


class SharedActivation(nn.Module):
    """A use site of an activation whose parameters are shared network-wide.

    The site keeps a plain (unregistered) reference, so the shared instance's parameters appear exactly
    once in `parameters()` and `state_dict()`: where the owner registers it (`model.shared_act` for
    robust_zoo models). Saving with safetensors, DDP and optimizers then see each parameter once.
    `.to()` / `.half()` update parameters in place, so every site keeps seeing the owner's tensors.
    """

    def __init__(self, shared: nn.Module):
        super().__init__()
        self.__dict__['shared'] = shared  # bypass Module.__setattr__: do not register it here

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared(x)

    def extra_repr(self) -> str:
        return f'shared={type(self.shared).__name__}'
