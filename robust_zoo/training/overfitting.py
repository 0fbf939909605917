"""Catastrophic overfitting: the failure of single-step adversarial training (Wong et al. 2020, Andriushchenko &
Flammarion 2020) in which the model learns to defeat its own one-step attack while a multi-step attack breaks it.

Its signature in a run's `summary.csv` is a gap: accuracy under the training attack (`train_adv_acc`) far above
validation accuracy under a multi-step attack (`eval_robust_acc`, PGD-10 in the recipes). The threshold is this
project's choice, set from its own runs: the published Fashion-MNIST N-FGSM runs without the failure keep the gap
under 0.1 (tests/test_published.py checks it on every card), while a run whose test PGD-20 accuracy collapsed shows
far more (0.43 for resnet32_relu_at.fmnist2ep_s1). The epochs where a failure starts can sit below the threshold;
the rule flags the run once it is clear. `train_at.py` logs the finding at the end of an epoch; a model card
records it, the leaderboard marks it (co), and the project's claim and transfer verdicts (docs/claims.md) are
given with and without the runs whose kept weights show it.
"""
import re
from typing import Any, Iterable, List, Mapping, Optional

__all__ = ['CO_GAP', 'SINGLE_STEP_ATTACKS', 'catastrophic_overfitting_epochs', 'kept_epoch']

CO_GAP = 0.2
SINGLE_STEP_ATTACKS = ('fgsm-rs', 'n-fgsm')


def _multi_step(val_attack: str) -> bool:
    """pgd-k with k >= 2, and APGD / AutoAttack (iterative by construction)."""
    m = re.fullmatch(r'pgd-(\d+)', val_attack or '')
    return (bool(m) and int(m.group(1)) >= 2) or (val_attack or '').startswith(('apgd', 'autoattack'))


def catastrophic_overfitting_epochs(rows: Iterable[Mapping[str, Any]], attack: str, val_attack: str,
                                    gap: float = CO_GAP) -> List[int]:
    """The epochs (from 0) whose training-attack accuracy exceeds the validation robust accuracy by more than `gap`.

    `rows` are summary.csv rows (`epoch`, `train_adv_acc`, `eval_robust_acc`, numbers or strings). Only a
    single-step training `attack` judged by a multi-step `val_attack` can show the signature: under PGD or TRADES
    a gap is robust overfitting (early stopping's job), and a one-step validation attack is fooled the same way."""
    if attack not in SINGLE_STEP_ATTACKS or not _multi_step(val_attack):
        return []
    out = []
    for row in rows:
        try:
            train, val = float(row['train_adv_acc']), float(row['eval_robust_acc'])
        except (KeyError, TypeError, ValueError):
            continue  # an epoch without validation
        if train - val > gap:
            out.append(int(row['epoch']))
    return out


def kept_epoch(rows: Iterable[Mapping[str, Any]], best_epoch: Optional[int], early_stop: bool) -> Optional[int]:
    """The epoch whose weights a run ships: the best validation epoch under early stopping, else the last."""
    if early_stop and best_epoch is not None and best_epoch >= 0:
        return int(best_epoch)
    epochs = [int(r['epoch']) for r in rows]
    return max(epochs) if epochs else None
