"""PGD-k (Madry et al. 2018) and FGSM with random start (Wong et al. 2020), Linf and L2.

Gradients come from `torch.autograd.grad(loss, x)`: parameter `.grad` fields are never touched and
autograd skips weight-gradient work. The model's train/eval mode is the caller's choice.
"""
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['pgd', 'fgsm_rs']


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x).float(), y, reduction='sum')
    return torch.autograd.grad(loss, x)[0]


def _project(delta: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == 'Linf':
        delta = delta.clamp(-eps, eps)
    else:
        n = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.ndim - 1))
        delta = delta * (eps / n).clamp(max=1)
    return (x + delta).clamp(0, 1) - x


def _step(grad: torch.Tensor, step_size: float, norm: str) -> torch.Tensor:
    if norm == 'Linf':
        return step_size * grad.sign()
    n = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (grad.ndim - 1))
    return step_size * grad / n


def _random_start(x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == 'Linf':
        return torch.empty_like(x).uniform_(-eps, eps)
    d = torch.randn_like(x)
    r = torch.rand(x.shape[0], device=x.device).pow(1 / d[0].numel()).view(-1, *[1] * (x.ndim - 1))
    return d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view_as(r) * r * eps


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 10,
        step_size: float = None, norm: str = 'Linf', random_start: bool = True) -> torch.Tensor:
    """Projected gradient ascent on the cross-entropy within the `norm` ball of radius `eps` and [0, 1].

    `step_size` defaults to 2.5 * eps / steps (Madry et al.). Returns the adversarial images (detached).
    """
    if norm not in ('Linf', 'L2'):
        raise ValueError(f"norm must be 'Linf' or 'L2', got {norm!r}.")
    step_size = 2.5 * eps / steps if step_size is None else step_size
    x = x.detach()
    delta = _project(_random_start(x, eps, norm), x, eps, norm) if random_start else torch.zeros_like(x)
    for _ in range(steps):
        grad = _input_grad(model, x + delta, y)
        delta = _project(delta + _step(grad, step_size, norm), x, eps, norm)
    return (x + delta).detach()


def fgsm_rs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
            step_size: float = None) -> torch.Tensor:
    """FGSM from a uniform random start, step 1.25 * eps by default (Wong et al. 2020), Linf."""
    return pgd(model, x, y, eps=eps, steps=1, step_size=1.25 * eps if step_size is None else step_size)
