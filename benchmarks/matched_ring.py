"""Candidate-level prototypes after the SNR budget (``snr_budget_thirdsim.py``; not shipped):
the candidate stage of ``benchmarks/diagnose_candidates.py`` (steps 0-4 of
``lipoclass.micrograph.detect``) with a different band-pass and / or a ring template whose
cross-section is measured on the micrograph itself, scored by candidate recall "alone" (a
candidate centred within half the radius whose outline, painted alone, has mask IoU >= 0.5)
and candidates a micrograph, at EQUAL candidate count: every variant's ring maxima are kept
down to significance 2.5 once, and the threshold is raised until its candidates a micrograph
(pooled over the simulator's micrographs) reach main's at threshold 4. Variants:

- ``main``: as shipped (thin ring, Gaussian cross-section of sigma 0.8 px);
- ``hp``: band-pass 1 - G(4 sigma) instead of G(sigma) - G(4 sigma) (no noise smoothing);
- ``profile``: two passes: main's candidates of significance >= 7 (at least 3, else main's
  result) give the mean signed cross-section of the ring map across their membranes (along
  48 rays around their refined outlines, -6 .. +6 working px), and the second pass correlates
  the map with rings of that cross-section (per octave, the profile box-averaged by its
  factor; circumference-weighted; the micrograph's own fringes and sign);
- ``wide``: the band-pass's low cut at G(16 sigma) instead of G(4 sigma);
- ``w16``: the thin ring's cross-section sigma 1.6 px instead of 0.8 (tolerance for
  non-circular outlines);
- ``disk``: as ``profile``, but the whole radial profile (0.05-1.5 x the membrane radius,
  against the level at 1.35-1.5 r), interior included, scaled with the radius;
- ``fine``: with ``profile`` / ``disk``, the second pass's radii in 2.5 % steps;
- combinations joined by "+", e.g. ``hp+profile``, ``hp+wide``.

``--arc``: every variant's suppression with the sixteenth round's arc step (on its own ring
map), as ``detect_candidates`` now runs it; without it, the greedy suppression alone.

Micrographs: our tuning (3000 + 100 k), altsim check (7000 + 1000 k + i), thirdsim
exploratory (9000 + 50 k + i); never a report seed.

    PYTHONPATH=src:benchmarks .venv/bin/python benchmarks/matched_ring.py \\
        [--per 3] [--sims ours,altsim,thirdsim] [--variants main,hp,profile,hp+profile]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi
from scipy import special

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diagnose_candidates import HALF_BILAYER_NM, _alone_iou, micrographs, suppress_trace
from lipoclass.micrograph import detect as D

FLOOR = 2.5  # lowest threshold kept for the equal-count sweep
STRONG = 7.0  # first-pass significance of the candidates that give the profile
OFFSETS = np.arange(-6.0, 6.01, 0.5)  # working px across the membrane (negative: inside)
FRACTIONS = np.arange(0.05, 1.501, 0.05)  # of the membrane radius, for "disk"
THRESHOLDS = np.round(np.arange(FLOOR, 12.01, 0.05), 2)


def bandpass(work: np.ndarray, sigma: float, hp: bool, wide: bool) -> np.ndarray:
    """``D._bandpass``'s z map G(4 sigma) - G(sigma); ``hp``: without the noise smoothing
    G(sigma); ``wide``: the low cut at 16 sigma instead of 4 sigma."""
    if not hp and not wide:
        return D._bandpass(work, sigma)[0]
    low = work if hp else ndi.gaussian_filter(work, sigma)
    band = ndi.gaussian_filter(work, (16.0 if wide else 4.0) * sigma) - low
    med = float(np.median(band[::2, ::2]))
    mad = float(np.median(np.abs(band[::2, ::2] - med))) * 1.4826
    return ((band - med) / mad).astype(np.float32) if mad > 0 else np.zeros_like(band)


def ring_stack(
    z: np.ndarray, f: int, radii: list[float], prof: tuple | None, width: float = 0.8
) -> np.ndarray:
    """Significance maps (R, h // f, w // f) of rings of ``radii`` (px of ``z``) on ``z``
    block-averaged by ``f``, as ``D._ring_octave``: the thin ring of Gaussian cross-section
    ``width`` px (``prof`` None) or rings of cross-section ``prof`` = (kind, offsets,
    values): kind "abs", offsets in px of ``z`` (radius + offset), or "rel", fractions of
    the radius (a whole disk profile); weighted by circumference; each map robust-z scaled
    and edge-corrected."""
    h, w = z.shape
    hh, ww = h // f, w // f
    zd = z[: hh * f, : ww * f].reshape(hh, f, ww, f).mean(axis=(1, 3))
    pad = int(max(radii) / f) + 4 + (int(OFFSETS[-1] / f) + 1 if prof else 0)
    fh = sfft.next_fast_len(hh + pad, real=True)
    fw = sfft.next_fast_len(ww + pad, real=True)
    spec = sfft.rfft2(zd, s=(fh, fw))
    n1, nw = fh // 2 + 1, fw // 2 + 1
    dk = 0.25 / max(fh, fw)
    ky, kx = np.arange(n1) / fh, np.arange(nw) / fw
    idx = np.rint(np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2) / dk).astype(np.int32)
    kgrid = np.arange(int(idx.max()) + 1) * dk
    if prof is None:
        us, ws, sg = np.zeros(1), np.ones(1), width
    elif prof[0] == "abs":  # the profile box-averaged by f, on a half-px grid of the octave
        _, u, p = prof
        us = np.arange(u[0] / f, u[-1] / f + 1e-9, 0.5)
        box = ndi.uniform_filter1d(p, max(1, round(2 * f)), mode="nearest") if f > 1 else p
        ws, sg = np.interp(us * f, u, box), 0.5
    gauss = np.exp(-2.0 * np.pi**2 * (sg if prof is None or prof[0] == "abs" else 0.5) ** 2
                   * kgrid * kgrid)  # fmt: skip
    out = np.full((len(radii), hh, ww), -np.inf, np.float32)
    prod = np.empty_like(spec)
    for i, r in enumerate(radii):
        ro = r / f
        if prof is not None and prof[0] == "rel":
            rho, wr = prof[1] * ro, prof[2] * prof[1]
        else:
            ok = ro + us > 0.5
            rho, wr = ro + us[ok], ws[ok] * (ro + us[ok]) / ro
        k1 = special.j0(2.0 * np.pi * kgrid[None, :] * rho[:, None])
        kern = ((wr[:, None] * k1).sum(axis=0) * gauss)[idx]
        np.multiply(spec[:n1], kern, out=prod[:n1])
        np.multiply(spec[n1:], kern[fh - n1 : 0 : -1], out=prod[n1:])
        resp = sfft.irfft2(prod, s=(fh, fw))[:hh, :ww]
        sub = resp[::3, ::3]
        med = float(np.median(sub))
        mad = float(np.median(np.abs(sub - med))) * 1.4826
        if mad > 0:
            resp = (resp - med) / mad
            D._edge_correct(resp, ro)
            out[i] = resp
    return out


def rings(
    zr: np.ndarray,
    rmin: float,
    rmax: float,
    prof: tuple | None,
    width: float = 0.8,
    fine: bool = False,
) -> list[tuple]:
    """(significance, cy, cx, radius) of the ring maxima above ``FLOOR``, working px
    (``fine``: radii in 2.5 % steps, the octaves' 5 % ones and their midpoints)."""
    out = []
    for r_lo, f, radii in D._ring_octaves(zr.shape, rmin, rmax):
        if fine:
            radii = sorted(radii + [r * 1.025 for r in radii])
        st = ring_stack(zr, f, radii, prof, width)
        best = st.max(axis=0)
        best_r = np.asarray(radii, np.float32)[st.argmax(axis=0)]
        peak = best == ndi.maximum_filter(best, size=max(3, int(0.5 * r_lo / f)))
        for y, x in np.argwhere(peak & (best > FLOOR)):
            out.append((float(best[y, x]), (y + 0.5) * f - 0.5, (x + 0.5) * f - 0.5,
                        float(best_r[y, x])))  # fmt: skip
    return out


def candidates(
    rs: list[tuple], thr: float, z: np.ndarray, factor: int, px: float, zr: Any = None
) -> dict:
    """The suppression and refined outlines of the rings above ``thr`` (full resolution);
    with the ring map ``zr``, the suppression's arc step too (sixteenth round)."""
    order, taken, _ = suppress_trace([r for r in rs if r[0] > thr], zr)
    cand = np.asarray([c for c, t in zip(order, taken) if t], np.float64).reshape(-1, 4)
    ok = (cand[:, 1] >= 0) & (cand[:, 1] <= z.shape[0] - 1)
    cand = cand[ok & (cand[:, 2] >= 0) & (cand[:, 2] <= z.shape[1] - 1)]
    _raw, radii, _rim = D._refine(z, cand[:, 1], cand[:, 2], cand[:, 3])
    return {"cand": cand, "cy": (cand[:, 1] + 0.5) * factor - 0.5,
            "cx": (cand[:, 2] + 0.5) * factor - 0.5, "wr": radii,
            "radii": radii * factor + HALF_BILAYER_NM / px}  # fmt: skip


#: ``oracle`` variants (diagnostic only): the truth labels of the micrograph in hand, so the
#: profile is measured on the candidates that match a liposome instead of the strong ones
ORACLE: dict[str, Any] = {}


def _oracle_strong(st: dict) -> np.ndarray:
    """Candidates of ``st`` whose outline, painted alone, matches a truth liposome (IoU >= 0.5)."""
    pairs, iou = D.alone_overlaps(ORACLE["labels"], st["cy"], st["cx"], st["radii"])
    return np.unique(pairs[iou >= 0.5, 0])


def profile(zr: np.ndarray, st: dict, disk: bool = False, oracle: bool = False) -> tuple | None:
    """Mean signed cross-section of ``zr`` across the membranes of the strong candidates of
    ``st`` (significance >= ``STRONG``, their median-filtered ray radii), or None (< 3):
    ("abs", offsets px, values), or with ``disk`` the whole radial profile ("rel", fractions
    of the membrane radius, values) against the level at 1.35-1.5 r."""
    strong = _oracle_strong(st) if oracle else np.flatnonzero(st["cand"][:, 0] >= STRONG)
    if len(strong) < 3:
        return None
    c, rr = st["cand"][strong], st["wr"][strong]
    if disk:
        rad = rr[:, :, None] * FRACTIONS[None, None, :]
    else:
        rad = rr[:, :, None] + OFFSETS[None, None, :]
    vals = D._sample(zr, c[:, 1], c[:, 2], np.maximum(rad, 0.0))
    p = vals.mean(axis=(0, 1)).astype(np.float64)
    if disk:
        p -= p[FRACTIONS >= 1.35].mean()
        return "rel", FRACTIONS, p / max(float(np.abs(p).max()), 1e-9)
    p -= 0.5 * (p[0] + p[-1])  # against the level 6 px either side
    return "abs", OFFSETS, p / max(float(np.abs(p).max()), 1e-9)


def stage(image: np.ndarray, px: float, variant: str) -> tuple[list, np.ndarray, int, Any, Any]:
    """All ring maxima above FLOOR of ``variant``, the refine map, factor, the profile and
    the ring map."""
    cfg = D.DetectConfig(verifier="none")
    dmin, dmax = cfg.diameters_px(px)
    factor = D._work_factor(dmin, image.shape)
    work = D._working(image, factor, cfg.invert)
    sigma = D._sigma(cfg, px, factor)
    z0 = D._bandpass(work, sigma)[0]
    rmin, rmax = max(dmin / 2 / factor, 4.0), max(dmax / 2 / factor, 5.0)
    tokens = variant.split("+")
    z = bandpass(work, sigma, "hp" in tokens, "wide" in tokens)
    zr = D._ring_map(image, work, z, factor)
    width = 1.6 if "w16" in tokens else 0.8
    rs = rings(zr, rmin, rmax, None, width)
    prof = None
    if "profile" in tokens or "disk" in tokens:
        first = candidates(rs, cfg.threshold, z0, factor, px)
        prof = profile(zr, first, "disk" in tokens, "oracle" in tokens)
        if prof is not None:
            rs = rings(zr, rmin, rmax, prof, fine="fine" in tokens)
    return rs, z0, factor, prof, zr


def recall(st: dict, labels: np.ndarray, truth: list[dict]) -> int:
    """Truth liposomes with a candidate alone at IoU >= 0.5 (centred within half r)."""
    h, w = labels.shape
    found = 0
    present = set(np.unique(labels).tolist())
    for t in truth:
        if t["k"] not in present:
            continue
        cy, cx, r = t["cy"], t["cx"], t["r"]
        y0, y1 = max(0, int(cy - 2.5 * r) - 4), min(h, int(cy + 2.5 * r) + 5)
        x0, x1 = max(0, int(cx - 2.5 * r) - 4), min(w, int(cx + 2.5 * r) + 5)
        mask = labels[y0:y1, x0:x1] == t["k"]
        near = np.flatnonzero(np.hypot(st["cy"] - cy, st["cx"] - cx) < 0.5 * r)
        if any(_alone_iou(st, int(i), mask, y0, x0) >= 0.5 for i in near):
            found += 1
    return found


def run(sim: str, per: int, variants: list[str], arc: bool = False) -> None:
    """Each variant's recall alone and candidates a micrograph at threshold 4 and at main's
    candidate count (thresholds on a 0.05 grid from ``FLOOR``)."""
    if "main" not in variants:
        variants = ["main", *variants]
    mics = []
    for name, seed, image, labels, px, tl, _dis in micrographs(sim, per):
        t0 = time.time()
        img = np.asarray(image, np.float32)
        per_v = {}
        ORACLE["labels"] = np.asarray(labels)
        for v in variants:
            rs, z0, factor, prof, zr = stage(img, px, v)
            per_v[v] = (rs, z0, factor, prof is not None, zr if arc else None)
        n = sum(1 for t in tl if (labels == t["k"]).any())
        mics.append((labels, tl, px, n, per_v, name))
        print(f"{sim} {name} {seed}: {time.time() - t0:.1f} s", file=sys.stderr, flush=True)
    n_all = sum(m[3] for m in mics)

    def ncand(v: str, thr: float) -> float:
        tot = 0
        for m in mics:
            rs, z0 = m[4][v][0], m[4][v][1]
            order, taken, _ = suppress_trace([r for r in rs if r[0] > thr], m[4][v][4])
            c = np.asarray([q for q, t in zip(order, taken) if t]).reshape(-1, 4)
            tot += int(np.sum((c[:, 1] >= 0) & (c[:, 1] <= z0.shape[0] - 1)
                              & (c[:, 2] >= 0) & (c[:, 2] <= z0.shape[1] - 1)))  # fmt: skip
        return tot / len(mics)

    by_cond: dict[tuple[str, float], dict[str, list[int]]] = {}

    def score(v: str, thr: float) -> tuple[float, float]:
        found = cands = 0
        for labels, tl, px, n, per_v, name in mics:
            rs, z0, factor, _, zr = per_v[v]
            st = candidates(rs, thr, z0, factor, px, zr)
            k = recall(st, labels, tl)
            found += k
            cands += len(st["cy"])
            q = by_cond.setdefault((v, thr), {}).setdefault(name, [0, 0, 0, 0])
            q[0], q[1], q[2], q[3] = q[0] + k, q[1] + n, q[2] + len(st["cy"]), q[3] + 1
        return found / n_all, cands / len(mics)

    base_r, base_c = score("main", 4.0)
    print(f"\n{sim}: {len(mics)} micrographs, {n_all} liposomes; main at 4: recall alone "
          f"{base_r:.3f}, {base_c:.1f} candidates a micrograph")  # fmt: skip
    equal: dict[str, float] = {}
    for v in variants:
        r4, c4 = score(v, 4.0)
        lo, hi = 0, len(THRESHOLDS) - 1  # the lowest threshold with at most main's count
        while lo < hi:
            mid = (lo + hi) // 2
            if ncand(v, float(THRESHOLDS[mid])) <= base_c:
                hi = mid
            else:
                lo = mid + 1
        thr = float(THRESHOLDS[lo])
        re, ce = score(v, thr)
        prof = sum(m[4][v][3] for m in mics)
        print(f"| {sim} | {v} | {r4:.3f} | {c4:.1f} | {thr:.2f} | {re:.3f} | {ce:.1f} | "
              f"{prof} / {len(mics)} |", flush=True)  # fmt: skip
        equal[v] = thr
    print(
        f"\n{sim}, per condition at equal candidate count: recall alone (candidates a "
        "micrograph)\n| condition | " + " | ".join(variants) + " |"
    )
    print("|---|" + "---|" * len(variants))
    for name in dict.fromkeys(m[5] for m in mics):
        cells = []
        for v in variants:
            q = by_cond[(v, equal[v])][name]
            cells.append(f"{q[0] / max(q[1], 1):.3f} ({q[2] / q[3]:.0f})")
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per", type=int, default=3, help="micrographs a condition")
    ap.add_argument("--sims", default="ours,altsim,thirdsim", help="comma-separated")
    ap.add_argument("--variants", default="main,hp,profile,hp+profile", help="comma-separated")
    ap.add_argument("--arc", action="store_true", help="the suppression's arc step as well")
    a = ap.parse_args()
    for sim in a.sims.split(","):
        run(sim, a.per, a.variants.split(","), a.arc)


if __name__ == "__main__":
    main()
