"""Twentieth / twenty-first-round experiment (docs/micrographs.md; not shipped): each radius'
ring response standardised by its median / MAD over the positions whose ring stays more than
2 px from every pixel the clip saturated (|ring map| >= 3.9, the clip at 4), when those are
at least 20 % of the map, else over all (as shipped); "solid": only solid saturated regions
(the saturated pixels opened by a 5 x 5 square, so thin saturated lines, membranes, do not
count). The rules are ``DetectConfig.ring_noise`` since the twenty-first round ("unsaturated",
"solid"; this script monkeypatched them until then). On the cache of ``arc_cache.py`` (its
ring maps are unclipped; clipped here at 4).

Default: candidate recall "alone" at threshold 4 and candidates a micrograph, clip alone
against the two masked noise scales. ``--sweep``: candidates a micrograph of "unsaturated" at
each threshold of 4.00, 4.05, ..., 8.00 against the clip's at 4, the lowest threshold at which
they are no more on every simulator of ``--choose`` (default ours,altsim), and the candidate
recall alone there.

    PYTHONPATH=src .venv/bin/python benchmarks/masked_mad.py CACHE thirdsim,ours,altsim
    PYTHONPATH=src .venv/bin/python benchmarks/masked_mad.py CACHE ours,altsim,thirdsim --sweep
"""

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from lipoclass.micrograph import detect as D

#: variant -> DetectConfig.ring_noise (the library's rule since the twenty-first round)
VARIANTS = {"clip": "all", "clip+masked": "unsaturated", "clip+solid": "solid"}
GRID = np.round(np.arange(4.0, 8.001, 0.05), 2)


def rings_of(d: Any, noise: str, threshold: float) -> list[D.Ring]:
    """Ring-filter maxima of a cached micrograph's clipped ring map, before the suppression."""
    px, f = float(d["px"]), int(d["factor"])
    dmin, dmax = D.DetectConfig(verifier="none").diameters_px(px)
    rmin, rmax = max(dmin / 2 / f, 4.0), max(dmax / 2 / f, 5.0)
    zr = np.clip(d["zr"], -4, 4)
    return D._ring_candidates(zr, rmin, rmax, threshold, 1, None, (noise, 4.0))


def suppressed(d: Any, rings: list[D.Ring]) -> np.ndarray:
    """The candidates (N, 4) after the suppression, centres inside the map."""
    z = d["z"]
    cand = np.asarray(D._suppress(rings, np.clip(d["zr"], -4, 4))).reshape(-1, 4)
    ok = (cand[:, 1] >= 0) & (cand[:, 1] <= z.shape[0] - 1)
    return cand[ok & (cand[:, 2] >= 0) & (cand[:, 2] <= z.shape[1] - 1)]


def found_alone(d: Any, cand: np.ndarray) -> tuple[int, int]:
    """(truth liposomes with a candidate of mask IoU >= 0.5 alone, truth liposomes)."""
    px, f = float(d["px"]), int(d["factor"])
    _, radii, _ = D._refine(d["z"], cand[:, 1], cand[:, 2], cand[:, 3])
    pairs, iou = D.alone_overlaps(d["labels"], (cand[:, 1] + 0.5) * f - 0.5,
                                  (cand[:, 2] + 0.5) * f - 0.5, radii * f + 2.3 / px)  # fmt: skip
    return len(np.unique(pairs[iou >= 0.5, 1])), len(np.unique(d["labels"])) - 1


def compare(cache: Path, sims: list[str]) -> None:
    """Recall alone at 4 and candidates a micrograph of each variant, per simulator."""
    for sim in sims:
        res: dict[str, dict[str, list[int]]] = {}
        for p in sorted(cache.glob(f"{sim}-*.npz")):
            d = np.load(p)
            for v, noise in VARIANTS.items():
                cand = suppressed(d, rings_of(d, noise, 4.0))
                found, nt = found_alone(d, cand)
                q = res.setdefault(v, {}).setdefault(str(d["name"]), [0, 0, 0, 0])
                for k, x in enumerate((found, nt, len(cand), 1)):
                    q[k] += x
        for v, t in res.items():
            rec = sum(x[0] for x in t.values()) / sum(x[1] for x in t.values())
            c = sum(x[2] for x in t.values()) / sum(x[3] for x in t.values())
            print(f"{sim} {v}: recall alone at 4 {rec:.3f} cands {c:.1f}", flush=True)
        if sim == "thirdsim":
            for name in res["clip"]:
                row = " ".join(
                    f"{v}:{res[v][name][0] / res[v][name][1]:.3f}"
                    f"({res[v][name][2] / res[v][name][3]:.0f})"
                    for v in res
                )
                print("   ", name, row)


def sweep(cache: Path, sims: list[str], choose: list[str]) -> None:
    """Candidates a micrograph of "unsaturated" over ``GRID`` against the clip's at 4; the
    lowest threshold matching on every simulator of ``choose``; recall alone there."""
    maps = {s: [np.load(p) for p in sorted(cache.glob(f"{s}-*.npz"))] for s in sims}
    base, counts, low = {}, {}, {}
    for s, ds in maps.items():
        base[s] = np.mean([len(suppressed(d, rings_of(d, "all", 4.0))) for d in ds])
        low[s] = [rings_of(d, "unsaturated", float(GRID[0])) for d in ds]
        counts[s] = [np.mean([len(suppressed(d, [r for r in rs if r[0] > t]))
                              for d, rs in zip(ds, low[s])]) for t in GRID]  # fmt: skip
        row = " ".join(f"{t:.2f}:{c:.0f}" for t, c in zip(GRID, counts[s]))
        print(f"{s}: clip at 4 {base[s]:.1f} a micrograph; unsaturated {row}", flush=True)
    ok = [k for k in range(len(GRID)) if all(counts[s][k] <= base[s] for s in choose)]
    if not ok:
        print("no threshold on the grid matches")
        return
    k = ok[0]
    print(f"chosen on {','.join(choose)}: threshold {GRID[k]:.2f}")
    for s, ds in maps.items():
        fa = [found_alone(d, suppressed(d, [r for r in rs if r[0] > GRID[k]]))
              for d, rs in zip(ds, low[s])]  # fmt: skip
        fb = [found_alone(d, suppressed(d, rings_of(d, "all", 4.0))) for d in ds]
        rec = sum(a for a, _ in fa) / sum(n for _, n in fa)
        recb = sum(a for a, _ in fb) / sum(n for _, n in fb)
        print(
            f"{s}: recall alone clip at 4 {recb:.3f} ({base[s]:.1f} cands), unsaturated at "
            f"{GRID[k]:.2f} {rec:.3f} ({counts[s][k]:.1f} cands)",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cache", type=Path, help="arc_cache.py's folder")
    ap.add_argument("sims", help="simulators, comma-separated (ours, altsim, thirdsim)")
    ap.add_argument("--sweep", action="store_true", help="threshold sweep of unsaturated")
    ap.add_argument("--choose", default="ours,altsim", help="simulators that choose it")
    args = ap.parse_args()
    sims = args.sims.split(",")
    if args.sweep:
        sweep(args.cache, sims, args.choose.split(","))
    else:
        compare(args.cache, sims)


if __name__ == "__main__":
    main()
