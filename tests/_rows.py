"""Leaderboard rows made by hand, for tests of the tables and the verdicts."""
from typing import Any, Dict, Optional


def fixed_row(act: str, mean: float, sd: Optional[float] = None, seeds: int = 1, n: int = 1000) -> Dict[str, Any]:
    """A ResNet-20 row on fashion-mnist-linf with a given mean and seed spread (values all at the mean), its
    only robust protocol PGD-20 on `n` images."""
    stat = dict(mean=mean, sd=sd, n_seeds=seeds, n_examples=n, values=[mean] * seeds, min=mean, max=mean,
                wilson95=(mean - 0.02, mean + 0.02))
    return dict(base_architecture='resnet20', activation=act, threat_model='fashion-mnist-linf',
                seeds=list(range(seeds)), repos=[], clean=stat, robust={'pgd-20, n=1000': stat})
