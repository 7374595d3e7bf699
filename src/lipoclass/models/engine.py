"""Fast PyTorch inference on the CPU for the ensemble predictor (``lipoclass.ensemble``):
calibrated probabilities from prepared arrays with the same results as
``softmax(model(x) / T)`` (to ~1e-6).

Why each step (docs/deployment.md, Speed; LipNet-4 at 28 px on 2 shared cores):

- the module runs as a channels_last eval copy, so oneDNN keeps activations in its blocked
  layout instead of reordering around every convolution;
- fixed-size models without extra inputs are traced once (``torch.jit.trace``), frozen and
  passed through ``torch.jit.optimize_for_inference`` (weights pre-packed for oneDNN, conv
  and bias folded); the traced graph is checked against eager on a probe batch and used only
  when it matches within ``tolerance`` and the input has the traced side. Models that accept
  any input side (global average pooling: ``lipnet_fcn``, ``lipnet4c``, ``tiny``), models
  with extra inputs (``lipnet_hybrid``), small inputs (tracing costs ~0.3 s) and any failure
  to trace fall back to eager, which gives the same numbers;
- inputs are fed as zero-copy views in cache-sized chunks (about 128 particles at 28 px; 256
  or more spill the activations out of the caches and run ~1.5x slower), torch uses the cores
  other processes leave free (``lipoclass.threads.pick_threads``; the chunked loop is
  ``lipoclass.models.inference.cpu_logits``), and the tempered softmax is done on the
  logits in float32."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lipoclass.choices import INFERENCE_PRECISIONS
from lipoclass.models.inference import CPU_CHUNK_PIXELS, cpu_chunk, cpu_eval_copy, cpu_logits
from lipoclass.threads import pick_threads, torch_threads, usable_cores

__all__ = ["CPUEngine", "EngineConfig", "usable_cores"]


@dataclass(frozen=True)
class EngineConfig:
    """``batch_size`` caps a chunk; ``chunk_pixels`` sets its usual size (input pixels per
    chunk); ``trace``: try the traced + frozen graph at all; ``min_trace``: fewest particles
    for which tracing pays off; ``threads``: torch threads (None: the usable cores that other
    processes leave free, ``pick_threads``); ``tolerance``: max abs logit difference allowed
    between traced and eager; ``precision``: "fp32" (default: the numbers the out-of-fold
    evaluation and calibration saw) or "bf16" (eager under bfloat16 autocast: several times
    faster on CPUs with AVX-512 BF16 / AMX, probabilities differ by up to ~1e-2, see
    docs/deployment.md)."""

    batch_size: int = 1024
    chunk_pixels: int = CPU_CHUNK_PIXELS
    trace: bool = True
    min_trace: int = 8192
    threads: int | None = None
    tolerance: float = 1e-5
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if int(self.chunk_pixels) < 1:
            raise ValueError(f"chunk_pixels must be at least 1, got {self.chunk_pixels}")
        if int(self.min_trace) < 0:
            raise ValueError(f"min_trace must be >= 0, got {self.min_trace}")
        if self.threads is not None and int(self.threads) < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if not self.tolerance > 0:
            raise ValueError(f"tolerance must be positive, got {self.tolerance}")
        if self.precision not in INFERENCE_PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(INFERENCE_PRECISIONS)}, "
                f"got {self.precision!r}"
            )


def _variable_size(module: nn.Module) -> bool:
    """True for models that take any input side (global pooling before the classifier):
    a trace would be specialised to one side, so they run eager."""
    pools = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
    return any(isinstance(m, pools) for m in module.modules())


class CPUEngine:
    """Calibrated probabilities for one CNN on the CPU: ``softmax(module(x[, aux]) / T)``.

    ``mode`` says what runs: ``"traced"`` (frozen TorchScript graph, after the first call
    that was large enough) or ``"eager"``; ``reason`` says why not traced. The caller's
    ``module`` is not changed (the engine works on a copy)."""

    def __init__(
        self,
        module: nn.Module,
        temperature: float = 1.0,
        config: EngineConfig | None = None,
    ) -> None:
        self.cfg = config or EngineConfig()
        self.needs_aux = bool(getattr(module, "needs_aux", False))
        self.temperature = float(temperature)
        self.eager = cpu_eval_copy(module)
        self.traced: torch.jit.ScriptModule | None = None
        self._traced_shape: tuple[int, ...] | None = None  # (1, S, S) the trace was made for
        self.reason = ""
        if not self.cfg.trace:
            self.reason = "tracing switched off"
        elif self.cfg.precision == "bf16":
            self.reason = "bf16 runs eager under autocast"
        elif self.needs_aux:
            self.reason = "model takes extra inputs (size features)"
        elif _variable_size(self.eager):
            self.reason = "model takes any input size"
        self._tried = bool(self.reason)

    @property
    def mode(self) -> str:
        return "traced" if self.traced is not None else "eager"

    def _try_trace(self, xt: torch.Tensor) -> None:
        """Trace, freeze and optimise on the first chunk of ``xt``; keep the graph only if it
        matches eager on a probe batch of another size (the batch axis must stay free)."""
        self._tried = True
        chunk = cpu_chunk(tuple(xt.shape), self.cfg.batch_size, self.cfg.chunk_pixels)
        example = xt[:chunk].contiguous(memory_format=torch.channels_last)  # (B,1,S,S)
        gen = torch.Generator().manual_seed(0)
        probe = torch.randn((chunk + 3, *xt.shape[1:]), generator=gen)  # (B+3,1,S,S)
        probe = probe.contiguous(memory_format=torch.channels_last)
        try:
            with warnings.catch_warnings(), torch.inference_mode():
                warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of compile
                graph = torch.jit.trace(self.eager, example, check_trace=False)
                graph = torch.jit.optimize_for_inference(torch.jit.freeze(graph))
                with torch.jit.optimized_execution(False):  # no profiling runs: same graph
                    got = graph(probe)
                want = self.eager(probe)
            diff = float((got - want).abs().max())
        except Exception as exc:  # any tracing problem: eager gives the same numbers
            self.reason = f"tracing failed ({type(exc).__name__})"
            return
        if not diff <= self.cfg.tolerance:
            self.reason = f"traced graph differs from eager by {diff:.1e}"
            return
        self.traced, self._traced_shape, self.reason = graph, tuple(xt.shape[1:]), ""

    def logits(self, x: np.ndarray, aux: np.ndarray | None = None) -> np.ndarray:
        """Uncalibrated logits (N, C) float32 for prepared x (N,1,S,S) [+ aux (N,K)]."""
        return self._run(x, aux, calibrate=False)

    def predict_proba(self, x: np.ndarray, aux: np.ndarray | None = None) -> np.ndarray:
        """Calibrated probabilities (N, C) float32 for prepared x (N,1,S,S) [+ aux (N,K)]."""
        return self._run(x, aux, calibrate=True)

    def _run(self, x: np.ndarray, aux: np.ndarray | None, calibrate: bool) -> np.ndarray:
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))  # (N,1,S,S), no copy
        if self.needs_aux and aux is None:
            raise ValueError("this model needs size features (aux)")
        # None: the cores other processes leave free (2 OpenMP threads on a shared 2-core
        # machine are far slower than 1 when another process holds a core)
        threads = self.cfg.threads or pick_threads()
        with torch_threads(threads), torch.inference_mode():
            if not self._tried and len(xt) >= self.cfg.min_trace and xt.ndim == 4:
                self._try_trace(xt)
            model = self.eager
            if self.traced is not None and tuple(xt.shape[1:]) == self._traced_shape:
                model = self.traced
            cast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16")
            with torch.jit.optimized_execution(False), cast:
                logits = cpu_logits(
                    model, x, aux if self.needs_aux else None,
                    self.cfg.batch_size, self.cfg.chunk_pixels,
                )  # fmt: skip
            if calibrate and logits.size:
                t = torch.from_numpy(logits) * (1.0 / self.temperature)  # (N,C) float32
                logits = torch.softmax(t, dim=1).numpy()
        return logits
