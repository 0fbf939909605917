"""What an evaluation measures: the threat model, its attacks parsed from their names with the settings they run
with, and the examples. An attack of the protocol that robust_zoo cannot run is a WARN check, never skipped
silently; images outside [0, 1] are refused, whatever the model checks itself."""
import logging
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..attacks import pgd
from ..data import DATASETS, DEFAULT_ROOTS, load_dataset
from ..threat_models import THREAT_MODELS, ThreatModel, get_threat_model
from .autoattack import VERSIONS, autoattack, is_subset

__all__ = ['Attack', 'Protocol', 'attack_settings', 'check_images', 'check_n', 'dataset_checks', 'load_eval_data',
           'make_attack', 'protocol_data', 'resolve', 'shape_hint']

_logger = logging.getLogger('robust_zoo.evaluate')
_AVAILABLE = ('fgsm, pgd-<steps>[x<restarts>] (e.g. pgd-20, pgd-20x5), pgd-dlr-<steps>[x<restarts>] (e.g. '
              'pgd-dlr-20), autoattack-{standard,plus,rand}, apgd-ce, apgd-t, apgd-dlr, fab, fab-t, square '
              '(combined as apgd-ce+apgd-t)')
_PGD = re.compile(r'pgd-(?:(ce|dlr)-)?(\d+)(?:x(\d+))?')

Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def make_attack(spec: str, threat: ThreatModel, seed: int = 0, warnings: Optional[list] = None) -> Attack:
    """An attack from its protocol name (case-insensitive):

    - `fgsm`: one step of eps from the clean image;
    - `pgd-<k>`: PGD with k steps and a random start, on the cross-entropy; the threat model's step size,
      else 2.5 * eps / k. `pgd-<k>x<r>` adds r - 1 restarts from new random starts on the points not yet
      broken (`pgd-20x5`: 5 starts), and `pgd-dlr-<k>` / `pgd-dlr-<k>x<r>` ascends Croce & Hein's DLR loss
      instead (invariant to the logits' scale; `pgd-ce-<k>` is `pgd-<k>`);
    - `autoattack-<version>` (`standard`, `plus`, `rand`), or AutoAttack's attacks alone (`apgd-ce`,
      `apgd-t`, `apgd-dlr`, `fab`, `fab-t`, `square`; a combination as `apgd-ce+apgd-t`), with the standard
      version's settings (APGD-CE 1 restart, APGD-T 9 target classes: `robust_zoo.evaluation.autoattack`).
    """
    spec = spec.lower()
    if spec.startswith('autoattack-') and spec[len('autoattack-'):] in VERSIONS:
        return autoattack(threat.eps, threat.norm, version=spec[len('autoattack-'):], seed=seed, warnings=warnings)
    if is_subset(spec):
        return autoattack(threat.eps, threat.norm, attacks=spec.split('+'), seed=seed, warnings=warnings)
    settings = attack_settings(spec, threat)
    if spec == 'fgsm':
        return lambda m, x, y: pgd(m, x, y, eps=threat.eps, steps=1, step_size=threat.eps, norm=threat.norm,
                                   random_start=False)
    if settings and settings['steps'] > 0 and settings['restarts'] > 0:
        s = settings
        return lambda m, x, y: pgd(m, x, y, eps=threat.eps, steps=s['steps'], step_size=s['step_size'],
                                   norm=threat.norm, restarts=s['restarts'], loss=s['loss'])
    raise ValueError(f'Unknown or not yet available attack {spec!r}; available: {_AVAILABLE}.')


def attack_settings(spec: str, threat: ThreatModel) -> Dict[str, Any]:
    """The settings `make_attack(spec, threat)` runs with, for the record: PGD's steps, step size, restarts and loss
    (the threat model's fixed step where it has one, else 2.5 eps / k); {} for AutoAttack's attacks, whose settings
    are AutoAttack standard's."""
    spec = spec.lower()
    if spec == 'fgsm':
        return dict(steps=1, step_size=threat.eps, restarts=1, loss='ce', random_start=False)
    match = _PGD.fullmatch(spec)
    if not match:
        return {}
    steps = int(match.group(2))
    step = threat.step_size if threat.step_size is not None else 2.5 * threat.eps / max(steps, 1)
    return dict(steps=steps, step_size=step, restarts=int(match.group(3) or 1), loss=match.group(1) or 'ce',
                random_start=True)


@dataclass
class Protocol:
    """The attacks one evaluation runs (spec -> attack, in order) under `threat`, with their `settings`; `checks`
    holds the WARNs about the protocol itself, and `aa_warnings` collects AutoAttack's flags while it runs."""
    threat: ThreatModel
    attacks: Dict[str, Attack]
    settings: Dict[str, Dict[str, Any]]
    checks: List[dict]
    aa_warnings: list

    @property
    def record(self) -> Dict[str, Any]:
        """The threat model as an evaluation record names it."""
        return dict(id=self.threat.id, dataset=self.threat.dataset, norm=self.threat.norm, eps=self.threat.eps)


def resolve(threat: ThreatModel, attacks: Optional[Sequence[str]], seed: int) -> Protocol:
    """`attacks` (default: the threat model's) as runnable attacks. An unknown name the caller asked for raises;
    one of the threat model's own protocol becomes a WARN ('not run')."""
    aa_warnings: list = []
    runnable, checks = {}, []
    for spec in list(attacks) if attacks is not None else list(threat.attacks):
        try:
            runnable[spec] = make_attack(spec, threat, seed=seed, warnings=aa_warnings)
        except ValueError as e:
            if attacks is not None:
                raise
            checks.append(dict(name=f'protocol ({spec})', status='WARN', detail=f'not run: {e}'))
    settings = {spec: attack_settings(spec, threat) for spec in runnable}
    return Protocol(threat, runnable, settings, checks + step_checks(settings, threat), aa_warnings)


