"""Twentieth-round experiment (docs/micrographs.md; not shipped): each radius' ring
response standardised by its median / MAD over the positions whose ring stays more than
2 px from every pixel the clip saturated (|ring map| >= 3.9, the clip at 4), when those are
at least 20 % of the map, else over all (as shipped); "solid": only solid saturated regions
(the saturated pixels opened by a 5 x 5 square, so thin saturated lines, membranes, do not
count). Candidate recall "alone" at threshold 4 and candidates a micrograph, clip alone
against the two masked noise scales, on the cache of ``arc_cache.py`` (its ring maps are
unclipped; clipped here at 4).

    PYTHONPATH=src .venv/bin/python benchmarks/masked_mad.py CACHE thirdsim,ours,altsim
"""

import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from diagnose_candidates import radius_responses
from lipoclass.micrograph import detect as D

MODE = {"on": False, "frac": 0.2}


def _ring_octave(z, f, radii, threads, profile=None):
    hh, ww = z.shape[0] // f, z.shape[1] // f
    dist = None
    if MODE["on"]:
        zd = z[: hh * f, : ww * f].reshape(hh, f, ww, f).mean(axis=(1, 3))
        sat = np.abs(zd) >= 3.9
        if MODE.get("solid"):  # only solid saturated regions: thin lines (membranes) open away
            sat = ndi.binary_opening(sat, structure=np.ones((5, 5), bool))
        dist = ndi.distance_transform_edt(~sat)
    best = np.full((hh, ww), -np.inf, dtype=np.float32)
    best_r = np.zeros((hh, ww), dtype=np.float32)
    for _i, r, resp in radius_responses(
        z, f, radii, lambda kgrid: D._ring_kernel(kgrid, f, profile)
    ):
        sub = resp[::3, ::3]
        if dist is not None:
            clean = dist[::3, ::3] > r / f + 2
            if clean.mean() >= MODE["frac"]:
                sub = sub[clean]
        sub = np.array(sub, copy=True).ravel()
        med = float(np.median(sub))
        mad = float(np.median(np.abs(sub - med))) * 1.4826
        if mad > 0:
            resp = (resp - med) / mad
            D._edge_correct(resp, r / f)
            np.copyto(best_r, r, where=resp > best)
            np.maximum(best, resp, out=best)
    return best, best_r


D._ring_octave = _ring_octave
CACHE = Path(sys.argv[1])
for sim in sys.argv[2].split(","):
    res = {}
    for p in sorted(CACHE.glob(f"{sim}-*.npz")):
        d = np.load(p)
        px = float(d["px"])
        f = int(d["factor"])
        z = d["z"]
        zr = np.clip(d["zr"], -4, 4)
        cfg = D.DetectConfig(verifier="none")
        dmin, dmax = cfg.diameters_px(px)
        rmin, rmax = max(dmin / 2 / f, 4.0), max(dmax / 2 / f, 5.0)
        name = str(d["name"])
        for v in ("clip", "clip+masked", "clip+solid"):
            MODE["on"] = v != "clip"
            MODE["solid"] = v == "clip+solid"
            rings = D._ring_candidates(zr, rmin, rmax, 4.0, 1)
            cand = np.asarray(D._suppress(rings, zr)).reshape(-1, 4)
            ok = (
                (cand[:, 1] >= 0)
                & (cand[:, 1] <= z.shape[0] - 1)
                & (cand[:, 2] >= 0)
                & (cand[:, 2] <= z.shape[1] - 1)
            )
            cand = cand[ok]
            _, radii, _ = D._refine(z, cand[:, 1], cand[:, 2], cand[:, 3])
            pairs, iou = D.alone_overlaps(
                d["labels"],
                (cand[:, 1] + 0.5) * f - 0.5,
                (cand[:, 2] + 0.5) * f - 0.5,
                radii * f + 2.3 / px,
            )
            found = len(np.unique(pairs[iou >= 0.5, 1]))
            nt = len(np.unique(d["labels"])) - 1
            q = res.setdefault(v, {}).setdefault(name, [0, 0, 0, 0])
            q[0] += found
            q[1] += nt
            q[2] += len(cand)
            q[3] += 1
    for v, t in res.items():
        rec = sum(x[0] for x in t.values()) / sum(x[1] for x in t.values())
        c = sum(x[2] for x in t.values()) / sum(x[3] for x in t.values())
        print(f"{sim} {v}: recall alone at 4 {rec:.3f} cands {c:.1f}", flush=True)
    if sim == "thirdsim":
        for name in res["clip"]:
            print(
                "   ",
                name,
                " ".join(
                    f"{v}:{res[v][name][0] / res[v][name][1]:.3f}"
                    f"({res[v][name][2] / res[v][name][3]:.0f})"
                    for v in res
                ),
            )
