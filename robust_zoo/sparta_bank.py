"""Sparta banks: the trained Sparta activations of one network, saved on their own and reused, frozen, in
another network (deeper, wider, or for another dataset), as the Sparta paper proposes.

A bank is a safetensors file holding, for every Sparta unit of the source network (in module order),
its `beta`, `attn.weight` (1 x 1 x k x k) and `attn.bias`, plus JSON metadata: the source model, dataset,
threat model, training recipe, kernel size and the units' names.

How units map from a source to a target (`mapping=`):

* `'exact'`: the same unit names (same architecture or same depth).
* `'relative-depth'` (default): units are located by (stage, block, slot) from their module names
  (`stages.1.4.act2` is stage 1, block 4, slot `act2`; timm's `layer2.3.act1` is stage 2's block 3);
  stages are matched by their order, slots by name, and target block j of a stage with n_t blocks takes
  the source block at the same relative depth, `floor(j * (n_s - 1) / (n_t - 1) + 1/2)`, of the matching stage
  with n_s blocks. Units outside blocks (the stem) match by name. ResNet-20 -> ResNet-56 therefore
  gives each of ResNet-56's 9 blocks per stage the nearest of ResNet-20's 3.
* `'mean'`: every target unit gets the parameter-wise mean of the bank (any CNN, no structure needed).

Width never matters: a Sparta unit has the same 11 parameters (k = 3) whatever its channels.
"""
import json
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from ._io import save_safetensors
from .layers.sparta import Sparta
from .models._hub import BANK_FILE, PublishedWeightsError, published_bank_sha256, verify_published_bank
from .models._hub import resolve_bank as _published_bank
from .models._pretrained import cards_dir

__all__ = ['BANK_FILE', 'BANK_FORMAT', 'MAPPINGS', 'SpartaBankError', 'bank_mapping', 'load_bank',
           'published_bank_sha256', 'read_bank', 'resolve_bank', 'save_bank', 'sparta_units', 'verify_published_bank']

BANK_FORMAT = 'robust_zoo.sparta_bank/1'
MAPPINGS = ('relative-depth', 'exact', 'mean')
_PARAMS = ('beta', 'attn.weight', 'attn.bias')
_BLOCK = re.compile(r'^(?P<stage>.+?)\.(?P<block>\d+)\.(?P<slot>[A-Za-z_][\w.]*)$')


class SpartaBankError(ValueError):
    """A bank that cannot be read or does not fit the target network (the message says why)."""


def sparta_units(model: nn.Module) -> Dict[str, Sparta]:
    """The model's Sparta modules by name, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, Sparta)}


def save_bank(model: nn.Module, path: Union[str, os.PathLike], *, source_model: Optional[str] = None,
              dataset: Optional[str] = None, threat_model: Optional[str] = None,
              recipe: Optional[str] = None, **extra: str) -> Path:
    """Write the Sparta parameters of `model` (and provenance metadata) to a safetensors bank."""
    units = sparta_units(model)
    if not units:
        raise SpartaBankError(f'{type(model).__name__} has no Sparta activations to save; build it with '
                              f"act_layer='sparta' (e.g. robust_zoo/resnet20_sparta_at).")
    kernel = {u.kernel_size for u in units.values()}
    tensors = {f'{name}.{p}': t for name, u in units.items() for p, t in
               (('beta', u.beta), ('attn.weight', u.attn.weight), ('attn.bias', u.attn.bias))}
    meta = dict(format=BANK_FORMAT, units=list(units), kernel_size=sorted(kernel),
                source_model=source_model or getattr(model, 'pretrained_cfg', {}).get('architecture', ''),
                dataset=dataset or '', threat_model=threat_model or '', recipe=recipe or '', **extra)
    return save_safetensors(tensors, path, {'robust_zoo': json.dumps(meta)})


def read_bank(path: Union[str, os.PathLike]) -> Tuple[Dict[str, Dict[str, torch.Tensor]], dict]:
    """The bank's units ({name: {'beta', 'attn.weight', 'attn.bias'}}, in source order) and metadata."""
    path = Path(path)
    if not path.is_file():
        raise SpartaBankError(f'Sparta bank {path} does not exist.')
    try:
        with safe_open(str(path), 'pt') as f:
            meta = json.loads((f.metadata() or {}).get('robust_zoo', '{}'))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise SpartaBankError(f'{path} is not a readable safetensors file ({e}).') from e
    if meta.get('format') != BANK_FORMAT:
        raise SpartaBankError(f'{path} is not a Sparta bank (no {BANK_FORMAT!r} metadata); write banks with '
                              f'robust_zoo.sparta.save_bank.')
    units = {u: {p: tensors[f'{u}.{p}'] for p in _PARAMS} for u in meta['units']}
    return units, meta


