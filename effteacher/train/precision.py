"""Training precision: fp16 autocast + GradScaler on CUDA (``amp``), bf16 autocast on CPUs with native bf16 (``precision``).

Validation and export always run in fp32 on CPU; only the training forward and loss run under autocast.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import ContextManager

import torch

from effteacher.utils.console import warn

BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with native bf16 dot products


def cpu_flags() -> set[str]:
    """The CPU's ISA flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_bf16() -> bool:
    """True where bf16 matmuls and convolutions run natively (AVX512-BF16 or AMX); elsewhere they are emulated
    and slower than fp32. Apple/ARM CPUs without the flags file are treated as without bf16."""
    return any(f in cpu_flags() for f in BF16_FLAGS)


def cpu_autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of CPU training: bf16 for ``precision`` 'bf16', or 'auto' on a CPU with native bf16;
    None (fp32) otherwise. 'bf16' on a CPU without it falls back to fp32 with a warning."""
    if device.type != "cpu" or precision == "fp32":
        return None
    if cpu_has_bf16():
        return torch.bfloat16
    if precision == "bf16":
        warn("precision bf16: this CPU has no native bf16 (no avx512_bf16 / amx_bf16 flag), where bf16 is slower "
             "than fp32; training in fp32 (set precision: fp32 to silence this)")
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> ContextManager[object]:
    """Autocast to ``dtype`` on ``device``; no autocast (fp32) for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
