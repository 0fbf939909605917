"""Attacks: pure functions of (model, x, y, budget) that take gradients with respect to the input only."""
from .pgd import fgsm_rs, pgd

__all__ = ['fgsm_rs', 'pgd']
