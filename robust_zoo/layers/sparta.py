"""Sparta: a spatially attentive, input-dependent extension of ReLU (Guo et al., arXiv 2105.08269).

Only the paper's abstract is public, so this design is robust_zoo's own, built from what the abstract
states:

* **extends ReLU** -- `sparta(x) = x * sigmoid(beta * x + A(x))`. With no attention (`A = 0`) this is
  Swish with slope `beta`; as `beta -> inf` it becomes ReLU exactly. ReLU is the zero-temperature,
  attention-free member of the family; the earlier version of the paper relates Sparta to Swish.
* **spatially attentive and input-dependent** -- `A(x)` is a map computed from the input itself: the
  mean over channels at every position, filtered by one `k x k` convolution (1 -> 1 channel, same
  padding). The gate at a pixel therefore depends on its `k x k` neighbourhood: a unit in a quiet
  neighbourhood can be shut (a local denoising effect, the abstract's link to feature denoising), one in
  an active neighbourhood let through. (A channel-max map as in CBAM was tried and dropped: its
  backward scatter made a ResNet-20 training step ~0.15x SiLU's time slower, see benchmarks/.)
* **adversarially trained with the network** -- all parameters are ordinary learnable parameters.
* **transferable across CNNs and datasets** -- the parameters (`k*k` conv weights, 1 bias, `beta`)
  do not depend on channels, resolution, depth or dataset, so one trained Sparta fits any layer of any CNN.

At init the attention conv is zero and `beta = 1`: Sparta starts as SiLU and learns its attention, so
any gain over SiLU comes from the attention. On `(N, C)` inputs (MLPs) the "neighbourhood" is the
single position: the gate then depends on the channel statistics of that sample only.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .fused import fusable

__all__ = ['Sparta', 'sparta', 'sparta_attention']


def sparta_attention(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """`A(x) = conv_kxk(mean_c(x))`, shape (N, 1, H, W), for NCHW `x` (`weight` is (1, 1, k, k)).

    The 1-channel convolution is written as k*k shifted multiply-adds on the small mean map: the same
    cross-correlation as `F.conv2d` with zero padding, but elementwise, so the fused (compiled) kernel
    absorbs it instead of calling a convolution three times per site and step.
    """
    k = weight.shape[-1]
    h, w = x.shape[-2:]
    mean = F.pad(x.mean(dim=1, keepdim=True), (k // 2,) * 4)
    taps = weight.reshape(k, k)
    attn = bias.view(1, 1, 1, 1)
    for i in range(k):
        for j in range(k):
            attn = attn + mean[..., i:i + h, j:j + w] * taps[i, j]
    return attn


@fusable
def sparta(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """`x * sigmoid(beta * x + A(x))` for NCHW `x`."""
    return x * torch.sigmoid(torch.addcmul(sparta_attention(x, weight, bias), x, beta))


class Sparta(nn.Module):
    """`x * sigmoid(beta * x + conv_kxk(mean_c(x)))`; starts as SiLU, ReLU as beta -> inf."""

    def __init__(self, kernel_size: int = 3, beta_init: float = 1.0, inplace: bool = False):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f'sparta: kernel_size must be a positive odd number (got {kernel_size}).')
        if beta_init <= 0:
            raise ValueError(f'sparta: beta_init must be > 0 (got {beta_init}).')
        self.kernel_size = kernel_size
        self.beta = nn.Parameter(torch.tensor(float(beta_init)))
        self.attn = nn.Conv2d(1, 1, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.attn.weight)
        nn.init.zeros_(self.attn.bias)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The input-dependent spatial map `A(x)`, shape (N, 1, H, W)."""
        return sparta_attention(x, self.attn.weight, self.attn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            return self.forward(x[:, :, None, None]).flatten(1)
        if x.ndim != 4:
            raise ValueError(
                f'sparta expects NCHW feature maps or (N, C) features, got shape {tuple(x.shape)}; '
                'it is an activation for CNNs (and MLPs), not for token sequences.')
        return sparta(x, self.attn.weight, self.attn.bias, self.beta)

    def extra_repr(self) -> str:
        return f'kernel_size={self.kernel_size}'
