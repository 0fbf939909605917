"""Automatic sanity checks of an evaluation (Carlini et al. 2019), each PASS / WARN / FAIL with a reason."""
import math
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import pgd

__all__ = ['check_logits', 'check_deterministic', 'check_budget', 'check_input_gradients', 'check_unbounded',
           'check_steps_convergence', 'check_restarts', 'check_eps_sweep', 'check_black_box', 'eps_grid',
           'perturbation_size', 'predict']


def _check(name: str, status: str, detail: str, data: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """A check: {name, status: PASS | WARN | FAIL, detail} and, for the curves, `data` (JSON values)."""
    out: Dict[str, Any] = dict(name=name, status=status, detail=detail)
    if data is not None:
        out['data'] = data
    return out


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
    acc = _accuracy(model, x_adv, y)
    detail = f'PGD-{steps} with Linf eps 1 leaves {acc:.1%} accuracy on {len(x)} examples'
    if acc > 1.0 / n_classes:
        return _check('unbounded attack', 'FAIL', detail + ': above chance, so the attack is blind '
                                                          '(gradient masking); robust accuracies are not trustworthy.')
    return _check('unbounded attack', 'PASS', detail + '.')


# --- checks of the attack itself, on a probe of clean-correct points (`checks='full'` in `evaluate`) -------------

def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The model's decisions on `x` in fp32, outside any autocast context (the final re-check of an attack)."""
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        return torch.cat([model(x[i:i + batch_size].float()).argmax(1) for i in range(0, len(x), batch_size)])


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (predict(model, x) == y).float().mean().item() if len(x) else float('nan')


def _pgd_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, steps: int,
                  seed: int, **kwargs: Any) -> torch.Tensor:
    """Per-example correctness (bool, on the cpu) under `pgd`, re-checked in fp32; the same seed, the same starts."""
    torch.manual_seed(seed)
    x_adv = pgd(model, x, y, eps=eps, steps=steps, norm=norm, **kwargs)
    return (predict(model, x_adv) == y).cpu()


def check_steps_convergence(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = 'Linf', *,
                            steps: Sequence[int] = (10, 50, 200), tolerance: float = 0.02,
                            seed: int = 0) -> Dict[str, Any]:
    """Robust accuracy of PGD-k (step 2.5 * eps / k, random start) for each k in `steps`: an attack that has
    converged gains nothing from more steps. WARN if the last step count still lowers accuracy by more than
    `tolerance` (a fraction) below the one before it. `data`: {'steps': [...], 'accuracy': [...]}."""
    steps = sorted(int(k) for k in steps)
    acc = [_pgd_accuracy(model, x, y, eps, norm, k, seed).float().mean().item() for k in steps]
    curve = ', '.join(f'PGD-{k} {a:.1%}' for k, a in zip(steps, acc))
    detail = f'{curve} on {len(x)} clean-correct points ({norm} eps {eps:.6g})'
    data = dict(steps=steps, accuracy=acc, n=len(x), eps=eps, norm=norm)
    if len(acc) > 1 and acc[-2] - acc[-1] > tolerance:
        return _check('steps convergence', 'WARN', detail + f': going from {steps[-2]} to {steps[-1]} steps still '
                      f'lowers accuracy by {acc[-2] - acc[-1]:.1%} (> {tolerance:.0%}), so the attack has not '
                      'converged: the reported numbers are upper bounds; use more steps.', data)
    return _check('steps convergence', 'PASS', detail + '.', data)


def check_restarts(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = 'Linf', *,
                   steps: int = 20, restarts: int = 5, tolerance: float = 0.02, seed: int = 0) -> Dict[str, Any]:
    """PGD-`steps` with 1 random start vs `restarts` random starts (the extra restarts run only on the points
    the first one did not break). WARN if restarts lower accuracy by more than `tolerance` (a fraction): a
    single run then depends on luck and underestimates the attack."""
    ok_one = _pgd_accuracy(model, x, y, eps, norm, steps, seed)
    ok_all = ok_one.clone()
    idx = ok_one.nonzero().flatten()
    if restarts > 1 and len(idx):
        ok_all[idx] = _pgd_accuracy(model, x[idx.to(x.device)], y[idx.to(y.device)], eps, norm, steps, seed + 1,
                                    restarts=restarts - 1)
    one, many = ok_one.float().mean().item(), ok_all.float().mean().item()
    detail = (f'PGD-{steps} with 1 start {one:.1%}, with {restarts} starts {many:.1%} on {len(x)} clean-correct '
              f'points ({norm} eps {eps:.6g})')
    data = dict(restarts=[1, restarts], accuracy=[one, many], n=len(x), steps=steps)
    if one - many > tolerance:
        more = int(ok_one.sum() - ok_all.sum())
        return _check('restarts', 'WARN', detail + f': restarts break {more} more point{"s" * (more != 1)} '
                      f'({one - many:.1%} > {tolerance:.0%}), so one run depends on its random start; evaluate '
                      'with restarts (pgd-<k>x<r>) or AutoAttack.', data)
    return _check('restarts', 'PASS', detail + '.', data)


