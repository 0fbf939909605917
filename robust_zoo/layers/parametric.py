"""Parametric activations of Dai, Mahloujifar & Mittal (arXiv 2110.05626, github.com/dash29/robust_paf).

In the paper one activation module is built once and used by every layer, so the whole network learns
two numbers. Built alone, each layer here has its own parameters (per-layer mode); robust_zoo's
`*_pssilu_at` / `*_psoftplus_at` entrypoints and `swap_activations(..., shared=True)` share one
instance across the network (the paper's mode) through `SharedActivation`.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .fused import fusable

__all__ = ['PSSiLU', 'PSoftplus', 'pssilu', 'psoftplus']


@fusable
def pssilu(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    b = beta.abs()
    return x * (torch.sigmoid(alpha.abs() * x) - b) / (1 - b)


@fusable
def psoftplus(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    return F.softplus(alpha * x) / alpha


class PSSiLU(nn.Module):
    """Parametric shifted SiLU `x * (sigmoid(|a| x) - |b|) / (1 - |b|)` (`PSSiLU2` in the official code).

    `a` starts at 1 and `b` at 1e-8, so the layer starts as SiLU; `|b| -> 1` approaches ReLU-like shapes.
    Both are learnable and, as in the paper, left under the optimizer's weight decay.
    """

    def __init__(self, alpha_init: float = 1.0, beta_init: float = 1e-8, inplace: bool = False):
        super().__init__()
        if not 0 <= abs(beta_init) < 1:
            raise ValueError(f'pssilu: |beta_init| must be in [0, 1) (got {beta_init}); the paper uses 1e-8.')
        self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))
        self.beta = nn.Parameter(torch.tensor(float(beta_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pssilu(x, self.alpha, self.beta)


class PSoftplus(nn.Module):
    """Parametric Softplus with a learnable slope: `log(1 + exp(a x)) / a`, `a` starting at 1."""

    def __init__(self, alpha_init: float = 1.0, inplace: bool = False):
        super().__init__()
        if alpha_init <= 0:
            raise ValueError(f'psoftplus: alpha_init must be > 0 (got {alpha_init}); the paper uses 1.')
        self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return psoftplus(x, self.alpha)
