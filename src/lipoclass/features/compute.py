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
   internal segmentation variance.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import ndimage as ndi

from lipoclass.data.dataset import Particle, ParticleDataset
from lipoclass.data.io import read_native
from lipoclass.data.prepare import auto_mask, dataset_fingerprint, default_cache_dir
from lipoclass.errors import LipoclassError
from lipoclass.features.table import FeatureTable

__all__ = ["FeatureConfig", "compute_features", "feature_names", "particle_features"]

_FEATURES_VERSION = 3  # bump when the values produced change (invalidates caches)
# the cache key also covers this module's source, so an edited formula never reads stale values
_CODE_HASH = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


@dataclass(frozen=True)
class FeatureConfig:
    """Settings of the handcrafted features.

    ``hist_range`` is in standard deviations of the particle's intensities (values outside
    fall in the end bins); ``radial_extent`` is the radial profile's reach in equivalent radii
    R = sqrt(area / pi); ``edge_range`` is the edge profile's signed-distance window, in R
    (``edge_units="radius"``) or in nm; ``default_pixel_size_nm`` is used when a particle has
    no pixel size."""

    hist_bins: int = 32
    hist_range: tuple[float, float] = (-3.0, 3.0)
    profile_bins: int = 16
    radial_extent: float = 1.25
    edge_bins: int = 16
    edge_range: tuple[float, float] = (-0.5, 0.25)
    edge_units: Literal["radius", "nm"] = "radius"
    min_area: int = 10
    default_pixel_size_nm: float = 1.0

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


