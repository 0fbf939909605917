"""`evaluate(model, threat_model)`: clean and adversarial accuracy under a standardized threat model."""
import logging
import math
import os
import re
import sys
import time
import weakref
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..attacks import pgd
from ..data import DATASETS, DEFAULT_ROOTS, load_dataset
from ..threat_models import ThreatModel, get_threat_model
from .autoattack import ATTACKS as _AA_ATTACKS, VERSIONS, autoattack, is_subset
from .checks import (
    check_black_box, check_budget, check_deterministic, check_eps_sweep, check_input_gradients, check_logits,
    check_restarts, check_steps_convergence, check_unbounded, perturbation_size, predict,
)
from .result import EvalResult, wilson_interval
from .state import (
    EvalStateError, all_gather, bits, broadcast, fingerprint, from_bits, load_state, parameter_digest, rank_world,
    save_state,
)

__all__ = ['CHECKS', 'EvalStateError', 'FAST_CHECKS', 'attack_settings', 'evaluate', 'load_eval_data', 'make_attack']

_logger = logging.getLogger('robust_zoo.evaluate')
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
      `apgd-t`, `apgd-dlr`, `fab`, `fab-t`, `square`; a combination as `apgd-ce+apgd-t`), with the standard
      version's settings (APGD-CE 1 restart, APGD-T 9 target classes: `robust_zoo.evaluation.autoattack`).
    """
    spec = spec.lower()
    if spec.startswith('autoattack-') and spec[len('autoattack-'):] in VERSIONS:
        return autoattack(threat.eps, threat.norm, version=spec[len('autoattack-'):], seed=seed, warnings=warnings)
    if is_subset(spec):
        return autoattack(threat.eps, threat.norm, attacks=spec.split('+'), seed=seed, warnings=warnings)
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


def attack_settings(spec: str, threat: ThreatModel) -> Dict[str, Any]:
    """The settings `make_attack(spec, threat)` runs with, for the record: PGD's steps, step size, restarts and loss
    (the threat model's fixed step where it has one, else 2.5 eps / k); {} for AutoAttack's attacks, whose settings
    are AutoAttack standard's."""
    spec = spec.lower()
    if spec == 'fgsm':
        return dict(steps=1, step_size=threat.eps, restarts=1, loss='ce', random_start=False)
    match = re.fullmatch(r'pgd-(?:(ce|dlr)-)?(\d+)(?:x(\d+))?', spec)
    if not match:
        return {}
    steps = int(match.group(2))
    step = threat.step_size if threat.step_size is not None else 2.5 * threat.eps / steps
    return dict(steps=steps, step_size=step, restarts=int(match.group(3) or 1), loss=match.group(1) or 'ce',
                random_start=True)


def _step_checks(settings: Mapping[str, Mapping[str, Any]], threat: ThreatModel) -> List[dict]:
    """A WARN for each PGD attack whose steps cannot cover the budget (k x step < eps: weaker than its name says,
    as PGD-20 at step 0.01 under MNIST's eps 0.3); Madry et al.'s 2.5 eps / k covers it 2.5 times."""
    out = []
    for spec, s in settings.items():
        travel, enough = s.get('steps', 0) * s.get('step_size', 0), math.ceil(2.5 * threat.eps / s.get('step_size', 1))
        if s.get('random_start') and travel < threat.eps * (1 - 1e-9):
            out.append(dict(name=f'step size ({spec})', status='WARN',
                            detail=f"{s['steps']} steps of {s['step_size']:.4g} travel {travel:.4g}, less than the "
                                   f'budget eps {threat.eps:.4g}: the attack is weaker than its name suggests. Use '
                                   f'more steps (pgd-{enough} covers it 2.5 times, as Madry et al.).'))
    return out


def _check_n(n: Optional[int]) -> None:
    """None asks for the protocol's number of examples; 0 or fewer would silently do the same, so it is refused."""
    if n is not None and n < 1:
        raise ValueError(f'n_examples must be >= 1 (or None for the threat model\'s protocol), got {n}.')


def load_eval_data(threat_model: Union[str, ThreatModel], n: Optional[int] = None,
                   root: str | None = None, transform: Any = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The first `n` (default: the protocol's) test examples of the threat model's dataset, from `root` or its
    default location: the data `evaluate` reads when it is given none. `transform`: ImageNet images prepared
    another way (a converted model's source preprocessing, robust_zoo.convert.preprocess)."""
    threat = get_threat_model(threat_model)
    _check_n(n)
    n = n or threat.n_examples
    dataset = 'imagenet' if threat.dataset == 'imagenet-1k' else threat.dataset
    if dataset not in DATASETS:
        raise ValueError(f'No built-in loader for {threat.dataset!r}: pass data=(images in [0, 1], labels).')
    if root is None and dataset not in DEFAULT_ROOTS:
        raise ValueError(f'{threat.dataset} has no default location on this machine: pass data=(images in '
                         '[0, 1], labels), or data_dir=<folder> (--data-dir on the CLI) to load it from there.')
    return load_dataset(dataset, 'test', root, n, transform=transform)


_load_data = load_eval_data  # the former private name


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
                 seed: int, rank: int = 0, world: int = 1) -> List[dict]:
    """The attack's own sanity checks on the probe `x, y` (clean-correct points), in the order of CHECKS.

    Each check seeds itself, so its numbers do not depend on where it runs: with `world` > 1 ranks, the
    j-th check runs on rank j mod world and every rank gets them all."""
    eps, norm = threat.eps, threat.norm
    runs = dict(steps_convergence=lambda: check_steps_convergence(model, x, y, eps, norm, seed=seed),
                restarts=lambda: check_restarts(model, x, y, eps, norm, seed=seed),
                eps_sweep=lambda: check_eps_sweep(model, x, y, eps, norm, seed=seed),
                black_box=lambda: check_black_box(model, x, y, eps, norm, seed=seed))
    todo = [name for name in CHECKS if name in names and name in runs]
    mine = {}
    for j, name in enumerate(todo):
        if j % world != rank:
            continue
        if len(x) == 0:
            mine[name] = dict(name=name.replace('_', ' '), status='WARN', detail='not run: no clean-correct points.')
            continue
        t = time.time()
        mine[name] = runs[name]()
        _logger.info('%s: check %s %s (%.1f s): %s', threat.id, mine[name]['name'], mine[name]['status'],
                     time.time() - t, mine[name]['detail'])
    done = {k: v for part in all_gather(mine, world) for k, v in part.items()}
    return [done[name] for name in todo]


@contextmanager
def _input_gradients_only(model: nn.Module) -> Iterator[None]:
    """Parameters stop requiring gradients (and are restored): attacks that call `loss.backward()`, as
    AutoAttack's FAB does, then skip the weight-gradient work and leave the model's `.grad` alone. Gradients
    with respect to the input are unchanged."""
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


def _low_precision(device: torch.device, amp: bool) -> bool:
    return amp or torch.is_autocast_enabled(device.type)


_COMPILED: 'weakref.WeakKeyDictionary[nn.Module, nn.Module]' = weakref.WeakKeyDictionary()


def compiled_for_attacks(model: nn.Module) -> nn.Module:
    """`torch.compile(model, dynamic=True)`, made once per model and kept (weakly) for later evaluations, so a
    warm-up evaluation pays the compilation and later ones reuse it. Attacks call it with shrinking batches
    (AutoAttack attacks only the points still robust), hence dynamic shapes."""
    if model not in _COMPILED:
        _COMPILED[model] = torch.compile(model, dynamic=True)
    return _COMPILED[model]


def _run_attack(attack: Callable, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, amp: bool,
                device: torch.device, reseed: int, attack_model: Optional[nn.Module] = None) -> Tuple[torch.Tensor, int]:
    """`attack(attack_model, x, y)`, under bf16 autocast with `amp`. When the attack ran in low precision (amp or
    the caller's autocast), the points it broke in low precision but not in fp32 (rounding at the decision
    boundary, which also stops an attack early on them) are attacked again in fp32, from the seed `reseed`.
    `attack_model` (default `model`) is what the attack queries, e.g. a compiled copy; decisions use `model`.
    Returns the adversarial images and how many points were attacked again."""
    attack_model = model if attack_model is None else attack_model
    with torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext():
        x_adv = attack(attack_model, x, y)
        if not _low_precision(device, amp):
            return x_adv, 0
        with torch.no_grad():
            low_ok = model(x_adv).argmax(1) == y
    disputed = (~low_ok & (predict(model, x_adv) == y)).nonzero().flatten()
    if len(disputed):
        torch.manual_seed(reseed)
        with torch.autocast(device.type, enabled=False):
            x_adv = x_adv.clone()
            x_adv[disputed] = attack(attack_model, x[disputed], y[disputed]).to(x_adv.dtype)
    return x_adv, len(disputed)


def _budget(x: torch.Tensor, x_adv: torch.Tensor, norm: str) -> List[float]:
    """[largest perturbation, smallest pixel, largest pixel, count] of one batch's adversarial examples, in fp32."""
    return [perturbation_size(x, x_adv, norm).max().item(), x_adv.float().min().item(), x_adv.float().max().item(),
            len(x)]


def _dataset_checks(model: nn.Module, threat: ThreatModel) -> List[dict]:
    """A WARN (and a log line) when the model's pretrained cfg names a threat model of another dataset: images of
    the same shape (MNIST, Fashion-MNIST, digits) run silently, and the numbers mean nothing for the card's claim."""
    from ..threat_models import THREAT_MODELS
    own = (getattr(model, 'pretrained_cfg', None) or {}).get('threat_model')
    if own not in THREAT_MODELS or THREAT_MODELS[own].dataset == threat.dataset:
        return []
    detail = (f'the model was trained and published for {own} ({THREAT_MODELS[own].dataset}); it is evaluated '
              f'under {threat.id} ({threat.dataset}), on another dataset\'s images.')
    _logger.warning('%s', detail)
    return [dict(name='threat model', status='WARN', detail=detail)]


def _check_images(x: torch.Tensor, threat: ThreatModel) -> None:
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


def _shape_hint(model: nn.Module, shape: Tuple[int, ...], threat: ThreatModel) -> str:
    """Why a model's first forward failed on the threat model's images, when its pretrained cfg says: other channels
    or size, and which threat model is the model's own. Only a hint: timm keeps a cfg's input_size when a model is
    built with another `in_chans`, so the cfg alone never refuses images."""
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    size, own = cfg.get('input_size'), cfg.get('threat_model')
    if not size or tuple(size) == tuple(shape):
        return ''
    return (f'; its pretrained cfg takes input_size {tuple(size)}'
            + (f': evaluate it under its own threat model, {own}' if own and own != threat.id else ''))


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
        state_path: Optional[Union[str, 'os.PathLike[str]']] = None,
        amp: bool = False,
        distributed: Optional[bool] = None,
        compile: bool = False,
        weights_sha256: str = '',
) -> EvalResult:
    """Clean accuracy, accuracy under each attack, and the per-sample worst case, on the first `n_examples`.

    Defaults come from the threat model's protocol. Every attack runs on every clean-correct point, so
    each per-attack number stands alone; the model is evaluated in eval mode (its mode is restored).
    The same seed and batch size give the same numbers: every batch seeds its attacks from (seed, its first
    index), whatever ran before it. Attacks of the protocol that robust_zoo cannot run are skipped and
    reported as a WARN check, never silently. Without `data`, the test split is read from `data_dir` (see
    `robust_zoo.data.create_dataset`), or from the dataset's default location. While it runs, the model's
    parameters do not require gradients (attacks take gradients with respect to the input only).

    Precision: attacks may run under the caller's `torch.autocast`, or under bf16 autocast with `amp=True`;
    every decision that is counted (clean and adversarial) is made by a fp32 forward with autocast off, and
    budgets are measured in fp32. A point that an attack breaks in low precision but not in fp32 is attacked
    again by the same attack in fp32, so rounding at the decision boundary cannot stop an attack early on a
    point it has not really broken. Low-precision numbers can differ from fp32 ones: compare before you
    publish them.

    Speed: `compile=True` lets the attacks query `torch.compile(model)` (the decisions stay with the eager
    model, in fp32). Compiling costs a minute or more once per model and process (a warm-up evaluation on a
    few points pays it); after that, PGD-k on a ResNet-20 runs about 1.7x faster on a CPU. AutoAttack gains
    nothing: it calls the model with ever-changing batch sizes, grad modes and autocast states, each of which
    compiles again (`benchmarks/bench_autoattack.py`). Compiled kernels may round differently, so single
    points near a decision boundary can come out differently from an eager run.

    Resuming: with `state_path`, the per-example outcomes are written (JSON, atomically) after every batch,
    with a fingerprint of the run (the model's parameter digest, a digest of the data, the threat model,
    attacks, number of examples, batch size, seed, checks and the full checks' probe size, amp, compile, and for
    an AutoAttack subset its settings). A rerun with the same file skips the
    finished batches and ends with the numbers of an uninterrupted run (`seconds` adds up the runs); a file
    of another evaluation raises `EvalStateError` (a ValueError): delete it to start over.

    Sharding: when a `torch.distributed` process group is initialized (torchrun), rank r of W evaluates the
    batches r, r + W, ... and the per-example outcomes are gathered, so every rank returns the same
    `EvalResult`, equal to a single process's (per-batch seeding does not depend on the rank). Every rank
    must call `evaluate` with the same arguments; `distributed=False` evaluates on this rank alone (e.g.
    on rank 0 only, after training). The fast checks run on rank 0; the `'full'` checks are spread over the
    ranks (each seeds itself, so the numbers do not depend on where it ran); only rank 0 writes the state.

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
      `robust_zoo.evaluation.save_eval_plots` draws them. Per probe point: about 500 PGD steps and up to 1000
      Square forwards (ResNet-20, Fashion-MNIST, 100 points, one CPU thread: about 5 minutes), small next to
      AutoAttack on the protocol's points.
    - `False`: none; or a list of names among `CHECKS`.

    The record names the weights it measured: `weights_digest` (the parameter digest of `model`, always) and
    `weights_sha256` (pass the sha256 of the safetensors file the model was loaded from, where there is one), so
    that `robust-zoo card` can refuse to publish its numbers beside other weights.

    `progress` shows a tqdm bar over examples on rank 0 (default: when stderr is a terminal); every batch is
    also logged to the `robust_zoo.evaluate` logger.
    """
    t0 = time.time()
    threat = get_threat_model(threat_model)
    check_names = _check_names(checks)
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
    _check_n(n_examples)
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
    settings = {spec: attack_settings(spec, threat) for spec in runnable}
    check_list += _step_checks(settings, threat) + _dataset_checks(model, threat)
    x_all, y_all = data if data is not None else load_eval_data(threat, n, data_dir)
    x_all, y_all = x_all[:n], y_all[:n]
    if len(x_all) < n:
        check_list.append(dict(name='n_examples', status='WARN',
                               detail=f'only {len(x_all)} examples given, the protocol asks for {n}.'))
    n = len(x_all)
    _check_images(x_all, threat)
    rank, world = rank_world(distributed)
    device = next(iter([*model.parameters(), *model.buffers()]), torch.empty(0)).device
    was_training = model.training
    if was_training:
        check_list.append(dict(name='eval mode', status='WARN',
                               detail='the model was in train mode; it was evaluated in eval mode.'))
    model.eval()
    digest = parameter_digest(model)
    attack_model = compiled_for_attacks(model) if compile else model
    threat_record = dict(id=threat.id, dataset=threat.dataset, norm=threat.norm, eps=threat.eps)
    full = [c for c in check_names if c not in FAST_CHECKS]

    state: Dict[str, Any] = {}
    if state_path is not None or world > 1:
        expected = fingerprint(model, x_all, y_all, threat=dict(threat_record, step_size=threat.step_size),
                               attacks=list(runnable), batch_size=batch_size, seed=seed, checks=check_names,
                               probe=probe if full else None, amp=amp, **({'compile': True} if compile else {}),
                               # an older robust_zoo ran subsets with pyautoattack's custom settings: not resumed
                               **({'autoattack_subset': 'standard settings'} if any(map(is_subset, runnable)) else {}))
        if world > 1 and len({(f['model'], f['data']) for f in all_gather(expected, world)}) > 1:
            raise ValueError('the ranks hold different model weights or data: every rank must evaluate the same '
                             'model on the same data (load the same checkpoint everywhere).')
        if state_path is not None:
            loaded, error = None, None
            if rank == 0:
                try:
                    loaded = load_state(state_path, expected)
                except EvalStateError as e:
                    error = str(e)
            loaded, error = broadcast((loaded, error), world)
            if error:
                raise EvalStateError(error)
            state = loaded or dict(fingerprint=expected, batches={})
            if loaded:
                _logger.info('%s: resuming from %s (%d of %d batches done)', threat.id, state_path,
                             len(state['batches']), math.ceil(n / batch_size))
    records: Dict[int, Dict[str, Any]] = {int(k): v for k, v in state.get('batches', {}).items()}
    pre_checks: Optional[List[dict]] = state.get('pre_checks')
    post_checks: Optional[List[dict]] = state.get('post_checks')
    prior_seconds = float(state.get('seconds', 0.0))

    def save() -> None:
        if state_path is not None and rank == 0:
            save_state(state_path, dict(state, batches={str(k): records[k] for k in sorted(records)},
                                        pre_checks=pre_checks, post_checks=post_checks,
                                        seconds=round(prior_seconds + time.time() - t0, 2), versions=_versions()))

    starts = list(range(0, n, batch_size))
    todo = [b for b in range(len(starts)) if b not in records]
    mine = todo[rank::world]
    # with a state file, ranks exchange their batches every round so that rank 0 can save them all; without
    # one, they exchange them once at the end, and rank 0's log and bar follow its own share
    sync = state_path is not None
    shown = n if sync or world == 1 else sum(len(y_all[starts[b]:starts[b] + batch_size]) for b in mine)
    gen_state = torch.random.get_rng_state()
    if progress is None:
        progress = bool(getattr(sys.stderr, 'isatty', lambda: False)())
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm
        bar = tqdm(total=shown, unit='img', dynamic_ncols=True, initial=sum(len(r['clean']) for r in records.values()),
                   desc=f'evaluate {threat.id}' + (f' (rank 0 of {world})' if shown < n else ''))

    def run_batch(b: int) -> Dict[str, Any]:
        start = starts[b]
        xb = x_all[start:start + batch_size].to(device)
        yb = y_all[start:start + batch_size].to(device)
        ok = (predict(model, xb) == yb).cpu()
        idx = ok.nonzero().flatten()
        record: Dict[str, Any] = dict(start=start, clean=bits(ok), attacks={}, budget={}, warnings=[], reattacked={})
        for i, (spec, attack) in enumerate(runnable.items()):
            adv_ok = torch.zeros(len(yb), dtype=torch.bool)
            record['budget'][spec], record['reattacked'][spec] = None, 0
            if len(idx):
                seen = len(aa_warnings)
                base = seed * 1_000_003 + start * 101 + i
                torch.manual_seed(base)  # same seed and batch size, same numbers
                x_adv, again = _run_attack(attack, model, xb[idx], yb[idx], amp=amp, device=device,
                                           reseed=base + 500_009, attack_model=attack_model)
                adv_ok[idx] = (predict(model, x_adv) == yb[idx]).cpu()  # fp32, outside any autocast
                record['budget'][spec] = _budget(xb[idx], x_adv, threat.norm)
                record['reattacked'][spec] = again
                record['warnings'] += aa_warnings[seen:]
            record['attacks'][spec] = bits(adv_ok)
        return record

    def log_progress(new: List[Dict[str, Any]]) -> None:
        done = [records[k] for k in sorted(records)]
        count = sum(len(r['clean']) for r in done)
        clean = sum(r['clean'].count('1') for r in done) / max(count, 1)
        accs = {s: sum(r['attacks'][s].count('1') for r in done) / max(count, 1) for s in runnable}
        robust = sum(int(_robust_mask(r).sum()) for r in done) / max(count, 1)
        _logger.info('%s: %d/%d examples%s, clean %.3f%s', threat.id, count, shown,
                     f' (rank 0 of {world})' if shown < n else '', clean, ''.join(f', {s} {a:.3f}' for s, a in accs.items()))
        if bar is not None:
            bar.set_postfix_str(f'clean {clean:.3f}, robust {robust:.3f}', refresh=False)
            bar.update(sum(len(r['clean']) for r in new))

    try:
        with _input_gradients_only(model):
            first, first_y = x_all[:min(n, batch_size)].to(device), y_all[:min(n, batch_size)].to(device)
            with torch.no_grad(), torch.autocast(device.type, enabled=False):
                try:
                    n_outputs = model(first[:1].float()).shape[-1]
                except RuntimeError as e:  # e.g. a net built for images with other channels or size
                    shape = tuple(first.shape[1:])
                    raise ValueError(f'the model cannot take {threat.id} images of shape {shape}'
                                     f'{_shape_hint(model, shape, threat)} ({e})') from e
            if int(y_all.max()) >= n_outputs:
                raise ValueError(f'labels go up to {int(y_all.max())} but the model has {n_outputs} outputs: '
                                 f'build it with num_classes for {threat.dataset}.')
            if pre_checks is None and rank == 0:
                fast = dict(logits=lambda: check_logits(model, first),
                            deterministic=lambda: check_deterministic(model, first),
                            input_gradients=lambda: check_input_gradients(model, first, first_y))
                pre_checks = [fast[c]() for c in fast if c in check_names]
                if 'unbounded' in check_names:
                    torch.manual_seed(seed)
                    pre_checks.append(check_unbounded(model, first[:100], first_y[:100], n_outputs))
            for r in range(math.ceil(len(todo) / world) if sync else len(mine)):
                record = run_batch(mine[r]) if r < len(mine) else None
                mine_new = [] if record is None else [(mine[r], record)]
                new = [p for part in all_gather(mine_new, world) for p in part] if sync else mine_new
                records.update(new)
                save()
                if rank == 0:
                    log_progress([rec for _, rec in new])
            if not sync and world > 1:
                records.update(p for part in all_gather([(b, records[b]) for b in mine], world) for p in part)
            done = [records[b] for b in range(len(starts))]
            budget_checks = []
            if 'budget' in check_names:
                budget_checks = [check_budget(*_merge_budget([r['budget'][s] for r in done]), threat.eps, threat.norm, s)
                                 for s in runnable]
            if _low_precision(device, amp) and check_names:
                for s in runnable:
                    again = sum(r['reattacked'][s] for r in done)
                    budget_checks.append(dict(
                        name=f'low precision ({s})', status='PASS',
                        detail=f'the attack ran under {"bf16 autocast (amp)" if amp else "the caller autocast"}; '
                               f'{again} point{"s" * (again != 1)} broken in low precision but not in fp32 '
                               f'{"was" if again == 1 else "were"} attacked again in fp32; every decision '
                               'counted was made in fp32.'))
            if 'autoattack_flags' in check_names:
                flags = dict.fromkeys(w for r in done for w in r['warnings'])
                budget_checks += [dict(name='autoattack flag', status='WARN', detail=w) for w in flags]
            clean_ok = torch.cat([from_bits(r['clean']) for r in done]) if done else torch.zeros(0, dtype=torch.bool)
            attack_ok = {s: torch.cat([from_bits(r['attacks'][s]) for r in done]) if done
                         else torch.zeros(0, dtype=torch.bool) for s in runnable}
            if full and post_checks is None:
                idx = clean_ok.nonzero().flatten()[:probe]
                if bar is not None:
                    bar.set_description_str(f'evaluate {threat.id}: checks on {len(idx)} points')
                post_checks = _full_checks(check_names, model, x_all[idx].to(device), y_all[idx].to(device), threat,
                                           seed, rank, world)
                save()
            seconds = round(prior_seconds + time.time() - t0, 2)
            pre_checks, seconds = broadcast((pre_checks, seconds), world)
    finally:
        if bar is not None:
            bar.close()
        torch.random.set_rng_state(gen_state)
        model.train(was_training)
    check_list += (pre_checks or []) + budget_checks + (post_checks or [])
    robust_ok = clean_ok.clone()
    for ok in attack_ok.values():
        robust_ok &= ok
    k = int(robust_ok.sum())
    return EvalResult(
        model=model_name or getattr(model, 'pretrained_cfg', {}).get('architecture', type(model).__name__),
        threat_model=threat_record,
        n_examples=n,
        clean_accuracy=int(clean_ok.sum()) / n,
        robust_accuracy=k / n,
        attacks={spec: int(ok.sum()) / n for spec, ok in attack_ok.items()},
        confidence_interval=wilson_interval(k, n),
        checks=check_list,
        seed=seed,
        versions=_versions(),
        seconds=seconds,
        weights_digest=digest,
        attack_settings={k: v for k, v in settings.items() if v},
        weights_sha256=weights_sha256,
    )


def _robust_mask(record: Dict[str, Any]) -> torch.Tensor:
    ok = from_bits(record['clean'])
    for s in record['attacks'].values():
        ok &= from_bits(s)
    return ok


def _merge_budget(parts: Sequence[Optional[List[float]]]) -> List[float]:
    """The budget statistics of several batches as one: largest size, smallest and largest pixel, total count."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return [0.0, float('inf'), float('-inf'), 0]
    return [max(p[0] for p in parts), min(p[1] for p in parts), max(p[2] for p in parts), sum(int(p[3]) for p in parts)]
