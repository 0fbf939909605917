"""Adversarial training: the library step, deterministic resumable epochs, and atomic checkpoints.
`train/train_at.py` is the timm-style script on top of these pieces."""
from .checkpoint import (
    CheckpointError, atomic_write, atomic_write_text, check_weights_file, load_model_state, load_train_state,
    load_weights, read_weights_metadata, save_train_state, save_weights,
)
from .device import device_name
from .loop import (
    epoch_batches, freeze, iterate_batches, parameter_digest, ranks_identical, step_seed, subset, train_one_epoch,
    validate,
)
from .overfitting import CO_GAP, SINGLE_STEP_ATTACKS, catastrophic_overfitting_epochs, kept_epoch
from .precision import native_autocast, resolve_autocast
from .schedule import create_run_scheduler, epoch_lrs, first_decayed_epoch
from .step import (
    ATTACKS, SMOOTH_BACKWARD, AttackConfig, StepOutput, adversarial_step, attack_mode, make_adversarial,
    set_smooth_backward,
)

__all__ = [
    'ATTACKS', 'CO_GAP', 'SINGLE_STEP_ATTACKS', 'SMOOTH_BACKWARD', 'AttackConfig', 'CheckpointError', 'StepOutput',
    'adversarial_step', 'atomic_write', 'atomic_write_text', 'attack_mode', 'catastrophic_overfitting_epochs',
    'check_weights_file', 'create_run_scheduler', 'device_name', 'epoch_lrs', 'first_decayed_epoch',
    'epoch_batches', 'freeze', 'iterate_batches', 'kept_epoch', 'load_model_state', 'load_train_state',
    'load_weights', 'make_adversarial', 'read_weights_metadata', 'native_autocast', 'parameter_digest',
    'ranks_identical',
    'resolve_autocast', 'save_train_state', 'save_weights', 'set_smooth_backward', 'step_seed', 'subset',
    'train_one_epoch', 'validate',
]
