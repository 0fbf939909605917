"""The evaluator: every robust accuracy robust_zoo publishes comes from `evaluate`."""
from . import checks, plots
from .evaluator import CHECKS, FAST_CHECKS, evaluate, make_attack
from .plots import loss_landscape, plot_accuracy_vs_eps, plot_accuracy_vs_steps, plot_loss_landscape, save_eval_plots
from .result import EvalResult, wilson_interval

__all__ = ['CHECKS', 'EvalResult', 'FAST_CHECKS', 'checks', 'evaluate', 'loss_landscape', 'make_attack',
           'plot_accuracy_vs_eps', 'plot_accuracy_vs_steps', 'plot_loss_landscape', 'plots', 'save_eval_plots',
           'wilson_interval']
