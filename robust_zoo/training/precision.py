"""Whether mixed precision pays on a device: bf16 autocast is a speed-up only where the hardware computes bf16.

On CPUs with AMX or AVX-512 (Intel Sapphire Rapids, AMD Zen 4) oneDNN runs bf16 natively and ResNet-20
adversarial training gains ~1.75x. On an AVX2-only CPU (e.g. an older AMD EPYC) every bf16 op is emulated: the
same training step measured ~8x SLOWER than fp32 (benchmarks/bench_precision.py). So `--amp` means "mixed
precision where it is native", and falls back to fp32 elsewhere, saying so.
"""
from typing import Optional, Tuple, Union

import torch

__all__ = ['native_autocast', 'resolve_autocast']


def native_autocast(device: Union[str, torch.device], dtype: torch.dtype = torch.bfloat16) -> bool:
    """True when autocast in `dtype` on `device` runs on native low-precision hardware (CUDA: bf16 needs
    Ampere or newer, fp16 always; CPU: oneDNN's own bf16 / fp16 support check)."""
    device = torch.device(device)
    if device.type == 'cuda':
        return dtype != torch.bfloat16 or torch.cuda.is_bf16_supported()
    if device.type != 'cpu':
        return True
    check = {torch.bfloat16: '_is_mkldnn_bf16_supported', torch.float16: '_is_mkldnn_fp16_supported'}.get(dtype)
    try:
        return bool(getattr(torch.ops.mkldnn, check)())
    except (AttributeError, RuntimeError, TypeError):
        return False


def resolve_autocast(amp: bool, device: Union[str, torch.device], dtype: torch.dtype = torch.bfloat16,
                     what: str = 'this run') -> Tuple[bool, Optional[str]]:
    """The one place that decides whether a requested `--amp` runs: (amp to use, message to log or None).

    Emulated low precision is never faster than fp32, so a request on a device without native `dtype` becomes fp32
    and the message says so, naming `what` runs in fp32 (e.g. 'this run trains', 'attacks run')."""
    if not amp or native_autocast(device, dtype):
        return amp, None
    name = str(dtype).replace('torch.', '')
    return False, (f'--amp: this {torch.device(device).type} has no native {name} (oneDNN reports it emulated: ~8x '
                   f'slower than fp32 on an AVX2 CPU), so {what} in fp32')
