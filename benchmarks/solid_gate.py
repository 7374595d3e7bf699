"""Twenty-third round, step 4: the learned finder's solid-particle gate
(``lipoclass.micrograph.finder.solid_particles``; docs/micrographs.md, "Twenty-third round").

Out of domain most of the learned finder's false detections are dark solid particles with no
membrane. The gate rejects a learned detection whose ``inner_rim_ratio`` or
``rim_side_balance`` (interior as dark as the membrane) exceeds its 99.5th percentile over the
finder's detections that match a liposome on the two training simulators' decision
micrographs (ours tuning 3000+, altsim check 7000+; heat >= 0.30, matched painted together
at mask IoU >= 0.5); thirdsim is not used to set it.

``--collect DIR`` caches, per micrograph, the "ring+learned" detections at heat >= 0.30 of
the finder without its gate (``diagnose_candidates.micrographs``: ours, altsim, thirdsim
exploratory; ``--fresh FOLDER``: ``learned_finder.py --fresh``'s micrographs); ``--gate``
prints the limits and the "either" figures per heat threshold with and without the gate;
``--write`` stores the limits in the packaged finder's record.

    OMP_NUM_THREADS=2 PYTHONPATH=src:benchmarks:scripts .venv/bin/python \\
        benchmarks/solid_gate.py --collect /tmp/n23/gate --gate [--write]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lipoclass.micrograph.finder as F
from lipoclass.micrograph import DetectConfig, match_instances
from lipoclass.micrograph.detect import FEATURES, detect_candidates, paint_outlines
from lipoclass.micrograph.match import pool_matches

GATED = ("inner_rim_ratio", "rim_side_balance")
GRID = [round(0.30 + 0.05 * k, 2) for k in range(9)]
QUANTILE = 99.5


def _micrographs(sim: str, fresh: Path | None) -> Iterator[tuple[np.ndarray, np.ndarray, float]]:
    if sim == "fresh" and fresh is not None:
        for fn in sorted(fresh.glob("thirdsim-*.npz")):
            d = np.load(fn)
            yield d["image"], d["labels"], float(d["px"])
        return
    from diagnose_candidates import micrographs

    for _name, _seed, image, labels, px, _tl, _dis in micrographs(sim, 3):
        yield np.asarray(image, np.float32), np.asarray(labels).astype(np.int32), px


def collect(out: Path, sims: list[str], fresh: Path | None, model: Path | None = None) -> None:
    """Detections of the packaged finder (``model``: another finder file) without its gate,
    heat >= 0.30, one .npz each."""
    packaged = F.load_finder(model)
    bare = F.LearnedFinder(packaged.net, {k: v for k, v in packaged.info.items()
                                          if k != "solid_gate"})  # fmt: skip
    orig = F.load_finder
    F.load_finder = lambda path=None: bare  # type: ignore[assignment]
    cfg = DetectConfig(finder="ring+learned", finder_threshold=0.3)
    out.mkdir(parents=True, exist_ok=True)
    try:
        for sim in sims:
            t0, k = time.time(), 0
            for k, (img, lab, px) in enumerate(_micrographs(sim, fresh)):
                det = detect_candidates(img, cfg, px)
                np.savez(out / f"{sim}_{k:03d}.npz", cy=det.cy, cx=det.cx, radii=det.radii,
                         score=det.score, learned=np.array(det.found_by) == "learned",
                         accepted=det.accepted, features=det.features, labels=lab)  # fmt: skip
            print(f"{sim}: {k + 1} micrographs, {time.time() - t0:.0f} s", flush=True)
    finally:
        F.load_finder = orig  # type: ignore[assignment]


def _paint(d: dict[str, Any], acc: np.ndarray) -> np.ndarray:
    idx = np.flatnonzero(acc)
    return paint_outlines(d["labels"].shape, d["cy"][idx], d["cx"][idx], d["radii"][idx])[0]


def true_learned(d: dict[str, Any]) -> np.ndarray:
    """Which learned detections (heat >= 0.30) match a liposome, painted with all accepted."""
    lab = _paint(d, d["accepted"])
    m = match_instances(d["labels"].astype(np.int64), lab)
    hit = np.zeros(int(d["accepted"].sum()) + 1, bool)
    hit[m.pairs[:, 1]] = True
    inst = np.cumsum(d["accepted"]) * d["accepted"]  # paint order: i-th accepted -> label i
    return hit[inst[d["learned"]]]


def score(ds: list[dict[str, Any]], t: float, gate: Callable[..., np.ndarray] | None) -> Any:
    """Pooled precision, recall, F1 of the ring detections plus learned ones at heat >= t."""
    ms = []
    for d in ds:
        extra = d["learned"] & (d["score"] >= t)
        if gate is not None:
            extra &= gate(d["features"])
        ms.append(match_instances(d["labels"].astype(np.int64),
                                  _paint(d, (d["accepted"] & ~d["learned"]) | extra)))  # fmt: skip
    a = pool_matches(ms)
    p, r = len(a.pairs) / max(a.n_found, 1), len(a.pairs) / max(a.n_truth, 1)
    return p, r, 2 * p * r / max(p + r, 1e-9)


def gate_report(cache: Path, write: bool) -> None:
    """The gate's limits from ours / altsim, then the grid with and without it."""
    load = lambda sim: [dict(np.load(f)) for f in sorted(cache.glob(f"{sim}_*.npz"))]  # noqa: E731
    sets = {s: load(s) for s in ("ours", "altsim", "thirdsim", "fresh")}
    col = [FEATURES.index(n) for n in GATED]
    tp = np.concatenate([d["features"][d["learned"]][true_learned(d)][:, col]
                         for s in ("ours", "altsim") for d in sets[s]])  # fmt: skip
    limits = {n: float(np.nanpercentile(tp[:, j], QUANTILE)) for j, n in enumerate(GATED)}
    print(f"{len(tp)} true learned detections on ours / altsim; limits {limits}")

    def gate(f: np.ndarray) -> np.ndarray:
        return ~np.any(f[:, col] > np.array([limits[n] for n in GATED]), axis=1)

    for sim, ds in sets.items():
        for t in GRID if ds else []:
            a, b = score(ds, t, None), score(ds, t, gate)
            print(f"{sim} t {t:.2f}: plain P {a[0]:.4f} R {a[1]:.4f} F1 {a[2]:.4f} | gate "
                  f"P {b[0]:.4f} R {b[1]:.4f} F1 {b[2]:.4f}", flush=True)  # fmt: skip
    if write:
        f = F.load_finder()
        info = {**f.info, "solid_gate": limits, "solid_gate_rule": (
            f"{QUANTILE}th percentile of each feature over the finder's detections at heat >= "
            "0.30 matching a liposome (mask IoU >= 0.5, painted together) on ours tuning 3000+ "
            f"(36 micrographs) and altsim check 7000+ (45): {len(tp)} detections; "
            "benchmarks/solid_gate.py (twenty-third round)")}  # fmt: skip
        F.LearnedFinder(f.net, info).save(F.DEFAULT_FINDER)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--collect", type=Path, required=True, help="cache folder")
    ap.add_argument("--sims", default="ours,altsim,thirdsim")
    ap.add_argument("--fresh", type=Path, help="learned_finder.py --fresh's folder")
    ap.add_argument("--gate", action="store_true", help="limits and figures from the cache")
    ap.add_argument("--write", action="store_true", help="store the limits in finder.npz")
    ap.add_argument("--model", type=Path, help="another finder file (default: the packaged)")
    args = ap.parse_args()
    if args.write and args.model is not None:
        ap.error("--write stores the limits in the packaged finder only; leave out --model")
    todo = [s for s in args.sims.split(",") if not any(args.collect.glob(f"{s}_*.npz"))]
    if args.fresh is not None and not any(args.collect.glob("fresh_*.npz")):
        todo.append("fresh")
    collect(args.collect, todo, args.fresh, args.model)
    if args.gate:
        gate_report(args.collect, args.write)


if __name__ == "__main__":
    main()
