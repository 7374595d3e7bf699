"""Finding liposomes on a micrograph when nobody has annotated it: a classical, documented
pipeline (docs/micrographs.md) that writes instance label images (0 background, 1..K).

1. **Band-pass.** Gaussian smoothing at ``smooth`` px (shot noise) minus a Gaussian at 4x
   that scale (ice-thickness gradients, carbon, the low-frequency background), divided by a
   robust noise level (1.4826 x median absolute deviation): a z-score of local darkness.
   Membranes, seen edge-on at the rim of a vesicle, are the darkest thin structures.
2. **Ring filter bank (a circular Hough transform by convolution).** The z-score map is
   correlated with thin rings of every radius in the diameter range (4 % steps), computed in
   Fourier space (the transform of a ring of radius r is J0(2 pi k r), times a Gaussian for
   its width), one octave of radii at a time on a block-averaged map (radius >= 8 px there),
   so 4k micrographs stay cheap. Each radius' response is turned into a significance by its
   own robust noise level, so radii and octaves compare; a circle integrates the evidence
   along its whole circumference, which makes noisy, faint or broken membranes detectable.
3. **Seeds.** Local maxima of the best significance over radii above ``threshold`` are
   candidate (centre, radius) pairs; taken in order of significance, a candidate is dropped
   when it overlaps an accepted one by more than touching and overlapping vesicles do
   (centre distance < 0.6 x radii sum) or lies inside it (inner shells of multilamellar
   vesicles, vesicles inside vesicles).
4. **Local segmentation.** Each seed's radius is refined per direction: along 48 rays the
   darkest point (membrane) within +-15 % of the radius is taken, the 48 radii are median
   filtered around the circle and the outline is put half a bilayer (2.3 nm) outside the
   membrane's centre line. A pixel inside several outlines (touching, overlapping vesicles)
   goes to the one whose outline it is relatively deepest in, which splits pairs along the
   line between them, like a watershed from the seeds.

Vesicles whose centre lies outside the image are not found. Assumes dark particles on a
lighter background (TEM bright field); ``invert=True`` for the opposite.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipoclass.errors import LipoclassError
from lipoclass.micrograph.io import Micrograph, MicrographWarning

__all__ = [
    "DIAMETER_UNITS",
    "DetectConfig",
    "detect_micrograph",
    "detect_particles",
    "detect_to_folder",
]

DIAMETER_UNITS = ("nm", "px")


@dataclass(frozen=True)
class DetectConfig:
    """Detector settings. Diameters in ``unit`` (nm needs the micrograph's pixel size);
    ``smooth``: noise smoothing sigma in px (None: 1.5 px, or 1.2 nm when the pixel size is
    known, clipped to 1-4 px); ``threshold``: significance (robust z) of a ring."""

    min_diameter: float = 20.0
    max_diameter: float = 300.0
    unit: str = "nm"
    smooth: float | None = None
    threshold: float = 6.0
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
        if not 1.0 <= self.threshold <= 100:
            raise ValueError(f"threshold must be 1..100, got {self.threshold}")

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


def _zscore(img: np.ndarray, sigma: float) -> np.ndarray:
    """Band-passed darkness as a robust z-score (H, W) float32."""
    from scipy import ndimage as ndi

    band = ndi.gaussian_filter(img, 4.0 * sigma) - ndi.gaussian_filter(img, sigma)
    med = float(np.median(band))
    mad = float(np.median(np.abs(band - med), overwrite_input=True)) * 1.4826
    return ((band - med) / mad if mad > 0 else band * 0.0).astype(np.float32)


def _ring_candidates(
    z: np.ndarray, rmin: float, rmax: float, threshold: float
) -> list[tuple[float, float, float, float]]:
    """(significance, cy, cx, radius) of ring-filter maxima, all in full-resolution px."""
    from scipy import fft as sfft
    from scipy import ndimage as ndi
    from scipy import special

    h, w = z.shape
    out: list[tuple[float, float, float, float]] = []
    r_lo = rmin
    while r_lo < rmax:
        f = max(1, int(r_lo // 8))  # block size: radius >= 8 px on the averaged map
        r_hi = min(rmax, 2.0 * r_lo)
        hh, ww = h // f, w // f
        if hh < 4 or ww < 4:
            break
        zd = z[: hh * f, : ww * f].reshape(hh, f, ww, f).mean(axis=(1, 3))  # (hh, ww)
        pad = int(r_hi / f) + 4  # zero padding against wrap-around
        fh = sfft.next_fast_len(hh + pad, real=True)
        fw = sfft.next_fast_len(ww + pad, real=True)
        spec = sfft.rfft2(zd, s=(fh, fw))  # (fh, nw) complex64: float32 throughout
        # the kernel depends on |k| only: evaluate it on the distinct |k| of the grid's
        # non-negative quarter (n1, nw), whose rows mirror to the negative frequencies
        n1, nw = fh // 2 + 1, fw // 2 + 1
        g = math.gcd(fh * fh, fw * fw)
        iy, ix = np.arange(n1, dtype=np.int64), np.arange(nw, dtype=np.int64)
        key = iy[:, None] ** 2 * (fw * fw // g) + ix[None, :] ** 2 * (fh * fh // g)
        kq, inv = np.unique(key, return_inverse=True)  # exact integer (fh fw |k|)^2 / g
        kq = np.sqrt(kq * float(g)) / (fh * fw)  # (U,) distinct |k|, cycles/px
        inv = inv.reshape(n1, nw)
        width = np.exp(-2.0 * np.pi**2 * 0.8**2 * kq * kq)  # ring profile sigma 0.8 px
        prod = np.empty_like(spec)
        best = np.full((hh, ww), -np.inf, dtype=np.float32)
        best_r = np.zeros((hh, ww), dtype=np.float32)
        r = r_lo
        while r < r_hi:
            kern = (special.j0(2.0 * np.pi * kq * (r / f)) * width).astype(np.float32)[inv]
            np.multiply(spec[:n1], kern, out=prod[:n1])  # FT of a thin ring
            np.multiply(spec[n1:], kern[fh - n1 : 0 : -1], out=prod[n1:])
            resp = sfft.irfft2(prod, s=(fh, fw))[:hh, :ww]  # float32
            sub = resp[::3, ::3].copy()
            med = float(np.median(sub, overwrite_input=True))
            np.abs(np.subtract(sub, med, out=sub), out=sub)
            mad = float(np.median(sub, overwrite_input=True)) * 1.4826
            if mad > 0:
                resp -= med
                resp /= mad  # significance, in place
                np.copyto(best_r, r, where=resp > best)
                np.maximum(best, resp, out=best)
            r *= 1.04
        peak = best == ndi.maximum_filter(best, size=max(3, int(0.5 * r_lo / f)))
        for y, x in np.argwhere(peak & (best > threshold)):
            out.append(
                (float(best[y, x]), (y + 0.5) * f - 0.5, (x + 0.5) * f - 0.5, float(best_r[y, x]))
            )
        r_lo = r_hi
    return out


def _suppress(
    cands: list[tuple[float, float, float, float]],
) -> list[tuple[float, float, float, float]]:
    """Greedy non-maximum suppression of circles (see step 3 of the module docstring)."""
    kept: list[tuple[float, float, float, float]] = []
    for s, y, x, r in sorted(cands, reverse=True):
        ok = True
        for _s2, y2, x2, r2 in kept:
            d = math.hypot(y - y2, x - x2)
            if d < 0.6 * (r + r2) or d + r <= 1.1 * r2 or d + r2 <= 1.1 * r:
                ok = False
                break
        if ok:
            kept.append((s, y, x, r))
    return kept


_N_RAYS = 48


def _refine_radii(z: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    """Membrane radius along 48 rays (48,) px: darkest point within +-15 % of ``r``."""
    from scipy import ndimage as ndi

    theta = np.linspace(0, 2 * np.pi, _N_RAYS, endpoint=False)
    steps = np.linspace(0.85 * r, 1.15 * r, 13)  # (S,)
    ys = cy + steps[None, :] * np.sin(theta)[:, None]  # (48, S)
    xs = cx + steps[None, :] * np.cos(theta)[:, None]
    vals = ndi.map_coordinates(z, [ys.ravel(), xs.ravel()], order=1, mode="nearest")
    vals = vals.reshape(_N_RAYS, steps.size)
    radii = steps[np.argmax(vals, axis=1)]
    return ndi.median_filter(radii, size=7, mode="wrap")


def detect_particles(
    image: np.ndarray, cfg: DetectConfig, pixel_size_nm: float | None = None, where: str = ""
) -> np.ndarray:
    """Instance labels (H, W) int32 (0 background, 1..K) of the vesicles on ``image`` (H, W)."""
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
    h, w = img.shape
    labels = np.zeros((h, w), dtype=np.int32)
    z = _zscore(img, sigma)
    if not np.any(z):
        return labels
    rmin, rmax = max(dmin / 2, 4.0), max(dmax / 2, 5.0)
    seeds = _suppress(_ring_candidates(z, rmin, rmax, cfg.threshold))
    offset = 2.3 / pixel_size_nm if pixel_size_nm is not None else 1.5  # half a bilayer
    best = np.full((h, w), np.inf, dtype=np.float32)
    theta = np.linspace(0, 2 * np.pi, _N_RAYS, endpoint=False)
    k = 0
    for _s, cy, cx, r in seeds:
        if not (0 <= cy <= h - 1 and 0 <= cx <= w - 1):
            continue
        radii = _refine_radii(z, cy, cx, r) + offset  # (48,) outline radius per ray
        ext = float(radii.max()) + 2
        y0, y1 = max(0, int(cy - ext)), min(h, math.ceil(cy + ext) + 1)
        x0, x1 = max(0, int(cx - ext)), min(w, math.ceil(cx + ext) + 1)
        yy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
        xx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
        rho = np.sqrt(yy * yy + xx * xx)  # (h', w')
        ang = np.mod(np.arctan2(yy, xx), 2 * np.pi)
        # outline radius at every pixel's angle, interpolated around the circle
        rad = np.interp(ang, np.r_[theta, 2 * np.pi], np.r_[radii, radii[0]])
        rel = rho / rad
        take = (rel <= 1.0) & (rel < best[y0:y1, x0:x1])
        if not take.any():
            continue
        k += 1
        labels[y0:y1, x0:x1][take] = k
        best[y0:y1, x0:x1][take] = rel[take]
    # renumber 1..K without gaps (an instance may have lost all its pixels to others)
    present = np.unique(labels)
    present = present[present > 0]
    lut = np.zeros(k + 1, dtype=np.int32)
    lut[present] = np.arange(1, present.size + 1, dtype=np.int32)
    return lut[labels]


def detect_micrograph(mic: Micrograph, cfg: DetectConfig) -> np.ndarray:
    """``detect_particles`` on a read micrograph (its pixel size, its file in messages)."""
    return detect_particles(mic.image, cfg, mic.pixel_size_nm, str(mic.path))


def detect_to_folder(
    micrographs: Sequence[str | os.PathLike[str]],
    out: Path,
    cfg: DetectConfig,
    *,
    pixel_size_nm: float | None = None,
) -> dict[str, int]:
    """Detect on every micrograph; write ``out/<stem>.tif`` label images and
    ``out/detections.csv`` (micrograph, instance, x, y, diameter_px, diameter_nm) into a
    staging folder renamed to ``out`` at the end. Returns particles per micrograph. All
    paths and pixel sizes are checked before the first detection."""
    from scipy import ndimage as ndi

    from lipoclass.data import publish_folder
    from lipoclass.micrograph.io import (
        check_micrograph_path,
        read_micrograph,
        resolve_pixel_size,
        write_label_image,
    )

    out = Path(out)
    if out.exists():
        raise LipoclassError(f"{out}: already exists (choose another --out)")
    paths = [check_micrograph_path(m) for m in micrographs]
    stems: dict[str, Path] = {}
    for p in paths:
        if p.stem in stems:
            raise LipoclassError(f"{p}: same name as {stems[p.stem]} (label images would clash)")
        stems[p.stem] = p
    need_px = cfg.unit == "nm"
    pxs = {p: resolve_pixel_size(p, pixel_size_nm, need_px) for p in paths}
    for p in paths:
        cfg.diameters_px(pxs[p], str(p))  # nm without a pixel size: fail before any work
    staging = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    counts: dict[str, int] = {}
    try:
        staging.mkdir(parents=True)
        rows: list[dict[str, object]] = []
        for p in paths:
            mic = read_micrograph(p, pixel_size_nm=pxs[p], require_pixel_size=False)
            labels = detect_micrograph(mic, cfg)
            write_label_image(staging / f"{mic.name}.tif", labels, mic.pixel_size_nm)
            n = int(labels.max(initial=0))
            counts[mic.name] = n
            if n == 0:
                warnings.warn(MicrographWarning(f"{p}: no particle found"), stacklevel=2)
            for i, sl in enumerate(ndi.find_objects(labels), start=1):
                if sl is None:
                    continue
                inst = labels[sl] == i
                area = int(inst.sum())
                filled = int(mic.filled[sl][inst].sum()) if mic.filled is not None else 0
                d = 2.0 * math.sqrt(area / math.pi)
                rows.append(
                    {"micrograph": mic.name, "instance": i,
                     "x": round((sl[1].start + sl[1].stop - 1) / 2, 1),
                     "y": round((sl[0].start + sl[0].stop - 1) / 2, 1),
                     "diameter_px": round(d, 1),
                     "diameter_nm": round(d * mic.pixel_size_nm, 1) if mic.pixel_size_nm else "",
                     "filled_px": filled}
                )  # fmt: skip
        cols = ["micrograph", "instance", "x", "y", "diameter_px", "diameter_nm", "filled_px"]
        with (staging / "detections.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)
        publish_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return counts
