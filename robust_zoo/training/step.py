"""The adversarial training step: make the adversarial batch on the fly, then take one optimizer step.

BN policy during the attack (`bn_mode`):
- `'train'` (default): the attack sees batch statistics, as in Madry et al. and Wong et al., so the
  attacked function is the one the update trains; but the attack's forward passes do not move BN's running
  statistics (momentum is 0 while it runs), so running stats come from the update's forward passes only.
- `'eval'`: the attack runs with running statistics and dropout off, as in the official TRADES code.
The attack takes input gradients only (`torch.autograd.grad` with respect to the images): autograd skips
all weight-gradient work and no parameter's `.grad` is touched.
"""
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..attacks import n_fgsm, pgd, trades_adversary, trades_kl
from ..layers.smooth import ReLUSmoothGrad

__all__ = ['ATTACKS', 'SMOOTH_BACKWARD', 'AttackConfig', 'StepOutput', 'adversarial_step', 'attack_mode',
           'make_adversarial', 'set_smooth_backward']

ATTACKS = ('none', 'fgsm-rs', 'n-fgsm', 'pgd', 'trades')
SMOOTH_BACKWARD = ('none', 'attack', 'update', 'both')


@dataclass
class AttackConfig:
    """How the training batch is attacked. `step_size` defaults per attack: 1.25 * eps for FGSM-RS (Wong et
    al.), eps for N-FGSM (de Jorge et al.; noise 2 eps, Linf only), 2.5 * eps / steps for PGD and TRADES
    (Madry et al.). `adv_frac` < 1 attacks only the first `int(adv_frac * batch)` images of each batch and
    trains on them beside the clean rest (Croce et al. 2019's `ae_frac`, Goodfellow et al.'s 50/50 mix)."""
    attack: str = 'fgsm-rs'
    eps: float = 0.1
    steps: int = 10
    step_size: Optional[float] = None
    norm: str = 'Linf'
    trades_beta: float = 6.0
    bn_mode: str = 'train'
    smooth_backward: str = 'none'
    adv_frac: float = 1.0

    def __post_init__(self) -> None:
        if self.attack not in ATTACKS:
            raise ValueError(f'unknown training attack {self.attack!r}; choose one of {", ".join(ATTACKS)}.')
        if self.norm not in ('Linf', 'L2'):
            raise ValueError(f"norm must be 'Linf' or 'L2', got {self.norm!r}.")
        if self.attack == 'n-fgsm' and self.norm != 'Linf':
            raise ValueError("n-fgsm is defined for Linf only; use pgd or trades for L2.")
        if self.attack != 'none' and self.norm == 'Linf' and not 0 < self.eps <= 1:
            hint = f' It looks like 0..255 units: pass {self.eps:g}/255 = {self.eps / 255:.4f}.' if self.eps > 1 else ''
            raise ValueError(f'attack eps {self.eps} is outside (0, 1]: budgets are in [0, 1] pixel units.{hint}')
        if self.attack != 'none' and self.norm == 'L2' and self.eps <= 0:
            raise ValueError(f'L2 attack eps must be > 0, got {self.eps}.')
        if self.steps < 1:
            raise ValueError(f'attack steps must be >= 1, got {self.steps}.')
        if self.bn_mode not in ('train', 'eval'):
            raise ValueError(f"bn_mode must be 'train' or 'eval', got {self.bn_mode!r}.")
        if self.smooth_backward not in SMOOTH_BACKWARD:
            raise ValueError(f'smooth_backward must be one of {", ".join(SMOOTH_BACKWARD)}, '
                             f'got {self.smooth_backward!r}.')
        if not 0 < self.adv_frac <= 1:
            raise ValueError(f'adv_frac is the attacked fraction of each batch, in (0, 1]; got {self.adv_frac}.')
        if self.attack == 'trades' and self.adv_frac != 1:
            raise ValueError('TRADES regularizes every image of the batch: adv_frac must be 1 with trades.')

    def n_adversarial(self, batch_size: int) -> int:
        """How many leading images of a batch of `batch_size` are attacked (at least one)."""
        return batch_size if self.attack == 'none' else max(1, int(self.adv_frac * batch_size))

    @property
    def resolved_step_size(self) -> float:
        if self.step_size is not None:
            return self.step_size
        if self.attack == 'fgsm-rs':
            return 1.25 * self.eps
        return self.eps if self.attack == 'n-fgsm' else 2.5 * self.eps / self.steps


def set_smooth_backward(model: nn.Module, enabled: bool) -> int:
    """Switch the smooth backward of every `ReLUSmoothGrad` in `model`; returns how many were switched."""
    n = 0
    for m in model.modules():
        if isinstance(m, ReLUSmoothGrad):
            m.smooth_backward = enabled
            n += 1
    return n


