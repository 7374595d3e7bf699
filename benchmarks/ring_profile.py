"""Seventeenth round: the ring cross-section measured on the micrograph
(``DetectConfig(ring_profile="measured")``, ``detect._measured_rings``) against the thin
Gaussian ring, on the cached micrographs of ``arc_cache.py`` (tuning 3000 + 100 k + i, altsim
check 7000 + 1000 k + i, thirdsim exploratory 9000 + 50 k + i; never a report seed).

``--choose``: the measured pass's threshold at the Gaussian pass's candidate count: every
micrograph's measured ring maxima are kept down to significance ``FLOOR`` once, and the
threshold (0.05 grid) is the lowest whose candidates (``detect._suppress`` with the arc step,
centres inside), pooled over the micrographs of ``--sims``, are at most the Gaussian's at
``RING_THRESHOLD``. ``--final``: the final detection (``detect_candidates``, packaged verifier
unchanged, accepted outlines painted together), pooled precision / recall / F1 at mask IoU
0.5, and the recall of every candidate painted together, for each of ``--variants``:
"gaussian", "measured" (as shipped) or "measured:T" (``detect._PROFILE_SHIFT`` set to
``RING_THRESHOLD - T``), "full:T" (diagnostic: the profile from a first pass on every octave,
as the prototype).

    PYTHONPATH=src:benchmarks .venv/bin/python benchmarks/ring_profile.py DIR --choose
    PYTHONPATH=src:benchmarks .venv/bin/python benchmarks/ring_profile.py DIR --final \\
        [--variants gaussian,measured,full:3.5] [--sims ours,altsim]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from lipoclass.choices import RING_THRESHOLD
from lipoclass.micrograph import detect as D
from lipoclass.micrograph.match import match_instances, pool_matches

FLOOR = 2.5
GRID = np.round(np.arange(FLOOR, 6.001, 0.05), 2)


def stage(c: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """(working z map, ring map, measured ring maxima down to ``FLOOR``, profile found)."""
    image, px = c["image"], float(c["px"])
    cfg = D.DetectConfig(verifier="none")
    dmin, dmax = cfg.diameters_px(px)
    factor = D._work_factor(dmin, image.shape)
    work = D._working(image, factor, cfg.invert)
    z, _low = D._bandpass(work, D._sigma(cfg, px, factor))
    zr = D._ring_map(image, work, z, factor)
    rmin, rmax = max(dmin / 2 / factor, 4.0), max(dmax / 2 / factor, 5.0)
    old = D._PROFILE_SHIFT
    D._PROFILE_SHIFT = RING_THRESHOLD - FLOOR
    try:
        rings, prof = D._measured_rings(z, zr, rmin, rmax, RING_THRESHOLD, D._threads())
    finally:
        D._PROFILE_SHIFT = old
    if prof is None:  # the first pass stands: its maxima above the threshold
        rings = [r for r in rings if r[0] > RING_THRESHOLD]
    return z, zr, np.asarray(rings, np.float64).reshape(-1, 4), prof is not None


def count(rings: np.ndarray, thr: float, z: np.ndarray, zr: np.ndarray) -> int:
    """Candidates (suppressed with the arc step, centres inside) of the rings above ``thr``."""
    kept = D._suppress([tuple(map(float, r)) for r in rings if r[0] > thr], zr)
    c = np.asarray(kept, np.float64).reshape(-1, 4)
    return int(np.sum((c[:, 1] >= 0) & (c[:, 1] <= z.shape[0] - 1)
                      & (c[:, 2] >= 0) & (c[:, 2] <= z.shape[1] - 1)))  # fmt: skip


def choose(files: list[Path]) -> None:
    """Print the pooled candidate counts and the equal-count threshold."""
    mics, base, t0 = [], 0, time.time()
    for fn in files:
        c = np.load(fn)
        z, zr, rings, ok = stage(c)
        base += count(c["rings"], RING_THRESHOLD, z, zr)
        mics.append((z, zr, rings, ok))
    print(f"{len(files)} micrographs, gaussian at {RING_THRESHOLD}: {base / len(files):.1f} "
          f"candidates a micrograph; profile measured on {sum(m[3] for m in mics)} "
          f"({time.time() - t0:.0f} s)", flush=True)  # fmt: skip
    lo, hi = 0, len(GRID) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        n = sum(count(r, float(GRID[mid]), z, zr) for z, zr, r, _ in mics)
        print(f"  measured at {GRID[mid]:.2f}: {n / len(files):.1f}", flush=True)
        if n <= base:
            hi = mid
        else:
            lo = mid + 1
    n = sum(count(r, float(GRID[lo]), z, zr) for z, zr, r, _ in mics)
    print(f"equal count: threshold {GRID[lo]:.2f}, {n / len(files):.1f} candidates a micrograph")


def full_first_pass(
    z: np.ndarray, zr: np.ndarray, rmin: float, rmax: float, threshold: float, threads: int
) -> tuple[list[D.Ring], np.ndarray | None]:
    """``D._measured_rings`` with the prototype's first pass: the thin ring on every octave
    (diagnostic ``full:T``)."""
    first = D._ring_candidates(zr, rmin, rmax, threshold, threads)
    strong = D._strong_rings(z, first)
    if len(strong) < D._PROFILE_MIN:
        return first, None
    prof = D._membrane_profile(z, zr, strong)
    return D._ring_candidates(zr, rmin, rmax, threshold - D._PROFILE_SHIFT, threads, prof), prof


def final(files: list[Path], sim: str, variants: list[str]) -> None:
    """Final detection of each variant, pooled over ``files``: "gaussian", "measured:T" (the
    shipped option at threshold T) or "full:T" (``full_first_pass``); with the recall of all
    candidates painted together (no verifier)."""
    shipped, shift = D._measured_rings, D._PROFILE_SHIFT
    for v in variants:
        name, _, thr = v.partition(":")
        D._PROFILE_SHIFT = RING_THRESHOLD - float(thr) if thr else shift
        D._measured_rings = full_first_pass if name == "full" else shipped
        cfg = D.DetectConfig(ring_profile="gaussian" if name == "gaussian" else "measured")
        ms, mt, cands, acc, t0 = [], [], 0, 0, time.time()
        try:
            for fn in files:
                c = np.load(fn)
                truth = c["labels"].astype(np.int64)
                det = D.detect_candidates(c["image"], cfg, float(c["px"]))
                painted, _ = D.paint_outlines(truth.shape, det.cy, det.cx, det.radii)
                mt.append(match_instances(truth, painted))
                ms.append(match_instances(truth, det.labels))
                cands += len(det)
                acc += int(det.accepted.sum())
        finally:
            D._measured_rings, D._PROFILE_SHIFT = shipped, shift
        m, t = pool_matches(ms), pool_matches(mt)
        print(f"| {sim} | {v} | {len(files)} | {cands / len(files):.1f} | {t.recall:.4f} | "
              f"{acc} | {m.precision:.4f} | {m.recall:.4f} | {m.f1:.4f} | "
              f"({time.time() - t0:.0f} s)", flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--choose", action="store_true")
    ap.add_argument("--final", action="store_true")
    ap.add_argument("--variants", default="gaussian,measured", help="comma-separated")
    ap.add_argument("--sims", default="ours,altsim")
    args = ap.parse_args()
    sims = args.sims.split(",")
    if args.choose:
        choose([fn for sim in sims for fn in sorted(args.dir.glob(f"{sim}-*.npz"))])
    if args.final:
        for sim in sims:
            final(sorted(args.dir.glob(f"{sim}-*.npz")), sim, args.variants.split(","))


if __name__ == "__main__":
    main()
