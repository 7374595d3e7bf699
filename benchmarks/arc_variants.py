"""Sixteenth round (docs/micrographs.md, "Sixteenth round: suppression by arc evidence"):
suppression variants scored on the cache of ``arc_cache.py`` (the candidate-level
micrographs: tuning 3000+, altsim check 7000+, thirdsim exploratory 9000 + 50 k + i) by
candidate recall alone and together, candidates a micrograph and, with ``--final``, the final
detection (``detect_candidates(..., DetectConfig(), px)``, packaged verifier unchanged:
pooled precision, recall, F1 at mask IoU 0.5). Variants:

- ``main``: ``detect._suppress``'s greedy pass alone (main before this round);
- ``shipped``: ``detect._suppress`` with the ring map (greedy pass, then ``_arc_replace``:
  the rule of ``pairs:0.6,0.5,2,0``);
- ``pairs:K,B,D[,N]``: ``arc_pairs`` (pairwise arc evidence; keep share K, borrow share B,
  darkness D, nesting N: 0 never both kept, 1 (default) either nested, 2 T inside, 3 B inside);
- ``arc:S,T,W[,X[,A]]``: ``arc_suppress`` (one greedy pass; share S of its evidence off every
  kept neighbour's membrane, own significance T, annulus half-width W x radius + 1 px; X = 0
  keeps the conflicting stronger ring, 1 (default) drops it when it fails the same test; A:
  only neighbours running along the circle, |cos| of the normals' angle >= A);
- ``rescue:S,T,W[,X[,A]]``: ``arc_rescue``, the same test after the greedy pass;
- ``replace:S,T,W[,M[,A]]``: ``arc_replace``, a dropped ring passing it replaces its
  conflicting kept rings when its own evidence beats theirs by M.

    PYTHONPATH=src:benchmarks .venv/bin/python benchmarks/arc_variants.py DIR main arc:0.5,4,0.1
        [--final] [--sims ours,altsim,thirdsim]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diagnose_candidates import HALF_BILAYER_NM, _alone_iou
from lipoclass.micrograph import detect as D
from lipoclass.micrograph.match import match_instances, pool_matches

Ring = tuple[float, float, float, float]
#: the shipped suppression (``final`` patches ``D._suppress``)
MAIN_SUPPRESS = D._suppress
#: rescued rings and stronger rings removed for them, summed over calls
STATS = {"rescued": 0, "removed": 0}


def ring_evidence(zmap: np.ndarray, arr: np.ndarray) -> np.ndarray:
    """Membrane darkness of each ring (N, 4: significance, cy, cx, r) on its 48 rays, the
    best of 0.95, 1, 1.05 r, clipped at 0: (N, 48)."""
    rad = arr[:, 3, None, None] * np.array([0.95, 1.0, 1.05])[None, None, :]
    v = D._sample(zmap, arr[:, 1], arr[:, 2], rad * np.ones((1, D._N_RAYS, 1)))
    return np.maximum(v.max(axis=2), 0.0)


def own_share(
    arr: np.ndarray, ev: np.ndarray, i: int, others: list[int], width: float, tangent: float = 0.0
) -> float:
    """Share of ring ``i``'s evidence on the rays whose circle point is off every ring of
    ``others``' membrane (within ``width`` x its radius + 1 px of its circle and, with
    ``tangent`` > 0, running along it there: |cos| of the angle between the two circles'
    normals at least ``tangent``; a crossing at a steep angle borrows no arc)."""
    tot = float(ev[i].sum())
    if tot <= 0:
        return 0.0
    if not others:
        return 1.0
    th = D._theta()
    _s, y, x, r = arr[i]
    o = arr[others]
    dy = y + r * np.sin(th)[None, :] - o[:, 1, None]
    dx = x + r * np.cos(th)[None, :] - o[:, 2, None]
    dist = np.hypot(dy, dx)
    on = np.abs(dist - o[:, 3, None]) <= width * o[:, 3, None] + 1.0
    if tangent > 0:
        cos = (dy * np.sin(th)[None, :] + dx * np.cos(th)[None, :]) / np.maximum(dist, 1e-6)
        on &= np.abs(cos) >= tangent
    return float(ev[i][~on.any(axis=0)].sum()) / tot


def arc_suppress(rings: list[Ring], zmap: np.ndarray, share: float = 0.5, own: float = 4.0,
                 width: float = 0.1, symmetric: bool = True, tangent: float = 0.0,
) -> list[Ring]:  # fmt: skip
    """``D._suppress``, except that a ring in conflict with stronger kept ones is kept when
    its own evidence, off every kept neighbour's membrane, is at least ``share`` of its
    evidence and its significance times that share at least ``own``; then (``symmetric``)
    each stronger ring it conflicted with is dropped when it fails that test against the
    kept neighbours (the rescued ring among them)."""
    from scipy.spatial import cKDTree

    if not rings:
        return []
    order = sorted(rings, reverse=True)
    arr = np.array(order)
    near = cKDTree(arr[:, 1:3]).query_ball_point(arr[:, 1:3], arr[:, 3] + arr[:, 3].max())
    ev = ring_evidence(zmap, arr)
    taken = [False] * len(order)
    for i, (s, y, x, r) in enumerate(order):
        inner, block = [], []
        for j in (j for j in near[i] if taken[j]):
            _s2, y2, x2, r2 = order[j]
            d = math.hypot(y - y2, x - x2)
            if not (d < 0.6 * (r + r2) or d + r <= 1.1 * r2 or d + r2 <= 1.1 * r):
                continue
            if r2 <= D._CONCENTRIC_RATIO * r and d <= 0.25 * r and s >= D._CONCENTRIC_SIG * _s2:
                inner.append(j)
            else:
                block.append(j)
        if block:
            kept = [j for j in near[i] if taken[j] and j != i]
            q = own_share(arr, ev, i, kept, width, tangent)
            if q < share or s * q < own:
                continue
            STATS["rescued"] += 1
            for j in block if symmetric else []:
                nb = [k for k in near[j] if (taken[k] or k == i) and k != j]
                q2 = own_share(arr, ev, j, nb, width, tangent)
                if q2 < share or order[j][0] * q2 < own:
                    taken[j] = False
                    STATS["removed"] += 1
        for j in inner:
            taken[j] = False
        taken[i] = True
    return [order[i] for i in range(len(order)) if taken[i]]


def arc_rescue(rings: list[Ring], zmap: np.ndarray, share: float = 0.5, own: float = 4.0,
               width: float = 0.1, symmetric: bool = True, tangent: float = 0.0,
) -> list[Ring]:  # fmt: skip
    """Two passes: ``D._suppress``'s greedy result, then each dropped ring (by falling
    significance) is added when its own evidence off every kept neighbour's membrane passes
    the test of ``arc_suppress``; then (``symmetric``) a kept ring in conflict with an added
    one is dropped when it fails that test against its kept neighbours."""
    from scipy.spatial import cKDTree

    if not rings:
        return []
    order = sorted(rings, reverse=True)
    arr = np.array(order)
    near = cKDTree(arr[:, 1:3]).query_ball_point(arr[:, 1:3], arr[:, 3] + arr[:, 3].max())
    keep = {tuple(c) for c in MAIN_SUPPRESS(rings)}
    taken = [tuple(c) in keep for c in order]
    ev = ring_evidence(zmap, arr)
    added = []
    for i in range(len(order)):
        if taken[i]:
            continue
        kept = [j for j in near[i] if taken[j]]
        q = own_share(arr, ev, i, kept, width, tangent)
        if q >= share and arr[i, 0] * q >= own:
            taken[i] = True
            added.append(i)
            STATS["rescued"] += 1
    for i in added if symmetric else []:
        _s, y, x, r = order[i]
        for j in near[i]:
            if not taken[j] or j == i or j in added:
                continue
            _s2, y2, x2, r2 = order[j]
            d = math.hypot(y - y2, x - x2)
            if not (d < 0.6 * (r + r2) or d + r <= 1.1 * r2 or d + r2 <= 1.1 * r):
                continue
            q2 = own_share(arr, ev, j, [k for k in near[j] if taken[k] and k != j], width, tangent)
            if q2 < share or order[j][0] * q2 < own:
                taken[j] = False
                STATS["removed"] += 1
    return [order[i] for i in range(len(order)) if taken[i]]


def _conflict(a: Ring, b: Ring) -> bool:
    """``D._suppress``'s conflict between rings ``a`` (later) and kept ``b``, concentric
    replacement aside: overlapping by more than touching, or one inside the other."""
    _s, y, x, r = a
    _s2, y2, x2, r2 = b
    d = math.hypot(y - y2, x - x2)
    return d < 0.6 * (r + r2) or d + r <= 1.1 * r2 or d + r2 <= 1.1 * r


def arc_replace(rings: list[Ring], zmap: np.ndarray, share: float = 0.5, own: float = 4.0,
                width: float = 0.1, margin: float = 1.0, tangent: float = 0.0,
) -> list[Ring]:  # fmt: skip
    """Two passes: ``D._suppress``'s greedy result, then each dropped ring (by falling
    significance) whose own evidence (``own_share`` against its kept neighbours, times its
    significance) is at least ``own``, its share at least ``share``, and more than
    ``margin`` times every conflicting kept ring's own evidence (against its kept neighbours
    and the dropped ring) replaces those rings."""
    from scipy.spatial import cKDTree

    if not rings:
        return []
    order = sorted(rings, reverse=True)
    arr = np.array(order)
    near = cKDTree(arr[:, 1:3]).query_ball_point(arr[:, 1:3], arr[:, 3] + arr[:, 3].max())
    keep = {tuple(c) for c in MAIN_SUPPRESS(rings)}
    taken = [tuple(c) in keep for c in order]
    ev = ring_evidence(zmap, arr)
    for i in range(len(order)):
        if taken[i]:
            continue
        kept = [j for j in near[i] if taken[j]]
        block = [j for j in kept if _conflict(order[i], order[j])]
        q = own_share(arr, ev, i, kept, width, tangent)
        if q < share or arr[i, 0] * q < own:
            continue
        rival = 0.0
        for j in block:
            nb = [k for k in near[j] if (taken[k] or k == i) and k != j]
            rival = max(rival, arr[j, 0] * own_share(arr, ev, j, nb, width, tangent))
        if arr[i, 0] * q > margin * rival:
            for j in block:
                taken[j] = False
            taken[i] = True
            STATS["rescued"] += 1
            STATS["removed"] += len(block)
    return [order[i] for i in range(len(order)) if taken[i]]


def arc_pairs(rings: list[Ring], zmap: np.ndarray, keep_share: float = 0.75,
              borrow: float = 0.3, dark: float = 2.5, nested: int = 1) -> list[Ring]:  # fmt: skip
    """Two passes: ``D._suppress``'s greedy result, then each dropped ring T (by falling
    significance) whose mean membrane darkness is at least ``dark`` is weighed against each
    kept ring B in conflict with it, arc by arc: T loses when less than ``keep_share`` of its
    evidence lies off B's membrane; else B is dropped for T when at most ``borrow`` of B's
    evidence lies off T's membrane (B borrows T's arc) and T is at least as dark; else
    (independent evidence) both are kept where one lies inside the other (``nested`` 1; 2:
    only T inside B, 3: only B inside T; 0: never, T loses). T is kept when no B makes it lose."""
    from scipy.spatial import cKDTree

    if not rings:
        return []
    order = sorted(rings, reverse=True)
    arr = np.array(order)
    near = cKDTree(arr[:, 1:3]).query_ball_point(arr[:, 1:3], arr[:, 3] + arr[:, 3].max())
    keep = {tuple(c) for c in MAIN_SUPPRESS(rings)}
    taken = [tuple(c) in keep for c in order]
    ev = ring_evidence(zmap, arr)
    dark_of = ev.mean(axis=1)
    for i in np.flatnonzero((dark_of >= dark) & ~np.array(taken)):
        _s, y, x, r = order[i]
        drop, ok = [], True
        for j in (j for j in near[i] if taken[j] and _conflict(order[i], order[j])):
            _s2, y2, x2, r2 = order[j]
            if own_share(arr, ev, i, [j], 0.1) < keep_share:
                ok = False
            elif own_share(arr, ev, j, [i], 0.1) <= borrow and dark_of[i] >= dark_of[j]:
                drop.append(j)
            else:
                d = math.hypot(y - y2, x - x2)
                inside, encloses = d + r <= 1.1 * r2, d + r2 <= 1.1 * r
                ok = (nested in (1, 2) and inside) or (nested in (1, 3) and encloses)
            if not ok:
                break
        if ok:
            for j in drop:
                taken[j] = False
            taken[i] = True
            STATS["rescued"] += 1
            STATS["removed"] += len(drop)
    return [order[i] for i in range(len(order)) if taken[i]]


def suppress_for(variant: str, zmap: np.ndarray) -> Any:
    """The suppression function of ``variant`` (rings -> kept rings)."""
    kind, _, val = variant.partition(":")
    if kind == "main":
        return lambda rings, *_: MAIN_SUPPRESS(rings)
    if kind == "shipped":
        return lambda rings, *_: MAIN_SUPPRESS(rings, zmap)
    p = [float(v) for v in val.split(",")]
    sym = len(p) < 4 or p[3] != 0
    m = p[4] if len(p) > 4 else 0.0
    if kind == "pairs":
        return lambda rings, *_: arc_pairs(
            rings, zmap, p[0], p[1], p[2], int(p[3]) if len(p) > 3 else 1
        )
    if kind == "replace":
        return lambda rings, *_: arc_replace(rings, zmap, *p)
    fn = arc_rescue if kind == "rescue" else arc_suppress
    return lambda rings, *_: fn(rings, zmap, p[0], p[1], p[2], sym, m)


def candidates(c: Any, variant: str) -> dict[str, np.ndarray]:
    """The candidates (full-resolution centre and outline radii) of cached micrograph ``c``."""
    rings = [tuple(map(float, row)) for row in c["rings"]]
    z, f, px = c["z"], int(c["factor"]), float(c["px"])
    cand = np.asarray(suppress_for(variant, c["zr"])(rings), np.float64).reshape(-1, 4)
    ok = (cand[:, 1] >= 0) & (cand[:, 1] <= z.shape[0] - 1)
    cand = cand[ok & (cand[:, 2] >= 0) & (cand[:, 2] <= z.shape[1] - 1)]
    _raw, radii, _rim = D._refine(z, cand[:, 1], cand[:, 2], cand[:, 3])
    return {"cy": (cand[:, 1] + 0.5) * f - 0.5, "cx": (cand[:, 2] + 0.5) * f - 0.5,
            "radii": radii * f + HALF_BILAYER_NM / px}  # fmt: skip


def alone_found(st: dict[str, np.ndarray], labels: np.ndarray, truth: np.ndarray) -> int:
    """True liposomes with a candidate at IoU >= 0.5 painted alone (centre within r / 2)."""
    h, w = labels.shape
    present = set(np.unique(labels).tolist())
    n = 0
    for k, cy, cx, r in truth:
        if int(k) not in present:
            continue
        y0, y1 = max(0, int(cy - 2.5 * r) - 4), min(h, int(cy + 2.5 * r) + 5)
        x0, x1 = max(0, int(cx - 2.5 * r) - 4), min(w, int(cx + 2.5 * r) + 5)
        mask = labels[y0:y1, x0:x1] == int(k)
        near = np.flatnonzero(np.hypot(st["cy"] - cy, st["cx"] - cx) < 0.5 * r)
        n += any(_alone_iou(st, int(i), mask, y0, x0) >= 0.5 for i in near)
    return n


def final(c: Any, variant: str) -> Any:
    """``detect_candidates`` with the packaged verifier and ``variant``'s suppression (the
    cached ring maxima stand in for the ring filter bank's, which they equal)."""
    rings = [tuple(map(float, row)) for row in c["rings"]]
    old = D._ring_candidates, D._suppress
    D._ring_candidates = lambda *a, **k: rings
    if variant != "shipped":  # shipped: detect.py's own suppression, unpatched
        D._suppress = suppress_for(variant, c["zr"])
    try:
        det = D.detect_candidates(c["image"], D.DetectConfig(), float(c["px"]))
    finally:
        D._ring_candidates, D._suppress = old
    return match_instances(c["labels"], det.labels), len(det)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("variants", nargs="+")
    ap.add_argument("--final", action="store_true")
    ap.add_argument("--sims", default="ours,altsim,thirdsim")
    args = ap.parse_args()
    for sim in args.sims.split(","):
        files = sorted(args.dir.glob(f"{sim}-*.npz"))
        for v in args.variants:
            n = alone = together = cands = 0
            ms, t0 = [], time.time()
            STATS.update(rescued=0, removed=0)
            for fn in files:
                c = np.load(fn)
                st = candidates(c, v)
                n += len(set(np.unique(c["labels"]).tolist()) & set(c["truth"][:, 0].astype(int)))
                alone += alone_found(st, c["labels"], c["truth"])
                lab, _ = D.paint_outlines(c["labels"].shape, st["cy"], st["cx"], st["radii"])
                together += len(match_instances(c["labels"], lab).pairs)
                cands += len(st["cy"])
                if args.final:
                    ms.append(final(c, v)[0])
            line = (f"{sim} {v}: {len(files)} micrographs, {n} liposomes, alone {alone / n:.3f}, "
                    f"together {together / n:.3f}, {cands / len(files):.1f} "
                    "candidates")  # fmt: skip
            if ms:
                m = pool_matches(ms)
                line += (f"; final P {m.precision:.4f} R {m.recall:.4f} F1 {m.f1:.4f} "
                         f"({len(m.pairs)} of {m.n_found})")  # fmt: skip
            k = len(files)
            line += (f"; {STATS['rescued'] / k:.1f} rescued, {STATS['removed'] / k:.1f} "
                     "removed a micrograph")  # fmt: skip
            print(line + f" ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
