"""PGD-k (Madry et al. 2018), FGSM with random start (Wong et al. 2020), Linf and L2, and N-FGSM (de Jorge
et al. 2022), Linf.

Gradients come from `torch.autograd.grad(loss, x)`: parameter `.grad` fields are never touched and
autograd skips weight-gradient work. The model's train/eval mode is the caller's choice. Losses are computed
on fp32 logits, so the attacks run under `torch.autocast`.
"""
from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['pgd', 'fgsm_rs', 'n_fgsm', 'dlr_loss', 'LOSSES']


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example Difference of Logits Ratio (Croce & Hein 2020), untargeted:
    `-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`, with `z_pi1 >= z_pi2 >= ...` the sorted logits.

    Invariant to shifting and scaling the logits, so a saturated softmax does not flatten it. Needs at least
    3 classes. Computed in fp32."""
    z = logits.float()
    if z.shape[-1] < 3:
        raise ValueError(f'the DLR loss needs at least 3 classes, got {z.shape[-1]}.')
    top = z.topk(3, dim=1).values
    z_y = z.gather(1, y.view(-1, 1)).squeeze(1)
    z_other = z.masked_fill(F.one_hot(y, z.shape[-1]).bool(), float('-inf')).amax(1)
    return -(z_y - z_other) / (top[:, 0] - top[:, 2] + 1e-12)


def _ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), y, reduction='none')


LOSSES: Dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {'ce': _ce, 'dlr': dlr_loss}


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable = _ce) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    loss = loss_fn(model(x), y).sum()
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


def _pgd_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, step_size: float,
             norm: str, random_start: bool, loss_fn: Callable) -> torch.Tensor:
    delta = _project(_random_start(x, eps, norm), x, eps, norm) if random_start else torch.zeros_like(x)
    for _ in range(steps):
        grad = _input_grad(model, x + delta, y, loss_fn)
        delta = _project(delta + _step(grad, step_size, norm), x, eps, norm)
    return (x + delta).detach()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 10,
        step_size: float = None, norm: str = 'Linf', random_start: bool = True, restarts: int = 1,
        loss: str = 'ce') -> torch.Tensor:
    """Projected gradient ascent on `loss` within the `norm` ball of radius `eps` and [0, 1].

    `step_size` defaults to 2.5 * eps / steps (Madry et al.). `loss` is `'ce'` (cross-entropy) or `'dlr'`
    (`dlr_loss`, Croce & Hein 2020). With `restarts > 1` the attack runs again from new random starts on
    the points that are still classified correctly, and keeps per example the result that fools the model,
    else the one with the highest loss (one extra forward per restart). Returns the adversarial images
    (detached).
    """
    if norm not in ('Linf', 'L2'):
        raise ValueError(f"norm must be 'Linf' or 'L2', got {norm!r}.")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(map(repr, LOSSES))}, got {loss!r}.")
    if restarts < 1:
        raise ValueError(f'restarts must be >= 1, got {restarts}.')
    loss_fn = LOSSES[loss]
    step_size = 2.5 * eps / max(steps, 1) if step_size is None else step_size
    x = x.detach()
    if restarts == 1:
        return _pgd_run(model, x, y, eps, steps, step_size, norm, random_start, loss_fn)
    best = x.clone()
    best_loss = torch.full((len(x),), float('-inf'), device=x.device)
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        idx = (~fooled).nonzero().flatten()
        if len(idx) == 0:
            break
        x_adv = _pgd_run(model, x[idx], y[idx], eps, steps, step_size, norm, random_start, loss_fn)
        with torch.no_grad():
            logits = model(x_adv)
            value = loss_fn(logits, y[idx]).float()
            fools = logits.argmax(1) != y[idx]
        better = fools | (value > best_loss[idx])
        best[idx[better]] = x_adv[better]
        best_loss[idx[better]] = value[better]
        fooled[idx[fools]] = True
    return best


def fgsm_rs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
            step_size: float = None) -> torch.Tensor:
    """FGSM from a uniform random start, step 1.25 * eps by default (Wong et al. 2020), Linf."""
    return pgd(model, x, y, eps=eps, steps=1, step_size=1.25 * eps if step_size is None else step_size)


def n_fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step_size: float = None,
           noise: float = 2.0) -> torch.Tensor:
    """N-FGSM (de Jorge et al. 2022, "Make Some Noise"), Linf: one FGSM step of `step_size` (default eps)
    from uniform noise in [-noise * eps, noise * eps], with NO projection back onto the eps ball.

    The stronger noise and the missing clip are what keep single-step training from catastrophic
    overfitting at large eps, where FGSM-RS collapses; the training perturbation may reach (noise + 1) * eps
    (3 eps by default). Only the [0, 1] image range is enforced. Same cost as FGSM-RS.
    """
    if noise < 0:
        raise ValueError(f'noise must be >= 0 (a multiple of eps), got {noise}.')
    step_size = eps if step_size is None else step_size
    x = x.detach()
    x_noisy = (x + torch.empty_like(x).uniform_(-noise * eps, noise * eps)).clamp(0, 1)
    grad = _input_grad(model, x_noisy, y)
    return (x_noisy + step_size * grad.sign()).clamp(0, 1).detach()
