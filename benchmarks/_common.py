"""Shared setup of the benchmark scripts: synthetic ring-shaped particles written as a
particle dataset, and the CPU-time clock. Imported as ``_common`` (``python benchmarks/x.py``
puts this folder on ``sys.path``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lipoclass.data import DatasetWriter

__all__ = ["cpu_seconds", "draw", "make_dataset"]


def draw(rng: np.random.Generator, h: int, w: int, rings: int) -> tuple[np.ndarray, np.ndarray]:
    """Image (H, W) uint8 and mask (H, W) bool of one ring-shaped particle."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    r = np.hypot((yy - h / 2) / (0.3 * h), (xx - w / 2) / (0.3 * w))  # 1 on the membrane
    img = 160 + rng.normal(0, 12, (h, w)).astype(np.float32)
    for k in range(rings):
        img[np.abs(r - 1 + 0.2 * k) < 0.04] -= 80
    return np.clip(img, 0, 255).astype(np.uint8), r <= 1.05


def make_dataset(out: Path, n: int, seed: int = 0, no_mask_every: int = 0) -> None:
    """``n`` particles of 80-250 px (8-bit PNG image + 0/255 PNG mask; one or two dark rings
    on a noisy background) as a dataset in ``out``; every ``no_mask_every``-th particle has
    no mask (0: all have one)."""
    rng = np.random.default_rng(seed)
    with DatasetWriter(out, name="bench", classes=["uni", "multi"], pixel_size_nm=0.5) as wr:
        for i in range(n):
            h, w = (int(v) for v in rng.integers(80, 251, size=2))
            rings = 1 + int(rng.random() < 0.2)
            img, mask = draw(rng, h, w, rings)
            no_mask = no_mask_every > 0 and i % no_mask_every == no_mask_every - 1
            wr.add(
                f"{i:06d}",
                image=img,
                mask=None if no_mask else mask,
                label="uni" if rings == 1 else "multi",
            )


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its finished children (the worker
    processes): the cost per particle, steadier than wall time on a shared, busy machine."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system