def eps_grid(eps: float, norm: str, max_eps: Optional[float] = None, dim: Optional[int] = None) -> List[float]:
    """0, eps/4, eps/2, eps, 2 eps, 4 eps, ... up to `max_eps`, which ends the grid: by default Linf 0.5 (any
    image can then be moved to uniform grey) and L2 0.5 sqrt(dim) (the same for a `dim`-pixel image)."""
    if max_eps is None:
        if norm == 'L2' and dim is None:
            raise ValueError('the L2 grid needs the input dimension `dim` (or max_eps).')
        max_eps = 0.5 if norm == 'Linf' else 0.5 * math.sqrt(dim)
    grid, e = [0.0], eps / 4
    while e < max_eps * (1 - 1e-6):
        grid.append(e)
        e *= 2
    return grid + [float(max_eps)]


def check_eps_sweep(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = 'Linf', *,
                    steps: int = 20, max_eps: Optional[float] = None, margin: float = 0.1, tolerance: float = 0.01,
                    seed: int = 0) -> Dict[str, Any]:
    """Accuracy under PGD-`steps` (step 2.5 eps / steps) for each budget of `eps_grid` (Carlini et al. 2019):
    FAIL if the attack at eps 0 does not give the clean accuracy, WARN if accuracy rises with the budget by
    more than `tolerance` (and more than one point), FAIL if the largest budget (any image reaches uniform
    grey) leaves accuracy above chance (1 / classes) + `margin`: an attack that cannot win with an unlimited
    budget is blind (gradient masking). `data`: {'eps': [...], 'accuracy': [...], 'threat_eps', 'chance', ...}."""
    grid = eps_grid(eps, norm, max_eps, x[0].numel())
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        n_classes = model(x[:1].float()).shape[-1]
    clean = _accuracy(model, x, y)
    oks = [_pgd_accuracy(model, x, y, e, norm, steps, seed) for e in grid]
    acc = [ok.float().mean().item() for ok in oks]
    chance = 1.0 / n_classes
    data = dict(eps=grid, accuracy=acc, threat_eps=eps, norm=norm, chance=chance, clean=clean, n=len(x), steps=steps)
    detail = (f'PGD-{steps} on {len(x)} points, {norm} eps ' + ', '.join(f'{e:.4g}: {a:.1%}' for e, a in zip(grid, acc))
              + f' (clean {clean:.1%}, chance {chance:.1%})')
    problems, status = [], 'PASS'
    if abs(acc[0] - clean) > 1e-9:
        problems.append(f'at eps 0 the attack gives {acc[0]:.1%}, not the clean {clean:.1%}: it changes the '
                        'input or the decision without a budget')
        status = 'FAIL'
    if acc[-1] > chance + margin:
        problems.append(f'at the largest budget {grid[-1]:.4g} accuracy is {acc[-1]:.1%}, above chance + '
                        f'{margin:.0%}: the attack is blind (gradient masking), robust accuracies are not trustworthy')
        status = 'FAIL'
    slack = max(tolerance * len(x), 1)
    rises = [(grid[i], grid[i + 1]) for i in range(len(grid) - 1)
             if int(oks[i + 1].sum()) - int(oks[i].sum()) > slack]
    if rises:
        problems.append('accuracy rises with the budget from eps ' + ', '.join(f'{a:.4g} to {b:.4g}' for a, b in rises)
                        + ': a larger budget must not help the model (a weak or unstable attack)')
        status = 'FAIL' if status == 'FAIL' else 'WARN'
    return _check('eps sweep', status, detail + (': ' + '; '.join(problems) + '.' if problems else '.'), data)


def check_black_box(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = 'Linf', *,
                    queries: int = 1000, steps: int = 20, restarts: int = 1, tolerance: float = 0.02,
                    seed: int = 0) -> Dict[str, Any]:
    """Square attack (Andriushchenko et al. 2020; pyautoattack's, margin loss, `queries` queries) vs white-box
    PGD-`steps`: a black-box attack that breaks points white-box PGD could not suggests the gradients are
    masked. WARN when it does so on more than `tolerance` (a fraction) of the points and on more than one:
    one PGD run misses the odd point on honest models too. pyautoattack's AutoAttack runs Square with 5000
    queries and its adapter exposes no setting for that, so this uses pyautoattack's `SquareAttack`
    directly, in fp32 outside autocast."""
    from pyautoattack.square import SquareAttack

    ok_pgd = _pgd_accuracy(model, x, y, eps, norm, steps, seed, restarts=restarts)

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        return model(inputs.float()).float()

    square = SquareAttack(forward, norm=norm, n_queries=queries, eps=eps, p_init=0.8, seed=seed, device=x.device)
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        x_adv = square.perturb(x.float(), y)
    ok_square = (predict(model, x_adv) == y).cpu()
    pgd_broken, square_broken = int((~ok_pgd).sum()), int((~ok_square).sum())
    square_only = int((~ok_square & ok_pgd).sum())
    data = dict(n=len(x), queries=queries, pgd_steps=steps, pgd_broken=pgd_broken, square_broken=square_broken,
                square_only=square_only)
    detail = (f'on {len(x)} clean-correct points ({norm} eps {eps:.6g}), white-box PGD-{steps} breaks {pgd_broken}, '
              f'black-box Square ({queries} queries) breaks {square_broken}, {square_only} of them where PGD failed')
    if square_only > max(tolerance * len(x), 1):
        return _check('black box', 'WARN', detail + ': a black-box attack beating the white-box one suggests '
                      'gradient masking; trust only the strongest attack, and look at the gradients.', data)
    return _check('black box', 'PASS', detail + '.', data)
