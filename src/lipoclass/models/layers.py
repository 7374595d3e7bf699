"""Layers shared by the LipNet family.

``Dropout`` is ``nn.Dropout`` with a cheaper mask on CPU. torch's CPU ``bernoulli_`` draws one
Mersenne-Twister number per element (~19 ns each on the dev box): in a LipNet-4 training step
the three dropout masks cost more than all convolutions forward (profile in docs/cnn.md,
Speed). Here one 64-bit draw gives four 16-bit uniforms, each kept when above ``p``, so the
mask costs ~4x less (forward + backward). The keep probability is ``1 - p`` rounded to a
multiple of 2^-16 (exact for 0.25 and 0.5). Randomness still comes from torch's default
generator, so ``seeded_torch`` makes runs reproducible. In eval mode it is the identity, as
``nn.Dropout`` (and exports to ONNX as nothing); on CUDA, or with ``inplace``, it falls back to
``nn.Dropout``."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Dropout", "dropout_mask"]

_INT16_SPAN = 1 << 16


def dropout_mask(like: torch.Tensor, p: float) -> torch.Tensor:
    """Boolean keep-mask with the shape and strides of ``like`` (dense: contiguous or channels
    last), each element kept with probability ``1 - p`` (to 2^-16)."""
    n = like.numel()
    bits = torch.randint(
        -(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=like.device
    )  # (ceil(n/4),) -> 4 int16 uniforms each
    r = bits.view(torch.int16)[:n]  # (n,) uniform on [-32768, 32767]
    keep = r >= round(p * _INT16_SPAN) - _INT16_SPAN // 2
    return keep.as_strided(like.shape, like.stride())


def _dense(x: torch.Tensor) -> bool:
    return x.is_contiguous() or (
        x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    )


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a mask from 16-bit uniforms (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = float(self.p)
        if not self.training or p == 0.0:
            return x
        if self.inplace or x.device.type != "cpu" or p >= 1.0 or not _dense(x):
            return super().forward(x)
        scale = dropout_mask(x, p).to(x.dtype).mul_(1.0 / (1.0 - p))  # 0 or 1/(1-p), x's layout
        return _Scale.apply(x, scale)


class _Scale(torch.autograd.Function):
    """x * m with m saved as is: one multiply forward and one backward, no dtype casts."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(m)
        return x * m

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (m,) = ctx.saved_tensors
        return grad * m, None
