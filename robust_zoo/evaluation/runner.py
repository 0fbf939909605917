"""How an evaluation runs: batches seeded by their position, a resumable state, shards over ranks, fp32 decisions.

Seeding: every batch seeds its attacks from (seed, its first index), whatever ran before it, so the same seed and
batch size give the same numbers, in one process or many, in one run or several.

Precision: attacks may run under the caller's `torch.autocast`, or under bf16 autocast with `amp=True`; every
decision that is counted (clean and adversarial) is made by a fp32 forward with autocast off, and budgets are
measured in fp32. A point that an attack breaks in low precision but not in fp32 is attacked again by the same
attack in fp32, so rounding at the decision boundary cannot stop an attack early on a point it has not really
broken. Low-precision numbers can differ from fp32 ones: compare before you publish them.

Speed: `compile=True` lets the attacks query `torch.compile(model)` (the decisions stay with the eager model, in
fp32). Compiling costs a minute or more once per model and process (a warm-up evaluation on a few points pays it);
after that, PGD-k on a ResNet-20 runs about 1.7x faster on a CPU. AutoAttack gains nothing: it calls the model with
ever-changing batch sizes, grad modes and autocast states, each of which compiles again
(`benchmarks/bench_autoattack.py`). Compiled kernels may round differently, so single points near a decision
boundary can come out differently from an eager run.

Resuming: with `state_path`, the per-example outcomes are written after every batch (`resume.py`); a rerun with
the same file skips the finished batches and ends with the numbers of an uninterrupted run.

Sharding: when a `torch.distributed` process group is initialized (torchrun), rank r of W evaluates the batches
r, r + W, ... and the per-example outcomes are gathered, so every rank returns the same record, equal to a single
process's. Every rank must call `evaluate` with the same arguments; `distributed=False` evaluates on this rank
alone (e.g. on rank 0 only, after training). The fast checks run on rank 0; the `'full'` checks are spread over
the ranks; only rank 0 writes the state.
"""
import math
import os
import time
import weakref
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .._io import parameter_digest
from . import checklist
from .checks import perturbation_size, predict
from .progress import Progress
from .protocol import Protocol, shape_hint
from .resume import open_state, run_fingerprint, write_state
from .state import all_gather, bits, broadcast, from_bits, rank_world

__all__ = ['Outcome', 'Run', 'compiled_for_attacks', 'evaluation_mode', 'run_attack']

_COMPILED: 'weakref.WeakKeyDictionary[nn.Module, nn.Module]' = weakref.WeakKeyDictionary()


def compiled_for_attacks(model: nn.Module) -> nn.Module:
    """`torch.compile(model, dynamic=True)`, made once per model and kept (weakly) for later evaluations, so a
    warm-up evaluation pays the compilation and later ones reuse it. Attacks call it with shrinking batches
    (AutoAttack attacks only the points still robust), hence dynamic shapes."""
    if model not in _COMPILED:
        _COMPILED[model] = torch.compile(model, dynamic=True)
    return _COMPILED[model]


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode, and parameters that do not require gradients (attacks that call `loss.backward()`, as
    AutoAttack's FAB does, then skip the weight-gradient work and leave `.grad` alone); the model's mode, its
    parameters' flags and the global RNG state are restored afterwards."""
    was_training, rng = model.training, torch.random.get_rng_state()
    frozen = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)
        torch.random.set_rng_state(rng)
        model.train(was_training)


def run_attack(attack: Callable, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, amp: bool,
               device: torch.device, reseed: int, attack_model: Optional[nn.Module] = None,
               ) -> Tuple[torch.Tensor, int]:
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


def _low_precision(device: torch.device, amp: bool) -> Optional[str]:
    """How the attacks run in low precision, or None in fp32."""
    if amp:
        return 'bf16 autocast (amp)'
    return 'the caller autocast' if torch.is_autocast_enabled(device.type) else None


@dataclass
class Outcome:
    """Per example: clean-correct, and still correct after each attack; the checks of the run; its seconds."""
    clean: torch.Tensor
    attacks: Dict[str, torch.Tensor]
    checks: List[dict]
    seconds: float
    weights_digest: str


