"""Capped ReLU of Sooksatra, Hamerly & Rivas ("Is ReLU Adversarially Robust?", arXiv 2405.03777)."""
import torch
from torch import nn

__all__ = ['CappedReLU']


class CappedReLU(nn.Module):
    """`max(0, min(x, beta))`: ReLU whose output cannot exceed `beta`.

    Capping bounds how far a perturbation can push a unit, and the paper finds smaller caps more robust
    (at the cost of vanishing gradients above the cap). The paper gives no single value for CNNs with
    BatchNorm; the default `beta = 1.0` caps at the scale of BatchNorm's unit-variance output.
    Configure it with `act_kwargs={'beta': ...}`.
    """

    def __init__(self, beta: float = 1.0, inplace: bool = False):
        super().__init__()
        if beta <= 0:
            raise ValueError(f'capped_relu: beta must be > 0 (got {beta}); the default is 1.0.')
        self.beta = float(beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0, self.beta)

    def extra_repr(self) -> str:
        return f'beta={self.beta}'
