"""Numeric precision of CNN training: detection of fast bfloat16 on the CPU, the resolution of
``TrainConfig.precision`` ("auto" / "fp32" / "bf16") and the autocast strategy the trainer
calls (it never branches on the device or the architecture itself).

bf16 autocast keeps the weights, the optimizer state and the loss in float32 and computes
convolutions and matrix products in bfloat16; on CPUs with AVX-512 BF16 or AMX this trains
LipNet-4 ~1.7-2.2x faster (docs/cnn.md, Speed). Without those instructions oneDNN emulates
bf16 and it is slower than float32, so ``auto`` picks it only where the hardware has it.
Validation and out-of-fold predictions run in float32 (``Precision.eval_autocast``), so
reported probabilities never carry bf16 rounding."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lipoclass.choices import PRECISIONS

__all__ = [
    "PRECISIONS",
    "Precision",
    "cpu_has_fast_bf16",
    "make_precision",
    "resolve_precision",
]

_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpuinfo_flags(path: str = "/proc/cpuinfo") -> set[str]:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[-1].split())
    return flags


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX-512 BF16 or AMX BF16).

    Uses ``/proc/cpuinfo`` flags (Linux), else torch's own capability string
    (``torch.backends.cpu.get_cpu_capability()``: "AMX" / "AVX512_BF16" on newer builds)."""
    flags = _cpuinfo_flags()
    if flags:
        return any(f in flags for f in _BF16_FLAGS)
    try:
        cap = str(torch.backends.cpu.get_cpu_capability()).upper()
    except Exception:  # very old torch: no capability query
        return False
    return "AMX" in cap or "BF16" in cap


def resolve_precision(precision: str, device: torch.device | str, amp: bool = True) -> str:
    """ "fp32" or "bf16" (or "fp16") for ``precision`` on ``device``: ``auto`` gives bf16 on a
    CPU with native bf16 (``cpu_has_fast_bf16``) and on a CUDA device that supports it, fp16
    on an older CUDA device when ``amp`` (with gradient scaling), fp32 elsewhere; an explicit
    choice is kept (bf16 runs everywhere, emulated where slow)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    dev = torch.device(device)
    if dev.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp16" if amp else "fp32"
    return "bf16" if dev.type == "cpu" and cpu_has_fast_bf16() else "fp32"


@dataclass(frozen=True)
class Precision:
    """Autocast strategy for one device: ``train_autocast()`` wraps the forward pass and loss
    of a training step; ``eval_autocast()`` wraps validation / prediction (float32 here)."""

    name: str  # resolved: "fp32" | "bf16" | "fp16" (CUDA without bf16 only)
    device_type: str  # "cpu" | "cuda"

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    @property
    def needs_grad_scaler(self) -> bool:
        """float16 needs loss scaling against gradient underflow; bf16 has fp32's range."""
        return self.name == "fp16"

    def train_autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def eval_autocast(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()


def make_precision(precision: str, device: torch.device, amp: bool = True) -> Precision:
    """The ``Precision`` strategy for a config value on ``device`` (resolved once)."""
    return Precision(resolve_precision(precision, device, amp), device.type)
