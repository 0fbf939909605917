"""The evaluation record: what was measured, how, and how sure we are."""
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Tuple

__all__ = ['EvalResult', 'wilson_interval']


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
class EvalResult:
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

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d['confidence_interval'] = list(self.confidence_interval)
        return d

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), indent=2, **kwargs)
