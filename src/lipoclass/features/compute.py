"""Handcrafted particle features from image + mask (thesis section 3; choices in
docs/features.md).

Per particle, all vectorised with NumPy / SciPy (no per-pixel Python loops):

1. mask: the file's mask (nonzero = particle) or, without one, ``lipoclass.data.auto_mask``;
   largest connected component, holes filled; empty, tiny (< ``min_area`` px) or touching all
   four image borders -> the particle is reported in ``failed`` (never a NaN row);
2. work on a window around the particle big enough for every profile (faster on large crops);
3. intensities standardised per particle (mean 0, std 1 over the particle pixels) so that
   exposure / contrast differences between micrographs do not dominate;
4. signed distance to the mask boundary ``s`` (px, negative inside, 0 on the boundary) from two
   Euclidean distance transforms, used by the edge profile, membrane thickness, SNR and the
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

_FEATURES_VERSION = 2  # bump when the values produced change (invalidates caches)
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
    lab, n = ndi.label(m)
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
    lab, n = ndi.label(bg)
    if n <= 1:
        return m
    return (lab[1:-1, 1:-1] != lab[0, 0]).copy()


def _binned_mean(b: np.ndarray, v: np.ndarray, nbins: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``v`` per bin ``b`` (ints, any outside [0, nbins) ignored); empty bins are
    linearly interpolated from their neighbours. Returns (means (nbins,), counts (nbins,))."""
    ok = (b >= 0) & (b < nbins)
    b, v = b[ok], v[ok]
    cnt = np.bincount(b, minlength=nbins).astype(np.float64)
    sm = np.bincount(b, weights=v, minlength=nbins)
    full = cnt > 0
    mean = np.zeros(nbins)
    mean[full] = sm[full] / cnt[full]
    if not full.all() and full.any():
        x = np.arange(nbins, dtype=np.float64)
        mean[~full] = np.interp(x[~full], x[full], mean[full])
    return mean, cnt


_FERET_DIRS = np.linspace(0.0, np.pi, 90, endpoint=False)  # (90,) 2 degree steps
_FERET_COS, _FERET_SIN = np.cos(_FERET_DIRS), np.sin(_FERET_DIRS)


def _feret_px(m: np.ndarray, rim: np.ndarray) -> float:
    """Max Feret diameter (px, edge to edge = centre distance + 1) of mask ``m`` (h, w): the
    largest extent of its boundary pixels ``rim`` (plus mask pixels on the window's border)
    over 90 directions (2 degree steps: at most 0.015% short of the exact caliper)."""
    edge = rim.copy()
    edge[0] |= m[0]
    edge[-1] |= m[-1]
    edge[:, 0] |= m[:, 0]
    edge[:, -1] |= m[:, -1]
    ys, xs = np.nonzero(edge)
    proj = xs[:, None] * _FERET_COS + ys[:, None] * _FERET_SIN  # (k, 90)
    return float((proj.max(axis=0) - proj.min(axis=0)).max()) + 1.0


