"""Benchmark ``lipoclass.features.compute_features``: particles/s for 80-250 px crops, with
``--workers`` processes and with 1, and the cached reload. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_features.py [--n 1000] [--workers 2]

Synthesises ``--n`` particles (8-bit PNG image + 0/255 PNG mask drawn with numpy: a noisy
background with one or two dark rings, one in ten without a mask so ``auto_mask`` runs) into
a temporary folder. Goal: >= 1000 particles/s on 2 cores (decode + features, cache off).
Also prints CPU ms per particle (this process + workers), steadier than wall time on a shared
machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from lipoclass.data import DatasetWriter, load_dataset
from lipoclass.features import compute_features


def draw(rng: np.random.Generator, h: int, w: int, rings: int) -> tuple[np.ndarray, np.ndarray]:
    """Image (H, W) uint8 and mask (H, W) bool of one ring-shaped particle."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    r = np.hypot((yy - h / 2) / (0.3 * h), (xx - w / 2) / (0.3 * w))  # 1 on the membrane
    img = 160 + rng.normal(0, 12, (h, w)).astype(np.float32)
    for k in range(rings):
        img[np.abs(r - 1 + 0.2 * k) < 0.04] -= 80
    return np.clip(img, 0, 255).astype(np.uint8), r <= 1.05


def _cpu() -> float:
    """CPU seconds (user + system) of this process and its finished worker processes: the
    cost per particle, less sensitive than wall time to other jobs on the machine."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def make_dataset(out: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with DatasetWriter(out, name="bench", classes=["uni", "multi"], pixel_size_nm=0.5) as wr:
        for i in range(n):
            h, w = (int(v) for v in rng.integers(80, 251, size=2))
            rings = 1 + int(rng.random() < 0.2)
            img, mask = draw(rng, h, w, rings)
            wr.add(
                f"{i:06d}",
                image=img,
                mask=None if i % 10 == 9 else mask,
                label="uni" if rings == 1 else "multi",
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-features-"))
    try:
        make_dataset(tmp / "ds", args.n)
        ds = load_dataset(tmp / "ds")
        print(f"{args.n} particles, 80-250 px, cpu_count={os.cpu_count()}, "
              f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
        for nw in sorted({args.workers, 1}, reverse=True):
            t, c = time.perf_counter(), _cpu()
            table = compute_features(ds, cache=False, workers=nw)
            dt, dc = time.perf_counter() - t, _cpu() - c
            print(
                f"workers={nw}: {args.n / dt:8.0f} particles/s ({dt:.2f} s; "
                f"CPU {1000 * dc / args.n:.2f} ms/particle; "
                f"{len(table)} ok, {len(table.failed)} failed, {table.auto_masked} auto-masked)"
            )
        cache = tmp / "cache"
        compute_features(ds, cache_dir=cache, workers=args.workers)
        t = time.perf_counter()
        table = compute_features(ds, cache_dir=cache)
        print(f"cached reload: {time.perf_counter() - t:.3f} s (from_cache={table.from_cache})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
