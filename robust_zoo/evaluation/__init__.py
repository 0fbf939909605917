"""The evaluator: every robust accuracy robust_zoo publishes comes from `evaluate`.

`evaluator.py` composes the protocol (`protocol.py`), the run (`runner.py`) and the checks (`checklist.py`,
`checks.py`) into the record (`result.py`); `state.py` is the resumable state's file format.
"""
from typing import Any

from . import checks, plots
from .checklist import CHECKS, FAST_CHECKS
from .evaluator import evaluate
from .plots import loss_landscape, plot_accuracy_vs_eps, plot_accuracy_vs_steps, plot_loss_landscape, save_eval_plots
from .protocol import make_attack
from .result import EvalRecord, wilson_interval

__all__ = ['CHECKS', 'EvalRecord', 'FAST_CHECKS', 'checks', 'evaluate', 'loss_landscape', 'make_attack',
           'plot_accuracy_vs_eps', 'plot_accuracy_vs_steps', 'plot_loss_landscape', 'plots', 'save_eval_plots',
           'wilson_interval']


def __getattr__(name: str) -> Any:
    if name == 'EvalResult':  # the former name, with result.py's DeprecationWarning
        from . import result
        return getattr(result, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
