"""Where candidates are lost: for every true liposome without a candidate at mask IoU >= 0.5
(painted alone, centred within half its radius, as the fourteenth round's "alone"), which
stage of the candidate finder (``lipoclass.micrograph.detect``, steps 0-4) lost it, on our
simulator's tuning micrographs (seeds 3000 + 100 k, micrographs 0 .. n-1), the altsim check
micrographs (7000 + 1000 k + i) and thirdsim's exploratory ones (9000 + 50 k + i); never a
benchmark's report seeds. The candidate stage is re-run from detect.py's private functions,
keeping each radius' significance map and the suppression's decisions (``--check``: the
candidates equal ``detect_candidates``'s and the maps ``_ring_octave``'s). Causes:

- **a, ring too weak**: the best significance at the true centre (within max(1.5, 0.1 r) px
  of the octave's map) over radii 0.8-1.15 x the membrane radius (truth outline radius minus
  half a bilayer, 2.3 nm) is below the threshold. Split off: ``edgecut`` (centre closer to the
  border than its radius) and ``distractor`` (over 10 % of its 0.8-1.2 r annulus on the
  simulator's ice / carbon / absorber masks).
- **b, above the threshold, lost**: ``suppressed``, a ring maximum there (centre within
  0.25 r, radius 0.7-1.2 x the membrane radius) removed by step 3's suppression (the reason:
  overlap with, inside or enclosing a stronger ring, or replaced by an outer concentric one);
  ``nomax``, no local maximum there (a stronger maximum nearby or another radius took it).
- **c, radius out of range**: the membrane radius outside the searched radii.
- **d, outline**: its ring was kept as a candidate, but the outline's IoU is < 0.5 (the
  outline's mean radius over the truth radius is reported).
- **e**: none of these.

    PYTHONPATH=src .venv/bin/python benchmarks/diagnose_candidates.py [--per 3]
        [--sims ours,altsim,thirdsim] [--csv /tmp/misses.csv] [--check]
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lipoclass.micrograph import detect as D
from lipoclass.micrograph.match import match_instances

SIZES = ((0.0, 50.0, "< 50 nm"), (50.0, 100.0, "50-100 nm"), (100.0, 1e9, "> 100 nm"))
#: the membrane's centre line lies half a bilayer inside the outline (step 4's offset)
HALF_BILAYER_NM = 2.3
#: (significance, cy, cx, radius) of one ring maximum, working px
Ring = tuple[float, float, float, float]


def radius_responses(
    z: np.ndarray, f: int, radii: list[float], kernel_of: Any
) -> Iterator[tuple[int, float, np.ndarray]]:
    """(index, radius, raw ring response (h // f, w // f)) for each of ``radii`` (px of
    ``z``) on ``z`` block-averaged by ``f``, as ``D._ring_octave`` computes them before its
    standardisation; ``kernel_of(kgrid)`` gives the function of the octave radius whose
    values on ``kgrid`` are the ring's transform (``D._ring_kernel``'s form)."""
    from scipy import fft as sfft

    h, w = z.shape
    hh, ww = h // f, w // f
    zd = z[: hh * f, : ww * f].reshape(hh, f, ww, f).mean(axis=(1, 3))
    pad = int(max(radii) / f) + 4
    fh = sfft.next_fast_len(hh + pad, real=True)
    fw = sfft.next_fast_len(ww + pad, real=True)
    spec = sfft.rfft2(zd, s=(fh, fw))
    n1, nw = fh // 2 + 1, fw // 2 + 1
    dk = 0.25 / max(fh, fw)
    ky, kx = np.arange(n1, dtype=np.float32) / fh, np.arange(nw, dtype=np.float32) / fw
    idx = np.rint(np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2) / dk).astype(np.int32)
    kgrid = np.arange(int(idx.max()) + 1) * dk
    kernel = kernel_of(kgrid)
    prod = np.empty_like(spec)
    for i, r in enumerate(radii):
        kern = kernel(r / f)[idx]
        np.multiply(spec[:n1], kern, out=prod[:n1])
        np.multiply(spec[n1:], kern[fh - n1 : 0 : -1], out=prod[n1:])
        yield i, r, sfft.irfft2(prod, s=(fh, fw))[:hh, :ww]


def _sig_stack(z: np.ndarray, f: int, radii: list[float]) -> np.ndarray:
    """Every radius' significance map (R, h // f, w // f), computed as ``D._ring_octave``
    does (one thread), which keeps only the best over radii."""
    out = np.full((len(radii), z.shape[0] // f, z.shape[1] // f), -np.inf, np.float32)
    thin_ring = partial(D._ring_kernel, f=f, profile=None)  # the shipped thin ring
    for i, r, resp in radius_responses(z, f, radii, thin_ring):
        sub = D._noise_sample(resp, None, r / f)
        med = float(np.median(sub))
        mad = float(np.median(np.abs(sub - med))) * 1.4826
        if mad > 0:
            resp = (resp - med) / mad
            D._edge_correct(resp, r / f)
            out[i] = resp
    return out


def ring_bank(z: np.ndarray, rmin: float, rmax: float, check: bool = False) -> list[dict]:
    """``D._ring_candidates``' octaves, each with its per-radius maps and local maxima."""
    octs = []
    for r_lo, f, radii in D._ring_octaves(z.shape, rmin, rmax):
        st = _sig_stack(z, f, radii)
        best = st.max(axis=0)
        if check and not np.allclose(best, D._ring_octave(z, f, radii, 1)[0], atol=1e-3):
            raise AssertionError(f"octave {r_lo:.1f}: maps differ from D._ring_octave")
        peak = best == ndi.maximum_filter(best, size=max(3, int(0.5 * r_lo / f)))
        best_r = np.asarray(radii, np.float32)[st.argmax(axis=0)]
        octs.append({"f": f, "radii": np.asarray(radii), "stack": st, "best": best,
                     "best_r": best_r, "peak": peak})  # fmt: skip
    return octs


