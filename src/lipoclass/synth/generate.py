"""``lipoclass synth``: plan a whole synthetic data set (class counts, micrographs), render
the particles in worker processes and write a particle-dataset folder atomically."""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lipoclass.data import DatasetWriter, ParticleDataset, load_dataset, read_image
from lipoclass.errors import LipoclassError
from lipoclass.outputs import check_output_folder
from lipoclass.synth.render import SampleParams, draw_sample, render_particle
from lipoclass.synth.scenes import PROBLEMS, plan_particle

__all__ = [
    "DEFAULT_N",
    "GENERATOR_VERSION",
    "SynthConfig",
    "class_counts",
    "contact_sheet",
    "parse_ratios",
    "render_one",
    "resolve_shares",
    "synthesize",
]

GENERATOR_VERSION = 1
DEFAULT_N = {"lamellarity": 14169, "encapsulation": 24918}
_ALL_CLASSES = sorted({c for classes, _ in PROBLEMS.values() for c in classes})

Ratios = Mapping[str, float] | Literal["balanced"]


def parse_ratios(text: str) -> Ratios:
    """Parse ``--ratios``: ``'balanced'`` or ``'name=share,...'`` (shares renormalised to 1).

    Names are checked against every known class here and against the problem's classes in
    ``synthesize``; classes left out get share 0 (they still get the minimum count).
    """
    text = text.strip()
    if text.lower() == "balanced":
        return "balanced"
    shares: dict[str, float] = {}
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise LipoclassError(f"--ratios: {item!r} is not of the form name=share")
        if name not in _ALL_CLASSES:
            raise LipoclassError(
                f"--ratios: unknown class {name!r} (known: {', '.join(_ALL_CLASSES)})"
            )
        if name in shares:
            raise LipoclassError(f"--ratios: class {name!r} given twice")
        try:
            v = float(value)
        except ValueError:
            raise LipoclassError(
                f"--ratios: share {value.strip()!r} of {name} is not a number"
            ) from None
        if not math.isfinite(v) or v < 0:
            raise LipoclassError(f"--ratios: share of {name} must be >= 0, got {value.strip()}")
        shares[name] = v
    if not shares:
        raise LipoclassError("--ratios: empty; give 'balanced' or name=share,...")
    total = sum(shares.values())
    if total <= 0:
        raise LipoclassError("--ratios: the shares sum to 0")
    return {k: v / total for k, v in shares.items()}


@dataclass(frozen=True)
class SynthConfig:
    """Settings of one synthetic data set. ``shares`` is per class in the problem's class
    order (None: the thesis' shares); ``min_count`` is the guaranteed count per class (capped
    at n // classes) so that stratified 5-fold CV works."""

    problem: str = "lamellarity"
    n: int | None = None
    seed: int = 0
    shares: tuple[float, ...] | None = None
    min_count: int = 25
    tiff16: bool = False
    workers: int | None = None
    sample_size: tuple[int, int] = (50, 200)  # particles per micrograph (inclusive range)
    contact_grid: int = 6

    def __post_init__(self) -> None:
        if self.problem not in PROBLEMS:
            raise ValueError(f"problem must be one of {', '.join(PROBLEMS)}, got {self.problem!r}")
        n_cls = len(PROBLEMS[self.problem][0])
        if self.n is not None and self.n < n_cls:
            raise ValueError(f"n must be at least {n_cls} (one per class), got {self.n}")
        if self.shares is not None:
            if len(self.shares) != n_cls:
                raise ValueError(f"shares needs {n_cls} values, got {len(self.shares)}")
            if any(not math.isfinite(s) or s < 0 for s in self.shares) or sum(self.shares) <= 0:
                raise ValueError(f"shares must be >= 0 with a positive sum, got {self.shares}")
        if self.min_count < 0:
            raise ValueError(f"min_count must be >= 0, got {self.min_count}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        lo, hi = self.sample_size
        if not 1 <= lo <= hi:
            raise ValueError(f"sample_size must be 1 <= lo <= hi, got {self.sample_size}")
        if not 1 <= self.contact_grid <= 20:
            raise ValueError(f"contact_grid must be 1..20, got {self.contact_grid}")

    @property
    def classes(self) -> tuple[str, ...]:
        return PROBLEMS[self.problem][0]

    @property
    def size(self) -> int:
        return DEFAULT_N[self.problem] if self.n is None else self.n

    def resolved_shares(self) -> np.ndarray:
        s = np.asarray(self.shares if self.shares is not None else PROBLEMS[self.problem][1], float)
        return s / s.sum()


def class_counts(shares: Sequence[float] | np.ndarray, n: int, min_count: int) -> np.ndarray:
    """Integer counts per class summing to ``n``: largest-remainder rounding of
    ``shares * n``, then every class raised to ``min(min_count, n // classes)`` by taking
    from the classes with the most to spare."""
    s = np.asarray(shares, dtype=float)
    s = s / s.sum()
    ideal = s * n
    counts = np.floor(ideal).astype(np.int64)
    order = np.argsort(-(ideal - counts), kind="stable")
    counts[order[: n - int(counts.sum())]] += 1
    floor_ = min(min_count, n // len(s))
    while (counts < floor_).any():
        need = int(np.argmin(counts))
        give = int(np.argmax(counts - floor_))
        counts[need] += 1
        counts[give] -= 1
    return counts


def _particle_rng(seed: int, i: int) -> np.random.Generator:
    # child i of SeedSequence(seed).spawn(2)[1].spawn(n): independent per particle and the
    # same whichever worker renders it
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, i)))