def _max_width_px(m: np.ndarray, pad: np.ndarray, d_b: np.ndarray) -> float:
    """2 x (max over mask pixels of the distance to the nearest outside pixel - 0.5 px), i.e.
    twice the classic distance-transform maximum measured to the boundary. Exact distances are
    computed for the few pixels near the maximum of the rim distance ``d_b`` only."""
    outer = ~m & (pad[:-2, 1:-1] | pad[2:, 1:-1] | pad[1:-1, :-2] | pad[1:-1, 2:])  # (h, w)
    oy, ox = np.nonzero(outer)
    inside = d_b[m]
    if oy.size == 0:
        return 2.0 * (float(inside.max()) + 0.5)
    cand = m & (d_b >= float(inside.max()) - 1.5)
    cy, cx = np.nonzero(cand)
    if cy.size > 512:  # long ridges: the 512 deepest candidates
        top = np.argpartition(-d_b[cy, cx], 511)[:512]
        cy, cx = cy[top], cx[top]
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
    from skimage.measure import moments_hu, perimeter_crofton

    cfg = config or FeatureConfig()
    px = float(pixel_size_nm) if pixel_size_nm else cfg.default_pixel_size_nm
    if mask.shape != img.shape:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {img.shape}")
    res = _clean_mask(mask, cfg.min_area)
    if isinstance(res, str):
        return res
    mbox, (br0, bc0) = res
    H, W = img.shape
    area = float(np.count_nonzero(mbox))
    R = math.sqrt(area / math.pi)  # equivalent radius, px
    ys, xs = np.nonzero(mbox)
    cy, cx = br0 + ys.mean(), bc0 + xs.mean()  # centroid in image coordinates

    # window: bounding box + edge margin, and the radial disk of radius extent * R
    if cfg.edge_units == "radius":
        e_lo, e_hi = cfg.edge_range[0] * R, cfg.edge_range[1] * R
    else:
        e_lo, e_hi = cfg.edge_range[0] / px, cfg.edge_range[1] / px
    f_lo, f_hi = -max(0.5 * R, 2.0), max(0.25 * R, 1.0)  # fine profile for thickness / SNR
    margin = math.ceil(max(e_hi, f_hi, 0.0)) + 3
    rad = math.ceil(cfg.radial_extent * R) + 1
    bh, bw = mbox.shape
    r0 = max(0, min(br0 - margin, int(cy) - rad))
    r1 = min(H, max(br0 + bh + margin, int(cy) + rad + 2))
    c0 = max(0, min(bc0 - margin, int(cx) - rad))
    c1 = min(W, max(bc0 + bw + margin, int(cx) + rad + 2))
    m = np.zeros((r1 - r0, c1 - c0), dtype=bool)  # (h, w) window mask
    m[br0 - r0 : br0 - r0 + bh, bc0 - c0 : bc0 - c0 + bw] = mbox
    win = img[r0:r1, c0:c1].astype(np.float64)  # (h, w)
    cy, cx = cy - r0, cx - c0

    # per-particle standardisation over the particle pixels
    inside = win[m]
    mu, sd = float(inside.mean()), float(inside.std())
    z = (win - mu) / (sd if sd > 1e-12 else 1.0)  # (h, w)

    # signed distance to the boundary (px): negative inside, 0 on the boundary
    # one EDT to the inner boundary pixels B (mask pixels with a 4-neighbour outside): exact
    # for outside pixels (the nearest mask pixel is in B), inside it is the distance to the
    # nearest outside pixel minus ~1 px; the boundary itself lies half a pixel out of B
    pad = np.zeros((m.shape[0] + 2, m.shape[1] + 2), dtype=bool)  # (h+2, w+2)
    pad[1:-1, 1:-1] = m
    core = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]  # (h, w)
    rim = m & ~core  # (h, w) B
    d_b = ndi.distance_transform_edt(~rim)  # (h, w) px to the nearest B pixel
    s = np.where(m, -0.5 - d_b, d_b - 0.5)  # (h, w)

    # shape
    perim = float(perimeter_crofton(m, directions=4))
    circ = 4.0 * math.pi * area / perim**2 if perim > 0 else 0.0
    max_width_px = _max_width_px(m, pad, d_b)
    diam = _feret_px(m, rim)

    # histogram of standardised particle intensities (fractions; end bins take the outliers)
    zin = z[m]
    hlo, hhi = cfg.hist_range
    hb = np.floor((zin - hlo) * (cfg.hist_bins / (hhi - hlo))).astype(np.int64)
    hist = np.bincount(np.clip(hb, 0, cfg.hist_bins - 1), minlength=cfg.hist_bins) / zin.size

    # normalised central moments of the mask (x = column, y = row), scale invariant
    wy, wx = np.nonzero(m)
    dx, dy = wx - cx, wy - cy
    dx2, dy2 = dx * dx, dy * dy  # (A,) each; explicit products (integer ** is slow)
    nu = np.zeros((4, 4))  # nu[i, j]: row power i, column power j (skimage convention)
    a2, a25 = area**2, area**2.5
    nu[2, 0], nu[1, 1], nu[0, 2] = dy2.sum() / a2, (dy * dx).sum() / a2, dx2.sum() / a2
    nu[3, 0], nu[0, 3] = (dy2 * dy).sum() / a25, (dx2 * dx).sum() / a25
    nu[2, 1], nu[1, 2] = (dy2 * dx).sum() / a25, (dy * dx2).sum() / a25
    hu = moments_hu(nu)
    mom = [nu[0, 2], nu[2, 0], nu[0, 3], nu[3, 0]]  # mu20, mu02, mu30, mu03

    # radial density profile on rings from the centroid over [0, extent * R]
    yy, xx = np.indices(m.shape)
    rr = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)  # (h, w) float64
    rb = np.floor(rr * (cfg.profile_bins / (cfg.radial_extent * R))).astype(np.int64)
    radial, _ = _binned_mean(rb.ravel(), z.ravel(), cfg.profile_bins)

    # edge density profile against signed distance in [e_lo, e_hi]
    eb = np.floor((s - e_lo) * (cfg.edge_bins / (e_hi - e_lo))).astype(np.int64)
    edge, _ = _binned_mean(eb.ravel(), z.ravel(), cfg.edge_bins)

    # membrane: extremum of a fine (0.5 px) edge profile, full width at half its depth
    step = 0.5
    nf = math.ceil((f_hi - f_lo) / step)
    fb = np.floor((s.ravel() - f_lo) / step).astype(np.int64)
    zf = z.ravel()
    prof, _ = _binned_mean(fb, zf, nf)
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
    band = (fb >= a) & (fb <= b)  # (h*w,) pixels of the membrane band
    by, bx = np.divmod(np.flatnonzero(band), m.shape[1])
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
    interior = m & (s < min(s_inner, 0.0) - 1.0)
    if np.count_nonzero(interior) < 5:
        interior = m & (s <= 0.5 * float(s.min()))
    bg = ~m & (s > max(s_outer, 0.0) + 1.0)
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
