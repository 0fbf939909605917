"""`evaluate(model, threat_model)`: clean and adversarial accuracy under a standardized threat model."""
import logging
import re
import time
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..attacks import pgd
from ..data import DATASETS, DEFAULT_ROOTS, load_dataset
from ..threat_models import ThreatModel, get_threat_model
from .autoattack import VERSIONS, autoattack
from .checks import (
    check_budget, check_deterministic, check_input_gradients, check_logits, check_unbounded, perturbation_size,
)
from .result import EvalResult, wilson_interval

__all__ = ['evaluate', 'make_attack']

_logger = logging.getLogger('robust_zoo.evaluate')
_AA_ATTACKS = ('apgd-ce', 'apgd-t', 'apgd-dlr', 'fab', 'fab-t', 'square')
_AVAILABLE = 'fgsm, pgd-<steps> (e.g. pgd-20), autoattack-{standard,plus,rand}, apgd-ce, apgd-t'


def make_attack(spec: str, threat: ThreatModel, seed: int = 0, warnings: Optional[list] = None,
                ) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """An attack from its protocol name: `fgsm`, `pgd-<k>` (random start; the threat model's step size,
    else 2.5 * eps / k), `autoattack-<version>`, or one of AutoAttack's attacks alone (`apgd-ce`, `apgd-t`,
    `apgd-dlr`, `fab`, `fab-t`, `square`; a combination as `apgd-ce+apgd-t`)."""
    spec = spec.lower()
    if spec.startswith('autoattack-') and spec[len('autoattack-'):] in VERSIONS:
        return autoattack(threat.eps, threat.norm, version=spec[len('autoattack-'):], seed=seed, warnings=warnings)
    parts = spec.split('+')
    if all(p in _AA_ATTACKS for p in parts):
        return autoattack(threat.eps, threat.norm, attacks=parts, seed=seed, warnings=warnings)
    if spec == 'fgsm':
        return lambda m, x, y: pgd(m, x, y, eps=threat.eps, steps=1, step_size=threat.eps, norm=threat.norm,
                                   random_start=False)
    match = re.fullmatch(r'pgd-(\d+)', spec)
    if match:
        steps = int(match.group(1))
        step = threat.step_size if threat.step_size is not None else 2.5 * threat.eps / steps
        return lambda m, x, y: pgd(m, x, y, eps=threat.eps, steps=steps, step_size=step, norm=threat.norm)
    raise ValueError(f'Unknown or not yet available attack {spec!r}; available: {_AVAILABLE}.')