def render_one(
    problem: str, label: str, sample: SampleParams, seed: int, i: int
) -> tuple[np.ndarray, np.ndarray]:
    """Render particle ``i`` of a data set: (grey image (H, W) float64 0-255, mask bool)."""
    rng = _particle_rng(seed, i)
    return render_particle(rng, plan_particle(rng, problem, label, sample), sample)


def _quantise(img: np.ndarray, tiff16: bool) -> np.ndarray:
    if tiff16:  # same grey scale, 256x finer steps
        return np.clip(np.rint(img * 256.0), 0, 65535).astype(np.uint16)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _render_chunk(job: dict[str, Any]) -> int:
    """Worker: render and write particles [start, stop) straight into the staging folder."""
    from PIL import Image

    staging = Path(job["staging"])
    for k, i in enumerate(range(job["start"], job["stop"])):
        img, mask = render_one(job["problem"], job["labels"][k], job["samples"][k], job["seed"], i)
        name = job["names"][k]
        if job["tiff16"]:
            import tifffile

            tifffile.imwrite(staging / "images" / f"{name}.tif", _quantise(img, True))
        else:
            Image.fromarray(_quantise(img, False)).save(
                staging / "images" / f"{name}.png", compress_level=1
            )
        Image.fromarray(mask.astype(np.uint8) * 255).save(
            staging / "masks" / f"{name}.png", compress_level=1
        )
    return job["stop"] - job["start"]


