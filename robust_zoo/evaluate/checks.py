"""Automatic sanity checks of an evaluation (Carlini et al. 2019), each PASS / WARN / FAIL with a reason."""
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import pgd

__all__ = ['check_logits', 'check_deterministic', 'check_budget', 'check_input_gradients', 'check_unbounded',
           'perturbation_size']


def _check(name: str, status: str, detail: str) -> Dict[str, str]:
    return dict(name=name, status=status, detail=detail)


@torch.no_grad()
def check_logits(model: nn.Module, x: torch.Tensor) -> Dict[str, str]:
    """Attacks on softmax outputs lose their gradient: the model must return logits."""
    out = model(x).float()
    sums_to_one = torch.allclose(out.sum(1), torch.ones(len(out)), atol=1e-3)
    looks_like_probs = bool((out >= 0).all() and (out <= 1).all() and sums_to_one)
    if looks_like_probs:
        return _check('logits', 'FAIL', 'outputs are in [0, 1] and sum to 1: the model returns probabilities; '
                                         'return logits (drop the final softmax).')
    return _check('logits', 'PASS', 'outputs are unnormalized scores (logits).')


@torch.no_grad()
def check_deterministic(model: nn.Module, x: torch.Tensor) -> Dict[str, str]:
    """A randomized forward pass (dropout left on, random defenses) makes gradient attacks look weaker."""
    diff = (model(x).float() - model(x).float()).abs().max().item()
    if diff > 1e-4:
        return _check('deterministic forward', 'FAIL',
                      f'two forwards of the same batch differ by {diff:.3g}: randomness in the model needs EOT '
                      'attacks (or eval mode).')
    return _check('deterministic forward', 'PASS', f'two forwards agree (max difference {diff:.1g}).')


def perturbation_size(x: torch.Tensor, x_adv: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example Linf or L2 size of `x_adv - x`, in fp32."""
    delta = (x_adv.float() - x.float()).flatten(1)
    return delta.abs().amax(1) if norm == 'Linf' else delta.norm(dim=1)


def check_budget(worst: float, lo: float, hi: float, count: int, eps: float, norm: str,
                 attack: str) -> Dict[str, str]:
    """Every adversarial example within the budget and a valid image: `worst` is the largest perturbation
    and [lo, hi] the pixel range over all `count` examples, measured in fp32."""
    if worst > eps * (1 + 1e-4) + 1e-6 or lo < 0 or hi > 1:
        return _check(f'budget ({attack})', 'FAIL', f'largest {norm} perturbation {worst:.6g} (eps {eps:.6g}), '
                                                    f'pixel range [{lo:.3g}, {hi:.3g}] over {count} examples.')
    return _check(f'budget ({attack})', 'PASS', f'all {count} adversarial examples within {norm} {eps:.6g} '
                                                f'(largest {worst:.6g}) and in [0, 1], re-checked in fp32.')


def check_input_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Dict[str, str]:
    """Zero or NaN input gradients (quantized inputs, saturated softmax) starve gradient attacks."""
    x = x.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(model(x).float(), y, reduction='sum')
    grad = torch.autograd.grad(loss, x, allow_unused=True)[0]
    if grad is None:
        return _check('input gradients', 'FAIL', 'the output does not depend on the input through autograd.')
    per_example = grad.flatten(1)
    nan = per_example.isnan().any(1).float().mean().item()
    zero = (per_example.abs().sum(1) == 0).float().mean().item()
    detail = f'{zero:.0%} of examples have an all-zero input gradient, {nan:.0%} a NaN one.'
    status = 'FAIL' if zero > 0.5 or nan > 0 else 'WARN' if zero > 0 else 'PASS'
    return _check('input gradients', status, detail)


def check_unbounded(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int,
                    steps: int = 20) -> Dict[str, str]:
    """An attack with no real budget (Linf eps = 1: any image) must win; if not, gradients are masked."""
    x_adv = pgd(model, x, y, eps=1.0, steps=steps, step_size=0.1)
    with torch.no_grad():
        acc = (model(x_adv).argmax(1) == y).float().mean().item()
    detail = f'PGD-{steps} with Linf eps 1 leaves {acc:.1%} accuracy on {len(x)} examples'
    if acc > 1.0 / n_classes:
        return _check('unbounded attack', 'FAIL', detail + ': above chance, so the attack is blind '
                                                          '(gradient masking); robust accuracies are not trustworthy.')
    return _check('unbounded attack', 'PASS', detail + '.')
