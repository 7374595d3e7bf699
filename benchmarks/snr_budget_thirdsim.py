"""Where the ring filter loses the signal: an SNR budget through the candidate finder's
linear stages (``lipoclass.micrograph.detect``, steps 0-2) on thirdsim (exploratory seeds
9000 + 50 k + i only). Every stage up to the ring filter's correlation is linear (working
scale block mean, sign, DoG band-pass, octave block mean, ring correlation; the robust z is a
scalar per micrograph), so each liposome's noise-free signal s_i (thirdsim's linear image
formation, ``render(trace=)``, as ``ideal_observer_thirdsim.py``) and a noise-only image n
(the image minus its noise-free mean: shot noise, gain-reference error, the 8-bit rounding;
the few hot pixels left out, as the oracle leaves them out; plus a fresh draw of the ice /
carbon grain through the same chain) go through the same stages, and each stage's SNR is the
expected response at the true centre over the noise response's standard deviation there
(RMS of the noise response over a box of positions around the liposome: local noise).
Columns of the CSV / table:

- ``a``: the oracle, the ideal observer's SNR (shot + grain, prewhitened; joined from
  ``ideal_observer_thirdsim.py``'s CSV, ``--ideal``);
- ``a1``: the exact template s_i at full resolution, not prewhitened;
- ``b``: a circular template, s_i averaged about the true centre (its exact radial profile,
  a perfect circle), full resolution;
- ``c``: the same after the working scale's block mean (template: the block-averaged
  signal's radial profile);
- ``d``: after the DoG band-pass G(4 sigma) - G(sigma);
- ``d2``: after the ring-filter octave's further block mean (the map the ring filter sees);
- ``e``: the detector's thin ring (Gaussian cross-section, sigma 0.8 px) at the true
  membrane radius on that map (the texture mix left out: it is not linear);
- ``f_lin``: e's expected response over the robust noise level (MAD) the detector measures
  on the real micrograph's z map's response at that radius (clutter included);
- ``f_pred``: the same with the texture mix's weight (the z map scaled by 1 - weight, the
  MAD of the mixed map);
- ``f_at``: the real significance map at the true centre and membrane radius (texture's
  signal and the noise realisation included); ``f_diag``: ``diagnose_candidates``' best
  one near the truth (``--diag``);
- alternatives: ``d_hp`` (band-pass 1 - G(4 sigma), no noise smoothing), ``d_wide``
  (G(16 sigma) - G(sigma)), ``e_hp`` (the thin ring on the octave map of ``d_hp``),
  ``e_s16`` (a ring of sigma 1.6 px), ``e_glob`` (e against the MAD of the noise-only
  response over the whole map instead of the local RMS).

Only liposomes whose outline lies inside the frame (margin 2 px) are in the budget.

    PYTHONPATH=src:benchmarks .venv/bin/python benchmarks/snr_budget_thirdsim.py \\
        --count 8 --csv /tmp/budget.csv
    PYTHONPATH=src:benchmarks .venv/bin/python benchmarks/snr_budget_thirdsim.py \\
        --table /tmp/budget.csv --ideal /tmp/ideal.csv --diag /tmp/diag.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import fft, ndimage, signal, special

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_detect_thirdsim import CONDITIONS, _cfg
from ideal_observer_thirdsim import _chain, _windows
from lipoclass.micrograph import DetectConfig
from lipoclass.micrograph import detect as D
from thirdsim import render

SEED = 9000  # thirdsim exploratory seeds 9000 + 50 k + i; never a report seed
HALF_BILAYER_NM = 2.3
STAGES = ("a1", "b", "c", "d", "d2", "e", "f_lin", "f_pred", "f_at", "d_hp", "d_wide", "e_glob",
          "e_hp", "e_s16")  # fmt: skip
FIELDS = ["cond", "name", "seed", "label", "d_nm", "pixel_nm", "factor", "octave", "sigma",
          "texture", *STAGES]  # fmt: skip
SIZES = ((0.0, 50.0, "< 50 nm"), (50.0, 100.0, "50-100 nm"), (100.0, math.inf, "> 100 nm"))


def to_image(cfg, trace: dict, x: np.ndarray) -> np.ndarray:
    """A detector-side signal (``_chain``'s units) in the image's units: the 8-bit stretch's
    gain; the CCD's scintillator PSF and 10 ADU per electron."""
    if cfg.detector == "ccd":
        return fft.irfft2(fft.rfft2(x) * trace["psf"], s=x.shape) * 10.0
    if cfg.eight_bit:
        lo, hi = trace["stretch"]
        return x * (255.0 / max(hi - lo, 1e-9))
    return x


def noise_image(cfg, trace: dict, image: np.ndarray, seed: int) -> np.ndarray:
    """The micrograph's noise alone: image minus the noise-free mean (shot noise, gain error,
    read noise, 8-bit rounding; hot pixels set to 0), plus a fresh draw of the ice / carbon grain
    (white in the potential, ``trace['grain']`` its std) through the same chain."""
    mean = trace["mean"]
    if cfg.eight_bit:
        lo, hi = trace["stretch"]
        mean = (mean - lo) * (255.0 / max(hi - lo, 1e-9))
    res = np.asarray(image, np.float64) - mean
    res[trace["hot"]] = 0.0  # hot pixels left out, as the oracle does (~20 a micrograph)
    g = trace["grain"] * np.random.default_rng([seed, 77]).standard_normal(image.shape)
    return res + to_image(cfg, trace, _chain(trace, g))


def dog(x: np.ndarray, sigma: float, kind: str = "") -> np.ndarray:
    """The detector's band-pass without its robust z scaling: G(4 sigma) - G(sigma) (sign:
    dark positive); ``kind`` "hp": 1 - G(4 sigma) (no noise smoothing), "wide": G(16 sigma) -
    G(sigma) (a 4x lower cut)."""
    low = x if kind == "hp" else ndimage.gaussian_filter(x, sigma)
    if kind == "wide":
        return ndimage.gaussian_filter(x, 16.0 * sigma) - low
    return ndimage.gaussian_filter(low, math.sqrt(15.0) * sigma) - low


def block(x: np.ndarray, f: int) -> np.ndarray:
    """Block mean by ``f`` (the detector's crop to whole blocks)."""
    if f <= 1:
        return x
    h, w = x.shape[0] // f, x.shape[1] // f
    return x[: h * f, : w * f].reshape(h, f, w, f).mean(axis=(1, 3))


def ring_response(x: np.ndarray, r: float, width: float = 0.8) -> np.ndarray:
    """``D._ring_octave``'s raw correlation of map ``x`` with its thin ring of radius ``r``
    px (J0 x Gaussian of sigma ``width`` px in Fourier space, zero padding), before its
    MAD."""
    hh, ww = x.shape
    pad = int(r) + 4
    fh = fft.next_fast_len(hh + pad, real=True)
    fw = fft.next_fast_len(ww + pad, real=True)
    k = np.hypot(fft.fftfreq(fh)[:, None], fft.rfftfreq(fw)[None, :])
    kern = special.j0(2.0 * np.pi * k * r) * np.exp(-2.0 * np.pi**2 * width**2 * k * k)
    return fft.irfft2(fft.rfft2(x, s=(fh, fw)) * kern, s=(fh, fw))[:hh, :ww]


def radial_template(s: np.ndarray, cy: float, cx: float, rho_max: float) -> np.ndarray:
    """``s`` averaged about (cy, cx) (half-pixel radial bins, linear interpolation between
    them), zero beyond ``rho_max``: the best circular template for that signal."""
    yy, xx = np.indices(s.shape)
    rho = np.hypot(yy - cy, xx - cx)
    inside = rho <= rho_max
    b = np.floor(rho[inside] / 0.5).astype(int)
    num = np.bincount(b, weights=s[inside])
    cnt = np.bincount(b)
    ok = cnt > 0
    centres = (np.flatnonzero(ok) + 0.5) * 0.5
    prof = num[ok] / cnt[ok]
    out = np.zeros_like(s)
    out[inside] = np.interp(rho[inside], centres, prof)
    return out


def _crop(n: tuple[int, int], cy: float, cx: float, half: int) -> tuple[slice, slice] | None:
    """Slices of a (2 half + 1)^2 box about (cy, cx) inside a frame of ``n``, or None."""
    y, x = round(cy), round(cx)
    if y - half < 0 or x - half < 0 or y + half >= n[0] or x + half >= n[1]:
        return None
    return np.s_[y - half : y + half + 1, x - half : x + half + 1]


def matched_snr(
    sig: np.ndarray, noise: np.ndarray, cy: float, cx: float, rho_max: float, box: int
) -> float:
    """SNR of the circular template of a stage's signal map ``sig`` at (cy, cx), its noise
    map ``noise`` on the same grid: the response to the signal over the noise response's RMS
    at the positions within ``box`` px (the box shrunk to the frame)."""
    half = math.ceil(rho_max) + 1
    sl = _crop(sig.shape, cy, cx, half)
    if sl is None:
        return float("nan")
    s = sig[sl]
    y0, x0 = sl[0].start, sl[1].start
    t = radial_template(s, cy - y0, cx - x0, rho_max)
    resp = float((t * s).sum())
    n0, n1 = noise.shape
    b = min(box, (n0 - 2 * half - 1) // 2, (n1 - 2 * half - 1) // 2)
    if b < 2:
        return float("nan")
    yc = min(max(round(cy), half + b), n0 - 1 - half - b)
    xc = min(max(round(cx), half + b), n1 - 1 - half - b)
    nz = noise[yc - half - b : yc + half + b + 1, xc - half - b : xc + half + b + 1]
    r = signal.fftconvolve(nz, t[::-1, ::-1], mode="valid")
    return resp / max(float(np.sqrt(np.mean(r * r))), 1e-30)


def _groups(trace: dict, n: int, labels: list[int], extra: int) -> list[list[int]]:
    """Liposomes grouped so that their windows, grown by ``extra`` px (the band-pass and the
    block means spread a signal that far), do not overlap: one chain pass per group."""
    wins = _windows(trace, n, labels)
    groups: list[tuple[np.ndarray, list[int]]] = []
    for k, sl in wins.items():
        big = np.s_[max(0, sl[0].start - extra) : sl[0].stop + extra,
                    max(0, sl[1].start - extra) : sl[1].stop + extra]  # fmt: skip
        for occ, members in groups:
            if not occ[big].any():
                occ[big] = True
                members.append(k)
                break
        else:
            occ = np.zeros((n, n), bool)
            occ[big] = True
            groups.append((occ, [k]))
    return [m for _, m in groups]


def _octave(rm_w: float, rmin: float, rmax: float, shape: tuple[int, ...]) -> tuple | None:
    """(octave factor, membrane radius on its map) of a membrane radius ``rm_w`` (working
    px), or None when it is outside the searched radii (as ``diagnose_candidates``)."""
    if rm_w < rmin / 1.05 or rm_w > rmax * 1.05:
        return None
    octs = list(D._ring_octaves(shape, rmin, rmax))
    f = [f for r_lo, f, _ in octs if r_lo <= max(rm_w, rmin)][-1]
    return f, rm_w / f


class Stages:
    """One micrograph's detector-side maps: the working factor, DoG sigma, the real
    micrograph's band-pass MAD and texture weight, the noise image through each stage."""

    def __init__(self, image: np.ndarray, noise: np.ndarray, px: float) -> None:
        cfg = DetectConfig(verifier="none")
        dmin, dmax = cfg.diameters_px(px)
        self.px = px
        self.factor = D._work_factor(dmin, image.shape)
        self.sigma = D._sigma(cfg, px, self.factor)
        work = D._working(image, self.factor, False)
        z, _ = D._bandpass(work, self.sigma)
        band = dog(np.asarray(work, np.float64), self.sigma)
        med = float(np.median(band[::2, ::2]))
        self.mad = float(np.median(np.abs(band[::2, ::2] - med))) * 1.4826
        # no clip (nineteenth round): the budget's stages are linear up to the ring filter,
        # as the detector was when it was measured
        zr = D._ring_map(image, work, z, self.factor, None)
        one = D._ring_map(image, work, np.ones_like(z), self.factor, None)
        zero = D._ring_map(image, work, np.zeros_like(z), self.factor, None)
        self.keep = float(np.mean(one - zero))  # 1 - texture weight
        self.zr = np.asarray(zr, np.float64)
        self.rmin, self.rmax = max(dmin / 2 / self.factor, 4.0), max(dmax / 2 / self.factor, 5.0)
        self.noise = {"full": noise}
        self.noise["c"] = block(noise, self.factor)
        self.noise["d"] = dog(self.noise["c"], self.sigma)
        for kind in ("hp", "wide"):
            self.noise["d_" + kind] = dog(self.noise["c"], self.sigma, kind)
        self.z = np.asarray(z, np.float64)
        self._oct: dict[int, np.ndarray] = {}

    def noise_octave(self, f: int) -> np.ndarray:
        if f not in self._oct:
            self._oct[f] = block(self.noise["d"], f)
        return self._oct[f]

    def extra(self) -> int:
        """Full-resolution px a signal spreads through the band-pass (4 sigma of G(4 sigma))
        and the block means."""
        return math.ceil(16 * self.sigma * self.factor) + 8 * self.factor


def budget(st: Stages, sig_full: np.ndarray, win: tuple, cy: float, cx: float, r_px: float):
    """One liposome's stage SNRs (dict) from its full-frame signal ``sig_full``."""
    px, fac = st.px, st.factor
    out: dict[str, float] = {}
    # a': the exact template, its window
    s = sig_full[win]
    nz = st.noise["full"]
    y0, x0 = win[0].start, win[1].start
    box = max(16, round(0.5 * r_px))
    out["a1"] = _exact_snr(s, nz, y0, x0, box)
    rho = 1.2 * r_px + max(8.0, 12.0 / px)
    out["b"] = matched_snr(sig_full, nz, cy, cx, rho, box)
    wy, wx, rw = (cy + 0.5) / fac - 0.5, (cx + 0.5) / fac - 0.5, r_px / fac
    rho_w, box_w = 1.2 * rw + max(8.0, 12.0 / px / fac), max(16, round(0.5 * rw))
    sc = block(sig_full, fac)
    out["c"] = matched_snr(sc, st.noise["c"], wy, wx, rho_w, box_w)
    sd = dog(sc, st.sigma)
    out["d"] = matched_snr(sd, st.noise["d"], wy, wx, rho_w, box_w)
    for kind in ("hp", "wide"):
        sk = dog(sc, st.sigma, kind)
        out["d_" + kind] = matched_snr(sk, st.noise["d_" + kind], wy, wx, rho_w, box_w)
    rm_w = rw - HALF_BILAYER_NM / px / fac
    oc = _octave(rm_w, st.rmin, st.rmax, st.zr.shape)
    for k in ("d2", "e", "f_lin", "f_pred", "f_at", "e_glob", "e_hp", "e_s16"):
        out[k] = float("nan")
    out["octave"] = float("nan")
    if oc is None:
        return out
    f, ro = oc
    out["octave"] = f
    oy, ox = (wy + 0.5) / f - 0.5, (wx + 0.5) / f - 0.5
    so, no = block(sd, f), st.noise_octave(f)
    rho_o = 1.2 * rw / f + max(4.0, 12.0 / px / fac / f)
    out["d2"] = matched_snr(so, no, oy, ox, rho_o, max(8, round(0.5 * rw / f)))
    # e: the thin ring at the membrane radius; its noise RMS over positions whose ring lies
    # inside the map, within max(8, r / 2) px of the centre
    rs, rn = ring_response(so, ro), ring_response(no, ro)
    e_sig = float(ndimage.map_coordinates(rs, [[oy], [ox]], order=1)[0])
    b = max(8, round(0.5 * ro))
    hh, ww = rn.shape
    m = math.ceil(ro) + 1
    ys = slice(max(m, round(oy) - b), min(hh - m, round(oy) + b + 1))
    xs = slice(max(m, round(ox) - b), min(ww - m, round(ox) + b + 1))
    part = rn[ys, xs]
    if part.size < 4:
        return out
    out["e"] = e_sig / float(np.sqrt(np.mean(part * part)))
    # the same thin ring on the band-pass without its noise smoothing; a ring twice as wide
    for key, smap, nmap, wid in (
        ("e_hp", block(dog(sc, st.sigma, "hp"), f), block(st.noise["d_hp"], f), 0.8),
        ("e_s16", so, no, 1.6),
    ):
        q = ring_response(nmap, ro, wid)[ys, xs]
        val = ndimage.map_coordinates(ring_response(smap, ro, wid), [[oy], [ox]], order=1)[0]
        out[key] = float(val) / float(np.sqrt(np.mean(q * q)))
    out["e_glob"] = e_sig / _mad(rn)
    out["f_lin"] = e_sig / st.mad / _mad(ring_response(block(st.z, f), ro))
    # f: the detector's own normalisation on the real micrograph's ring map at that radius
    ra = ring_response(block(st.zr, f), ro)
    med, mad = float(np.median(ra[::3, ::3])), _mad(ra)
    out["f_pred"] = st.keep * e_sig / st.mad / mad
    out["f_at"] = (float(ndimage.map_coordinates(ra, [[oy], [ox]], order=1)[0]) - med) / mad
    return out


def _mad(x: np.ndarray) -> float:
    """The detector's robust noise level of a response map (every third px each way)."""
    sub = x[::3, ::3]
    return float(np.median(np.abs(sub - np.median(sub)))) * 1.4826


def _exact_snr(s: np.ndarray, noise: np.ndarray, y0: int, x0: int, box: int) -> float:
    """SNR of the exact signal ``s`` (its window at y0, x0) as its own template, not
    prewhitened: <s, s> over the RMS of its correlation with the noise near it."""
    h, w = s.shape
    n0, n1 = noise.shape
    b = min(box, (n0 - h) // 2, (n1 - w) // 2)
    if b < 2:
        return float("nan")
    ya, xa = min(max(y0 - b, 0), n0 - h - 2 * b), min(max(x0 - b, 0), n1 - w - 2 * b)
    nz = noise[ya : ya + h + 2 * b, xa : xa + w + 2 * b]
    r = signal.fftconvolve(nz, s[::-1, ::-1], mode="valid")
    return float((s * s).sum()) / max(float(np.sqrt(np.mean(r * r))), 1e-30)


def micrograph(c: int, seed: int) -> list[dict]:
    """Budget rows of every liposome of one thirdsim micrograph whose outline is inside."""
    cfg = _cfg(c)
    trace: dict = {}
    m = render(cfg, seed, trace)
    n = cfg.size
    noise = noise_image(cfg, trace, m.image, seed)
    st = Stages(np.asarray(m.image, np.float32), noise, cfg.pixel_nm)
    area = np.bincount(m.labels.ravel(), minlength=len(m.vesicles) + 1)
    todo = []
    for k in range(1, len(m.vesicles) + 1):
        v = m.vesicles[k - 1]
        r = v["r_nm"] / cfg.pixel_nm * (1 + 3 * cfg.deform) + 2
        if area[k] > 0 and min(v["cy"], v["cx"], n - 1 - v["cy"], n - 1 - v["cx"]) >= r:
            todo.append(k)
    rows = []
    wins = _windows(trace, n, todo)
    for members in _groups(trace, n, todo, st.extra()):
        pot = np.zeros((n, n))
        for owner, sl, patch in trace["parts"]:
            if owner in members:
                pot[sl] += patch
        sig = to_image(cfg, trace, _chain(trace, pot))
        for k in members:
            v = m.vesicles[k - 1]
            res = budget(st, sig, wins[k], v["cy"], v["cx"], v["r_nm"] / cfg.pixel_nm)
            rows.append({"cond": c, "name": CONDITIONS[c][0], "seed": seed, "label": k,
                         "d_nm": f"{2 * v['r_nm']:.2f}", "pixel_nm": cfg.pixel_nm,
                         "factor": st.factor, "octave": res.pop("octave"),
                         "sigma": f"{st.sigma:.3g}", "texture": f"{1 - st.keep:.3f}",
                         **{k2: f"{x:.4g}" for k2, x in res.items()}})  # fmt: skip
    return rows


def measure(count: int, path: Path, only: list[int] | None) -> None:
    """Budget rows of ``count`` micrographs per condition, written then renamed."""
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", newline="") as fh:
        out = csv.DictWriter(fh, FIELDS)
        out.writeheader()
        for c in only if only is not None else range(len(CONDITIONS)):
            for i in range(count):
                t0, s = time.time(), SEED + 50 * c + i
                rows = micrograph(c, s)
                out.writerows(rows)
                fh.flush()
                med = {k: np.nanmedian([float(r[k]) for r in rows]) for k in STAGES}
                print(f"{CONDITIONS[c][0]} seed {s}: {len(rows)} liposomes, median "
                      + ", ".join(f"{k} {v:.1f}" for k, v in med.items())
                      + f", {time.time() - t0:.1f} s", flush=True)  # fmt: skip
    os.replace(tmp, path)


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _join(rows: list[dict], ideal: Path | None, diag: Path | None) -> list[dict]:
    """Add the oracle SNR (``ideal_observer_thirdsim`` CSV: snr_grain, found, cand) and the
    ring significance near the truth (``diagnose_candidates`` CSV: sig, cause)."""
    idx = {}
    if ideal is not None:
        idx = {(r["seed"], r["label"]): r for r in _read(ideal)}
    dg = {}
    if diag is not None:
        dg = {(r["seed"], r["k"]): r for r in _read(diag) if r["sim"] == "thirdsim"}
    out = []
    for r in rows:
        key = (r["seed"], r["label"])
        q = dict(r)
        q["a"] = idx[key]["snr_grain"] if key in idx else "nan"
        q["found"] = idx[key]["found"] if key in idx else ""
        q["f_diag"] = dg[key]["sig"] if key in dg else "nan"
        out.append(q)
    return out


ORDER = ("a", "a1", "b", "c", "d", "d2", "e", "f_lin", "f_pred", "f_at", "f_diag")
#: the stage each ratio is taken against (the chain's previous one; f_at, f_diag: e)
PREV = {"a1": "a", "b": "a1", "c": "b", "d": "c", "d2": "d", "e": "d2", "f_lin": "e",
        "f_pred": "f_lin", "f_at": "e", "f_diag": "e", "d_hp": "d", "d_wide": "d",
        "e_hp": "e", "e_s16": "e", "e_glob": "e"}  # fmt: skip
ALT = ("d", "d_hp", "d_wide", "e", "e_hp", "e_s16", "e_glob")


def _cells(g: list[dict], cols: tuple[str, ...]) -> list[str]:
    """Median SNR at each stage and (in brackets) the median per-liposome ratio to the
    stage ``PREV`` names."""
    cells = []
    for k in cols:
        v = np.array([float(r[k]) for r in g])
        med = np.nanmedian(v) if np.isfinite(v).any() else float("nan")
        if k not in PREV or k == cols[0]:
            cells.append(f"{med:.1f}")
            continue
        prev = np.array([float(r[PREV[k]]) for r in g])
        ok = np.isfinite(v) & np.isfinite(prev) & (prev != 0)
        ratio = np.median(v[ok] / prev[ok]) if ok.any() else float("nan")
        cells.append(f"{med:.1f} ({ratio:.2f})")
    return cells


def _groups_of(rows: list[dict]) -> list[tuple[str, list[dict]]]:
    groups: list[tuple[str, list[dict]]] = [("all (pooled)", rows)]
    for lo, hi, name in SIZES:
        groups.append((name, [r for r in rows if lo <= float(r["d_nm"]) < hi]))
    for p in sorted({float(r["pixel_nm"]) for r in rows}):
        g = [r for r in rows if float(r["pixel_nm"]) == p]
        groups.append((f"{p:g} nm/px", g))
        for lo, hi, name in SIZES:
            groups.append((f"{p:g} nm/px, {name}",
                           [r for r in g if lo <= float(r["d_nm"]) < hi]))  # fmt: skip
    for c, (name, _) in enumerate(CONDITIONS):
        groups.append((name, [r for r in rows if int(r["cond"]) == c]))
    return [(n, g) for n, g in groups if g]


def table(path: Path, ideal: Path | None, diag: Path | None) -> None:
    """The budget table (median SNR and ratio to the previous stage) and the alternatives'."""
    rows = _join(_read(path), ideal, diag)
    for cols in (ORDER, ALT):
        head = ["group", "liposomes", *cols]
        print("\n| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for name, g in _groups_of(rows):
            print(f"| {name} | {len(g)} | " + " | ".join(_cells(g, cols)) + " |")
    found = [r for r in rows if r["found"] != ""]
    for lab, sel in (("found", "1"), ("missed", "0")):
        g = [r for r in found if r["found"] == sel]
        if g:
            print(f"\ndetector {lab} ({len(g)}): " + ", ".join(
                f"{k} {np.nanmedian([float(r[k]) for r in g]):.1f}" for k in ORDER))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=3, help="micrographs per condition")
    ap.add_argument("--cond", default="", help="only these conditions (comma-separated)")
    ap.add_argument("--csv", type=Path, help="write the per-liposome budget here")
    ap.add_argument("--table", type=Path, help="print the tables of a budget CSV")
    ap.add_argument("--ideal", type=Path, help="ideal_observer_thirdsim.py CSV (oracle SNR)")
    ap.add_argument("--diag", type=Path, help="diagnose_candidates.py CSV (significance)")
    a = ap.parse_args()
    if a.count > 8:
        raise SystemExit("exploratory seeds 9000 + 50 k + i, i < 50 only; keep --count small")
    if a.csv:
        only = [int(c) for c in a.cond.split(",")] if a.cond else None
        measure(a.count, a.csv, only)
    if a.table:
        table(a.table, a.ideal, a.diag)


if __name__ == "__main__":
    main()
