"""The evaluation record: what was measured, how, and how sure we are.

`EvalRecord` was called `EvalResult` until huggingface_hub's `EvalResult` (one entry of a model card's model-index,
which robust_zoo's card writers build from these records) made the name say two things; the old name still works,
with a DeprecationWarning.
"""
import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

__all__ = ['EvalRecord', 'RecordWeightsError', 'check_record_weights', 'software_versions', 'wilson_interval']


def wilson_interval(successes: int, n: int, z: float = 1.96) -> Tuple[float, float]:
    """Wilson score interval (95% by default) for a proportion; better than the normal one near 0 and 1."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class EvalRecord:
    """Accuracies are fractions in [0, 1]; `robust_accuracy` is the per-sample worst case over `attacks`."""
    model: str
    threat_model: Dict[str, Any]
    n_examples: int
    clean_accuracy: float
    robust_accuracy: float
    attacks: Dict[str, float]
    confidence_interval: Tuple[float, float]
    checks: List[Dict[str, Any]] = field(default_factory=list)
    seed: int = 0
    versions: Dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    # the weights measured: the parameter digest of the evaluated model (robust_zoo.training.parameter_digest),
    # and the sha256 of the safetensors file it was loaded from where the caller knows it (CLI, train_at.py)
    weights_digest: str = ''
    weights_sha256: str = ''
    # the settings each attack ran with (PGD: steps, step_size, restarts, loss), so a record says its step
    attack_settings: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d['confidence_interval'] = list(self.confidence_interval)
        return d

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), indent=2, **kwargs)


def software_versions() -> Dict[str, str]:
    """The versions of robust_zoo, torch and timm, as a record or an evaluation state notes them."""
    import timm
    import torch

    from .. import __version__
    return dict(robust_zoo=__version__, torch=torch.__version__, timm=timm.__version__)


def __getattr__(name: str) -> Any:
    if name == 'EvalResult':
        warnings.warn('robust_zoo.evaluation.EvalResult is now EvalRecord (huggingface_hub.EvalResult is a model-index '
                      'entry, another thing); the old name will be removed.', DeprecationWarning, stacklevel=2)
        return EvalRecord
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


class RecordWeightsError(ValueError):
    """An evaluation record measured other weights than the ones it is to be published beside."""


def check_record_weights(record: Mapping[str, Any], source: str, *, sha256: str, digest: Optional[str] = None,
                         fallback: Optional[str] = None) -> None:
    """Refuse a record that measured other weights than the file of `sha256` (whose parameter digest is `digest`).

    A record names its weights by `weights_sha256` (the file) or `weights_digest` (the parameters); `fallback` is
    the sha256 of the weights an older record without either was published beside (e.g. a card's index entry).
    A record that names no weights at all is refused: nothing ties its numbers to these weights."""
    fix = (' Evaluate these weights (robust-zoo eval MODEL --checkpoint RUN/model.safetensors --output '
           'record.json) and pass that record.')
    if record.get('weights_digest') and digest is not None:
        if record['weights_digest'] != digest:
            raise RecordWeightsError(f"{source} measured weights of parameter digest {record['weights_digest']}, not "
                                     f'these (digest {digest}, sha256 {sha256}): its numbers belong to other '
                                     'weights.' + fix)
    elif record.get('weights_sha256'):
        if record['weights_sha256'] != sha256:
            raise RecordWeightsError(f"{source} measured the weights of sha256 {record['weights_sha256']}, not these "
                                     f'(sha256 {sha256}): its numbers belong to other weights.' + fix)
    elif fallback is None or fallback != sha256:
        raise RecordWeightsError(f'{source} does not say which weights it measured (no weights_sha256 or '
                                 'weights_digest: written by an older robust_zoo)' + (
                                     f', and the card it came from published other weights (sha256 {fallback})'
                                     if fallback else '') + '.' + fix)
