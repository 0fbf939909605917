"""TRADES (Zhang et al. 2019): the adversary maximizes KL(f(x) || f(x')) and the loss trades clean
cross-entropy against that KL with weight `beta`. Input gradients only, as in `pgd`."""
import torch
import torch.nn.functional as F
from torch import nn

from .pgd import _project

__all__ = ['trades_adversary', 'trades_kl']


def trades_kl(logits_adv: torch.Tensor, logits_clean: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(softmax(clean) || softmax(adv)), the TRADES robust term."""
    return F.kl_div(F.log_softmax(logits_adv.float(), 1), F.softmax(logits_clean.float(), 1),
                    reduction='batchmean')


def trades_adversary(model: nn.Module, x: torch.Tensor, *, eps: float, steps: int = 10,
                     step_size: float = None, norm: str = 'Linf') -> torch.Tensor:
    """PGD on the KL term from x + 0.001 * N(0, 1), as in the official TRADES code (step 2.5 * eps / steps
    by default). Needs no labels: the target is the model's own clean prediction."""
    if norm not in ('Linf', 'L2'):
        raise ValueError(f"norm must be 'Linf' or 'L2', got {norm!r}.")
    step_size = 2.5 * eps / steps if step_size is None else step_size
    x = x.detach()
    with torch.no_grad():
        p_clean = F.softmax(model(x).float(), 1)
    delta = _project(0.001 * torch.randn_like(x), x, eps, norm)
    for _ in range(steps):
        xa = (x + delta).requires_grad_(True)
        loss = F.kl_div(F.log_softmax(model(xa).float(), 1), p_clean, reduction='sum')
        grad = torch.autograd.grad(loss, xa)[0]
        if norm == 'Linf':
            step = step_size * grad.sign()
        else:
            step = step_size * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.ndim - 1))
        delta = _project(delta + step, x, eps, norm)
    return (x + delta).detach()
