"""Name-based TensorFlow checkpoints into PyTorch models, all or nothing: a reader, the layout changes, and the check
of a plan (model key -> (TF variable, layout)) that names every problem at once.

A checkpoint is read by name (`tf.train.load_checkpoint(prefix)` lists `name -> shape`); a source maps every name
to a model key, or ignores it by one of its documented patterns; anything else is a ConversionError (`sat.py` is
such a source). Layouts: conv kernels HWIO -> OIHW (`conv_bgr` also reverses the input channels), depthwise HWC1
-> C1HW, dense [in, out] -> [out, in], vectors and scalars flattened; BatchNorm `num_batches_tracked` (not in TF)
keeps the model's 0. TensorFlow is imported only when a checkpoint is read.
"""
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from . import ConversionError, listing

__all__ = ['INSTALL_HINT', 'Plan', 'TFCheckpoint', 'apply_layout', 'checkpoint_prefix', 'finish_plan', 'ignored',
           'layout_shape', 'state_dict_from']

PathLike = Union[str, Path]
Plan = Dict[str, Tuple[str, str]]  # model key -> (TF variable name, layout)
INSTALL_HINT = "pip install 'robust-zoo[convert-tf]'"


# --- reading -------------------------------------------------------------------------------------------------

def checkpoint_prefix(path: PathLike) -> Path:
    """The TF checkpoint prefix of `path`: the prefix itself, its .index, .meta or .data-* file, or a folder
    holding exactly one checkpoint (download_*.py writes one folder per model)."""
    path = Path(path)
    if path.is_dir():
        indexes = sorted(path.glob('*.index'))
        if len(indexes) != 1:
            raise ConversionError(f'{path}: expected one TF checkpoint (<prefix>.index) in the folder, found '
                                  f'{len(indexes)}; give the .index file.')
        path = indexes[0]
    prefix = path.with_name(re.sub(r'\.(index|meta|data-\d+-of-\d+)$', '', path.name))
    if not prefix.with_name(prefix.name + '.index').is_file():
        raise ConversionError(f'{prefix}.index not found: a TF checkpoint is <prefix>.index plus '
                              f'<prefix>.data-00000-of-00001; give either file or the prefix.')
    return prefix


def _tensorflow() -> Any:
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ConversionError(f'reading TensorFlow checkpoints needs TensorFlow: {INSTALL_HINT}') from e
    return tf


class TFCheckpoint:
    """A name-based TF checkpoint: `shapes` (name -> shape) and `get(name)` as a float32 tensor."""

    def __init__(self, path: PathLike):
        self.prefix = checkpoint_prefix(path)
        tf = _tensorflow()
        try:
            self._reader = tf.train.load_checkpoint(str(self.prefix))
        except Exception as e:  # TF raises its own error types for corrupt or foreign files
            raise ConversionError(f'{self.prefix}: not a readable TensorFlow checkpoint ({e}).') from e
        self.shapes = {k: tuple(v) for k, v in self._reader.get_variable_to_shape_map().items()}

    def get(self, name: str) -> torch.Tensor:
        import numpy as np
        try:
            value = self._reader.get_tensor(name)
        except Exception as e:  # a .data file shorter than its .index says: TF's DataLoss / OutOfRange
            raise ConversionError(f'{self.prefix}: cannot read {name} ({type(e).__name__}); a truncated or '
                                  f'corrupt .data file?') from e
        return torch.from_numpy(np.array(value, dtype=np.float32))


# --- layouts ---------------------------------------------------------------------------------------------------

def layout_shape(kind: str, shape: Sequence[int]) -> Optional[Tuple[int, ...]]:
    """The shape after `apply_layout`, or None when `shape` cannot have that layout."""
    shape = tuple(shape)
    if kind in ('conv', 'conv_bgr', 'dw') and len(shape) == 4:
        h, w, i, o = shape
        return (i * o, 1, h, w) if kind == 'dw' else (o, i, h, w)
    if kind == 'dense' and len(shape) == 2:
        return shape[1], shape[0]
    if kind == 'vec' and len(shape) >= 1 and all(d == 1 for d in shape[:-1]):
        return (shape[-1],)
    if kind == 'scalar' and all(d == 1 for d in shape):
        return ()
    return None


def apply_layout(kind: str, t: torch.Tensor) -> torch.Tensor:
    if kind == 'conv':
        return t.permute(3, 2, 0, 1).contiguous()
    if kind == 'conv_bgr':  # the source's stem sees BGR; robust_zoo feeds RGB
        return t.permute(3, 2, 0, 1).flip(1).contiguous()
    if kind == 'dw':
        h, w, c, m = t.shape
        return t.permute(2, 3, 0, 1).reshape(c * m, 1, h, w).contiguous()
    if kind == 'dense':
        return t.t().contiguous()
    if kind == 'vec':
        return t.reshape(-1).contiguous()
    if kind == 'scalar':
        return t.reshape(())
    raise ValueError(kind)



# --- plans ------------------------------------------------------------------------------------------------------

def finish_plan(source: str, model: nn.Module, shapes: Mapping[str, Sequence[int]],
                 mapped: Dict[str, Tuple[str, str]], unmapped: List[str]) -> Plan:
    """Check a name mapping (TF name -> (model key, layout)) against the model; raise naming every problem."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()
                if not k.endswith('num_batches_tracked') and not k.startswith('normalize.')}
    plan: Plan = {}
    no_place, duplicate, wrong_shape = [], [], []
    for name, (key, kind) in sorted(mapped.items()):
        if key not in expected:
            no_place.append(f'{name} (-> {key})')
        elif key in plan:
            duplicate.append(f'{name} and {plan[key][0]} (-> {key})')
        else:
            shape = layout_shape(kind, shapes[name])
            if shape != expected[key]:
                wrong_shape.append(f'{name} {list(shapes[name])} -> {key} {list(expected[key])}')
            plan[key] = (name, kind)
    missing = [k for k in expected if k not in plan]
    problems = []
    if unmapped:
        problems.append(f'{len(unmapped)} checkpoint variables map to nothing: {listing(sorted(unmapped))}')
    if no_place:
        problems.append(f'{len(no_place)} variables have no place in {type(model).__name__} (another activation or '
                        f'architecture?): {listing(no_place)}')
    if duplicate:
        problems.append(f'variables map to the same tensor: {listing(duplicate)}')
    if wrong_shape:
        problems.append(f'{len(wrong_shape)} shapes differ: {listing(wrong_shape)}')
    if missing:
        problems.append(f'{len(missing)} model tensors get no variable: {listing(missing)}')
    if problems:
        raise ConversionError(f'{source}: ' + '; '.join(problems) + '.')
    return plan


def ignored(name: str, patterns: Sequence[Tuple[str, str]]) -> bool:
    """Whether `name` matches one of the (pattern, why) pairs a source ignores by design."""
    return any(re.search(p, name) for p, _ in patterns)


def state_dict_from(plan: Plan, ckpt: TFCheckpoint, model: nn.Module) -> Dict[str, torch.Tensor]:
    """The model's complete state dict: the planned tensors from `ckpt` in their PyTorch layout, the rest kept."""
    state = {}
    for key, value in model.state_dict().items():
        if key in plan:
            name, kind = plan[key]
            state[key] = apply_layout(kind, ckpt.get(name)).to(value.dtype)
        else:  # num_batches_tracked (not in TF) and the normalize constants of the tag's cfg
            state[key] = value.detach().clone()
    return state
