"""What a run trained on, in words, for its record and card (cost figures mean little without the device)."""
import os
import platform
from pathlib import Path
from typing import Union

import torch

__all__ = ['device_name']


def _cpu_model() -> str:
    cpuinfo = Path('/proc/cpuinfo')
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors='replace').splitlines():
            if line.startswith('model name') and ':' in line:
                return line.split(':', 1)[1].strip()
    return platform.processor() or platform.machine() or 'unknown CPU'


def device_name(device: Union[str, torch.device]) -> str:
    """`NVIDIA H100 80GB HBM3 (cuda)` or `CPU: <model name> (<n> cores)`."""
    device = torch.device(device)
    if device.type == 'cuda':
        return f'{torch.cuda.get_device_name(device)} (cuda)'
    if device.type == 'cpu':
        return f'CPU: {_cpu_model()} ({os.cpu_count()} cores)'
    return device.type
