"""``fingerprint``: what a dataset looks like, measured once, for the self-configuring recipe
(``lipoclass.recipe``, docs/cnn.md, Self-configuring recipe).

Particle size in px (the mask's bounding box, else the whole crop) and in nm where the pixel
size is known, the crop sizes, counts per class and imbalance, pixel sizes and grey-level
statistics. Images are read once; above ``max_images`` a seeded random sample of that many
particles is measured (the counts always use every particle)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lipoclass.data.dataset import ParticleDataset
from lipoclass.data.prepare import _bbox, read_particle

__all__ = ["Fingerprint", "Quantiles", "fingerprint"]

#: pixel sizes whose max / min exceeds this count as different magnifications
PIXEL_SIZE_TOLERANCE = 1.05


@dataclass(frozen=True)
class Quantiles:
    """Median and 5th / 95th percentile of a measure."""

    median: float
    p5: float
    p95: float

    @classmethod
    def of(cls, values: np.ndarray) -> Quantiles | None:
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        if not len(v):
            return None
        p5, med, p95 = np.percentile(v, [5, 50, 95])
        return cls(round(float(med), 3), round(float(p5), 3), round(float(p95), 3))


@dataclass(frozen=True)
class Fingerprint:
    """A dataset's fingerprint (``fingerprint``). Sizes are the longer side of a box in px.

    ``particle_px``: the particle (mask bounding box; the whole crop where there is no mask,
    ``size_source`` says which); ``particle_nm``: the same in nm for particles with a pixel
    size; ``crop_px``: the whole image; ``class_counts`` in ``classes`` order (labelled
    particles); ``imbalance``: largest / smallest present class; ``pixel_size_nm``:
    (median, min, max) or None; ``pixel_sizes_differ``: max / min > 1.05; ``grey``: median
    over particles of each image's mean and standard deviation, and the 1st / 99th
    percentile of all measured pixels; ``measured``: how many particles were read;
    ``pixel_size_known``: how many particles have a pixel size (None: not recorded, read as
    all)."""

    n_particles: int
    n_labelled: int
    classes: tuple[str, ...]
    class_counts: tuple[int, ...]
    imbalance: float
    masks: int
    size_source: str
    particle_px: Quantiles | None
    particle_nm: Quantiles | None
    crop_px: Quantiles | None
    class_particle_px: tuple[float | None, ...]
    pixel_size_nm: tuple[float, float, float] | None
    pixel_sizes_differ: bool
    grey: dict[str, float]
    measured: int
    pixel_size_known: int | None = None

    @property
    def all_masked(self) -> bool:
        return self.masks == self.n_particles

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"] = list(self.classes)
        d["class_counts"] = dict(zip(self.classes, self.class_counts))
        d["class_particle_px"] = dict(zip(self.classes, self.class_particle_px))
        return d

    def text(self) -> str:
        """A few human-readable lines."""

        def q(x: Quantiles | None, unit: str) -> str:
            return "unknown" if x is None else f"{x.median:g} {unit} (5-95%: {x.p5:g}-{x.p95:g})"

        counts = ", ".join(f"{c} {n}" for c, n in zip(self.classes, self.class_counts))
        px = (
            "unknown"
            if self.pixel_size_nm is None
            else f"{self.pixel_size_nm[0]:g} nm/px (range {self.pixel_size_nm[1]:g}-"
            f"{self.pixel_size_nm[2]:g}{', differ' if self.pixel_sizes_differ else ''})"
        )
        return "\n".join(
            [
                f"particles: {self.n_particles} ({self.n_labelled} labelled: {counts}; "
                f"imbalance {self.imbalance:.1f}:1), masks {self.masks}",
                f"particle size ({self.size_source}): {q(self.particle_px, 'px')}; "
                f"{q(self.particle_nm, 'nm')}",
                f"crop size: {q(self.crop_px, 'px')}; pixel size: {px}",
                f"grey levels: mean {self.grey.get('mean', float('nan')):.4g}, "
                f"std {self.grey.get('std', float('nan')):.4g}",
            ]
        )


def fingerprint(dataset: ParticleDataset, *, max_images: int = 2000, seed: int = 0) -> Fingerprint:
    """Measure ``dataset`` (reads at most ``max_images`` particles' images and masks, a
    seeded random sample when there are more; LipoclassError for unreadable files)."""
    if max_images < 1:
        raise ValueError(f"max_images must be at least 1, got {max_images}")
    parts = dataset.particles
    y = dataset.labels
    counts = np.bincount(y[y >= 0], minlength=len(dataset.classes)).astype(np.int64)
    present = counts[counts > 0]
    imbalance = float(present.max() / present.min()) if len(present) else 1.0
    pick = np.arange(len(parts))
    if len(pick) > max_images:
        pick = np.sort(np.random.default_rng(seed).choice(len(parts), max_images, replace=False))
    part_px = np.full(len(pick), np.nan)
    crop_px = np.full(len(pick), np.nan)
    nm = np.full(len(pick), np.nan)
    means, stds, lows, highs = [], [], [], []
    masked = 0
    for r, i in enumerate(pick):
        p = parts[int(i)]
        img, mask = read_particle(p)
        crop_px[r] = max(img.shape)
        box = _bbox(mask) if mask is not None else None
        if box is not None:
            masked += 1
            part_px[r] = max(box[1] - box[0], box[3] - box[2])
        else:
            part_px[r] = max(img.shape)
        if p.pixel_size_nm is not None:
            nm[r] = part_px[r] * p.pixel_size_nm
        v = img.astype(np.float64)
        means.append(float(v.mean()))
        stds.append(float(v.std()))
        lo, hi = np.percentile(v, [1, 99])
        lows.append(float(lo))
        highs.append(float(hi))
    n_masks = sum(p.mask is not None for p in parts)
    source = "mask" if masked == len(pick) else ("crop" if masked == 0 else "mask, else crop")
    yl = y[pick]
    per_class = tuple(
        None if not (yl == c).any() else round(float(np.nanmedian(part_px[yl == c])), 3)
        for c in range(len(dataset.classes))
    )
    px = np.array([p.pixel_size_nm for p in parts if p.pixel_size_nm is not None], dtype=float)
    px_stats = None
    differ = False
    if len(px):
        px_stats = (float(np.median(px)), float(px.min()), float(px.max()))
        differ = bool(px.max() / px.min() > PIXEL_SIZE_TOLERANCE)
    grey = (
        {}
        if not means
        else {
            "mean": float(np.median(means)),
            "std": float(np.median(stds)),
            "p1": float(np.median(lows)),
            "p99": float(np.median(highs)),
        }
    )
    return Fingerprint(
        n_particles=len(parts),
        n_labelled=int((y >= 0).sum()),
        classes=tuple(dataset.classes),
        class_counts=tuple(int(c) for c in counts),
        imbalance=round(imbalance, 3),
        masks=int(n_masks),
        size_source=source,
        particle_px=Quantiles.of(part_px),
        particle_nm=Quantiles.of(nm),
        crop_px=Quantiles.of(crop_px),
        class_particle_px=per_class,
        pixel_size_nm=px_stats,
        pixel_sizes_differ=differ,
        grey=grey,
        measured=len(pick),
        pixel_size_known=len(px),
    )
