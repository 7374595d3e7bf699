"""Candidate-level experiments of the diagnosis round (branch ``candidate-misses``, not shipped;
docs/micrographs.md, "Where candidates are lost"): the candidate stage of
``benchmarks/diagnose_candidates.py`` with one change, scored by candidate recall alone and
together and the candidates a micrograph, on the same micrographs (tuning 3000+, altsim check
7000+, thirdsim exploratory 9000+). Variants:

- ``main``: as shipped (since the sixteenth round with the arc step of the suppression;
  ``enclose:X`` keeps the greedy pass alone);
- ``threshold:T``: ring threshold T instead of 4;
- ``null:N``: a per-micrograph threshold, the one that leaves N maxima per million working px
  of the ring filter bank run on a phase-randomised copy of the ring map (the micrograph's
  own noise maxima), clipped to 3-5;
- ``first:T``: where the working scale block-averages (factor >= 2), the octave of radii
  without a block average of its own is correlated with the full-resolution z map (band-pass
  at ``_sigma`` of factor 1) instead, its maxima kept above T; ``firstplus:T``: beside the
  working-scale octave (both octaves' maxima go to the suppression);
- ``enclose:X``: the suppression keeps a ring that encloses a stronger off-centre ring of at
  most X times its radius (main drops it).

    PYTHONPATH=src .venv/bin/python benchmarks/candidate_variants.py first:4.3 \\
        [--per 3] [--sims ours,altsim,thirdsim]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diagnose_candidates import (
    HALF_BILAYER_NM,
    _sig_stack,
    classify,
    micrographs,
    ring_bank,
    suppress_trace,
)
from lipoclass.micrograph import detect as D
from lipoclass.micrograph.match import match_instances


def _null_threshold(zr: np.ndarray, rmin: float, rmax: float, per_mpx: float) -> float:
    """The threshold leaving ``per_mpx`` null maxima per million px of ``zr`` (3-5)."""
    spec = np.fft.rfft2(zr)
    rng = np.random.default_rng(0)
    null = np.fft.irfft2(spec * np.exp(2j * np.pi * rng.random(spec.shape)), s=zr.shape)
    octs = ring_bank(null.astype(np.float32), rmin, rmax)
    vals = np.sort(np.concatenate([o["best"][o["peak"]] for o in octs]))[::-1]
    k = round(per_mpx * zr.size / 1e6)
    return float(np.clip(vals[k] if k < len(vals) else 3.0, 3.0, 5.0))


def _full_first(
    image: np.ndarray, cfg: Any, px: float, factor: int, octs: list, keep: bool = False
) -> list:
    """The octave(s) of block factor 1 again on the full-resolution z map (f = 1 / factor),
    instead of the working-scale one (``keep``: beside it)."""
    zf, _ = D._bandpass(D._working(image, 1, cfg.invert), D._sigma(cfg, px, 1))
    out = []
    for o in octs:
        if o["f"] != 1 or keep:
            out.append(o)
        if o["f"] != 1:
            continue
        st = _sig_stack(zf, 1, list(o["radii"] * factor))
        best = st.max(axis=0)
        size = max(3, int(0.5 * o["radii"][0] * factor))
        out.append({"f": 1.0 / factor, "radii": o["radii"], "stack": st, "best": best,
                    "best_r": np.asarray(o["radii"], np.float32)[st.argmax(axis=0)],
                    "peak": best == ndi.maximum_filter(best, size=size)})  # fmt: skip
    return out


def _suppress_enclose(rings: list, ratio: float) -> tuple[list, list[bool], list[str]]:
    """``D._suppress``, except that a ring enclosing a stronger off-centre one whose radius
    is at most ``ratio`` of its own is kept beside it (a liposome with a stronger small ring
    inside: nested vesicle, content or noise), not dropped."""
    from scipy.spatial import cKDTree

    if not rings:
        return [], [], []
    order = sorted(rings, reverse=True)
    arr = np.array(order)
    near = cKDTree(arr[:, 1:3]).query_ball_point(arr[:, 1:3], arr[:, 3] + arr[:, 3].max())
    taken = [False] * len(order)
    for i, (s, y, x, r) in enumerate(order):
        ok, inner = True, []
        for j in (j for j in near[i] if taken[j]):
            s2, y2, x2, r2 = order[j]
            d = float(np.hypot(y - y2, x - x2))
            if not (d < 0.6 * (r + r2) or d + r <= 1.1 * r2 or d + r2 <= 1.1 * r):
                continue
            conc = r2 <= D._CONCENTRIC_RATIO * r and d <= 0.25 * r
            if conc and s >= D._CONCENTRIC_SIG * s2:
                inner.append(j)
                continue
            if not conc and d + r2 <= 1.1 * r and r2 <= ratio * r:
                continue  # a small stronger ring inside: keep both
            ok = False
            break
        if ok:
            for j in inner:
                taken[j] = False
            taken[i] = True
    return order, taken, [""] * len(order)


def candidate_stage(image: np.ndarray, px: float, variant: str) -> dict[str, Any]:
    """``diagnose_candidates.candidate_stage`` with ``variant`` applied."""
    kind, _, val = variant.partition(":")
    cfg = D.DetectConfig(verifier="none")
    dmin, dmax = cfg.diameters_px(px)
    factor = D._work_factor(dmin, image.shape)
    work = D._working(image, factor, cfg.invert)
    z, _low = D._bandpass(work, D._sigma(cfg, px, factor))
    rmin, rmax = max(dmin / 2 / factor, 4.0), max(dmax / 2 / factor, 5.0)
    zr = D._ring_map(image, work, z, factor)
    octs = ring_bank(zr, rmin, rmax)
    thr = float(val) if kind == "threshold" else cfg.threshold
    if kind == "null":
        thr = _null_threshold(zr, rmin, rmax, float(val))
    if kind in ("first", "firstplus") and factor >= 2:
        octs = _full_first(image, cfg, px, factor, octs, keep=kind == "firstplus")
    rings = []
    for o in octs:
        t = float(val) if kind in ("first", "firstplus") and o["f"] < 1 else thr
        for y, x in np.argwhere(o["peak"] & (o["best"] > t)):
            rings.append((float(o["best"][y, x]), (y + 0.5) * o["f"] - 0.5,
                          (x + 0.5) * o["f"] - 0.5, float(o["best_r"][y, x])))  # fmt: skip
    if kind == "enclose":
        order, taken, why = _suppress_enclose(rings, float(val))
    else:
        order, taken, why = suppress_trace(rings, zr)
    cand = np.asarray([c for c, t in zip(order, taken) if t], np.float64).reshape(-1, 4)
    ok = (cand[:, 1] >= 0) & (cand[:, 1] <= z.shape[0] - 1)
    cand = cand[ok & (cand[:, 2] >= 0) & (cand[:, 2] <= z.shape[1] - 1)]
    _raw, radii, _rim = D._refine(z, cand[:, 1], cand[:, 2], cand[:, 3])
    return {"factor": factor, "rmin": rmin, "rmax": rmax, "thr": thr, "octs": octs,
            "order": order, "taken": taken, "why": why, "cand": cand,
            "cy": (cand[:, 1] + 0.5) * factor - 0.5, "cx": (cand[:, 2] + 0.5) * factor - 0.5,
            "radii": radii * factor + HALF_BILAYER_NM / px}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variant", help="main, threshold:T, null:N, first:T, firstplus:T or enclose:X")
    ap.add_argument("--per", type=int, default=3, help="micrographs a condition")
    ap.add_argument("--sims", default="ours,altsim,thirdsim", help="comma-separated")
    args = ap.parse_args()
    for sim in args.sims.split(","):
        n = alone = together = cands = mics = 0
        for _name, _seed, image, labels, px, tl, dis in micrographs(sim, args.per):
            st = candidate_stage(np.asarray(image, np.float32), px, args.variant)
            present = set(np.unique(labels).tolist())
            rows = [classify(st, labels, t, px, dis) for t in tl if t["k"] in present]
            lab, _ = D.paint_outlines(labels.shape, st["cy"], st["cx"], st["radii"])
            n, alone = n + len(rows), alone + sum(r["cause"] == "found" for r in rows)
            together += len(match_instances(labels, lab).pairs)
            cands, mics = cands + len(st["cy"]), mics + 1
        print(f"{sim} {args.variant}: {n} liposomes, alone {alone / n:.3f}, together "
              f"{together / n:.3f}, {cands / mics:.1f} candidates a micrograph")  # fmt: skip


if __name__ == "__main__":
    main()