def suppress_trace(
    rings: list[Ring], zmap: np.ndarray | None = None
) -> tuple[list[Ring], list[bool], list[str]]:
    """``D._suppress`` with its reasons: the rings by falling significance, whether each is
    kept, and why each dropped one was dropped (with the ring map ``zmap``, the arc step
    ``D._arc_replace`` after the greedy pass, as ``detect_candidates`` runs it)."""
    from scipy.spatial import cKDTree

    if not rings:
        return [], [], []
    order = sorted(rings, reverse=True)
    arr = np.array(order)
    near = cKDTree(arr[:, 1:3]).query_ball_point(arr[:, 1:3], arr[:, 3] + arr[:, 3].max())
    taken, why = [False] * len(order), [""] * len(order)
    for i, (s, y, x, r) in enumerate(order):
        ok, inner = True, []
        for j in (j for j in near[i] if taken[j]):
            s2, y2, x2, r2 = order[j]
            d = math.hypot(y - y2, x - x2)
            if not (d < 0.6 * (r + r2) or d + r <= 1.1 * r2 or d + r2 <= 1.1 * r):
                continue
            conc = r2 <= D._CONCENTRIC_RATIO * r and d <= 0.25 * r
            if conc and s >= D._CONCENTRIC_SIG * s2:
                inner.append(j)
                continue
            ok = False
            if d + r <= 1.1 * r2:
                why[i] = "inside a stronger ring"
            elif d + r2 <= 1.1 * r:
                why[i] = "encloses a stronger " + ("concentric" if conc else "off-centre") + " ring"
            else:
                why[i] = "overlaps a stronger ring"
            break
        if ok:
            for j in inner:
                taken[j], why[j] = False, "replaced by an outer concentric ring"
            taken[i] = True
    if zmap is not None:
        before = list(taken)
        D._arc_replace(arr, near, taken, zmap)
        for i, (a, b) in enumerate(zip(before, taken)):
            if a != b:
                why[i] = "" if b else "replaced by a weaker ring whose arc it borrows"
    return order, taken, why


def candidate_stage(image: np.ndarray, px: float, check: bool = False) -> dict[str, Any]:
    """Steps 0-4 of ``detect_candidates`` (default settings), keeping the intermediates."""
    cfg = D.DetectConfig(verifier="none")
    dmin, dmax = cfg.diameters_px(px)
    factor = D._work_factor(dmin, image.shape)
    work = D._working(image, factor, cfg.invert)
    z, _low = D._bandpass(work, D._sigma(cfg, px, factor))
    rmin, rmax = max(dmin / 2 / factor, 4.0), max(dmax / 2 / factor, 5.0)
    zr = D._ring_map(image, work, z, factor)
    octs = ring_bank(zr, rmin, rmax, check)
    rings = [
        (float(o["best"][y, x]), (y + 0.5) * o["f"] - 0.5, (x + 0.5) * o["f"] - 0.5,
         float(o["best_r"][y, x]))
        for o in octs
        for y, x in np.argwhere(o["peak"] & (o["best"] > cfg.threshold))
    ]  # fmt: skip
    order, taken, why = suppress_trace(rings, zr)
    cand = np.asarray([c for c, t in zip(order, taken) if t], np.float64).reshape(-1, 4)
    ok = (cand[:, 1] >= 0) & (cand[:, 1] <= z.shape[0] - 1)
    cand = cand[ok & (cand[:, 2] >= 0) & (cand[:, 2] <= z.shape[1] - 1)]
    _raw, radii, _rim = D._refine(z, cand[:, 1], cand[:, 2], cand[:, 3])
    return {"factor": factor, "rmin": rmin, "rmax": rmax, "thr": cfg.threshold, "octs": octs,
            "order": order, "taken": taken, "why": why, "cand": cand,
            "cy": (cand[:, 1] + 0.5) * factor - 0.5, "cx": (cand[:, 2] + 0.5) * factor - 0.5,
            "radii": radii * factor + HALF_BILAYER_NM / px}  # fmt: skip


