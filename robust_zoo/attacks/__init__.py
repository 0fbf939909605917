"""Attacks: pure functions of (model, x, y, budget) that take gradients with respect to the input only."""
from .pgd import fgsm_rs, n_fgsm, pgd
from .trades import trades_adversary, trades_kl

__all__ = ['fgsm_rs', 'n_fgsm', 'pgd', 'trades_adversary', 'trades_kl']
