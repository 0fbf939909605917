"""Smooth activations from Smooth Adversarial Training (Xie et al., arXiv 2006.14536).

SAT's claim is that ReLU's non-smooth gradient weakens both the inner attack and the outer update, so
these layers are ReLU's smooth relatives plus ReLU with a smooth *backward* pass (the sec. 3 ablation).
"""
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['ParametricSoftplus', 'SmoothReLU', 'ReLUSmoothGrad', 'relu_smoothgrad', 'smoothrelu']


def smoothrelu(x: torch.Tensor, beta_raw: torch.Tensor) -> torch.Tensor:
    b = beta_raw.square()
    return F.relu(x - torch.log1p(b * x.abs()) / b)


class ParametricSoftplus(nn.Module):
    """Parametric Softplus `log(1 + exp(alpha * x)) / alpha` (SAT sec. 3).

    `alpha = 10` by default, SAT's choice, which keeps the curve close to ReLU while its derivative
    `sigmoid(alpha * x)` stays smooth. Above `alpha * x > 20` the output is `x` (PyTorch's overflow guard).
    """

    def __init__(self, alpha: float = 10.0, inplace: bool = False):
        super().__init__()
        if alpha <= 0:
            raise ValueError(f'softplus: alpha must be > 0 (got {alpha}); SAT uses alpha=10.')
        self.alpha = float(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(x, beta=self.alpha)

    def extra_repr(self) -> str:
        return f'alpha={self.alpha}'


class SmoothReLU(nn.Module):
    """SmoothReLU `relu(x - log(b|x| + 1) / b)` with `b = b_raw ** 2` and `b_raw` learnable (SAT's code).

    Squaring keeps `b` positive without a constraint; `b_raw` starts at 20 (`b = 400`) as in SAT's
    `resnet_model.py`. The derivative is 0 on both sides of 0, so the layer is C1 unlike ReLU.
    """

    def __init__(self, beta_raw_init: float = 20.0, inplace: bool = False):
        super().__init__()
        if beta_raw_init == 0:
            raise ValueError('smoothrelu: beta_raw_init must be non-zero (b = beta_raw**2 divides); SAT uses 20.')
        self.beta_raw = nn.Parameter(torch.tensor(float(beta_raw_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return smoothrelu(x, self.beta_raw)


class _ReLUSmoothGradFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad_out * torch.sigmoid(ctx.alpha * x), None


def relu_smoothgrad(x: torch.Tensor, alpha: float = 10.0) -> torch.Tensor:
    """ReLU forward, parametric-Softplus derivative `sigmoid(alpha * x)` backward."""
    return _ReLUSmoothGradFn.apply(x, alpha)


class ReLUSmoothGrad(nn.Module):
    """ReLU in the forward pass, `sigmoid(alpha * x) * grad` in the backward pass (SAT sec. 3, alpha = 10).

    The ablation that isolates ReLU's gradient as the problem: outputs equal ReLU's, only gradients change.
    `smooth_backward=False` restores ReLU's exact gradient, so a training loop can smooth the gradient for
    the attack only, for the parameter update only, or for both by flipping the attribute.
    """

    def __init__(self, alpha: float = 10.0, smooth_backward: bool = True, inplace: bool = False):
        super().__init__()
        if alpha <= 0:
            raise ValueError(f'relu_smoothgrad: alpha must be > 0 (got {alpha}); SAT uses alpha=10.')
        self.alpha = float(alpha)
        self.smooth_backward = smooth_backward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.smooth_backward:
            return relu_smoothgrad(x, self.alpha)
        return F.relu(x)

    def extra_repr(self) -> str:
        return f'alpha={self.alpha}, smooth_backward={self.smooth_backward}'