def _clean_mask(mask: np.ndarray, min_area: int) -> tuple[np.ndarray, tuple[int, int]] | str:
    """Largest component of ``mask`` (H, W) with holes filled, as (bbox crop (h, w) bool,
    (row0, col0) of the crop); a reason string when the mask is degenerate."""
    h, _w = mask.shape
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return "mask has no particle pixels"
    if rows[0] == 0 and rows[-1] == h - 1 and mask[:, 0].any() and mask[:, -1].any():
        return "mask touches all four image borders (no background around the particle)"
    cols = np.flatnonzero(mask.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    m = mask[r0:r1, c0:c1]  # (h', w') bool
    lab, n = ndi.label(m, structure=_CROSS)
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        m = lab == int(np.argmax(sizes))
        rr = np.flatnonzero(m.any(axis=1))
        cc = np.flatnonzero(m.any(axis=0))
        m = m[rr[0] : rr[-1] + 1, cc[0] : cc[-1] + 1]
        r0, c0 = r0 + int(rr[0]), c0 + int(cc[0])
    m = _fill_holes(m)
    area = int(np.count_nonzero(m))
    if area < min_area:
        return f"mask has only {area} particle pixel(s), fewer than {min_area}"
    return m, (r0, c0)


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

# Crofton perimeter (4 directions), the look-up table of scikit-image's ``perimeter_crofton``
# indexed by the 2x2 configuration code pixel + 2 up + 4 left + 8 up-left
_S2 = math.sqrt(2.0)
_CROFTON = np.array(
    [0, np.pi / 4 * (1 + 1 / _S2), np.pi / (4 * _S2), np.pi / (2 * _S2), 0,
     np.pi / 4 * (1 + 1 / _S2), 0, np.pi / (4 * _S2), np.pi / 4, np.pi / 2,
     np.pi / (4 * _S2), np.pi / (4 * _S2), np.pi / 4, np.pi / 2, 0, 0]
)  # fmt: skip


def _perimeter_crofton(mp: np.ndarray) -> float:
    """Crofton perimeter (4 directions) of mask ``mp`` (h+2, w+2) uint8 padded by one zero
    pixel: the same counts, hence the same value, as ``skimage.measure.perimeter_crofton``."""
    a, up, left, ul = mp[1:, 1:], mp[:-1, 1:], mp[1:, :-1], mp[:-1, :-1]  # (h+1, w+1) each
    code = a + 2 * up + 4 * left + 8 * ul  # (h+1, w+1) uint8
    return float(_CROFTON @ np.bincount(code.ravel(), minlength=16))


def _binned_mean(t: np.ndarray, v: np.ndarray, nbins: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``v`` per bin ``floor(t)`` (bins outside [0, nbins) ignored; ``t`` is used as
    scratch); empty bins are linearly interpolated from their neighbours. Returns (means
    (nbins,), bin + 1 per element clipped to [0, nbins + 1] (same shape as ``t``))."""
    np.floor(t, out=t)
    np.clip(t, -1.0, float(nbins), out=t)
    t += 1.0
    b = t.astype(np.intp).ravel()  # 0: below, nbins + 1: above
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


def _max_width_px(mp: np.ndarray, d_box: np.ndarray, valid: tuple[slice, slice]) -> float:
    """2 x (max over mask pixels of the distance to the nearest outside pixel - 0.5 px), i.e.
    twice the classic distance-transform maximum measured to the boundary. ``mp`` (h+2, w+2)
    bool is the bounding-box mask padded by one pixel, ``d_box`` (h, w) the rim distance on
    the box and ``valid`` the part of ``mp`` inside the image. Exact distances are computed for
    the few pixels near the maximum of the rim distance only."""
    m = mp[1:-1, 1:-1]
    outer = np.zeros_like(mp)  # (h+2, w+2) outside pixels with a 4-neighbour in the mask
    outer[1:] |= mp[:-1]
    outer[:-1] |= mp[1:]
    outer[:, 1:] |= mp[:, :-1]
    outer[:, :-1] |= mp[:, 1:]
    outer &= ~mp
    oy, ox = np.nonzero(outer[valid])
    oy += valid[0].start
    ox += valid[1].start
    top_d = float(np.max(d_box, where=m, initial=0.0))
    if oy.size == 0:
        return 2.0 * (top_d + 0.5)
    cand = m & (d_box >= top_d - 1.5)
    cy, cx = np.nonzero(cand)
    if cy.size > 512:  # long ridges: the 512 deepest candidates
        top = np.argpartition(-d_box[cy, cx], 511)[:512]
        cy, cx = cy[top], cx[top]
    cy += 1
    cx += 1
    d2 = (cy[:, None] - oy[None, :]) ** 2 + (cx[:, None] - ox[None, :]) ** 2  # (c, o)
    return 2.0 * (math.sqrt(float(d2.min(axis=1).max())) - 0.5)


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
    mbox, (br0, bc0) = res
    H, W = img.shape
    bh, bw = mbox.shape
    ys, xs = np.nonzero(mbox)  # (A,) each, box coordinates
    area = float(ys.size)
    R = math.sqrt(area / math.pi)  # equivalent radius, px
    ycb, xcb = ys.mean(), xs.mean()  # centroid in box coordinates
    cy, cx = br0 + ycb, bc0 + xcb  # centroid in image coordinates

    # shape, on the bounding box padded by one pixel
    mp = np.zeros((bh + 2, bw + 2), dtype=bool)  # (bh+2, bw+2)
    mp[1:-1, 1:-1] = mbox
    core = mp[:-2, 1:-1] & mp[2:, 1:-1] & mp[1:-1, :-2] & mp[1:-1, 2:]  # (bh, bw)
    rim = mbox & ~core  # (bh, bw) B: mask pixels with a 4-neighbour outside
    perim = _perimeter_crofton(mp.view(np.uint8))
    circ = 4.0 * math.pi * area / perim**2 if perim > 0 else 0.0
    diam = _feret_px(mbox)

    # window: bounding box + edge margin, and the radial disk of radius extent * R
    if cfg.edge_units == "radius":
        e_lo, e_hi = cfg.edge_range[0] * R, cfg.edge_range[1] * R
    else:
        e_lo, e_hi = cfg.edge_range[0] / px, cfg.edge_range[1] / px
    f_lo, f_hi = -max(0.5 * R, 2.0), max(0.25 * R, 1.0)  # fine profile for thickness / SNR
    margin = math.ceil(max(e_hi, f_hi, 0.0)) + 3
    rad = math.ceil(cfg.radial_extent * R) + 1
    r0 = max(0, min(br0 - margin, int(cy) - rad))
    r1 = min(H, max(br0 + bh + margin, int(cy) + rad + 2))
    c0 = max(0, min(bc0 - margin, int(cx) - rad))
    c1 = min(W, max(bc0 + bw + margin, int(cx) + rad + 2))
    h, w = r1 - r0, c1 - c0
    box = (slice(br0 - r0, br0 - r0 + bh), slice(bc0 - c0, bc0 - c0 + bw))  # box in window
    m = np.zeros((h, w), dtype=bool)  # (h, w) window mask
    m[box] = mbox
    cy, cx = cy - r0, cx - c0

    # signed distance to the boundary (px): negative inside, 0 on the boundary
    # one EDT to the inner boundary pixels B: exact for outside pixels (the nearest mask pixel
    # is in B), inside it is the distance to the nearest outside pixel minus ~1 px; the
    # boundary itself lies half a pixel out of B. Distances from the feature transform in
    # integers (same values as distance_transform_edt's, fewer float passes).
    notrim = np.ones((h, w), dtype=bool)
    notrim[box] = ~rim
    ft = ndi.distance_transform_edt(notrim, return_distances=False, return_indices=True)
    dyi = ft[0] - np.arange(h, dtype=np.int32)[:, None]  # (h, w) int32
    dxi = ft[1] - np.arange(w, dtype=np.int32)
    dyi *= dyi
    dxi *= dxi
    dyi += dxi
    d_b = np.sqrt(dyi, dtype=np.float64)  # (h, w) px to the nearest B pixel

    # maximum width: padded-box rows / columns that lie inside the image
    valid = (
        slice(0 if br0 > 0 else 1, bh + 2 if br0 + bh < H else bh + 1),
        slice(0 if bc0 > 0 else 1, bw + 2 if bc0 + bw < W else bw + 1),
    )
    max_width_px = _max_width_px(mp, d_b[box], valid)
    np.negative(d_b, out=d_b, where=m)
    d_b -= 0.5
    s = d_b  # (h, w) signed distance (d_b is not used any more)

    # per-particle standardisation over the particle pixels
    z = img[r0:r1, c0:c1].astype(np.float64)  # (h, w)
    zin = z[m]  # (A,)
    mu, sd = float(zin.mean()), float(zin.std())
    sd = sd if sd > 1e-12 else 1.0
    z -= mu
    z /= sd
    zin -= mu
    zin /= sd
    zf = z.ravel()  # (h*w,)

    # histogram of standardised particle intensities (fractions; end bins take the outliers)
    hlo, hhi = cfg.hist_range
    hb = np.floor((zin - hlo) * (cfg.hist_bins / (hhi - hlo)))
    np.clip(hb, 0, cfg.hist_bins - 1, out=hb)
    hist = np.bincount(hb.astype(np.intp), minlength=cfg.hist_bins) / zin.size

    # normalised central moments of the mask (x = column, y = row), scale invariant
    dx, dy = xs - xcb, ys - ycb
    dx2, dy2 = dx * dx, dy * dy  # (A,) each; explicit products (integer ** is slow)
    nu = np.zeros((4, 4))  # nu[i, j]: row power i, column power j (skimage convention)
    a2, a25 = area**2, area**2.5
    nu[2, 0], nu[1, 1], nu[0, 2] = dy2.sum() / a2, (dy * dx).sum() / a2, dx2.sum() / a2
    nu[3, 0], nu[0, 3] = (dy2 * dy).sum() / a25, (dx2 * dx).sum() / a25
    nu[2, 1], nu[1, 2] = (dy2 * dx).sum() / a25, (dy * dx2).sum() / a25
    hu = moments_hu(nu)
    mom = [nu[0, 2], nu[2, 0], nu[0, 3], nu[3, 0]]  # mu20, mu02, mu30, mu03

    # radial density profile on rings from the centroid over [0, extent * R]
    ry = (np.arange(h) - cy) ** 2  # (h,)
    rx = (np.arange(w) - cx) ** 2  # (w,)
    rr = np.sqrt(ry[:, None] + rx)  # (h, w)
    rr *= cfg.profile_bins / (cfg.radial_extent * R)
    radial, _ = _binned_mean(rr, zf, cfg.profile_bins)

    # edge density profile against signed distance in [e_lo, e_hi]
    t = s - e_lo
    t *= cfg.edge_bins / (e_hi - e_lo)
    edge, _ = _binned_mean(t, zf, cfg.edge_bins)

    # membrane: extremum of a fine (0.5 px) edge profile, full width at half its depth
    step = 0.5
    nf = math.ceil((f_hi - f_lo) / step)
    t = s - f_lo
    t /= step
    prof, fb1 = _binned_mean(t, zf, nf)  # fb1: fine bin + 1, clipped
    dev = prof - np.median(prof)
    k = int(np.argmax(np.abs(dev)))
    depth = float(dev[k])
    a = b = k
    if abs(depth) > 1e-9:
        deep = np.sign(depth) * dev >= abs(depth) / 2
        while a > 0 and deep[a - 1]:
            a -= 1
        while b < nf - 1 and deep[b + 1]:
            b += 1
        width_px = (b - a + 1) * step
    else:
        width_px = 0.0
    # SNR: variance across the membrane (fine profile over the band and equal flanks) vs
    # variance along it (between ~4 px arcs of the band, about the centroid)
    flank = b - a + 1
    var_across = float(np.var(prof[max(0, a - flank) : min(nf, b + flank + 1)]))
    band = np.flatnonzero((fb1 > a) & (fb1 <= b + 1))  # (nb,) pixels of the membrane band
    by, bx = np.divmod(band, w)
    n_sec = int(min(64, max(8, round(perim / 4.0))))
    theta = np.arctan2(by - cy, bx - cx)  # (nb,) in [-pi, pi]
    sec = np.minimum(((theta + math.pi) * (n_sec / (2 * math.pi))).astype(np.int64), n_sec - 1)
    sc = np.bincount(sec, minlength=n_sec)
    sm = np.bincount(sec, weights=zf[band], minlength=n_sec)
    var_along = float(np.var(sm[sc > 0] / sc[sc > 0])) if (sc > 0).sum() > 1 else 0.0
    eps = 1e-3
    snr_db = 10.0 * math.log10((var_across + eps) / (var_along + eps))

    # internal segmentation variance: interior away from the membrane vs background
    s_inner, s_outer = f_lo + a * step, f_lo + (b + 1) * step
    interior = s < min(s_inner, 0.0) - 1.0  # inside the mask only (s < -1)
    if np.count_nonzero(interior) < 5:
        interior = m & (s <= 0.5 * float(s.min()))
    bg = s > max(s_outer, 0.0) + 1.0  # outside the mask only (s > 1)
    if np.count_nonzero(bg) < 5:
        bg = ~m
    var_bg = float(z[bg].var()) if np.count_nonzero(bg) >= 5 else 1.0
    internal_var = float(z[interior].var()) / max(var_bg, 1e-6)

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


# --------------------------------------------------------------------------- dataset

_Result = tuple[np.ndarray, int] | str  # (values, 0 own mask / 1 auto / 2 disk) or reason


def _one(p: Particle, cfg: FeatureConfig) -> _Result:
    img = read_native(p.image)  # (H, W) file dtype
    auto = 0
    if p.mask is not None:
        mask = read_native(p.mask) > 0  # (H, W) bool
        if mask.shape != img.shape:
            raise LipoclassError(
                f"{p.mask}: mask is {mask.shape[1]}x{mask.shape[0]} but image {p.image.name} is "
                f"{img.shape[1]}x{img.shape[0]} (particles.csv row {p.row}, id {p.id})"
            )
    else:
        mask, auto = auto_mask(img.astype(np.float32)), 1
    res = particle_features(img, mask, p.pixel_size_nm, cfg)
    if isinstance(res, str) and auto and "four image borders" in res:
        # automatic mask covering the crop: auto_mask's own fallback, a centred disk
        h, w = img.shape
        yy, xx = np.ogrid[:h, :w]
        disk = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2) <= 0.35 * min(h, w)
        res, auto = particle_features(img, disk, p.pixel_size_nm, cfg), 2
    if isinstance(res, str):
        return f"automatic mask: {res}" if auto else res
    return res, auto


def _chunk(args: tuple[list[Particle], FeatureConfig]) -> tuple[list[_Result], list[str]]:
    parts, cfg = args
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = [_one(p, cfg) for p in parts]
    return results, [str(w.message) for w in caught]


def _cache_path(dataset: ParticleDataset, cfg: FeatureConfig, cache_dir: Path | None) -> Path:
    key = hashlib.sha256(
        (dataset_fingerprint(dataset) + json.dumps(asdict(cfg), sort_keys=True)).encode()
        + f"features-v{_FEATURES_VERSION}".encode()
        + _CODE_HASH.encode()
    ).hexdigest()[:24]
    return Path(cache_dir or default_cache_dir()) / "features" / f"{key}.npz"


def _progress(total: int):  # pragma: no cover - cosmetic
    from tqdm import tqdm

    return tqdm(
        total=total, desc="features", unit="img", disable=total < 2000 or not sys.stderr.isatty()
    )


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
    n = len(parts)
    nw = workers if workers is not None else (os.cpu_count() or 1)
    results: list[_Result] = []
    messages: list[str] = []
    if nw > 1 and n >= 400:
        size = max(32, n // (nw * 8))
        chunks = [(parts[i : i + size], cfg) for i in range(0, n, size)]
        bar = _progress(n)
        with ProcessPoolExecutor(max_workers=nw) as ex:
            for res, msgs in ex.map(_chunk, chunks):
                results.extend(res)
                messages.extend(msgs)
                bar.update(len(res))
        bar.close()
    else:
        results, messages = _chunk((parts, cfg))
    if messages:
        more = f" (and {len(messages) - 1} more warning(s))" if len(messages) > 1 else ""
        warnings.warn(f"{messages[0]}{more}", stacklevel=2)

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