@contextmanager
def attack_mode(model: nn.Module, bn_mode: str = 'train') -> Iterator[None]:
    """While the attack runs: with `bn_mode='train'`, BN uses batch statistics but its running statistics
    stay put; with `'eval'`, the whole model is in eval mode. The model's modes are restored afterwards."""
    if bn_mode == 'eval':
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            yield
        finally:
            for m, training in modes:  # per module: a BN frozen in eval mode stays so
                m.training = training
        return
    saved = [(m, m.momentum, m.num_batches_tracked.clone(), m.running_mean.clone(), m.running_var.clone())
             for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats and m.training]
    for m, *_ in saved:
        m.momentum = 0.0
    try:
        yield
    finally:  # momentum 0 keeps the stats; copying back only guards against 0 * NaN from a non-finite batch
        for m, momentum, nbt, mean, var in saved:  # (an in-place copy would bump the version autograd checks)
            m.momentum = momentum
            m.num_batches_tracked.copy_(nbt)
            if not (torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)


def make_adversarial(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: AttackConfig) -> torch.Tensor:
    """The adversarial batch for `cfg` (detached); `x` itself when `cfg.attack == 'none'`."""
    if cfg.attack == 'none':
        return x
    with attack_mode(model, cfg.bn_mode):
        if cfg.smooth_backward != 'none':
            set_smooth_backward(model, cfg.smooth_backward in ('attack', 'both'))
        if cfg.attack == 'trades':
            return trades_adversary(model, x, eps=cfg.eps, steps=cfg.steps, step_size=cfg.resolved_step_size,
                                    norm=cfg.norm)
        if cfg.attack == 'n-fgsm':
            return n_fgsm(model, x, y, eps=cfg.eps, step_size=cfg.resolved_step_size)
        steps = 1 if cfg.attack == 'fgsm-rs' else cfg.steps
        return pgd(model, x, y, eps=cfg.eps, steps=steps, step_size=cfg.resolved_step_size, norm=cfg.norm)


@dataclass
class StepOutput:
    loss: float
    adv_correct: int
    clean_correct: Optional[int]
    n: int
    n_adv: Optional[int] = None  # images attacked (the first n_adv); None: all n


def adversarial_step(
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        cfg: AttackConfig,
        *,
        attack_model: Optional[nn.Module] = None,
        autocast: Optional[torch.autocast] = None,
        scaler: Optional[torch.amp.GradScaler] = None,
        track_clean: bool = False,
        check_finite: bool = True,
) -> StepOutput:
    """One step of adversarial training on the batch (x, y) in [0, 1]; the model must be in train mode.

    `attack_model` is the module the attack differentiates (pass the unwrapped module when `model` is
    DDP-wrapped, so the attack does not trigger gradient synchronisation). `scaler` enables fp16 loss
    scaling. `track_clean` adds a no-grad clean forward to report clean train accuracy (costs a forward).
    A non-finite loss raises `FloatingPointError` before the optimizer steps.

    `cfg.smooth_backward`: 'attack' / 'update' / 'both' switch every `ReLUSmoothGrad` per phase; 'none'
    switches nothing, so a model keeps the backward it was built with (relu_smoothgrad models: smooth in
    both phases, SAT's 'both'; ReLU models: exact). For TRADES the clean accuracy comes from the step's
    own clean half (before the update); for the other attacks from a no-grad forward after it.
    """
    attack_model = model if attack_model is None else attack_model
    autocast = nullcontext() if autocast is None else autocast
    n_adv = cfg.n_adversarial(len(y))
    with autocast:
        x_adv = make_adversarial(attack_model, x[:n_adv], y[:n_adv], cfg)
        if n_adv < len(y):
            x_adv = torch.cat([x_adv, x[n_adv:]])
        if cfg.smooth_backward != 'none':
            set_smooth_backward(attack_model, cfg.smooth_backward in ('update', 'both'))
        clean_logits = None
        if cfg.attack == 'trades':
            logits_all = model(torch.cat([x, x_adv]))
            clean_logits, logits = logits_all.float().chunk(2)
            loss = F.cross_entropy(clean_logits, y) + cfg.trades_beta * trades_kl(logits, clean_logits)
        else:
            logits = model(x_adv).float()
            loss = F.cross_entropy(logits, y)
    if check_finite and not torch.isfinite(loss):
        raise FloatingPointError(f'non-finite training loss ({loss.item()}); the optimizer step was skipped.')
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    clean_correct = None
    if track_clean:
        if clean_logits is None:
            with torch.no_grad(), attack_mode(attack_model, 'train'), autocast:
                clean_logits = attack_model(x)
        clean_correct = int((clean_logits.argmax(1) == y).sum())
    adv_correct = int((logits.detach()[:n_adv].argmax(1) == y[:n_adv]).sum())
    return StepOutput(loss=float(loss.detach()), adv_correct=adv_correct, clean_correct=clean_correct, n=len(y),
                      n_adv=n_adv)
