"""Epoch-level pieces of adversarial training, kept out of `train/train_at.py` so tests can use them.

Determinism: the data order of an epoch depends only on (seed, epoch), and the random state of every
step is reseeded from (seed, global step, rank). A run resumed from a checkpoint taken at any step
therefore replays exactly what the uninterrupted run would have done.
"""
import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .._io import parameter_digest
from ..layers.registry import ROBUST_ACTIVATIONS
from ..layers.swap import is_activation
from .step import AttackConfig, adversarial_step

__all__ = ['EpochStats', 'epoch_batches', 'iterate_batches', 'freeze', 'parameter_digest', 'ranks_identical',
           'step_seed', 'subset', 'train_one_epoch', 'validate']


def step_seed(seed: int, global_step: int, rank: int = 0) -> int:
    """The RNG seed of one training step on one rank (random starts, dropout)."""
    return (seed * 1_000_003 + global_step * 1_009 + rank) % (2 ** 63)


def epoch_batches(n: int, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                  drop_last: bool = True) -> List[torch.Tensor]:
    """This rank's index batches for one epoch: a permutation seeded by (seed, epoch), cut into global
    batches of `batch_size * world_size`, of which rank r takes the r-th slice."""
    global_bs = batch_size * world_size
    if n < global_bs:
        raise ValueError(f'{n} training samples cannot fill one batch of {batch_size} x {world_size} process(es); '
                         f'lower -b/--batch-size or use more samples.')
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
    n_batches = n // global_bs if drop_last else math.ceil(n / global_bs)
    out = []
    for b in range(n_batches):
        chunk = perm[b * global_bs:(b + 1) * global_bs]
        out.append(chunk[rank * batch_size:(rank + 1) * batch_size])
    return out


def subset(dataset: Dataset, idx: torch.Tensor) -> Dataset:
    """The samples `idx` of `dataset`; in-memory datasets (with `images`/`labels`) stay in memory."""
    if hasattr(dataset, 'images') and hasattr(dataset, 'labels'):
        out = copy.copy(dataset)
        out.images, out.labels = dataset.images[idx], dataset.labels[idx]
        return out
    return torch.utils.data.Subset(dataset, idx.tolist())


