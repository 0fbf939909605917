"""`evaluate(model, threat_model)`: clean and adversarial accuracy under a standardized threat model."""
import logging
import re
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..attacks import pgd
from ..data import DATASETS, DEFAULT_ROOTS, load_dataset
from ..threat_models import ThreatModel, get_threat_model
from .autoattack import VERSIONS, autoattack
from .checks import (
    check_black_box, check_budget, check_deterministic, check_eps_sweep, check_input_gradients, check_logits,
    check_restarts, check_steps_convergence, check_unbounded, perturbation_size, predict,
)
from .result import EvalResult, wilson_interval

__all__ = ['CHECKS', 'FAST_CHECKS', 'evaluate', 'make_attack']

_logger = logging.getLogger('robust_zoo.evaluate')
_AA_ATTACKS = ('apgd-ce', 'apgd-t', 'apgd-dlr', 'fab', 'fab-t', 'square')
_AVAILABLE = ('fgsm, pgd-<steps>[x<restarts>] (e.g. pgd-20, pgd-20x5), pgd-dlr-<steps>[x<restarts>] (e.g. '
              'pgd-dlr-20), autoattack-{standard,plus,rand}, apgd-ce, apgd-t, apgd-dlr, fab, fab-t, square '
              '(combined as apgd-ce+apgd-t)')
#: `checks=True`: cheap checks on one batch, and of every adversarial example's budget
FAST_CHECKS = ('logits', 'deterministic', 'input_gradients', 'unbounded', 'budget', 'autoattack_flags')
#: `checks='full'`: also the attack's own sanity checks on a probe of clean-correct points
CHECKS = FAST_CHECKS + ('steps_convergence', 'restarts', 'eps_sweep', 'black_box')


def make_attack(spec: str, threat: ThreatModel, seed: int = 0, warnings: Optional[list] = None,
                ) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """An attack from its protocol name (case-insensitive):

    - `fgsm`: one step of eps from the clean image;
    - `pgd-<k>`: PGD with k steps and a random start, on the cross-entropy; the threat model's step size,
      else 2.5 * eps / k. `pgd-<k>x<r>` adds r - 1 restarts from new random starts on the points not yet
      broken (`pgd-20x5`: 5 starts), and `pgd-dlr-<k>` / `pgd-dlr-<k>x<r>` ascends Croce & Hein's DLR loss
      instead (invariant to the logits' scale; `pgd-ce-<k>` is `pgd-<k>`);
    - `autoattack-<version>` (`standard`, `plus`, `rand`), or AutoAttack's attacks alone (`apgd-ce`,
      `apgd-t`, `apgd-dlr`, `fab`, `fab-t`, `square`; a combination as `apgd-ce+apgd-t`).
    """
    spec = spec.lower()
    if spec.startswith('autoattack-') and spec[len('autoattack-'):] in VERSIONS:
        return autoattack(threat.eps, threat.norm, version=spec[len('autoattack-'):], seed=seed, warnings=warnings)
    parts = spec.split('+')
    if all(p in _AA_ATTACKS for p in parts):
        return autoattack(threat.eps, threat.norm, attacks=parts, seed=seed, warnings=warnings)
    if spec == 'fgsm':
        return lambda m, x, y: pgd(m, x, y, eps=threat.eps, steps=1, step_size=threat.eps, norm=threat.norm,
                                   random_start=False)
    match = re.fullmatch(r'pgd-(?:(ce|dlr)-)?(\d+)(?:x(\d+))?', spec)
    if match and int(match.group(2)) > 0 and int(match.group(3) or 1) > 0:
        loss, steps, restarts = match.group(1) or 'ce', int(match.group(2)), int(match.group(3) or 1)
        step = threat.step_size if threat.step_size is not None else 2.5 * threat.eps / steps
        return lambda m, x, y: pgd(m, x, y, eps=threat.eps, steps=steps, step_size=step, norm=threat.norm,
                                   restarts=restarts, loss=loss)
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