def resolve_bank(bank: Union[str, os.PathLike]) -> Path:
    """A bank file from a path, or from the name of a published Sparta model (its cards folder's
    `sparta_bank.safetensors`, else its Hub repo's, through the same resolver as its weights). A bank in a card
    folder is sha256-checked against what its card published, on either route."""
    path = Path(bank)
    try:
        if path.is_file():
            if path.name == BANK_FILE and path.resolve().parent.parent == cards_dir().resolve():
                verify_published_bank(path)
            return path
        published = _published_bank(str(bank))
    except PublishedWeightsError as e:
        raise SpartaBankError(str(e)) from None
    if published is not None:
        return published
    known = sorted(p.parent.name for p in cards_dir().glob(f'[!.]*/{BANK_FILE}'))
    raise SpartaBankError(f'{bank!r} is neither a bank file nor a published Sparta bank; published banks: '
                          f'{", ".join(known) or "none yet"}.')


def _locate(names: List[str]) -> Dict[str, Tuple[Optional[int], Optional[int], str, int]]:
    """name -> (stage ordinal, block index, slot, blocks in that stage); (None, None, name, 0) for the stem."""
    parsed = {n: _BLOCK.match(n) for n in names}
    stages = list(dict.fromkeys(m['stage'] for m in parsed.values() if m))
    blocks = {s: 1 + max(int(m['block']) for m in parsed.values() if m and m['stage'] == s) for s in stages}
    return {n: (stages.index(m['stage']), int(m['block']), m['slot'], blocks[m['stage']]) if m else
            (None, None, n, 0) for n, m in parsed.items()}


def bank_mapping(source: List[str], target: List[str], mapping: str = 'relative-depth') -> Dict[str, str]:
    """target unit -> source unit (for 'mean', every target maps to '*'). Raises SpartaBankError if a
    target unit has no counterpart, saying which and why."""
    if mapping not in MAPPINGS:
        raise SpartaBankError(f'unknown mapping {mapping!r}; choose one of {", ".join(MAPPINGS)}.')
    if mapping == 'mean':
        return {t: '*' for t in target}
    if mapping == 'exact':
        missing = [t for t in target if t not in source]
        if missing:
            raise SpartaBankError(f"mapping='exact': the bank has no units {missing[:4]}"
                                  f"{'...' if len(missing) > 4 else ''} (it holds {len(source)} units of another "
                                  f"architecture); use mapping='relative-depth' for a deeper or shallower net, or "
                                  f"'mean'.")
        return {t: t for t in target}
    src, tgt = _locate(source), _locate(target)
    n_src_stages = len({v[0] for v in src.values() if v[0] is not None})
    n_tgt_stages = len({v[0] for v in tgt.values() if v[0] is not None})
    if n_src_stages != n_tgt_stages:
        raise SpartaBankError(f"mapping='relative-depth' needs the same number of stages: the bank's network has "
                              f"{n_src_stages}, the target {n_tgt_stages}; use mapping='mean' instead.")
    out = {}
    for t, (stage, block, slot, n_t) in tgt.items():
        if stage is None:
            if t not in src:
                raise SpartaBankError(f'target unit {t!r} is outside any block and the bank has no unit of that name '
                                      f'(bank units outside blocks: {[s for s, v in src.items() if v[0] is None]}).')
            out[t] = t
            continue
        cands = {v[1]: s for s, v in src.items() if v[0] == stage and v[2] == slot}
        if not cands:
            raise SpartaBankError(f'target unit {t!r} (stage {stage}, slot {slot!r}) has no counterpart in the bank: '
                                  f'its blocks use other activation slots; use mapping=\'mean\'.')
        n_s = max(cands) + 1
        j = 0 if n_t == 1 else int(block * (n_s - 1) / (n_t - 1) + 0.5)  # round half up
        out[t] = cands[j]
    return out


def load_bank(model: nn.Module, bank: Union[str, os.PathLike], *, freeze: bool = True,
              mapping: str = 'relative-depth') -> Dict[str, str]:
    """Copy a bank's Sparta parameters (a bank file or a published bank's name) into `model`'s Sparta units,
    in place, and with `freeze` stop their gradients. Returns the mapping used (target unit -> source unit),
    also kept as `model.sparta_bank_mapping`. Kernel sizes must match."""
    units, meta = read_bank(resolve_bank(bank))
    targets = sparta_units(model)
    if not targets:
        raise SpartaBankError(f"{type(model).__name__} has no Sparta activations to load a bank into; build it with "
                              f"act_layer='sparta'.")
    kernel = set(meta.get('kernel_size', []))
    bad = sorted({u.kernel_size for u in targets.values()} - kernel)
    if bad:
        raise SpartaBankError(f'the bank holds {sorted(kernel)}x{sorted(kernel)} Sparta kernels but the target uses '
                              f'kernel_size {bad}: build the target with '
                              f'act_kwargs=dict(kernel_size={sorted(kernel)[0]}).')
    pairs = bank_mapping(list(units), list(targets), mapping)
    mean = {p: torch.stack([u[p] for u in units.values()]).mean(0) for p in _PARAMS} if mapping == 'mean' else None
    with torch.no_grad():
        for t, s in pairs.items():
            params = mean if s == '*' else units[s]
            unit = targets[t]
            unit.beta.copy_(params['beta'])
            unit.attn.weight.copy_(params['attn.weight'])
            unit.attn.bias.copy_(params['attn.bias'])
            for p in unit.parameters():
                p.requires_grad_(not freeze)
    model.sparta_bank_mapping = pairs
    return pairs