def sig_at_truth(st: dict[str, Any], wy: float, wx: float, rm: float) -> float:
    """Best ring significance at working-scale centre (wy, wx) over radii 0.8-1.15 ``rm``."""
    best = -np.inf
    for o in st["octs"]:
        f, sel = o["f"], np.flatnonzero((o["radii"] >= 0.8 * rm) & (o["radii"] <= 1.15 * rm))
        if not len(sel):
            continue
        oy, ox, rad = (wy + 0.5) / f - 0.5, (wx + 0.5) / f - 0.5, max(1.5, 0.1 * rm / f)
        hh, ww = o["best"].shape
        y0, y1 = max(0, math.floor(oy - rad)), min(hh, math.ceil(oy + rad) + 1)
        x0, x1 = max(0, math.floor(ox - rad)), min(ww, math.ceil(ox + rad) + 1)
        if y1 <= y0 or x1 <= x0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        near = np.hypot(yy - oy, xx - ox) <= rad
        best = max(best, float(o["stack"][sel, y0:y1, x0:x1][:, near].max(initial=-np.inf)))
    return best


def _alone_iou(st: dict[str, Any], i: int, mask: np.ndarray, y0: int, x0: int) -> float:
    """Mask IoU of candidate ``i`` painted alone with ``mask`` (a window at y0, x0)."""
    lab, _ = D.paint_outlines(mask.shape, st["cy"][i : i + 1] - y0, st["cx"][i : i + 1] - x0,
                              st["radii"][i : i + 1])  # fmt: skip
    f = lab > 0
    return float((mask & f).sum()) / max(float((mask | f).sum()), 1.0)


def _lost_where(st: dict[str, Any], wy: float, wx: float, rw: float, rm: float) -> str:
    """Cause d or b of a liposome without a good candidate, or "" (working px: centre,
    outline and membrane radius): its own ring (0.7-1.2 x the membrane radius, centre within
    0.25 r) kept, but the outline misses (d); that ring removed by the suppression (b, with
    the reason); no such ring, but a candidate there seeded by another (an inner ring or the
    core: d)."""
    rings = [i for i, (_s, y, x, r) in enumerate(st["order"])
             if math.hypot(y - wy, x - wx) <= 0.25 * rw and 0.7 * rm <= r <= 1.2 * rm]  # fmt: skip
    if any(st["taken"][i] for i in rings):
        return "d outline"
    if rings:
        return "b suppressed: " + st["why"][max(rings, key=lambda i: st["order"][i][0])]
    c = st["cand"]
    if np.any(np.hypot(c[:, 1] - wy, c[:, 2] - wx) <= 0.25 * rw):
        return "d outline: seeded by another ring"
    return ""


def _weak(cy: float, cx: float, r: float, shape: tuple[int, int], dis: np.ndarray | None) -> str:
    """Cause a, split by where the liposome lies: cut by the image border (centre closer
    to it than the radius) or over 10 % of its 0.8-1.2 r annulus on a distractor mask."""
    h, w = shape
    if min(cy, cx, h - 1 - cy, w - 1 - cx) < r:
        return "a weak: edgecut"
    if dis is not None:
        y0, y1 = max(0, int(cy - 1.2 * r)), min(h, int(cy + 1.2 * r) + 2)
        x0, x1 = max(0, int(cx - 1.2 * r)), min(w, int(cx + 1.2 * r) + 2)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        ann = np.abs(np.hypot(yy - cy, xx - cx) / r - 1.0) < 0.2
        if ann.any() and dis[y0:y1, x0:x1][ann].mean() > 0.1:
            return "a weak: distractor"
    return "a weak"