def _check_names(checks: Union[bool, str, Sequence[str], None]) -> List[str]:
    if checks is None or checks is False:
        return []
    if checks is True or checks == 'fast':
        return list(FAST_CHECKS)
    if checks == 'full':
        return list(CHECKS)
    names = [checks] if isinstance(checks, str) else list(checks)
    unknown = [c for c in names if c not in CHECKS]
    if unknown:
        raise ValueError(f'Unknown check(s) {", ".join(map(repr, unknown))}; checks= takes True / "fast", "full", '
                         f'False, or names among: {", ".join(CHECKS)}.')
    return names


def _full_checks(names: Sequence[str], model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
                 seed: int) -> List[dict]:
    """The attack's own sanity checks on the probe `x, y` (clean-correct points), in the order of CHECKS."""
    eps, norm = threat.eps, threat.norm
    runs = dict(steps_convergence=lambda: check_steps_convergence(model, x, y, eps, norm, seed=seed),
                restarts=lambda: check_restarts(model, x, y, eps, norm, seed=seed),
                eps_sweep=lambda: check_eps_sweep(model, x, y, eps, norm, seed=seed),
                black_box=lambda: check_black_box(model, x, y, eps, norm, seed=seed))
    out = []
    for name in CHECKS:
        if name in names and name in runs:
            if len(x) == 0:
                out.append(dict(name=name.replace('_', ' '), status='WARN', detail='not run: no clean-correct points.'))
                continue
            t = time.time()
            out.append(runs[name]())
            _logger.info('%s: check %s %s (%.1f s): %s', threat.id, out[-1]['name'], out[-1]['status'],
                         time.time() - t, out[-1]['detail'])
    return out


