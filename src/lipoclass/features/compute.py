"""Handcrafted particle features from image + mask (thesis section 3; choices in
docs/features.md).

Per particle, all vectorised with NumPy / SciPy (no per-pixel Python loops):

1. mask: the file's mask (nonzero = particle) or, without one, ``lipoclass.data.auto_mask``;
   largest connected component, holes filled; empty, tiny (< ``min_area`` px) or touching all
   four image borders -> the particle is reported in ``failed`` (never a NaN row);
2. work on a window around the particle big enough for every profile (faster on large crops);
3. intensities standardised per particle (mean 0, std 1 over the particle pixels) so that
   exposure / contrast differences between micrographs do not dominate;
4. signed distance to the mask boundary ``s`` (px, negative inside, 0 on the boundary) from one
   Euclidean distance transform, used by the edge profile, membrane thickness, SNR and the
   internal segmentation variance;
5. shape terms (area, perimeter, Feret, maximum width, moments) and the histogram always at
   full resolution; the window terms (profiles, membrane, SNR, internal variance) of particles
   larger than ``FeatureConfig.work_size`` (128 px) on k x k pixel blocks, for speed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import ndimage as ndi

from lipoclass.data.dataset import Particle, ParticleDataset
from lipoclass.data.parallel import parallel_map, warn_collected
from lipoclass.data.prepare import (
    auto_mask,
    dataset_fingerprint,
    default_cache_dir,
    read_particle,
)
from lipoclass.features.table import FeatureTable

__all__ = [
    "FeatureConfig",
    "compute_features",
    "feature_names",
    "features_without_mask",
    "particle_features",
]

_FEATURES_VERSION = 4  # bump when the values produced change (invalidates caches)
# the cache key also covers this module's source, so an edited formula never reads stale values
_CODE_HASH = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


@dataclass(frozen=True)
class FeatureConfig:
    """Settings of the handcrafted features.

    ``hist_range`` is in standard deviations of the particle's intensities (values outside
    fall in the end bins); ``radial_extent`` is the radial profile's reach in equivalent radii
    R = sqrt(area / pi); ``edge_range`` is the edge profile's signed-distance window, in R
    (``edge_units="radius"``) or in nm; ``default_pixel_size_nm`` is used when a particle has
    no pixel size. Particles whose bounding box is larger than ``work_size`` px get their
    window terms (profiles, membrane, SNR, internal variance) on k x k pixel blocks,
    k = ceil(side / work_size), for speed; a very large ``work_size`` turns this off."""

    hist_bins: int = 32
    hist_range: tuple[float, float] = (-3.0, 3.0)
    profile_bins: int = 16
    radial_extent: float = 1.25
    edge_bins: int = 16
    edge_range: tuple[float, float] = (-0.5, 0.25)
    edge_units: Literal["radius", "nm"] = "radius"
    min_area: int = 10
    default_pixel_size_nm: float = 1.0
    work_size: int = 128

    def __post_init__(self) -> None:
        for name in ("hist_bins", "profile_bins", "edge_bins"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 2 <= v <= 256:
                raise ValueError(f"{name} must be an integer between 2 and 256, got {v!r}")
        for name in ("hist_range", "edge_range"):
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"{name} must be (low, high) with low < high, got {(lo, hi)}")
        if not 0.5 <= self.radial_extent <= 4.0:
            raise ValueError(f"radial_extent must be in [0.5, 4], got {self.radial_extent}")
        if self.edge_units not in ("radius", "nm"):
            raise ValueError(f"edge_units must be 'radius' or 'nm', got {self.edge_units!r}")
        if not isinstance(self.min_area, int) or self.min_area < 3:
            raise ValueError(f"min_area must be an integer >= 3, got {self.min_area!r}")
        if not isinstance(self.work_size, int) or self.work_size < 16:
            raise ValueError(f"work_size must be an integer >= 16, got {self.work_size!r}")
        if not (math.isfinite(self.default_pixel_size_nm) and self.default_pixel_size_nm > 0):
            raise ValueError(
                f"default_pixel_size_nm must be positive, got {self.default_pixel_size_nm}"
            )


def feature_names(config: FeatureConfig | None = None) -> list[str]:
    """Column names, in the order of ``particle_features``' output."""
    cfg = config or FeatureConfig()
    names = ["area", "perimeter", "circularity", "max_width_nm", "diameter_px", "length_nm"]
    names += [f"hist_{i:02d}" for i in range(cfg.hist_bins)]
    names += ["mu20", "mu02", "mu30", "mu03"] + [f"hu{i}" for i in range(1, 8)]
    names += [f"radial_{i:02d}" for i in range(cfg.profile_bins)]
    names += [f"edge_{i:02d}" for i in range(cfg.edge_bins)]
    names += ["membrane_thickness_nm", "snr_membrane_db", "internal_variance"]
    return names


# --------------------------------------------------------------------------- one particle


_CROSS = ndi.generate_binary_structure(2, 1)  # (3, 3) 4-connectivity, label's default

