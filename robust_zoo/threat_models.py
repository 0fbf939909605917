"""Standardized threat models: the one table every evaluation and model card refers to.

Conventions follow RobustBench: images in [0, 1], normalization inside the model, the budget `eps` in
pixel units of the [0, 1] image, and a fixed default protocol (attacks, number of test points, and
preprocessing) so that numbers with the same id are comparable.
"""
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Tuple

__all__ = ['ThreatModel', 'THREAT_MODELS', 'get_threat_model']


@dataclass(frozen=True)
class ThreatModel:
    id: str
    dataset: str
    norm: str  # 'Linf' or 'L2'
    eps: float
    attacks: Tuple[str, ...]  # default protocol, strongest last
    n_examples: int  # test points of the default protocol (first n of the test split)
    preprocessing: str
    step_size: Optional[float] = None  # PGD step of the protocol, when it fixes one
    source: str = ''

    def __post_init__(self) -> None:
        if self.norm not in ('Linf', 'L2'):
            raise ValueError(f"threat model {self.id!r}: norm must be 'Linf' or 'L2', got {self.norm!r}.")
        if self.eps <= 0 or (self.norm == 'Linf' and self.eps > 1):
            raise ValueError(f'threat model {self.id!r}: Linf eps {self.eps} is outside (0, 1]; budgets are in '
                             f'[0, 1] pixel units (write 8/255, not 8).')

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


_TABLE = [
    ThreatModel('fashion-mnist-linf', 'fashion-mnist', 'Linf', 0.1, ('pgd-20', 'autoattack-standard'), 1000,
                'none (1x28x28)', step_size=0.01, source='robust_zoo (Fashion-MNIST test split)'),
    ThreatModel('digits-linf', 'digits', 'Linf', 0.1, ('pgd-20', 'autoattack-standard'), 500,
                'none (8x8 upsampled bilinearly to 1x28x28)', step_size=0.01,
                source='robust_zoo (scikit-learn digits, fixed 500-image test split; same eps as fashion-mnist-linf '
                       'so Fashion-MNIST Sparta banks transfer at their training budget)'),
    ThreatModel('digits-linf-0.05', 'digits', 'Linf', 0.05, ('pgd-20', 'autoattack-standard'), 500,
                'none (8x8 upsampled bilinearly to 1x28x28)', step_size=0.005,
                source='robust_zoo (digits-linf at half the budget, PGD step eps / 10 as there: a backbone '
                       'trained at 0.1 on Fashion-MNIST, measured below its training budget)'),
    ThreatModel('mnist-linf', 'mnist', 'Linf', 0.3, ('pgd-20', 'autoattack-standard'), 1000,
                'none (1x28x28)', step_size=0.01, source='Madry et al. 2018; AutoAttack'),
    ThreatModel('cifar10-linf', 'cifar10', 'Linf', 8 / 255, ('autoattack-standard',), 10000,
                'none (3x32x32)', source='RobustBench'),
    ThreatModel('cifar10-l2', 'cifar10', 'L2', 0.5, ('autoattack-standard',), 10000,
                'none (3x32x32)', source='RobustBench'),
    ThreatModel('cifar100-linf', 'cifar100', 'Linf', 8 / 255, ('autoattack-standard',), 10000,
                'none (3x32x32)', source='RobustBench'),
    ThreatModel('imagenet-linf', 'imagenet-1k', 'Linf', 4 / 255, ('autoattack-standard',), 5000,
                'Res256Crop224 (resize 256, center crop 224)', source="RobustBench's 5,000-image ImageNet subset"),
    ThreatModel('imagenet-linf-sat', 'imagenet-1k', 'Linf', 4 / 255, ('pgd-200',), 50000,
                'Res256Crop224 (resize 256, center crop 224)', step_size=1 / 255,
                source='Smooth Adversarial Training (Xie et al.): PGD-200, step 1/255, full validation set'),
]

THREAT_MODELS: Dict[str, ThreatModel] = {t.id: t for t in _TABLE}


def get_threat_model(threat_model: 'str | ThreatModel') -> ThreatModel:
    """Look up a threat model by id; an unknown id raises with the valid ones."""
    if isinstance(threat_model, ThreatModel):
        return threat_model
    try:
        return THREAT_MODELS[threat_model]
    except KeyError:
        raise ValueError(
            f'Unknown threat model {threat_model!r}; valid: {", ".join(THREAT_MODELS)}.') from None
