"""Running a trained network: device choice, batched eval-mode logits, the tempered softmax,
test-time augmentation over the dihedral group and the cache-sized CPU loop.

These sit with the models (below ``train``) because both training (validation, out-of-fold
predictions) and deployment (``lipoclass.ensemble``, predict, export, explain) need them, and
loading a model for prediction must not import any training code."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from lipoclass.errors import LipoclassError

__all__ = [
    "CPU_CHUNK_PIXELS",
    "DIHEDRAL",
    "cpu_chunk",
    "cpu_eval_copy",
    "cpu_logits",
    "dihedral",
    "predict_logits",
    "resolve_device",
    "softmax",
]

# CPU inference runs in chunks of about this many input pixels (128 particles at 28 px) so a
# chunk's activations stay in cache: on the 2-core reference machine LipNet-4 runs ~1.8x
# faster than in chunks of 512 (docs/deployment.md, Speed).
CPU_CHUNK_PIXELS = 128 * 28 * 28

#: the 8 elements of the dihedral group of the square as (quarter turns, flip left-right)
DIHEDRAL: tuple[tuple[int, bool], ...] = tuple((k, f) for f in (False, True) for k in range(4))


def resolve_device(device: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise LipoclassError("--device cuda: no CUDA device is available")
    return torch.device(device)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row softmax of logits (N, C) / T, float64."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """x (B,1,S,S) rotated by ``k`` quarter turns, after a left-right flip when ``flip``."""
    if flip:
        x = torch.flip(x, dims=(-1,))
    k %= 4  # written with flips and transposes (= torch.rot90), which ONNX exports
    if k == 1:
        return torch.flip(x, dims=(-1,)).transpose(-2, -1)
    if k == 2:
        return torch.flip(x, dims=(-2, -1))
    if k == 3:
        return torch.flip(x.transpose(-2, -1), dims=(-1,))
    return x


def predict_logits(
    model: nn.Module,
    x: torch.Tensor | np.ndarray,
    aux: torch.Tensor | np.ndarray | None,
    device: torch.device,
    batch_size: int = 1024,
    autocast: Any = None,
) -> np.ndarray:
    """Eval-mode logits (N, C) float32 for x (N,1,S,S) [+ aux (N,K)], batched, no autograd."""
    was_training = model.training
    model.eval()
    xt = torch.as_tensor(x, dtype=torch.float32)
    at = None if aux is None else torch.as_tensor(aux, dtype=torch.float32)
    outs = []
    with torch.inference_mode():
        for b0 in range(0, len(xt), batch_size):
            xb = xt[b0 : b0 + batch_size].to(device)
            ctx = autocast() if autocast is not None else contextlib.nullcontext()
            with ctx:
                out = model(xb) if at is None else model(xb, at[b0 : b0 + batch_size].to(device))
            outs.append(out.float().cpu())
    model.train(was_training)
    if not outs:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(outs).numpy()


def cpu_eval_copy(module: nn.Module) -> nn.Module:
    """An eval-mode CPU copy of ``module`` with channels_last weights (oneDNN then keeps
    activations in its blocked layout: ~1.7x faster on CPU); ``module`` is not changed."""
    m = copy.deepcopy(module).cpu().eval()
    return m.to(memory_format=torch.channels_last)  # type: ignore[call-overload,no-any-return]


def cpu_chunk(shape: tuple[int, ...], batch_size: int, chunk_pixels: int = CPU_CHUNK_PIXELS) -> int:
    """Particles per CPU inference chunk for inputs of ``shape`` (N,1,S,S): about
    ``chunk_pixels`` input pixels, so a chunk's activations stay in cache, at most
    ``batch_size``."""
    pixels = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return max(1, min(int(batch_size), int(chunk_pixels) // max(pixels, 1)))


def cpu_logits(
    model: nn.Module,
    x: np.ndarray,
    aux: np.ndarray | None,
    batch_size: int,
    chunk_pixels: int = CPU_CHUNK_PIXELS,
) -> np.ndarray:
    """Logits (N, C) float32 on CPU: x (N,1,S,S) is viewed (not copied) as a float32 tensor,
    fed in cache-sized chunks (``cpu_chunk``) as channels_last, and each chunk's logits are
    written into one preallocated output."""
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    at = None if aux is None else torch.from_numpy(np.ascontiguousarray(aux, dtype=np.float32))
    n = len(xt)
    chunk = cpu_chunk(tuple(xt.shape), batch_size, chunk_pixels)
    out: torch.Tensor | None = None
    with torch.inference_mode():
        for b0 in range(0, n, chunk):
            xb = xt[b0 : b0 + chunk]
            if xb.ndim == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)  # a view when 1 channel
            yb = model(xb) if at is None else model(xb, at[b0 : b0 + chunk])
            if out is None:
                out = torch.empty((n, *yb.shape[1:]), dtype=torch.float32)
            out[b0 : b0 + len(yb)] = yb
    if out is None:
        return np.zeros((0, 0), dtype=np.float32)
    return out.numpy()
