"""Normalization inside the model, so that models take images in [0, 1] (RobustBench's convention)."""
import math
from typing import Optional, Sequence

import torch
from torch import nn

__all__ = ['InputNormalize', 'NormalizedInputMixin']


class InputNormalize(nn.Module):
    """`(x - mean) / std` with the dataset's constants as buffers (saved with the weights).

    Attack budgets are in pixel units only if the model sees raw [0, 1] pixels, so the first forward
    checks the range and names the usual mistake (feeding already-normalized tensors); NaN and infinite values
    are refused too. On a CPU the check runs on every forward (`check_every_forward`): one pass over the batch next
    to a network's forward (benchmarks/bench_range_check.py, ResNet-20, 128 images, 10 forwards + PGD-10: ratio
    1.04 on a shared 2-core machine, within its noise). On a GPU it would synchronise every step (not measured
    here), so there it runs on the first forward only (`check_every_forward = True`
    checks every one there too); the evaluator checks the images it reads itself. `check_range = False` skips it.
    """

    CHECK_EVERY_FORWARD = None  # None: on a CPU, not on a GPU

    def __init__(self, mean: Sequence[float], std: Sequence[float], in_chans: int):
        super().__init__()
        mean, std = list(mean), list(std)
        if len(mean) != in_chans:  # e.g. an ImageNet model built with in_chans=1: use the channel average
            mean, std = [sum(mean) / len(mean)] * in_chans, [sum(std) / len(std)] * in_chans
        self.register_buffer('mean', torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer('std', torch.tensor(std).view(1, -1, 1, 1))
        self.check_range = True  # False: never check
        self.check_every_forward = self.CHECK_EVERY_FORWARD
        self._range_checked = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        every = self.check_every_forward if self.check_every_forward is not None else x.device.type == 'cpu'
        if self.check_range and (every or not self._range_checked) and x.device.type != 'meta' \
                and not torch.compiler.is_compiling():
            self._range_checked = True
            lo, hi = torch.aminmax(x.detach())
            lo, hi = float(lo), float(hi)
            if not (lo >= -1e-3 and hi <= 1 + 1e-3):  # a NaN fails both comparisons
                self._range_checked = False
                if math.isnan(lo) or math.isnan(hi) or math.isinf(lo) or math.isinf(hi):
                    raise ValueError('robust_zoo models take images in [0, 1]; got NaN or infinite values (a broken '
                                     'image file, a division by zero in preprocessing?): every number computed from '
                                     'them would be meaningless. Find and drop those images.')
                raise ValueError(
                    f'robust_zoo models take images in [0, 1] and normalize inside the model; got values in '
                    f'[{lo:.3g}, {hi:.3g}]. Pass un-normalized images (timm: resolve_data_config(model=model) '
                    f'gives mean 0 / std 1). To skip this check set model.normalize.check_range = False.')
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        mean, std = ([round(v, 4) for v in t.flatten().tolist()] for t in (self.mean, self.std))
        return f'mean={mean}, std={std}'


class NormalizedInputMixin:
    """Puts `self.normalize` in front of a timm model's `forward_features` / `forward_intermediates`."""

    def _init_robust(self, mean: Sequence[float], std: Sequence[float], in_chans: int,
                     shared_act: Optional[nn.Module] = None) -> None:
        """Call at the end of `__init__`: adds the normalization and the network-wide shared activation."""
        norm = InputNormalize(mean, std, in_chans)
        # first child, so that timm's sequential feature wrappers (FeatureListNet) run it first
        self._modules = {'normalize': norm, **self._modules}
        if shared_act is not None:
            self.shared_act = shared_act

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward_features(self.normalize(x))

    def forward_intermediates(self, x: torch.Tensor, *args, **kwargs):
        return super().forward_intermediates(self.normalize(x), *args, **kwargs)
