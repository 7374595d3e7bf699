"""Finding liposomes on a micrograph when nobody has annotated it: a classical, documented
pipeline (docs/micrographs.md) that writes instance label images (0 background, 1..K).

1. **Band-pass.** Gaussian smoothing at ``smooth`` px (shot noise) minus a Gaussian at
   4x that scale (ice-thickness gradients, carbon, the low-frequency background), divided by
   a robust noise level (1.4826 x median absolute deviation): a z-score of local darkness.
   Membranes, seen edge-on at the rim of a vesicle, are the darkest thin structures.
2. **Ring evidence.** Hysteresis threshold of that z-score (``threshold`` and 0.5x it): dark
   lines that reach the high threshold somewhere and stay above the low one; bits shorter
   than a small vesicle's circumference are dropped, short gaps are bridged by a closing.
3. **Fill.** Closed rings are filled (``binary_fill_holes``): every vesicle becomes a disk,
   whatever its interior (empty, multilamellar, full); open curves (carbon edge, broken
   bits) do not fill and an opening removes them.
4. **Seeds and split.** Maxima of the (smoothed) distance transform, at least 0.35 minimum
   diameters apart, are seeds; a watershed of the negative distance from the seeds, inside
   the filled mask, splits touching and overlapping vesicles along their neck.
5. **Checks.** Instances are kept when their area fits the diameter range and they are
   convex enough (solidity >= ``min_solidity``), so irregular ice and carbon bits go.

Vesicles cut by the micrograph edge do not close and are mostly not found (they would be
skipped by cropping anyway). Assumes dark particles on a lighter background (TEM bright
field); ``invert=True`` for the opposite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lipoclass.errors import LipoclassError
from lipoclass.micrograph.io import Micrograph

__all__ = ["DIAMETER_UNITS", "DetectConfig", "detect_micrograph", "detect_particles"]

DIAMETER_UNITS = ("nm", "px")


@dataclass(frozen=True)
class DetectConfig:
    """Detector settings. Diameters in ``unit`` (nm needs the micrograph's pixel size);
    ``smooth``: noise smoothing sigma in px (None: 1.5 px, or 1.2 nm when the pixel size is
    known, clipped to 1-4 px); ``threshold``: z-score a membrane must reach."""

    min_diameter: float = 20.0
    max_diameter: float = 300.0
    unit: str = "nm"
    smooth: float | None = None
    threshold: float = 3.0
    min_solidity: float = 0.85
    invert: bool = False

    def __post_init__(self) -> None:
        if self.unit not in DIAMETER_UNITS:
            raise ValueError(f"unit must be one of {', '.join(DIAMETER_UNITS)}, got {self.unit!r}")
        if not 0 < self.min_diameter < self.max_diameter:
            raise ValueError(
                f"need 0 < min diameter < max diameter, got {self.min_diameter}, "
                f"{self.max_diameter}"
            )
        if self.smooth is not None and not 0.3 <= self.smooth <= 20:
            raise ValueError(f"smooth must be 0.3..20 px, got {self.smooth}")
        if not 0.5 <= self.threshold <= 20:
            raise ValueError(f"threshold must be 0.5..20, got {self.threshold}")
        if not 0.0 <= self.min_solidity <= 1.0:
            raise ValueError(f"min_solidity must be in [0, 1], got {self.min_solidity}")

    def diameters_px(self, pixel_size_nm: float | None, where: str = "") -> tuple[float, float]:
        """(min, max) diameter in px for a micrograph of ``pixel_size_nm``."""
        if self.unit == "px":
            return self.min_diameter, self.max_diameter
        if pixel_size_nm is None:
            raise LipoclassError(
                f"{where or 'micrograph'}: pixel size unknown, so diameters in nm cannot be "
                f"converted; give --pixel-size NM or diameters in px (e.g. 16px)"
            )
        return self.min_diameter / pixel_size_nm, self.max_diameter / pixel_size_nm


def detect_particles(
    image: np.ndarray, cfg: DetectConfig, pixel_size_nm: float | None = None, where: str = ""
) -> np.ndarray:
    """Instance labels (H, W) int32 (0 background, 1..K) of the vesicles on ``image`` (H, W)."""
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.filters import apply_hysteresis_threshold
    from skimage.measure import regionprops
    from skimage.morphology import disk, remove_small_objects
    from skimage.segmentation import watershed

    dmin, dmax = cfg.diameters_px(pixel_size_nm, where)
    if cfg.smooth is not None:
        sigma = cfg.smooth
    elif pixel_size_nm is not None:
        sigma = float(np.clip(1.2 / pixel_size_nm, 1.0, 4.0))
    else:
        sigma = 1.5
    img = np.asarray(image, dtype=np.float32)
    if cfg.invert:
        img = -img
    # 1. band-pass and robust z-score of darkness, (H, W) float32
    band = ndi.gaussian_filter(img, 4.0 * sigma) - ndi.gaussian_filter(img, sigma)
    med = float(np.median(band))
    mad = float(np.median(np.abs(band - med))) * 1.4826
    if not mad > 0:
        return np.zeros(img.shape, dtype=np.int32)
    z = (band - med) / mad
    # 2. ring evidence: hysteresis, small bits dropped, small gaps closed
    ring = apply_hysteresis_threshold(z, 0.5 * cfg.threshold, cfg.threshold)
    ring = remove_small_objects(ring, max_size=max(8, int(math.pi * dmin * 0.5)))
    ring = ndi.binary_closing(ring, structure=disk(1), iterations=2)
    # 3. fill closed rings; an opening removes open curves and thin spurs
    filled = ndi.binary_fill_holes(ring)
    r_open = max(1, int(round(dmin / 8)))
    filled = ndi.binary_opening(filled, structure=disk(r_open))
    if not filled.any():
        return np.zeros(img.shape, dtype=np.int32)
    # 4. seeds: maxima of the distance transform; watershed splits touching vesicles
    dist = ndi.distance_transform_edt(filled).astype(np.float32)
    dist_s = ndi.gaussian_filter(dist, 1.0)
    comp, _ = ndi.label(filled)
    peaks = peak_local_max(
        dist_s,
        min_distance=max(2, int(round(0.35 * dmin))),
        threshold_abs=max(1.0, 0.3 * dmin / 2),
        labels=comp,
        exclude_border=False,
    )  # (P, 2) row, col
    markers = np.zeros(img.shape, dtype=np.int32)
    markers[peaks[:, 0], peaks[:, 1]] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    seg = watershed(-dist_s, markers, mask=filled)
    # 5. keep plausible vesicles, renumbered 1..K
    a_min = math.pi * (dmin / 2) ** 2 * 0.5
    a_max = math.pi * (dmax / 2) ** 2 * 1.3
    out = np.zeros(img.shape, dtype=np.int32)
    k = 0
    for rp in regionprops(seg):
        if not a_min <= rp.area <= a_max or rp.solidity < cfg.min_solidity:
            continue
        k += 1
        sl = rp.slice
        out[sl][rp.image] = k
    return out


def detect_micrograph(mic: Micrograph, cfg: DetectConfig) -> np.ndarray:
    """``detect_particles`` on a read micrograph (its pixel size, its file in messages)."""
    return detect_particles(mic.image, cfg, mic.pixel_size_nm, str(mic.path))