def classify(
    st: dict[str, Any], labels: np.ndarray, truth: dict, px: float, dis: np.ndarray | None
) -> dict[str, Any]:
    """One truth liposome (``truth``: k, cy, cx, r px) as a row: found or the cause (c, then
    d / b with a ring or candidate there, then a below the threshold, else b no maximum)."""
    k, cy, cx, r = truth["k"], truth["cy"], truth["cx"], truth["r"]
    h, w = labels.shape
    y0, y1 = max(0, int(cy - 2.5 * r) - 4), min(h, int(cy + 2.5 * r) + 5)
    x0, x1 = max(0, int(cx - 2.5 * r) - 4), min(w, int(cx + 2.5 * r) + 5)
    mask = labels[y0:y1, x0:x1] == k
    near = np.flatnonzero(np.hypot(st["cy"] - cy, st["cx"] - cx) < 0.5 * r)
    ious = [(_alone_iou(st, int(i), mask, y0, x0), int(i)) for i in near]
    iou, best = max(ious, default=(0.0, -1))
    fac = st["factor"]
    wy, wx, rw = (cy + 0.5) / fac - 0.5, (cx + 0.5) / fac - 0.5, r / fac
    rm = rw - HALF_BILAYER_NM / px / fac
    sig = sig_at_truth(st, wy, wx, rm)
    row = {"k": k, "d_nm": round(2 * r * px, 1), "iou": round(iou, 3), "sig": round(sig, 2),
           "ratio": round(float(st["radii"][best].mean()) / r, 3) if best >= 0 else ""}  # fmt: skip
    if iou >= 0.5:
        return row | {"cause": "found"}
    if rm < st["rmin"] / 1.05 or rm > st["rmax"] * 1.05:
        return row | {"cause": "c radius out of range"}
    cause = _lost_where(st, wy, wx, rw, rm)
    if not cause:
        cause = _weak(cy, cx, r, (h, w), dis) if sig < st["thr"] else "b no local maximum"
    return row | {"cause": cause}


def _ours(per: int) -> Iterator[tuple[str, str, Any, Any, float, list, Any]]:
    from bench_detect import CONDITIONS, REF
    from lipoclass.synth import render_micrograph

    for k, (name, change) in enumerate(CONDITIONS):
        cfg = replace(REF, seed=3000 + 100 * k, **change)  # type: ignore[arg-type]
        for i in range(per):
            m = render_micrograph(cfg, i)
            tl = [{"k": q["instance"], "cy": q["y"], "cx": q["x"], "r": q["diameter_px"]}
                  for q in m.particles]  # fmt: skip
            for t in tl:
                t["r"] = float(t["r"]) / 2  # type: ignore[arg-type]
            yield name, f"{cfg.seed}/{i}", m.image, m.labels, m.sample.pixel_size_nm, tl, None


def _simulated(sim: str, per: int) -> Iterator[tuple[str, str, Any, Any, float, list, Any]]:
    if sim == "altsim":
        from altsim import AltConfig, render
        from bench_detect_altsim import CONDITIONS as ALT

        cfgs = [(n, replace(AltConfig(), **c), 7000 + 1000 * k) for k, (n, c) in enumerate(ALT)]  # type: ignore[arg-type]
        make: Any = render
    else:
        from bench_detect_thirdsim import CONDITIONS as THIRD
        from bench_detect_thirdsim import _cfg
        from thirdsim import render as make

        cfgs = [(n, _cfg(k), 9000 + 50 * k) for k, (n, _c) in enumerate(THIRD)]
    for name, cfg, seed0 in cfgs:
        for i in range(per):
            m = make(cfg, seed0 + i)
            dis = m.ice | m.carbon | m.debris if sim == "altsim" else m.absorbers | m.carbon
            tl = [{"k": j + 1, "cy": v["cy"], "cx": v["cx"], "r": v["r_nm"] / m.pixel_nm}
                  for j, v in enumerate(m.vesicles)]  # fmt: skip
            yield name, str(seed0 + i), m.image, m.labels, float(m.pixel_nm), tl, dis


def micrographs(sim: str, per: int) -> Iterator[tuple[str, str, Any, Any, float, list, Any]]:
    """(condition, seed, image, labels, nm/px, truth list: k, cy, cx, r px; distractor mask
    or None) of ``per`` micrographs a condition."""
    return _ours(per) if sim == "ours" else _simulated(sim, per)