def _load_data(threat: ThreatModel, n: int, root: str | None = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The first `n` test examples of the threat model's dataset, from `root` or its default location."""
    dataset = 'imagenet' if threat.dataset == 'imagenet-1k' else threat.dataset
    if dataset not in DATASETS:
        raise ValueError(f'No built-in loader for {threat.dataset!r}: pass data=(images in [0, 1], labels).')
    if root is None and dataset not in DEFAULT_ROOTS:
        raise ValueError(f'{threat.dataset} has no default location on this machine: pass data=(images in '
                         '[0, 1], labels), or data_dir=<folder> (--data-dir on the CLI) to load it from there.')
    return load_dataset(dataset, 'test', root, n)


def _versions() -> Dict[str, str]:
    import timm

    from .. import __version__
    return dict(robust_zoo=__version__, torch=torch.__version__, timm=timm.__version__)


def evaluate(
        model: nn.Module,
        threat_model: Union[str, ThreatModel],
        *,
        data: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
        attacks: Optional[Sequence[str]] = None,
        n_examples: Optional[int] = None,
        batch_size: int = 250,
        seed: int = 0,
        checks: bool = True,
        model_name: Optional[str] = None,
        data_dir: str | None = None,
) -> EvalResult:
    """Clean accuracy, accuracy under each attack, and the per-sample worst case, on the first `n_examples`.

    Defaults come from the threat model's protocol. Every attack runs on every clean-correct point, so
    each per-attack number stands alone; the model is evaluated in eval mode (its mode is restored).
    The same seed and batch size give the same numbers. Attacks of the protocol that robust_zoo cannot
    run are skipped and reported as a WARN check, never silently. Without `data`, the test split is read
    from `data_dir` (see `robust_zoo.data.create_dataset`), or from the dataset's default location.
    """
    t0 = time.time()
    threat = get_threat_model(threat_model)
    n = n_examples or threat.n_examples
    requested = list(attacks) if attacks is not None else list(threat.attacks)
    check_list = []
    runnable = {}
    aa_warnings: list = []
    for spec in requested:
        try:
            runnable[spec] = make_attack(spec, threat, seed=seed, warnings=aa_warnings)
        except ValueError as e:
            if attacks is not None:
                raise
            check_list.append(dict(name=f'protocol ({spec})', status='WARN', detail=f'not run: {e}'))
    x_all, y_all = data if data is not None else _load_data(threat, n, data_dir)
    x_all, y_all = x_all[:n], y_all[:n]
    if len(x_all) < n:
        check_list.append(dict(name='n_examples', status='WARN',
                               detail=f'only {len(x_all)} examples given, the protocol asks for {n}.'))
    n = len(x_all)
    device = next(iter([*model.parameters(), *model.buffers()]), torch.empty(0)).device
    was_training = model.training
    if was_training:
        check_list.append(dict(name='eval mode', status='WARN',
                               detail='the model was in train mode; it was evaluated in eval mode.'))
    model.eval()
    gen_state = torch.random.get_rng_state()
    try:
        probe, probe_y = x_all[:min(n, batch_size)].to(device), y_all[:min(n, batch_size)].to(device)
        with torch.no_grad():
            n_outputs = model(probe[:1]).shape[-1]
        if int(y_all.max()) >= n_outputs:
            raise ValueError(f'labels go up to {int(y_all.max())} but the model has {n_outputs} outputs: '
                             f'build it with num_classes for {threat.dataset}.')
        if checks:
            check_list += [check_logits(model, probe), check_deterministic(model, probe),
                           check_input_gradients(model, probe, probe_y)]
            torch.manual_seed(seed)
            check_list.append(check_unbounded(model, probe[:100], probe_y[:100], n_outputs))
        clean_ok = torch.zeros(n, dtype=torch.bool)
        attack_ok = {spec: torch.zeros(n, dtype=torch.bool) for spec in runnable}
        budget = {spec: [0.0, float('inf'), float('-inf'), 0] for spec in runnable}  # size, min, max pixel, count
        for start in range(0, n, batch_size):
            xb = x_all[start:start + batch_size].to(device)
            yb = y_all[start:start + batch_size].to(device)
            with torch.no_grad():
                ok = (model(xb).argmax(1) == yb).cpu()
            clean_ok[start:start + len(yb)] = ok
            idx = ok.nonzero().flatten()
            for i, (spec, attack) in enumerate(runnable.items()):
                if len(idx) == 0:
                    continue
                torch.manual_seed(seed * 1_000_003 + start * 101 + i)  # same seed and batch size, same numbers
                x_adv = attack(model, xb[idx], yb[idx])
                with torch.no_grad():
                    adv_ok = (model(x_adv.float()).argmax(1) == yb[idx]).cpu()
                attack_ok[spec][start + idx] = adv_ok
                b = budget[spec]
                b[0] = max(b[0], perturbation_size(xb[idx], x_adv, threat.norm).max().item())
                b[1], b[2] = min(b[1], x_adv.min().item()), max(b[2], x_adv.max().item())
                b[3] += len(idx)
            done = min(start + batch_size, n)
            _logger.info('%s: %d/%d examples, clean %.3f%s', threat.id, done, n, clean_ok[:done].float().mean(),
                         ''.join(f', {s} {a[:done].float().mean():.3f}' for s, a in attack_ok.items()))
        if checks:
            check_list += [check_budget(*b, threat.eps, threat.norm, spec) for spec, b in budget.items()]
            check_list += [dict(name='autoattack flag', status='WARN', detail=w) for w in dict.fromkeys(aa_warnings)]
    finally:
        torch.random.set_rng_state(gen_state)
        model.train(was_training)
    robust_ok = clean_ok.clone()
    for ok in attack_ok.values():
        robust_ok &= ok
    k = int(robust_ok.sum())
    return EvalResult(
        model=model_name or getattr(model, 'pretrained_cfg', {}).get('architecture', type(model).__name__),
        threat_model=dict(id=threat.id, dataset=threat.dataset, norm=threat.norm, eps=threat.eps),
        n_examples=n,
        clean_accuracy=int(clean_ok.sum()) / n,
        robust_accuracy=k / n,
        attacks={spec: int(ok.sum()) / n for spec, ok in attack_ok.items()},
        confidence_interval=wilson_interval(k, n),
        checks=check_list,
        seed=seed,
        versions=_versions(),
        seconds=round(time.time() - t0, 2),
    )
