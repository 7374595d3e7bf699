"""Shared test fixtures: tiny synthetic particle datasets, an isolated prepare cache, the
shared-data paths (tests using them skip when ``../shared`` is absent)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
VESICLE_DIR = SHARED / "data" / "vesicle-em-7-13"
EXPORT_DIR = SHARED / "reference" / "vironova-export"

TINY_CLASSES = ("unilamellar", "multilamellar", "uncertain")


def load_benchmark(name: str) -> Any:
    """The module ``benchmarks/<name>.py`` (benchmarks are scripts, not a package), loaded
    once and registered in ``sys.modules`` (its dataclasses look their module up)."""
    import importlib.util
    import sys

    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def draw_particle(
    kind: int, h: int, w: int, rng: np.random.Generator, noise: float = 8.0
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic particle image (H, W) uint8 and its mask (H, W) bool.

    kind 0: one dark ring (membrane); 1: two concentric rings; 2: filled dark disk; further
    kinds: ``kind`` concentric rings. The particle is centred with a margin of ~20% around it,
    like the thesis' crops with surrounding."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)  # (H, W)
    cy = (h - 1) / 2 + rng.uniform(-1, 1)
    cx = (w - 1) / 2 + rng.uniform(-1, 1)
    ry, rx = 0.32 * h, 0.32 * w
    r = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)  # 1.0 on the outer membrane
    img = np.full((h, w), 170.0, dtype=np.float32)
    width = 1.5 / max(1.0, min(ry, rx))  # membrane ~1.5 px thick whatever the size
    if kind == 2:
        img[r <= 1.0] = 90.0
    else:
        n_rings = 1 if kind == 0 else max(2, kind)
        for k in range(n_rings):
            img[np.abs(r - (1.0 - 0.22 * k)) <= width] = 70.0
    img += rng.normal(0.0, noise, size=(h, w)).astype(np.float32)
    mask = r <= 1.0 + width
    return np.clip(img, 0, 255).astype(np.uint8), mask


def write_tiny_dataset(
    out: Path,
    counts: Sequence[int] = (8, 6, 4),
    *,
    classes: Sequence[str] = TINY_CLASSES,
    size: tuple[int, int] = (24, 40),
    masks: bool = True,
    empty_masks: int = 0,
    samples: int = 2,
    pixel_size_nm: float | None = 0.8,
    features: bool = False,
    suffix: str = ".png",
    unlabelled: int = 0,
    seed: int = 0,
    name: str = "tiny",
) -> Path:
    """A small synthetic dataset written to ``out`` with ``DatasetWriter``; returns ``out``.

    Image sides are drawn uniformly from ``size`` (per axis); ``empty_masks`` particles of the
    first class get an all-zero mask; ``samples`` > 0 assigns samples ``s0..`` round robin;
    ``features`` adds two numeric columns (``area_px``, ``noise``); ``unlabelled`` appends
    particles without a label. Module-scoped fixtures call it directly (one dataset, and
    one model trained on it, shared by a module's tests)."""
    from lipoclass.data import DatasetWriter

    if len(counts) != len(classes):
        raise ValueError("counts and classes must have the same length")
    rng = np.random.default_rng(seed)
    jobs: list[tuple[int, str | None]] = [
        (k, c) for k, (c, n) in enumerate(zip(classes, counts)) for _ in range(n)
    ]
    jobs += [(int(rng.integers(0, len(classes))), None) for _ in range(unlabelled)]
    with DatasetWriter(out, name=name, classes=list(classes), pixel_size_nm=pixel_size_nm) as w:
        empties = 0
        for i, (kind, label) in enumerate(jobs):
            h = int(rng.integers(size[0], size[1] + 1))
            ww = int(rng.integers(size[0], size[1] + 1))
            img, mask = draw_particle(kind, h, ww, rng)
            if empty_masks and kind == 0 and empties < empty_masks:
                mask = np.zeros_like(mask)
                empties += 1
            feats = None
            if features:
                feats = {"area_px": float(mask.sum()), "noise": float(rng.normal())}
            w.add(
                f"p{i:04d}",
                image=img,
                mask=mask if masks else None,
                label=label,
                sample=f"s{i % samples}" if samples else None,
                features=feats,
                suffix=suffix,
            )
    return out


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing a small synthetic dataset under ``tmp_path``; returns its folder.

    ``tiny_dataset(counts=(8, 6, 4), classes=TINY_CLASSES, size=(24, 40), masks=True,
    empty_masks=0, samples=2, pixel_size_nm=0.8, features=False, suffix=".png",
    unlabelled=0, seed=0, name="tiny")``: ``write_tiny_dataset`` into ``name-N``."""

    made: list[int] = []

    def make(counts: Sequence[int] = (8, 6, 4), *, name: str = "tiny", **kw: Any) -> Path:
        made.append(1)
        return write_tiny_dataset(tmp_path / f"{name}-{len(made)}", counts, name=name, **kw)

    return make


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Every test gets its own prepare cache (never ~/.cache)."""
    monkeypatch.setenv("LIPOCLASS_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.fixture
def vesicle_dir() -> Path:
    """The real EM vesicle set (skips when ../shared is absent)."""
    if not (VESICLE_DIR / "particles.csv").is_file():
        pytest.skip("shared vesicle data not available")
    return VESICLE_DIR


@pytest.fixture
def export_dir() -> Path:
    """The sample particle-export folder (skips when ../shared is absent)."""
    if not (EXPORT_DIR / "lamellarity_particles.json").is_file():
        pytest.skip("shared export sample not available")
    return EXPORT_DIR