def evaluate(
        model: nn.Module,
        threat_model: Union[str, ThreatModel],
        *,
        data: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
        attacks: Optional[Sequence[str]] = None,
        n_examples: Optional[int] = None,
        batch_size: int = 250,
        seed: int = 0,
        checks: Union[bool, str, Sequence[str]] = True,
        model_name: Optional[str] = None,
        data_dir: str | None = None,
        probe: int = 100,
        progress: Optional[bool] = None,
) -> EvalResult:
    """Clean accuracy, accuracy under each attack, and the per-sample worst case, on the first `n_examples`.

    Defaults come from the threat model's protocol. Every attack runs on every clean-correct point, so
    each per-attack number stands alone; the model is evaluated in eval mode (its mode is restored).
    The same seed and batch size give the same numbers. Attacks of the protocol that robust_zoo cannot
    run are skipped and reported as a WARN check, never silently. Without `data`, the test split is read
    from `data_dir` (see `robust_zoo.data.create_dataset`), or from the dataset's default location.

    Attacks may run under the caller's `torch.autocast`; every decision that is counted (clean and
    adversarial) is made by a fp32 forward with autocast off, and budgets are measured in fp32.

    `checks` (each a dict {name, status: PASS | WARN | FAIL, detail[, data]} in `EvalResult.checks`):

    - `True` or `'fast'`: logits not probabilities, a deterministic forward, non-zero input gradients, an
      unbounded attack that wins, every adversarial example within budget, and AutoAttack's own flags;
      a few forwards and 20 PGD steps on one batch.
    - `'full'` (the protocol of a published model card): also, on the first `probe` clean-correct points
      (Carlini et al. 2019): `steps_convergence` (PGD-10 / 50 / 200; WARN if 50 -> 200 steps still lowers
      accuracy by > 2 points), `restarts` (PGD-20, 1 vs 5 random starts; WARN if > 2 points apart),
      `eps_sweep` (PGD-20 at eps 0, eps/4, eps/2, eps, 2 eps, ... up to Linf 0.5 / L2 0.5 sqrt(d); FAIL if
      eps 0 is not the clean accuracy or the largest budget leaves more than chance + 10 points, WARN if
      accuracy rises with eps) and `black_box` (Square, 1000 queries, vs PGD-20; WARN if Square breaks
      > 2% of points that PGD could not). Their curves are in the checks' `data`, and
      `robust_zoo.evaluate.save_eval_plots` draws them. Per probe point: about 500 PGD steps and up to 1000
      Square forwards (ResNet-20, Fashion-MNIST, 100 points, one CPU thread: about 5 minutes), small next to
      AutoAttack on the protocol's points.
    - `False`: none; or a list of names among `CHECKS`.

    `progress` shows a tqdm bar over examples (default: when stderr is a terminal); every batch is also
    logged to the `robust_zoo.evaluate` logger.
    """
    t0 = time.time()
    threat = get_threat_model(threat_model)
    check_names = _check_names(checks)
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
    if progress is None:
        progress = bool(getattr(sys.stderr, 'isatty', lambda: False)())
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n, unit='img', desc=f'evaluate {threat.id}', dynamic_ncols=True)
    try:
        first, first_y = x_all[:min(n, batch_size)].to(device), y_all[:min(n, batch_size)].to(device)
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            n_outputs = model(first[:1].float()).shape[-1]
        if int(y_all.max()) >= n_outputs:
            raise ValueError(f'labels go up to {int(y_all.max())} but the model has {n_outputs} outputs: '
                             f'build it with num_classes for {threat.dataset}.')
        fast = dict(logits=lambda: check_logits(model, first), deterministic=lambda: check_deterministic(model, first),
                    input_gradients=lambda: check_input_gradients(model, first, first_y))
        check_list += [fast[c]() for c in fast if c in check_names]
        if 'unbounded' in check_names:
            torch.manual_seed(seed)
            check_list.append(check_unbounded(model, first[:100], first_y[:100], n_outputs))
        clean_ok = torch.zeros(n, dtype=torch.bool)
        attack_ok = {spec: torch.zeros(n, dtype=torch.bool) for spec in runnable}
        budget = {spec: [0.0, float('inf'), float('-inf'), 0] for spec in runnable}  # size, min, max pixel, count
        for start in range(0, n, batch_size):
            xb = x_all[start:start + batch_size].to(device)
            yb = y_all[start:start + batch_size].to(device)
            ok = (predict(model, xb) == yb).cpu()
            clean_ok[start:start + len(yb)] = ok
            idx = ok.nonzero().flatten()
            for i, (spec, attack) in enumerate(runnable.items()):
                if len(idx) == 0:
                    continue
                torch.manual_seed(seed * 1_000_003 + start * 101 + i)  # same seed and batch size, same numbers
                x_adv = attack(model, xb[idx], yb[idx])
                adv_ok = (predict(model, x_adv) == yb[idx]).cpu()  # fp32, outside the caller's autocast
                attack_ok[spec][start + idx] = adv_ok
                b = budget[spec]
                b[0] = max(b[0], perturbation_size(xb[idx], x_adv, threat.norm).max().item())
                b[1], b[2] = min(b[1], x_adv.min().item()), max(b[2], x_adv.max().item())
                b[3] += len(idx)
            done = min(start + batch_size, n)
            robust_done = clean_ok[:done].clone()
            for a in attack_ok.values():
                robust_done &= a[:done]
            _logger.info('%s: %d/%d examples, clean %.3f%s', threat.id, done, n, clean_ok[:done].float().mean(),
                         ''.join(f', {s} {a[:done].float().mean():.3f}' for s, a in attack_ok.items()))
            if bar is not None:
                bar.set_postfix_str(f'clean {clean_ok[:done].float().mean():.3f}, robust '
                                    f'{robust_done.float().mean():.3f}', refresh=False)
                bar.update(done - start)
        if 'budget' in check_names:
            check_list += [check_budget(*b, threat.eps, threat.norm, spec) for spec, b in budget.items()]
        if 'autoattack_flags' in check_names:
            check_list += [dict(name='autoattack flag', status='WARN', detail=w) for w in dict.fromkeys(aa_warnings)]
        if any(c not in FAST_CHECKS for c in check_names):
            idx = clean_ok.nonzero().flatten()[:probe]
            if bar is not None:
                bar.set_description_str(f'evaluate {threat.id}: checks on {len(idx)} points')
            check_list += _full_checks(check_names, model, x_all[idx].to(device), y_all[idx].to(device), threat, seed)
    finally:
        if bar is not None:
            bar.close()
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
