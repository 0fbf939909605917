"""Sparta: a spatially attentive, input-dependent extension of ReLU (Guo et al., arXiv 2105.08269).

Only the paper's abstract is public, so this design is robust_zoo's own, built from what the abstract
states:

* **extends ReLU** -- `sparta(x) = x * sigmoid(beta * x + A(x))`. With no attention (`A = 0`) this is
  Swish with slope `beta`; as `beta -> inf` it becomes ReLU exactly. ReLU is the zero-temperature,
  attention-free member of the family; the earlier version of the paper relates Sparta to Swish.
* **spatially attentive and input-dependent** -- `A(x)` is a map computed from the input itself: the
  mean and the max over channels at every position (2 maps), mixed by one `k x k` convolution
  (2 -> 1 channels, same padding). The gate at a pixel therefore depends on its `k x k` neighbourhood:
  a unit in a quiet neighbourhood can be shut (a local denoising effect, the abstract's link to
  feature denoising), one in an active neighbourhood let through.
* **adversarially trained with the network** -- all parameters are ordinary learnable parameters.
* **transferable across CNNs and datasets** -- the parameters (`2*k*k` conv weights, 1 bias, `beta`)
  do not depend on channels, resolution, depth or dataset, so one trained Sparta fits any layer of any CNN.

At init the attention conv is zero and `beta = 1`: Sparta starts as SiLU and learns its attention, so
any gain over SiLU comes from the attention. On `(N, C)` inputs (MLPs) the "neighbourhood" is the
single position: the gate then depends on the channel statistics of that sample only.
"""
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['Sparta']


class Sparta(nn.Module):
    """`x * sigmoid(beta * x + conv_kxk([mean_c(x), max_c(x)]))`; starts as SiLU, ReLU as beta -> inf."""

    def __init__(self, kernel_size: int = 3, beta_init: float = 1.0, inplace: bool = False):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f'sparta: kernel_size must be a positive odd number (got {kernel_size}).')
        if beta_init <= 0:
            raise ValueError(f'sparta: beta_init must be > 0 (got {beta_init}).')
        self.kernel_size = kernel_size
        self.beta = nn.Parameter(torch.tensor(float(beta_init)))
        self.attn = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.attn.weight)
        nn.init.zeros_(self.attn.bias)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The input-dependent spatial map `A(x)`, shape (N, 1, H, W)."""
        stats = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return self.attn(stats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            return self.forward(x[:, :, None, None]).flatten(1)
        if x.ndim != 4:
            raise ValueError(
                f'sparta expects NCHW feature maps or (N, C) features, got shape {tuple(x.shape)}; '
                'it is an activation for CNNs (and MLPs), not for token sequences.')
        return x * torch.sigmoid(torch.addcmul(self.attention(x), x, self.beta))

    def extra_repr(self) -> str:
        return f'kernel_size={self.kernel_size}'