def iterate_batches(dataset: Dataset, batches: Sequence[torch.Tensor], workers: int = 0,
                    ) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images, labels) for the given index batches; in-memory datasets are sliced directly."""
    if hasattr(dataset, 'batch'):
        for idx in batches:
            yield dataset.batch(idx)
        return
    loader = DataLoader(dataset, batch_sampler=[b.tolist() for b in batches], num_workers=workers)
    yield from loader


@dataclass
class EpochStats:
    loss: float = 0.0
    n: int = 0
    adv_correct: int = 0
    clean_correct: int = 0
    clean_n: int = 0
    adv_n: int = 0
    seconds: float = 0.0
    extra: Dict[str, float] = field(default_factory=dict)

    def add(self, out) -> None:
        self.loss += out.loss * out.n
        self.n += out.n
        self.adv_correct += out.adv_correct
        self.adv_n += out.n if out.n_adv is None else out.n_adv
        if out.clean_correct is not None:
            self.clean_correct += out.clean_correct
            self.clean_n += out.n

    def metrics(self) -> Dict[str, float]:
        return dict(loss=self.loss / max(self.n, 1), adv_acc=self.adv_correct / max(self.adv_n, 1),
                    clean_acc=self.clean_correct / self.clean_n if self.clean_n else float('nan'),
                    img_per_sec=self.n / max(self.seconds, 1e-9))


def train_one_epoch(
        model: nn.Module,
        dataset: Dataset,
        batches: Sequence[torch.Tensor],
        optimizer: torch.optim.Optimizer,
        cfg: AttackConfig,
        *,
        seed: int,
        global_step: int,
        start_step: int = 0,
        rank: int = 0,
        device: torch.device = torch.device('cpu'),
        attack_model: Optional[nn.Module] = None,
        autocast=None,
        scaler=None,
        scheduler=None,
        ema=None,
        channels_last: bool = False,
        log_interval: int = 50,
        workers: int = 0,
        log: Callable[[str], None] = print,
        on_step: Optional[Callable[[int, int], None]] = None,
        progress=None,
) -> Dict[str, float]:
    """Train on `batches[start_step:]`; `global_step` counts optimizer steps before `start_step`.

    After each step `on_step(step_in_epoch_done, global_step_done)` runs (checkpointing hooks in there).
    The metrics cover the steps run in this call.
    """
    model.train()
    stats = EpochStats()
    window = EpochStats()
    t0 = tw = time.perf_counter()
    for i, (x, y) in enumerate(iterate_batches(dataset, batches[start_step:], workers), start=start_step):
        torch.manual_seed(step_seed(seed, global_step, rank))
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        last = i + 1 == len(batches)
        track = (i + 1) % log_interval == 0 or last
        out = adversarial_step(model, x, y, optimizer, cfg, attack_model=attack_model, autocast=autocast,
                               scaler=scaler, track_clean=track)
        global_step += 1
        if scheduler is not None:
            scheduler.step_update(num_updates=global_step)
        if ema is not None:
            ema.update(attack_model or model, step=global_step)
        stats.add(out)
        window.add(out)
        if progress is not None:
            progress.update(1)
        if track:
            window.seconds = time.perf_counter() - tw
            m = window.metrics()
            lr = optimizer.param_groups[0]['lr']
            log(f'step [{i + 1:>5}/{len(batches)}] loss {m["loss"]:.4f}  clean acc {m["clean_acc"]:.3f}  '
                f'adv acc {m["adv_acc"]:.3f}  lr {lr:.3g}  {m["img_per_sec"]:.0f} img/s')
            window, tw = EpochStats(), time.perf_counter()
        if on_step is not None:
            on_step(i + 1, global_step)
    stats.seconds = time.perf_counter() - t0
    return stats.metrics()


@torch.no_grad()
def _count_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    return int((model(x).argmax(1) == y).sum())


def validate(model: nn.Module, dataset: Dataset, attack: Optional[Callable] = None, *, batch_size: int = 256,
             device: torch.device = torch.device('cpu'), rank: int = 0, world_size: int = 1,
             distributed: bool = False) -> Dict[str, float]:
    """Clean and (optionally) adversarial accuracy of `model` in eval mode on `dataset`, sharded over ranks.

    `attack(model, x, y) -> x_adv` is usually `robust_zoo.evaluation.make_attack(spec, threat)`."""
    was_training = model.training
    model.eval()
    n = len(dataset)
    idx = torch.arange(rank, n, world_size)
    counts = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(idx), batch_size):
        (x, y), = iterate_batches(dataset, [idx[start:start + batch_size]])
        x, y = x.to(device), y.to(device)
        counts[0] += len(y)
        counts[1] += _count_correct(model, x, y)
        if attack is not None:
            with torch.enable_grad():
                x_adv = attack(model, x, y)
            counts[2] += _count_correct(model, x_adv, y)
    if distributed:
        counts = counts.to(device)
        dist.all_reduce(counts)
        counts = counts.cpu()
    model.train(was_training)
    out = dict(clean_acc=float(counts[1] / counts[0]))
    if attack is not None:
        out['robust_acc'] = float(counts[2] / counts[0])
    return out


def freeze(model: nn.Module, what: str) -> List[str]:
    """Stop gradients for `what`: 'backbone' (all but the classifier) or 'activations' (the parameters of
    activation modules, e.g. a Sparta bank or a shared PSSiLU). Returns the frozen parameter names."""
    if what not in ('none', 'backbone', 'activations'):
        raise ValueError(f"freeze must be 'none', 'backbone' or 'activations', got {what!r}.")
    if what == 'none':
        return []
    if what == 'backbone':
        head = {id(p) for p in model.get_classifier().parameters()}
        targets = [(n, p) for n, p in model.named_parameters() if id(p) not in head]
    else:
        act_types = tuple(ROBUST_ACTIVATIONS.values())
        ids = {id(p) for m in model.modules() if isinstance(m, act_types) or is_activation(m)
               for p in m.parameters()}
        targets = [(n, p) for n, p in model.named_parameters() if id(p) in ids]
        if not targets:
            raise ValueError('freeze=activations: this model has no activation parameters to freeze '
                             '(its activations are parameter-free).')
    for _, p in targets:
        p.requires_grad_(False)
    return [n for n, _ in targets]


def ranks_identical(model: nn.Module) -> bool:
    """True when every rank holds bitwise-identical parameters and buffers (True without distributed)."""
    digest = parameter_digest(model)
    if not (dist.is_available() and dist.is_initialized()):
        return True
    digests = [None] * dist.get_world_size()
    dist.all_gather_object(digests, digest)
    return len(set(digests)) == 1