class Run:
    """One evaluation of `model` on `x, y` under `proto`, batch by batch (see the module's docstring)."""

    def __init__(self, model: nn.Module, proto: Protocol, x: torch.Tensor, y: torch.Tensor, *, batch_size: int,
                 seed: int, checks: Sequence[str], probe: int, amp: bool, compile: bool,
                 distributed: Optional[bool], state_path: Optional[Union[str, 'os.PathLike[str]']]):
        self.model, self.proto, self.x, self.y = model, proto, x, y
        self.batch_size, self.seed, self.checks, self.probe, self.amp = batch_size, seed, list(checks), probe, amp
        self.full = [c for c in self.checks if c not in checklist.FAST_CHECKS]
        self.rank, self.world = rank_world(distributed)
        self.device = next(iter([*model.parameters(), *model.buffers()]), torch.empty(0)).device
        self.digest = parameter_digest(model)
        self.attack_model = compiled_for_attacks(model) if compile else model
        self.compile, self.state_path = compile, state_path
        self.starts = list(range(0, len(y), batch_size))
        # with a state file, ranks exchange their batches every round so that rank 0 can save them all; without
        # one, they exchange them once at the end, and rank 0's log and bar follow its own share
        self.sync = state_path is not None
        self.state = self._open_state()
        self.records = {int(k): v for k, v in self.state.get('batches', {}).items()}
        self.pre_checks: Optional[List[dict]] = self.state.get('pre_checks')
        self.post_checks: Optional[List[dict]] = self.state.get('post_checks')
        self.prior_seconds = float(self.state.get('seconds', 0.0))

    def _open_state(self) -> Dict[str, Any]:
        if self.state_path is None and self.world == 1:
            return {}
        expected = run_fingerprint(self.model, self.x, self.y, self.proto, batch_size=self.batch_size,
                                   seed=self.seed, checks=self.checks, probe=self.probe if self.full else None,
                                   amp=self.amp, compile=self.compile)
        return open_state(self.state_path, expected, self.rank, self.world, len(self.starts), self.proto.threat.id)

    def save(self, t0: float) -> None:
        if self.state_path is not None and self.rank == 0:
            write_state(self.state_path, self.state, self.records, self.pre_checks, self.post_checks,
                        self.prior_seconds, t0)

    def run(self, t0: float, progress: Optional[bool] = None) -> Outcome:
        """Every batch not done yet, then the checks over them all; `t0` is when the evaluation started."""
        todo = [b for b in range(len(self.starts)) if b not in self.records]
        mine = todo[self.rank::self.world]
        shown = len(self.y) if self.sync or self.world == 1 else sum(self._size(b) for b in mine)
        bar = Progress(self.proto.threat.id, shown, len(self.y), self.world, list(self.records.values()),
                       show=progress, rank=self.rank)
        try:
            self._first_batch_checks()
            self._run_batches(todo, mine, bar, t0)
            done = [self.records[b] for b in range(len(self.starts))]
            found = checklist.batch_checks(self.checks, done, list(self.proto.attacks), self.proto.threat,
                                           _low_precision(self.device, self.amp))
            clean = _cat([from_bits(r['clean']) for r in done])
            attacks = {s: _cat([from_bits(r['attacks'][s]) for r in done]) for s in self.proto.attacks}
            if self.full and self.post_checks is None:
                self._probe_checks(clean, bar, t0)
            seconds = round(self.prior_seconds + time.time() - t0, 2)
            pre_checks, seconds = broadcast((self.pre_checks, seconds), self.world)
        finally:
            bar.close()
        return Outcome(clean, attacks, (pre_checks or []) + found + (self.post_checks or []), seconds, self.digest)

    def _size(self, b: int) -> int:
        return len(self.y[self.starts[b]:self.starts[b] + self.batch_size])

    def _first_batch_checks(self) -> None:
        """The model takes the images and has an output for every label; the fast checks on the first batch."""
        threat, first = self.proto.threat, self.x[:self.batch_size].to(self.device)
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            try:
                n_outputs = self.model(first[:1].float()).shape[-1]
            except RuntimeError as e:  # e.g. a net built for images with other channels or size
                shape = tuple(first.shape[1:])
                raise ValueError(f'the model cannot take {threat.id} images of shape {shape}'
                                 f'{shape_hint(self.model, shape, threat)} ({e})') from e
        if int(self.y.max()) >= n_outputs:
            raise ValueError(f'labels go up to {int(self.y.max())} but the model has {n_outputs} outputs: '
                             f'build it with num_classes for {threat.dataset}.')
        if self.pre_checks is None and self.rank == 0:
            first_y = self.y[:self.batch_size].to(self.device)
            self.pre_checks = checklist.fast_checks(self.checks, self.model, first, first_y, n_outputs, self.seed)

    def _run_batches(self, todo: List[int], mine: List[int], bar: Progress, t0: float) -> None:
        """This rank's share of the batches; every rank ends with every batch's record."""
        for r in range(math.ceil(len(todo) / self.world) if self.sync else len(mine)):
            new = [(mine[r], self.run_batch(mine[r]))] if r < len(mine) else []
            if self.sync:
                new = [p for part in all_gather(new, self.world) for p in part]
            self.records.update(new)
            self.save(t0)
            if self.rank == 0:
                bar.update(self.records, [rec for _, rec in new])
        if not self.sync and self.world > 1:
            mine_done = [(b, self.records[b]) for b in mine]
            self.records.update(p for part in all_gather(mine_done, self.world) for p in part)

    def run_batch(self, b: int) -> Dict[str, Any]:
        """Batch `b`'s record: clean and per-attack outcomes ('0'/'1'), budgets, AutoAttack's flags, re-attacks."""
        start = self.starts[b]
        xb = self.x[start:start + self.batch_size].to(self.device)
        yb = self.y[start:start + self.batch_size].to(self.device)
        ok = (predict(self.model, xb) == yb).cpu()
        idx = ok.nonzero().flatten()
        record: Dict[str, Any] = dict(start=start, clean=bits(ok), attacks={}, budget={}, warnings=[], reattacked={})
        for i, (spec, attack) in enumerate(self.proto.attacks.items()):
            adv_ok = torch.zeros(len(yb), dtype=torch.bool)
            record['budget'][spec], record['reattacked'][spec] = None, 0
            if len(idx):
                adv_ok[idx], record['budget'][spec], record['reattacked'][spec], flags = self._attack(
                    i, attack, xb[idx], yb[idx], start)
                record['warnings'] += flags
            record['attacks'][spec] = bits(adv_ok)
        return record

    def _attack(self, i: int, attack: Callable, x: torch.Tensor, y: torch.Tensor, start: int,
                ) -> Tuple[torch.Tensor, List[float], int, list]:
        """The i-th attack on the clean-correct points `x, y` of the batch at `start`: which survive (decided in
        fp32, outside any autocast), their budget, how many were attacked again in fp32, AutoAttack's new flags."""
        seen = len(self.proto.aa_warnings)
        base = self.seed * 1_000_003 + start * 101 + i
        torch.manual_seed(base)  # same seed and batch size, same numbers
        x_adv, again = run_attack(attack, self.model, x, y, amp=self.amp, device=self.device, reseed=base + 500_009,
                                  attack_model=self.attack_model)
        budget = [perturbation_size(x, x_adv, self.proto.threat.norm).max().item(), x_adv.float().min().item(),
                  x_adv.float().max().item(), len(x)]
        return (predict(self.model, x_adv) == y).cpu(), budget, again, self.proto.aa_warnings[seen:]

    def _probe_checks(self, clean: torch.Tensor, bar: Progress, t0: float) -> None:
        idx = clean.nonzero().flatten()[:self.probe]
        bar.describe(f'checks on {len(idx)} points')
        self.post_checks = checklist.full_checks(self.checks, self.model, self.x[idx].to(self.device),
                                                 self.y[idx].to(self.device), self.proto.threat, self.seed,
                                                 self.rank, self.world)
        self.save(t0)


def _cat(parts: List[torch.Tensor]) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool)