def run(sim: str, per: int, check: bool) -> list[dict[str, Any]]:
    """Every truth liposome's row on ``per`` micrographs a condition of simulator ``sim``."""
    rows: list[dict[str, Any]] = []
    for name, seed, image, labels, px, tl, dis in micrographs(sim, per):
        t0 = time.time()
        img = np.asarray(image, np.float32)
        st = candidate_stage(img, px, check)
        if check:
            det = D.detect_candidates(img, D.DetectConfig(verifier="none"), px, "", False)
            if len(det) != len(st["cy"]) or not np.allclose(det.radii, st["radii"], atol=1e-3):
                raise AssertionError(f"{sim} {seed}: candidates differ from detect_candidates")
        present = set(np.unique(labels).tolist())
        mine = [classify(st, labels, t, px, dis) for t in tl if t["k"] in present]
        lab, _ = D.paint_outlines(labels.shape, st["cy"], st["cx"], st["radii"])
        together = len(match_instances(labels, lab).pairs)
        for r in mine:
            r.update(sim=sim, condition=name, seed=seed, px=px, factor=st["factor"],
                     candidates=len(st["cy"]), together=together)  # fmt: skip
        rows += mine
        alone = sum(r["cause"] == "found" for r in mine)
        print(f"{sim} {name:<26} {seed:>8} {px} nm/px: {len(mine)} liposomes, "
              f"{len(st['cy'])} candidates, {alone} alone, {together} together, "
              f"{time.time() - t0:.1f} s", file=sys.stderr, flush=True)  # fmt: skip
    return rows


def _size(d_nm: float) -> str:
    return next(name for lo, hi, name in SIZES if lo <= d_nm < hi)


def report(sim: str, rows: list[dict[str, Any]]) -> None:
    """Markdown tables: causes by size and by pixel size, the weak rings' significance."""
    mics = {(r["condition"], r["seed"]): r for r in rows}
    n = len(rows)
    found = sum(r["cause"] == "found" for r in rows)
    print(f"\n### {sim}: {len(mics)} micrographs, {n} liposomes; candidate recall alone "
          f"{found / n:.3f}, together {sum(r['together'] for r in mics.values()) / n:.3f}; "
          f"{sum(r['candidates'] for r in mics.values()) / len(mics):.0f} candidates a "
          f"micrograph\n")  # fmt: skip
    pxs = sorted({r["px"] for r in rows})
    cols = [s[2] for s in SIZES] + [f"{p:g} nm/px" for p in pxs]
    by = Counter((r["cause"], _size(r["d_nm"])) for r in rows)
    by += Counter((r["cause"], f"{r['px']:g} nm/px") for r in rows)
    causes = sorted({r["cause"] for r in rows}, key=lambda c: (c != "found", c))
    print("| cause | " + " | ".join(cols) + " | all |")
    print("|---|" + "---|" * (len(cols) + 1))
    for c in causes:
        tot = sum(r["cause"] == c for r in rows)
        print(f"| {c} | " + " | ".join(str(by[(c, col)]) for col in cols) + f" | {tot} |")
    weak = [r["sig"] for r in rows if r["cause"] == "a weak"]
    bins = np.histogram(weak, bins=[-np.inf, 1, 2, 3, 4])[0] if weak else [0] * 4
    print(f"\nweak rings' significance at the truth: < 1: {bins[0]}, 1-2: {bins[1]}, 2-3: "
          f"{bins[2]}, 3-4: {bins[3]}; found liposomes' median "
          f"{np.median([r['sig'] for r in rows if r['cause'] == 'found']):.1f}")  # fmt: skip
    ratio = [r["ratio"] for r in rows if r["cause"] == "d outline" and r["ratio"] != ""]
    if ratio:
        print(f"outline misses: outline radius / truth radius median {np.median(ratio):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per", type=int, default=3, help="micrographs a condition")
    ap.add_argument("--sims", default="ours,altsim,thirdsim", help="comma-separated")
    ap.add_argument("--csv", default=None, help="every liposome's row to this CSV")
    ap.add_argument("--check", action="store_true",
                    help="also check the re-run against detect.py (slower)")  # fmt: skip
    args = ap.parse_args()
    allrows = []
    for sim in args.sims.split(","):
        if sim not in ("ours", "altsim", "thirdsim"):
            raise SystemExit(f"unknown simulator {sim!r}")
        rows = run(sim, args.per, args.check)
        report(sim, rows)
        allrows += rows
    if args.csv and allrows:
        out = Path(args.csv)
        tmp = out.with_name(f".{out.name}.tmp")
        with tmp.open("w", newline="") as fh:
            wr = csv.DictWriter(fh, fieldnames=list(allrows[0]))
            wr.writeheader()
            wr.writerows(allrows)
        tmp.replace(out)


if __name__ == "__main__":
    main()