# 2x2 configuration codes (pixel + 2 up + 4 left + 8 up-left) for the Euler number with
# 8-connected objects / 4-connected holes: (n1 - n3 - 2 n_diagonal) / 4
_EULER8 = np.array([0, 1, 1, 0, 1, 0, -2, -1, 1, -2, 0, -1, 0, -1, -1, 0]) / 4.0

# Crofton perimeter (4 directions), the look-up table of scikit-image's ``perimeter_crofton``
# indexed by the same 2x2 configuration code
_S2 = math.sqrt(2.0)
_CROFTON = np.array(
    [0, np.pi / 4 * (1 + 1 / _S2), np.pi / (4 * _S2), np.pi / (2 * _S2), 0,
     np.pi / 4 * (1 + 1 / _S2), 0, np.pi / (4 * _S2), np.pi / 4, np.pi / 2,
     np.pi / (4 * _S2), np.pi / (4 * _S2), np.pi / 4, np.pi / 2, 0, 0]
)  # fmt: skip


def _pad_codes(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mask ``m`` (h, w) bool padded by one zero pixel (h+2, w+2) and the counts (16,) of its
    2x2 configuration codes (for the Crofton perimeter and the Euler number)."""
    mp = np.zeros((m.shape[0] + 2, m.shape[1] + 2), dtype=bool)  # (h+2, w+2)
    mp[1:-1, 1:-1] = m
    u = mp.view(np.uint8)
    code = u[:-1, :-1] << 1  # (h+1, w+1), Horner: ((8 ul + 4 l) + 2 up) + pixel, in place
    code += u[1:, :-1]
    code <<= 1
    code += u[:-1, 1:]
    code <<= 1
    code += u[1:, 1:]
    return mp, np.bincount(code.ravel(), minlength=16)


_RUN_STARTS = [1, 3, 9, 11]  # 2x2 codes whose pixel is set and its left neighbour is not


def _clean_mask(
    mask: np.ndarray, min_area: int
) -> tuple[np.ndarray, tuple[int, int], np.ndarray, np.ndarray] | str:
    """Largest component of ``mask`` (H, W) with holes filled, as (bbox crop (h, w) bool,
    (row0, col0) of the crop, the crop padded by one pixel (h+2, w+2), its 2x2 code counts
    (16,)); a reason string when the mask is degenerate."""
    h, _w = mask.shape
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return "mask has no particle pixels"
    if rows[0] == 0 and rows[-1] == h - 1 and mask[:, 0].any() and mask[:, -1].any():
        return "mask touches all four image borders (no background around the particle)"
    cols = np.flatnonzero(mask.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    m = mask[r0:r1, c0:c1]  # (h', w') bool
    mp, counts = _pad_codes(m)
    # fast path: one run per row (as many run starts as rows, none empty), runs of
    # consecutive rows overlapping (most particle masks) -> one 4-connected component
    # without holes, nothing to label
    first = np.argmax(m, axis=1)  # (h',)
    last = (c1 - c0 - 1) - np.argmax(m[:, ::-1], axis=1)  # (h',)
    simple = bool(
        counts[_RUN_STARTS].sum() == r1 - r0
        and m[np.arange(r1 - r0), first].all()
        and (np.maximum(first[1:], first[:-1]) <= np.minimum(last[1:], last[:-1])).all()
    )
    if not simple:
        lab, n = ndi.label(m, structure=_CROSS)
        if n > 1:
            sizes = np.bincount(lab.ravel())
            sizes[0] = 0
            m = lab == int(np.argmax(sizes))
            rr = np.flatnonzero(m.any(axis=1))
            cc = np.flatnonzero(m.any(axis=0))
            m = m[rr[0] : rr[-1] + 1, cc[0] : cc[-1] + 1]
            r0, c0 = r0 + int(rr[0]), c0 + int(cc[0])
            mp, counts = _pad_codes(m)
    # one 4-connected component is one 8-connected object: Euler number 1 - holes, so the
    # hole-filling labelling is needed only when it is not 1
    if not simple and round(float(_EULER8 @ counts)) != 1:
        m = _fill_holes(m)
        mp, counts = _pad_codes(m)
    area = int(np.count_nonzero(m))
    if area < min_area:
        return f"mask has only {area} particle pixel(s), fewer than {min_area}"
    return m, (r0, c0), mp, counts


def _fill_holes(m: np.ndarray) -> np.ndarray:
    """Fill holes of mask ``m`` (h, w): background components not connected to the border
    (one labelling, cheaper than ``ndi.binary_fill_holes``' iterated dilation)."""
    bg = np.ones((m.shape[0] + 2, m.shape[1] + 2), dtype=bool)  # (h+2, w+2)
    bg[1:-1, 1:-1] = ~m  # the frame joins everything outside into one component
    lab, n = ndi.label(bg, structure=_CROSS)
    if n <= 1:
        return m
    return (lab[1:-1, 1:-1] != lab[0, 0]).copy()


_FERET_DIRS = np.linspace(0.0, np.pi, 90, endpoint=False)  # (90,) 2 degree steps
_FERET_CS = np.stack([np.cos(_FERET_DIRS), np.sin(_FERET_DIRS)])  # (2, 90): x, y weights


def _binned_mean(t: np.ndarray, v: np.ndarray, nbins: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``v`` per bin ``floor(t)`` (bins outside [0, nbins) ignored; ``t`` is used as
    scratch); empty bins are linearly interpolated from their neighbours. Returns (means
    (nbins,), bin + 1 per element clipped to [0, nbins + 1] (same shape as ``t``))."""
    t += 1.0
    np.maximum(t, 0.0, out=t)  # np.clip's result, without its per-call overhead
    np.minimum(t, float(nbins + 1), out=t)
    b = t.astype(np.intp).ravel()  # truncation = floor here; 0: below, nbins + 1: above
    cnt = np.bincount(b, minlength=nbins + 2)[1:-1]
    sm = np.bincount(b, weights=v, minlength=nbins + 2)[1:-1]
    full = cnt > 0
    mean = np.zeros(nbins)
    mean[full] = sm[full] / cnt[full]
    if not full.all() and full.any():
        x = np.arange(nbins, dtype=np.float64)
        mean[~full] = np.interp(x[~full], x[full], mean[full])
    return mean, b


def _feret_px(mbox: np.ndarray) -> float:
    """Max Feret diameter (px, edge to edge = centre distance + 1) of mask ``mbox`` (h, w):
    the largest extent over 90 directions (2 degree steps: at most 0.015% short of the exact
    caliper) of its pixels, of which only the first and last of each row can be extreme."""
    h, w = mbox.shape
    first = np.argmax(mbox, axis=1)  # (h,) every row of the bounding box has a pixel
    last = (w - 1) - np.argmax(mbox[:, ::-1], axis=1)  # (h,)
    rows = np.arange(h, dtype=np.float64)
    pts = np.empty((2 * h, 2))  # (2h, 2) x, y
    pts[:h, 0], pts[h:, 0] = first, last
    pts[:h, 1] = pts[h:, 1] = rows
    proj = pts @ _FERET_CS  # (2h, 90)
    return float((proj.max(axis=0) - proj.min(axis=0)).max()) + 1.0


def _max_width_px(
    mp: np.ndarray, cy: np.ndarray, cx: np.ndarray, valid: tuple[slice, slice]
) -> float:
    """2 x (max over mask pixels of the distance to the nearest outside pixel - 0.5 px), i.e.
    twice the classic distance-transform maximum measured to the boundary. ``mp`` (h+2, w+2)
    bool is the bounding-box mask padded by one pixel, (``cy``, ``cx``) (c,) the box
    coordinates of the candidate pixels (those near the maximum of a depth estimate; exact
    distances are computed for them only) and ``valid`` the part of ``mp`` inside the image."""
    outer = np.zeros_like(mp)  # (h+2, w+2) outside pixels with a 4-neighbour in the mask
    outer[1:] |= mp[:-1]
    outer[:-1] |= mp[1:]
    outer[:, 1:] |= mp[:, :-1]
    outer[:, :-1] |= mp[:, 1:]
    outer &= ~mp
    oy, ox = np.nonzero(outer[valid])
    if oy.size == 0:  # pragma: no cover - a mask touching all four borders is refused earlier
        return float(2 * max(mp.shape))
    oy = oy.astype(np.int32) + valid[0].start
    ox = ox.astype(np.int32) + valid[1].start
    cy, cx = cy.astype(np.int32) + 1, cx.astype(np.int32) + 1
    d2 = (cy[:, None] - oy[None, :]) ** 2 + (cx[:, None] - ox[None, :]) ** 2  # (c, o)
    return 2.0 * (math.sqrt(float(d2.min(axis=1).max())) - 0.5)


def _deepest(depth: np.ndarray, sel: np.ndarray, tol: float, cap: int = 512) -> np.ndarray:
    """Flat indices of the pixels of ``sel`` whose ``depth`` is within ``tol`` of the maximum
    over ``sel`` (at most the ``cap`` deepest: long ridges)."""
    top = float(np.max(depth, where=sel, initial=0.0))
    idx = np.flatnonzero(sel & (depth >= top - tol))
    if idx.size > cap:
        idx = idx[np.argpartition(-depth.ravel()[idx], cap - 1)[:cap]]
    return idx


def _fit_axis(lo: int, hi: int, n: int, k: int, blo: int, bhi: int) -> tuple[int, int]:
    """Window [lo, hi) on an image axis of length ``n`` grown to a multiple of ``k`` pixels
    (or, when the image is too short, cut at the end farther from the particle [blo, bhi))."""
    extra = -(hi - lo) % k
    up = min(extra, n - hi)
    hi, extra = hi + up, extra - up
    down = min(extra, lo)
    lo, extra = lo - down, extra - down
    if extra:  # lo == 0 and hi == n: drop n % k rows / columns instead
        cut = (hi - lo) % k
        from_hi = min(cut, hi - bhi) if hi - bhi >= blo - lo else max(0, cut - (blo - lo))
        hi, lo = hi - from_hi, lo + (cut - from_hi)
    return lo, hi


def _blocks(a: np.ndarray, k: int) -> np.ndarray:
    """Sum over k x k blocks: (h, w) -> (h / k, w / k) (h and w multiples of k), as k^2
    strided additions (much faster than a reduction over two strided axes)."""
    out: np.ndarray = a[::k, ::k].astype(np.float64 if a.dtype.kind == "f" else np.int32)
    for i in range(k):
        for j in range(k):
            if i or j:
                out += a[i::k, j::k]
    return out


def _signed_distance(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance s (h, w) float32 to the boundary of mask ``m`` (h, w) (px, negative
    inside, 0 on the boundary) and d_b, the distance to the nearest inner boundary pixel.

    One EDT to the inner boundary pixels B (mask pixels with a 4-neighbour outside or on the
    window's edge): exact for outside pixels (the nearest mask pixel is in B), inside it is
    the distance to the nearest outside pixel minus ~1 px; the boundary itself lies half a
    pixel out of B. Distances from the feature transform in integers (same values as
    distance_transform_edt's, fewer float passes)."""
    h, w = m.shape
    core = np.zeros_like(m)  # (h, w) mask pixels whose 4 neighbours are all in the mask
    core[1:-1, 1:-1] = m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    notrim = ~m | core  # (h, w) False on B
    ft = ndi.distance_transform_edt(notrim, return_distances=False, return_indices=True)
    dyi = ft[0] - np.arange(h, dtype=np.int32)[:, None]  # (h, w) int32
    dxi = ft[1] - np.arange(w, dtype=np.int32)
    dyi *= dyi
    dxi *= dxi
    dyi += dxi
    d_b = np.sqrt(dyi, dtype=np.float32)  # (h, w) px to the nearest B pixel
    s = np.negative(d_b, where=m, out=d_b.copy())
    s -= 0.5
    return s, d_b


def _intensity_hist(vals: np.ndarray, cfg: FeatureConfig) -> tuple[float, float, np.ndarray]:
    """Mean, std and the histogram (hist_bins,) fractions of the standardised values of the
    particle pixels ``vals`` (A,). 8/16-bit images go through the counts of their distinct
    values (one bincount over the pixels, the rest over <= 65536 values)."""
    hlo, hhi = cfg.hist_range
    scale = cfg.hist_bins / (hhi - hlo)
    if vals.dtype in (np.uint8, np.uint16):
        cnt = np.bincount(vals)  # (max + 1,)
        v = np.flatnonzero(cnt)  # distinct values
        c = cnt[v].astype(np.float64)
        n = float(c.sum())
        vf = v.astype(np.float64)
        mu = float(c @ vf) / n
        d = vf - mu
        sd = math.sqrt(float(c @ (d * d)) / n)
        sd = sd if sd > 1e-12 else 1.0
        hb = np.floor((d / sd - hlo) * scale)
        np.clip(hb, 0, cfg.hist_bins - 1, out=hb)
        return mu, sd, np.bincount(hb.astype(np.intp), weights=c, minlength=cfg.hist_bins) / n
    zin = vals.astype(np.float64)  # (A,)
    mu, sd = float(zin.mean()), float(zin.std())
    sd = sd if sd > 1e-12 else 1.0
    zin -= mu
    zin /= sd
    hb = np.floor((zin - hlo) * scale)
    np.clip(hb, 0, cfg.hist_bins - 1, out=hb)
    return mu, sd, np.bincount(hb.astype(np.intp), minlength=cfg.hist_bins) / zin.size


# long: slightly over 80 lines on purpose: one straight sequence of checks and feature blocks
# per particle, in the order of ``feature_names`` (each block is a few lines and commented).
def particle_features(
    img: np.ndarray,
    mask: np.ndarray,
    pixel_size_nm: float | None = None,
    config: FeatureConfig | None = None,
) -> np.ndarray | str:
    """Features of one particle: image (H, W) any numeric dtype, mask (H, W) bool.

    Returns (F,) float64 in ``feature_names(config)`` order, or the reason why the particle
    has no features (degenerate mask)."""
    from skimage.measure import moments_hu

    cfg = config or FeatureConfig()
    px = float(pixel_size_nm) if pixel_size_nm else cfg.default_pixel_size_nm
    if mask.shape != img.shape:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {img.shape}")
    res = _clean_mask(mask, cfg.min_area)
    if isinstance(res, str):
        return res
    mbox, (br0, bc0), mp, codes = res
    H, W = img.shape
    bh, bw = mbox.shape
    # mask moments from one small matrix product over the box, no per-pixel coordinate lists
    mf = mbox.astype(np.float64)  # (bh, bw)
    yv, xv = np.arange(bh, dtype=np.float64), np.arange(bw, dtype=np.float64)
    rows, cols = mf.sum(axis=1), mf.sum(axis=0)  # (bh,), (bw,) pixels per row / column
    area = float(rows.sum())
    R = math.sqrt(area / math.pi)  # equivalent radius, px
    ycb, xcb = float(rows @ yv) / area, float(cols @ xv) / area  # centroid, box coordinates
    dy, dx = yv - ycb, xv - xcb  # (bh,), (bw,)
    dy2, dx2 = dy * dy, dx * dx
    px_row = mf @ np.stack([dx, dx2], axis=1)  # (bh, 2): per row, sum of dx and of dx^2

    # shape, exact, on the bounding box (padded by one pixel)
    perim = float(_CROFTON @ codes)  # same value as skimage.measure.perimeter_crofton
    circ = 4.0 * math.pi * area / perim**2 if perim > 0 else 0.0
    diam = _feret_px(mbox)

    # normalised central moments of the mask (x = column, y = row), scale invariant
    nu = np.zeros((4, 4))  # nu[i, j]: row power i, column power j (skimage convention)
    a2, a25 = area**2, area**2.5
    nu[2, 0], nu[1, 1], nu[0, 2] = rows @ dy2 / a2, px_row[:, 0] @ dy / a2, cols @ dx2 / a2
    nu[3, 0], nu[0, 3] = rows @ (dy2 * dy) / a25, cols @ (dx2 * dx) / a25
    nu[2, 1], nu[1, 2] = px_row[:, 0] @ dy2 / a25, px_row[:, 1] @ dy / a25
    hu = moments_hu(nu)
    mom = [nu[0, 2], nu[2, 0], nu[0, 3], nu[3, 0]]  # mu20, mu02, mu30, mu03

    # per-particle standardisation over all particle pixels; histogram of the standardised
    # intensities (fractions; end bins take the outliers)
    mu, sd, hist = _intensity_hist(img[br0 : br0 + bh, bc0 : bc0 + bw][mbox], cfg)

    # working resolution: particles larger than work_size px are binned k x k (window terms)
    side = max(bh, bw)
    k = 1 if side <= cfg.work_size else math.ceil(side / cfg.work_size)
    win = _window_terms(img, mbox, (br0, bc0), (ycb, xcb), R, perim, px, mu, sd, k, cfg)
    if win is None:  # the binned mask lost the particle (very thin shapes): full resolution
        k = 1
        win = _window_terms(img, mbox, (br0, bc0), (ycb, xcb), R, perim, px, mu, sd, 1, cfg)
        assert win is not None
    radial, edge, width_px, snr_db, internal_var, (cand_y, cand_x) = win
    valid = (
        slice(0 if br0 > 0 else 1, bh + 2 if br0 + bh < H else bh + 1),
        slice(0 if bc0 > 0 else 1, bw + 2 if bc0 + bw < W else bw + 1),
    )
    max_width_px = _max_width_px(mp, cand_y, cand_x, valid)

    out = np.concatenate(
        [
            [area * px * px, perim * px, circ, max_width_px * px, diam, diam * px],
            hist,
            mom,
            hu,
            radial,
            edge,
            [width_px * px, snr_db, internal_var],
        ]
    )
    if not np.isfinite(out).all():  # pragma: no cover - guarded above, kept as a safety net
        bad = feature_names(cfg)[int(np.flatnonzero(~np.isfinite(out))[0])]
        return f"feature {bad} is not finite"
    return out


# long: on purpose (over 80 lines): every term below reads the same binned window, its
# distance map and its masks, computed once per particle in this hot loop; split into
# helpers, a dozen arrays would have to travel between them.
def _window_terms(
    img: np.ndarray,
    mbox: np.ndarray,
    corner: tuple[int, int],
    centroid: tuple[float, float],
    R: float,
    perim: float,
    px: float,
    mu: float,
    sd: float,
    k: int,
    cfg: FeatureConfig,
) -> tuple[np.ndarray, np.ndarray, float, float, float, tuple[np.ndarray, np.ndarray]] | None:
    """The terms computed on a window around the particle, at 1 / ``k`` resolution: radial
    and edge profiles, membrane thickness (px), SNR (dB), internal variance, and the box
    coordinates (rows, columns) of the maximum-width candidates (for ``_max_width_px``).
    None when the k x k binned mask has too few pixels."""
    H, W = img.shape
    br0, bc0 = corner
    bh, bw = mbox.shape
    cy, cx = br0 + centroid[0], bc0 + centroid[1]  # centroid, image coordinates

    # window: bounding box + edge margin, and the radial disk of radius extent * R (px)
    if cfg.edge_units == "radius":
        e_lo, e_hi = cfg.edge_range[0] * R, cfg.edge_range[1] * R
    else:
        e_lo, e_hi = cfg.edge_range[0] / px, cfg.edge_range[1] / px
    Rk = R / k  # equivalent radius in working pixels
    f_lo, f_hi = -max(0.5 * Rk, 2.0), max(0.25 * Rk, 1.0)  # fine profile, working px
    margin = math.ceil(max(e_hi, f_hi * k, 0.0)) + 3 * k
    rad = math.ceil(cfg.radial_extent * R) + k
    r0 = max(0, min(br0 - margin, int(cy) - rad))
    r1 = min(H, max(br0 + bh + margin, int(cy) + rad + 2))
    c0 = max(0, min(bc0 - margin, int(cx) - rad))
    c1 = min(W, max(bc0 + bw + margin, int(cx) + rad + 2))
    if k > 1:
        r0, r1 = _fit_axis(r0, r1, H, k, br0, br0 + bh)
        c0, c1 = _fit_axis(c0, c1, W, k, bc0, bc0 + bw)
    h, w = r1 - r0, c1 - c0
    # the box inside the window (the whole box unless a window was cut to a multiple of k)
    y0, y1, x0, x1 = max(br0, r0), min(br0 + bh, r1), max(bc0, c0), min(bc0 + bw, c1)
    m = np.zeros((h, w), dtype=bool)  # (h, w) window mask, full resolution
    m[y0 - r0 : y1 - r0, x0 - c0 : x1 - c0] = mbox[y0 - br0 : y1 - br0, x0 - bc0 : x1 - bc0]
    if k > 1:  # (h/k, w/k): block sums of the centred intensities and their squares
        d = img[r0:r1, c0:c1].astype(np.float64)  # (h, w)
        d -= mu
        sum1 = _blocks(d, k)  # (hk, wk)
        d *= d
        sum2 = _blocks(d, k)
        zk = sum1 * (1.0 / (k * k * sd))  # block means of z
        mk = _blocks(m.view(np.uint8), k) * 2 >= k * k  # blocks at least half in the mask
        if np.count_nonzero(mk) < cfg.min_area:
            return None
    else:
        z = img[r0:r1, c0:c1].astype(np.float64)  # (h, w) standardised intensities
        z -= mu
        z /= sd
        zk, mk = z, m
    hk, wk = zk.shape
    cyk, cxk = (cy - r0 - (k - 1) / 2) / k, (cx - c0 - (k - 1) / 2) / k  # centroid, working
    s, d_b = _signed_distance(mk)  # (hk, wk) working px
    zf = zk.ravel()  # (hk*wk,)

    # maximum-width candidates (box coordinates): the pixels near the deepest distance to B;
    # binned, all pixels of the blocks within 1 + k px of the deepest block (the deepest
    # pixel's block is within 0.5-0.7 k px of it on varied test shapes)
    if k == 1:
        idx = _deepest(d_b[y0 - r0 : y1 - r0, x0 - c0 : x1 - c0], mbox, 1.5)
        cand_y, cand_x = np.divmod(idx, bw)
    else:
        by, bx = np.divmod(_deepest(d_b * k, mk, 1.0 + k, cap=max(1, 512 // (k * k))), wk)
        off = np.arange(k)
        py = (by[:, None, None] * k + off[:, None] + (r0 - br0)).repeat(k, axis=2).ravel()
        px_ = (bx[:, None, None] * k + off[None, :] + (c0 - bc0)).repeat(k, axis=1).ravel()
        ok = (py >= 0) & (py < bh) & (px_ >= 0) & (px_ < bw)
        py, px_ = py[ok], px_[ok]
        ok = mbox[py, px_]
        cand_y, cand_x = py[ok], px_[ok]
        if cand_y.size == 0:  # pragma: no cover - a half-filled block has a mask pixel
            cand_y, cand_x = np.nonzero(mbox)

    # radial density profile on rings from the centroid over [0, extent * R]
    ry = ((np.arange(hk) - cyk) ** 2).astype(np.float32)  # (hk,)
    rx = ((np.arange(wk) - cxk) ** 2).astype(np.float32)  # (wk,)
    rr = np.sqrt(ry[:, None] + rx)  # (hk, wk) float32
    rr *= cfg.profile_bins / (cfg.radial_extent * Rk)
    radial, _ = _binned_mean(rr, zf, cfg.profile_bins)

    # edge density profile against signed distance in [e_lo, e_hi]
    t = s - e_lo / k
    t *= cfg.edge_bins * k / (e_hi - e_lo)
    edge, _ = _binned_mean(t, zf, cfg.edge_bins)

    # membrane: extremum of a fine (0.5 working px) edge profile, full width at half its depth
    step = 0.5
    nf = math.ceil((f_hi - f_lo) / step)
    t = s - f_lo
    t /= step
    prof, fb1 = _binned_mean(t, zf, nf)  # fb1: fine bin + 1, clipped
    srt = np.sort(prof)  # median as np.median computes it, without its per-call overhead
    dev = prof - 0.5 * (srt[(nf - 1) // 2] + srt[nf // 2])
    j = int(np.argmax(np.abs(dev)))
    dep = float(dev[j])
    a = b = j
    if abs(dep) > 1e-9:
        deep = np.sign(dep) * dev >= abs(dep) / 2
        while a > 0 and deep[a - 1]:
            a -= 1
        while b < nf - 1 and deep[b + 1]:
            b += 1
        width_px = (b - a + 1) * step * k
    else:
        width_px = 0.0
    # SNR: variance across the membrane (fine profile over the band and equal flanks) vs
    # variance along it (between ~4 px arcs of the band, about the centroid)
    flank = b - a + 1
    var_across = _var(prof[max(0, a - flank) : min(nf, b + flank + 1)])
    band = np.flatnonzero((fb1 > a) & (fb1 <= b + 1))  # (nb,) pixels of the membrane band
    by, bx = np.divmod(band, wk)
    n_sec = int(min(64, max(8, round(perim / 4.0))))
    theta = np.arctan2(by - cyk, bx - cxk)  # (nb,) in [-pi, pi]
    sec = np.minimum(((theta + math.pi) * (n_sec / (2 * math.pi))).astype(np.int64), n_sec - 1)
    sc = np.bincount(sec, minlength=n_sec)
    sm = np.bincount(sec, weights=zf[band], minlength=n_sec)
    hit = sc > 0
    var_along = _var(sm[hit] / sc[hit]) if np.count_nonzero(hit) > 1 else 0.0
    eps = 1e-3
    snr_db = 10.0 * math.log10((var_across + eps) / (var_along + eps))

    # internal segmentation variance: interior away from the membrane vs background, over
    # the full-resolution pixels of the selected (working) pixels
    s_inner, s_outer = f_lo + a * step, f_lo + (b + 1) * step
    interior = s < min(s_inner, 0.0) - 1.0  # inside the mask only (s < -1)
    if np.count_nonzero(interior) < 5:
        interior = mk & (s <= 0.5 * float(s.min()))
    bg = s > max(s_outer, 0.0) + 1.0  # outside the mask only (s > 1)
    if np.count_nonzero(bg) < 5:
        bg = ~mk
    if k > 1:  # variances of z over the full-resolution pixels of the selected blocks
        var_in, var_bg = (_block_var(sum1, sum2, sel, k) / (sd * sd) for sel in (interior, bg))
    else:
        var_in, var_bg = _var(z[interior]), _var(z[bg])
    if np.count_nonzero(bg) < 5:
        var_bg = 1.0
    internal_var = var_in / max(var_bg, 1e-6)
    return radial, edge, width_px, snr_db, internal_var, (cand_y, cand_x)


def _var(x: np.ndarray) -> float:
    """``np.var(x)`` of a 1-d float64 array: the same operations without ``np.var``'s
    per-call overhead (it runs up to four times per particle)."""
    d = x - x.sum() / x.size
    d *= d
    return float(d.sum()) / x.size


def _block_var(sum1: np.ndarray, sum2: np.ndarray, sel: np.ndarray, k: int) -> float:
    """Variance of the pixels of the blocks ``sel`` (hk, wk) bool from the block sums of
    (centred) values ``sum1`` and of their squares ``sum2``."""
    n = float(np.count_nonzero(sel)) * k * k
    if n == 0:
        return 0.0
    m1 = float(sum1[sel].sum()) / n
    return max(float(sum2[sel].sum()) / n - m1 * m1, 0.0)


# --------------------------------------------------------------------------- dataset

_Result = tuple[np.ndarray, int] | str  # (values, 0 own mask / 1 auto / 2 disk) or reason


def _one(p: Particle, cfg: FeatureConfig) -> _Result:
    img, own = read_particle(p)  # (H, W) file dtype, (H, W) bool or None
    auto = 0
    if own is not None:
        mask = own
    else:
        mask, auto = auto_mask(img), 1  # converts to float32 itself
    res = particle_features(img, mask, p.pixel_size_nm, cfg)
    if isinstance(res, str) and auto and "four image borders" in res:
        # automatic mask covering the crop: auto_mask's own fallback, a centred disk
        res, auto = particle_features(img, _centred_disk(*img.shape), p.pixel_size_nm, cfg), 2
    if isinstance(res, str):
        return f"automatic mask: {res}" if auto else res
    return res, auto


def _centred_disk(h: int, w: int) -> np.ndarray:
    """(h, w) bool disk of radius 0.35 x the shorter side about the image centre."""
    yy, xx = np.ogrid[:h, :w]
    return np.asarray(np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2) <= 0.35 * min(h, w))


def _one_without_mask(p: Particle, cfg: FeatureConfig) -> tuple[np.ndarray, str] | str:
    """Fallback features of one particle, its own mask ignored: the automatic mask, else the
    centred disk; (values, what was used) or the reason why neither gave features."""
    img, _own = read_particle(p)  # still checks the image (finite pixels) and mask size
    res = particle_features(img, auto_mask(img), p.pixel_size_nm, cfg)
    if not isinstance(res, str):
        return res, "automatic mask"
    disk = particle_features(img, _centred_disk(*img.shape), p.pixel_size_nm, cfg)
    if not isinstance(disk, str):
        return disk, "centred disk"
    return f"without its mask: automatic mask: {res}; centred disk: {disk}"


def features_without_mask(
    dataset: ParticleDataset,
    positions: np.ndarray,
    config: FeatureConfig | None = None,
) -> tuple[FeatureTable, list[str]]:
    """The documented fallback for particles ``compute_features`` lists in ``failed``
    (docs/features.md, *Fallback without the mask*): features of the particles at
    ``positions`` in ``dataset.particles`` computed as if they had no mask file, i.e. on
    ``lipoclass.data.auto_mask``, or on the centred disk (0.35 x the shorter side) when the
    automatic mask gives none either. Returns the table of those that got features (``failed``
    lists the others with both reasons) and, per table row, what was used (``"automatic
    mask"`` or ``"centred disk"``). Serial and uncached: meant for the few failures."""
    cfg = config or FeatureConfig()
    names = feature_names(cfg)
    pos = np.asarray(positions, dtype=np.int64).reshape(-1)
    keep: list[int] = []
    rows: list[np.ndarray] = []
    how: list[str] = []
    failed: list[tuple[str, str]] = []
    for i in pos.tolist():
        p = dataset.particles[i]
        res = _one_without_mask(p, cfg)
        if isinstance(res, str):
            failed.append((p.id, res))
            continue
        keep.append(i)
        rows.append(res[0])
        how.append(res[1])
    values = np.vstack(rows) if rows else np.empty((0, len(names)), dtype=np.float64)
    table = FeatureTable(
        ids=[dataset.particles[i].id for i in keep],
        index=np.asarray(keep, dtype=np.int64),
        names=names,
        values=values,
        failed=failed,
        auto_masked=len(keep),
    )
    return table, how


def _cache_path(dataset: ParticleDataset, cfg: FeatureConfig, cache_dir: Path | None) -> Path:
    key = hashlib.sha256(
        (dataset_fingerprint(dataset) + json.dumps(asdict(cfg), sort_keys=True)).encode()
        + f"features-v{_FEATURES_VERSION}".encode()
        + _CODE_HASH.encode()
    ).hexdigest()[:24]
    return Path(cache_dir or default_cache_dir()) / "features" / f"{key}.npz"


def compute_features(
    dataset: ParticleDataset,
    config: FeatureConfig | None = None,
    *,
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
) -> FeatureTable:
    """Handcrafted features of every particle of ``dataset`` (see the module docstring).

    Particles without a mask get ``auto_mask`` (counted in ``auto_masked``); degenerate masks
    are listed in ``failed``. Results are cached on disk (key: dataset fingerprint + config).
    ``workers`` processes (default: CPU count) are used for 400 particles or more."""
    cfg = config or FeatureConfig()
    names = feature_names(cfg)
    cache_file = (
        _cache_path(dataset, cfg, Path(cache_dir) if cache_dir else None) if cache else None
    )
    if cache_file is not None and cache_file.is_file():
        try:
            with np.load(cache_file, allow_pickle=False) as z:
                index = z["index"]
                table = FeatureTable(
                    ids=[dataset.particles[i].id for i in index],
                    index=index,
                    names=names,
                    values=z["values"],
                    failed=[(str(a), str(b)) for a, b in json.loads(str(z["failed"]))],
                    auto_masked=int(z["auto_masked"]),
                    from_cache=True,
                )
            return table
        except Exception:  # corrupt or stale cache: recompute
            pass

    parts = list(dataset.particles)
    results, messages = parallel_map(partial(_one, cfg=cfg), parts, workers, desc="features")
    warn_collected(messages)  # worker warnings, summarised, pointing at the caller

    keep = [i for i, r in enumerate(results) if not isinstance(r, str)]
    failed = [(parts[i].id, r) for i, r in enumerate(results) if isinstance(r, str)]
    values = np.empty((len(keep), len(names)), dtype=np.float64)
    auto = disks = 0
    for j, i in enumerate(keep):
        r = results[i]
        assert not isinstance(r, str)
        values[j] = r[0]
        auto += int(r[1] > 0)
        disks += int(r[1] == 2)
    if disks:
        warnings.warn(
            f"{disks} automatic mask(s) touched all four image borders; used a centred disk "
            "of 0.35 x the shorter side instead (see docs/features.md)",
            stacklevel=2,
        )
    index = np.asarray(keep, dtype=np.int64)
    table = FeatureTable(
        ids=[parts[i].id for i in keep],
        index=index,
        names=names,
        values=values,
        failed=failed,
        auto_masked=auto,
    )
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(
            tmp, values=values, index=index, failed=json.dumps(failed),
            auto_masked=np.int64(auto),
        )  # fmt: skip
        os.replace(tmp, cache_file)
    return table