def step_checks(settings: Mapping[str, Mapping[str, Any]], threat: ThreatModel) -> List[dict]:
    """A WARN for each PGD attack whose steps cannot cover the budget (k x step < eps: weaker than its name says,
    as PGD-20 at step 0.01 under MNIST's eps 0.3); Madry et al.'s 2.5 eps / k covers it 2.5 times."""
    out = []
    for spec, s in settings.items():
        travel = s.get('steps', 0) * s.get('step_size', 0)
        enough = math.ceil(2.5 * threat.eps / s.get('step_size', 1))
        if s.get('random_start') and travel < threat.eps * (1 - 1e-9):
            out.append(dict(name=f'step size ({spec})', status='WARN',
                            detail=f"{s['steps']} steps of {s['step_size']:.4g} travel {travel:.4g}, less than the "
                                   f'budget eps {threat.eps:.4g}: the attack is weaker than its name suggests. Use '
                                   f'more steps (pgd-{enough} covers it 2.5 times, as Madry et al.).'))
    return out


def dataset_checks(model: nn.Module, threat: ThreatModel) -> List[dict]:
    """A WARN (and a log line) when the model's pretrained cfg names a threat model of another dataset: images of
    the same shape (MNIST, Fashion-MNIST, digits) run silently, and the numbers mean nothing for the card's claim."""
    own = (getattr(model, 'pretrained_cfg', None) or {}).get('threat_model')
    if own not in THREAT_MODELS or THREAT_MODELS[own].dataset == threat.dataset:
        return []
    detail = (f'the model was trained and published for {own} ({THREAT_MODELS[own].dataset}); it is evaluated '
              f'under {threat.id} ({threat.dataset}), on another dataset\'s images.')
    _logger.warning('%s', detail)
    return [dict(name='threat model', status='WARN', detail=detail)]


def check_n(n: Optional[int]) -> None:
    """None asks for the protocol's number of examples; 0 or fewer would silently do the same, so it is refused."""
    if n is not None and n < 1:
        raise ValueError(f'n_examples must be >= 1 (or None for the threat model\'s protocol), got {n}.')


def load_eval_data(threat_model: Union[str, ThreatModel], n: Optional[int] = None, root: Optional[str] = None,
                   transform: Any = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The first `n` (default: the protocol's) test examples of the threat model's dataset, from `root` or its
    default location: the data `evaluate` reads when it is given none. `transform`: ImageNet images prepared
    another way (a converted model's source preprocessing, robust_zoo.convert.preprocess)."""
    threat = get_threat_model(threat_model)
    check_n(n)
    n = n or threat.n_examples
    dataset = 'imagenet' if threat.dataset == 'imagenet-1k' else threat.dataset
    if dataset not in DATASETS:
        raise ValueError(f'No built-in loader for {threat.dataset!r}: pass data=(images in [0, 1], labels).')
    if root is None and dataset not in DEFAULT_ROOTS:
        raise ValueError(f'{threat.dataset} has no default location on this machine: pass data=(images in '
                         '[0, 1], labels), or data_dir=<folder> (--data-dir on the CLI) to load it from there.')
    return load_dataset(dataset, 'test', root, n, transform=transform)


def protocol_data(threat: ThreatModel, n_examples: Optional[int], data: Optional[Tuple[torch.Tensor, torch.Tensor]],
                  data_dir: Optional[str]) -> Tuple[torch.Tensor, torch.Tensor, List[dict]]:
    """The examples evaluated (`data`, or the threat model's test split) cut to `n_examples`, checked, and a WARN
    when fewer were given than the protocol asks for."""
    n = n_examples or threat.n_examples
    x, y = data if data is not None else load_eval_data(threat, n, data_dir)
    x, y = x[:n], y[:n]
    check_images(x, threat)
    if len(x) >= n:
        return x, y, []
    return x, y, [dict(name='n_examples', status='WARN', detail=f'only {len(x)} examples given, the protocol asks '
                                                                f'for {n}.')]


def check_images(x: torch.Tensor, threat: ThreatModel) -> None:
    """Refuse images outside [0, 1], NaN or infinite ones, whatever the model checks itself: budgets are in pixel
    units of [0, 1] images, and a NaN image would count as neither correct nor robust without a word."""
    if not len(x):
        return
    bad = (~torch.isfinite(x)).flatten(1).any(1)
    if bad.any():
        first = int(bad.nonzero()[0])
        raise ValueError(f'{int(bad.sum())} of the {len(x)} images (the first at index {first}) hold NaN '
                         'or infinite values: drop them or fix the data; no accuracy is computed from them.')
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f'{threat.id} takes images in [0, 1] (normalization is inside the model); got values in '
                         f'[{lo:.3g}, {hi:.3g}]: pass un-normalized images.')


def shape_hint(model: nn.Module, shape: Tuple[int, ...], threat: ThreatModel) -> str:
    """Why a model's first forward failed on the threat model's images, when its pretrained cfg says: other channels
    or size, and which threat model is the model's own. Only a hint: timm keeps a cfg's input_size when a model is
    built with another `in_chans`, so the cfg alone never refuses images."""
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    size, own = cfg.get('input_size'), cfg.get('threat_model')
    if not size or tuple(size) == tuple(shape):
        return ''
    return (f'; its pretrained cfg takes input_size {tuple(size)}'
            + (f': evaluate it under its own threat model, {own}' if own and own != threat.id else ''))