def contact_sheet(
    images: Sequence[np.ndarray], title: str, path: Path, grid: int = 6, tile: int = 112
) -> None:
    """A ``grid`` x ``grid`` sheet of example crops (each fitted into ``tile`` px, aspect
    kept) with a title line, written as PNG to ``path`` (temp name, then rename)."""
    from PIL import Image, ImageDraw

    pad, head = 4, 18
    side = grid * (tile + pad) + pad
    sheet = Image.new("L", (side, side + head), 40)
    ImageDraw.Draw(sheet).text((pad, 3), title, fill=235)
    for k, arr in enumerate(images[: grid * grid]):
        a = np.asarray(arr, dtype=np.float64)
        if a.max() > 255:  # 16-bit images: back to 8 bit for display
            a = a / 256.0
        im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
        im.thumbnail((tile, tile), Image.Resampling.LANCZOS)
        x = pad + (k % grid) * (tile + pad) + (tile - im.width) // 2
        y = head + pad + (k // grid) * (tile + pad) + (tile - im.height) // 2
        sheet.paste(im, (x, y))
    tmp = path.with_name(f".{path.name}.tmp")
    sheet.save(tmp, format="PNG")
    os.replace(tmp, path)


def _plan_samples(
    rng: np.random.Generator, n: int, size: tuple[int, int]
) -> tuple[np.ndarray, list[SampleParams]]:
    """Consecutive groups of ``size`` particles form micrographs; returns (N,) sample index
    per particle and each sample's imaging conditions."""
    lo, hi = size
    bounds = [0]
    while bounds[-1] < n:
        bounds.append(bounds[-1] + int(rng.integers(lo, hi + 1)))
    bounds[-1] = n
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < lo:  # fold a short tail into the last
        bounds.pop(-2)
    index = np.zeros(n, dtype=np.int64)
    for s, (a, b) in enumerate(itertools.pairwise(bounds)):
        index[a:b] = s
    return index, [draw_sample(rng) for _ in range(len(bounds) - 1)]


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def resolve_shares(problem: str, ratios: Ratios | None) -> tuple[float, ...] | None:
    """Class shares in the problem's class order from ``--ratios`` ("balanced", a class ->
    share mapping, or None for the thesis shares); LipoclassError for an unknown problem or
    class."""
    if problem not in PROBLEMS:
        raise LipoclassError(f"unknown problem {problem!r} (choose {', '.join(PROBLEMS)})")
    classes = PROBLEMS[problem][0]
    if ratios is None:
        return None
    if ratios == "balanced":
        return tuple(1.0 for _ in classes)
    bad = [c for c in ratios if c not in classes]
    if bad:
        raise LipoclassError(
            f"--ratios: {bad[0]!r} is not a {problem} class ({', '.join(classes)})"
        )
    return tuple(float(ratios.get(c, 0.0)) for c in classes)


def synthesize(
    problem: str,
    out: str | os.PathLike[str],
    *,
    n: int | None = None,
    seed: int = 0,
    ratios: Ratios | None = None,
    tiff16: bool = False,
    workers: int | None = None,
    min_count: int = 25,
    progress: bool = False,
) -> ParticleDataset:
    """Simulate a liposome data set for ``problem`` ('lamellarity' or 'encapsulation') into
    the new folder ``out`` and return it loaded. Deterministic for a given seed whatever
    the number of worker processes."""
    shares = resolve_shares(problem, ratios)
    classes = PROBLEMS[problem][0]
    try:
        cfg = SynthConfig(
            problem=problem, n=n, seed=seed, shares=shares, min_count=min_count,
            tiff16=tiff16, workers=workers,
        )  # fmt: skip
    except ValueError as exc:
        raise LipoclassError(f"synth: {exc}") from None
    out = Path(out)
    check_output_folder(out, allow_existing_kind="dataset")  # DatasetWriter refuses it too
    total = cfg.size

    # plan: labels (shuffled), micrographs and their conditions; cheap, in this process
    plan_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    counts = class_counts(cfg.resolved_shares(), total, cfg.min_count)
    labels = np.repeat(np.arange(len(classes)), counts)[plan_rng.permutation(total)]
    sample_idx, samples = _plan_samples(plan_rng, total, cfg.sample_size)
    width = max(5, len(str(total)))
    names = [f"{i + 1:0{width}d}" for i in range(total)]
    sample_names = [f"mic{s + 1:04d}" for s in range(len(samples))]
    suffix = ".tif" if cfg.tiff16 else ".png"

    n_workers = min(cfg.workers or _default_workers(), max(1, total // 50))
    chunk = max(20, min(250, math.ceil(total / (n_workers * 8))))

    with DatasetWriter(
        out,
        name=out.name,
        classes=classes,
        description=f"synthetic {problem} liposome crops (lipoclass synth, seed {seed})",
        source=f"lipoclass.synth generator v{GENERATOR_VERSION}",
        licence="CC0-1.0 (synthetic)",
        extra={"synthetic": True, "problem": problem, "seed": seed, "counts": counts.tolist()},
    ) as writer:
        jobs = [
            {"staging": str(writer.staging), "problem": problem, "seed": seed,
             "tiff16": cfg.tiff16, "start": a, "stop": min(a + chunk, total),
             "labels": [classes[j] for j in labels[a : a + chunk]],
             "samples": [samples[s] for s in sample_idx[a : a + chunk]],
             "names": names[a : a + chunk]}
            for a in range(0, total, chunk)
        ]  # fmt: skip
        _render_all(jobs, n_workers, f"synth {problem}" if progress else None, total)
        for i in range(total):
            s = int(sample_idx[i])
            writer.add_row(
                names[i],
                f"images/{names[i]}{suffix}",
                f"masks/{names[i]}.png",
                label=classes[int(labels[i])],
                pixel_size_nm=round(samples[s].pixel_size_nm, 4),
                sample=sample_names[s],
                micrograph=sample_names[s],
            )
        for c, cls in enumerate(classes):
            members = np.flatnonzero(labels == c)[: cfg.contact_grid**2]
            _contact(writer.staging, [f"images/{names[i]}{suffix}" for i in members],
                     f"{problem}: {cls}", int(counts[c]), f"contact_{cls}.png",
                     cfg.contact_grid)  # fmt: skip
    return load_dataset(out)


def _render_all(jobs: list[dict[str, Any]], n_workers: int, desc: str | None, total: int) -> None:
    """Render every chunk job (in ``n_workers`` processes when more than 1), with a
    progress bar titled ``desc`` (None: no bar)."""
    bar = None
    if desc is not None:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, unit="particle")
    if n_workers == 1:
        for job in jobs:
            done = _render_chunk(job)
            if bar is not None:
                bar.update(done)
    else:
        with ProcessPoolExecutor(max_workers=n_workers) as pool:
            for done in pool.map(_render_chunk, jobs):
                if bar is not None:
                    bar.update(done)
    if bar is not None:
        bar.close()


def _contact(staging: Path, rels: list[str], title: str, count: int, name: str, grid: int) -> None:
    """One class's contact sheet from the first rendered images ``rels``."""
    examples = [read_image(staging / rel) for rel in rels]
    contact_sheet(examples, f"{title} (first {len(examples)} of {count})", staging / name,
                  grid=grid)  # fmt: skip
