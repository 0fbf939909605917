"""The evaluator: every robust accuracy robust_zoo publishes comes from `evaluate`."""
from .evaluator import evaluate, make_attack
from .result import EvalResult, wilson_interval

__all__ = ['EvalResult', 'evaluate', 'make_attack', 'wilson_interval']
