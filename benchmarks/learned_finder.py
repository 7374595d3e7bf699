"""Twenty-second round: a learned candidate finder beside the ring filter
(``lipoclass.micrograph.finder``; ``DetectConfig(finder="ring+learned")``).

A small fully convolutional network marks liposome centres on each octave of the detector's
working image, one network for every octave (``finder.octave_maps``, ``finder.R0``): on
octave o it answers for the liposomes whose outline radius there is in [R0, 2 R0) px (octave
0 also the smaller ones, the last octave also the larger ones), with a centre heat map
(CenterNet's penalty-reduced focal loss on Gaussian targets, sigma 1 px) and the radius as
log2(r / R0) (L1); liposomes just outside an octave's range are neither taught nor punished.

Training micrographs only: our simulator's seeds 1000-1159 and altsim's 10000-10079 (the
packaged verifier's training micrographs, ``scripts/train_detect_verifier.py``); the packaged
finder is ``--train OUT.npz --steps 6000 --aug strong`` (network seed 0). Scoring on
``arc_cache.py``'s cached micrographs (tuning 3000+, altsim check 7000+, thirdsim exploratory
9000 + 50 k + i) against the ring filter's candidates there (``verifier_labels.py --cands``):
``--score`` candidate recall at the ring filter's count, ``--detect`` the finder alone by heat
threshold, ``--union`` / ``--extras`` its candidates through the packaged verifier,
``--either`` the shipped detections plus its confident ones; ``--fresh`` renders never-used
thirdsim micrographs in the cache's layout. Rules and figures: docs/micrographs.md,
"Twenty-second round".

    PYTHONPATH=src:benchmarks:scripts .venv/bin/python benchmarks/learned_finder.py \\
        --build /tmp/n22/train --train /tmp/n22/finder.npz --steps 6000 --aug strong
    PYTHONPATH=src:benchmarks:scripts .venv/bin/python benchmarks/learned_finder.py \\
        --model /tmp/n22/finder.npz --score /tmp/rp_cache --ring-cands /tmp/clip_cands \\
        --detect /tmp/n22/lcands
    PYTHONPATH=src:benchmarks:scripts .venv/bin/python benchmarks/learned_finder.py \\
        --either /tmp/n22/lcands --ring-cands /tmp/clip_cands
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from lipoclass.micrograph import detect as D
from lipoclass.micrograph.finder import (
    BG_SIGMA,
    CLIP,
    R0,
    LearnedFinder,
    covered,
    finder_network,
    load_finder,
    octave_maps,
)

PATCH = 80  # px: training patch side
HEAT_MIN = 0.05  # heat below which no peak becomes a candidate


def truth_circles(labels: np.ndarray) -> np.ndarray:
    """(K, 3) centre y, x and equivalent radius (full-resolution px) of each instance."""
    lab = labels.astype(np.int64)
    n = int(lab.max())
    if n == 0:
        return np.zeros((0, 3))
    idx = np.arange(1, n + 1)
    area = ndi.sum_labels(np.ones_like(lab), lab, idx)
    com = np.asarray(ndi.center_of_mass(np.ones_like(lab), lab, idx)).reshape(-1, 2)
    keep = area > 0
    return np.column_stack([com[keep], np.sqrt(area[keep] / np.pi)])


def octaves(image: np.ndarray, px: float) -> tuple[int, np.ndarray, float]:
    """(working factor, working image, largest radius in working px) as the detector's."""
    cfg = D.DetectConfig(verifier="none")
    dmin, dmax = cfg.diameters_px(px)
    factor = D._work_factor(dmin, image.shape)
    work = D._working(image, factor, cfg.invert).astype(np.float32)
    return factor, work, max(dmax / 2 / factor, 5.0)


def targets(shape: tuple[int, int], circ: np.ndarray, scale: float, first: bool, last: bool):
    """Heat target, loss weight and radius target (log2(r / R0)) of one octave map whose
    pixel is ``scale`` full-resolution px; ``circ`` as ``truth_circles``."""
    heat = np.zeros(shape, np.float32)
    weight = np.ones(shape, np.float32)
    rad = np.zeros(shape, np.float32)
    yy, xx = np.mgrid[-4:5, -4:5]
    g = np.exp(-(yy**2 + xx**2) / 2.0).astype(np.float32)
    for cy, cx, r in circ:
        y, x, ro = (cy + 0.5) / scale - 0.5, (cx + 0.5) / scale - 0.5, r / scale
        iy, ix = round(y), round(x)
        if not (0 <= iy < shape[0] and 0 <= ix < shape[1]):
            continue
        lo = 0.0 if first else R0
        hi = np.inf if last else 2 * R0
        ys, xs = (
            slice(max(iy - 4, 0), min(iy + 5, shape[0])),
            slice(max(ix - 4, 0), min(ix + 5, shape[1])),
        )
        gy, gx = (
            slice(ys.start - iy + 4, ys.stop - iy + 4),
            slice(xs.start - ix + 4, xs.stop - ix + 4),
        )
        if lo <= ro < hi:
            heat[ys, xs] = np.maximum(heat[ys, xs], g[gy, gx])
            rad[ys, xs] = np.where(g[gy, gx] >= heat[ys, xs], np.log2(ro / R0), rad[ys, xs])
        elif 0.75 * lo <= ro < 1.3 * hi:  # near the octave's range: neither taught nor punished
            weight[ys, xs] = np.where(g[gy, gx] > 0.1, 0.0, weight[ys, xs])
    return heat, weight, rad


def build(out: Path, n_ours: int, n_alt: int) -> None:
    """Octave maps and targets of the training micrographs, one .npz each in ``out``."""
    from train_detect_verifier import conditions

    from lipoclass.synth import MicrographConfig, render_micrograph

    out.mkdir(parents=True, exist_ok=True)
    items: list[tuple[str, Any]] = [(f"s{c['seed']}", c) for c in conditions(1000, n_ours)]
    items += [(f"a{10000 + k}", k) for k in range(n_alt)]
    for name, c in items:
        dst = out / f"{name}.npz"
        if dst.exists():
            continue
        if name.startswith("s"):
            m = render_micrograph(MicrographConfig(**c), 0)
            img, lab, px = m.image, m.labels, float(c["pixel_size_nm"])
        else:
            _n, img, lab, px = _alt_one(c)
        factor, work, rmax = octaves(np.asarray(img, np.float32), px)
        maps = octave_maps(work, rmax)
        circ = truth_circles(lab)
        arrs: dict[str, np.ndarray] = {}
        for o, mp in enumerate(maps):
            h, w, r = targets(mp.shape, circ, factor * 2**o, o == 0, o == len(maps) - 1)
            arrs.update({f"x{o}": mp, f"h{o}": h, f"w{o}": w, f"r{o}": r})
        np.savez(dst, n=np.int64(len(maps)), **arrs)
        print(name, len(maps), len(circ), flush=True)


def _alt_one(k: int) -> tuple[str, np.ndarray, np.ndarray, float]:
    """Altsim micrograph ``10000 + k`` with the settings ``alt_conditions(10000, k + 1)[k]``."""
    from dataclasses import replace

    from train_detect_verifier import alt_conditions

    from altsim import AltConfig, render

    c = alt_conditions(10000, k + 1)[k]
    m = render(replace(AltConfig(), **c), 10000 + k)  # type: ignore[arg-type]
    return f"a{10000 + k}", m.image.astype(np.float32), m.labels.astype(np.int64), float(m.pixel_nm)


def _patches(
    maps: list[list[tuple[np.ndarray, ...]]],
    rng: np.random.Generator,
    n: int,
    strong: bool = False,
    solids: bool = False,
    ctf: bool = False,
) -> tuple[np.ndarray, ...]:
    """``n`` training patches (x, heat, weight, radius), half centred near a liposome;
    ``maps``: per micrograph, per octave (x, heat, weight, radius, positive positions);
    ``solids`` (finder v3): solid particles pasted as negatives (``_paste_solids``);
    ``ctf`` (twenty-fourth round): a random transfer function first (``_transfer``)."""
    out = np.zeros((4, n, PATCH, PATCH), np.float32)
    for k in range(n):
        mic = maps[rng.integers(len(maps))]
        x, h, w, r, pos = mic[rng.integers(len(mic))]
        if len(pos) and rng.random() < 0.5:
            cy, cx = pos[rng.integers(len(pos))] + rng.integers(-PATCH // 3, PATCH // 3 + 1, 2)
        else:
            cy, cx = rng.integers(x.shape[0]), rng.integers(x.shape[1])
        y0, x0 = int(cy) - PATCH // 2, int(cx) - PATCH // 2
        sy = slice(max(y0, 0), min(y0 + PATCH, x.shape[0]))
        sx = slice(max(x0, 0), min(x0 + PATCH, x.shape[1]))
        dy, dx = slice(sy.start - y0, sy.stop - y0), slice(sx.start - x0, sx.stop - x0)
        for j, a in enumerate((x, h, w, r)):
            out[j, k, dy, dx] = a[sy, sx]
        rot, flip = int(rng.integers(4)), bool(rng.integers(2))
        for j in range(4):
            p = np.rot90(out[j, k], rot)
            out[j, k] = p[:, ::-1] if flip else p
        if solids and rng.random() < 0.6:
            _paste_solids(out[0, k], out[1, k], rng)
        if ctf and rng.random() < 0.5:
            out[0, k] = _transfer(out[0, k], rng)
        out[0, k] = _augment(out[0, k], rng, strong)
    return tuple(out)


def _transfer(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The patch through a random radial transfer function 1 - a + a cos(2 pi (k / k0)^2 +
    phi) (a 0-0.7, k0 0.1-0.5 cycles / px, phi 0-2 pi): a CTF-like change of which spatial
    frequencies are passed and with which sign, so that fringes and membrane profiles of
    another microscope's defocus look as familiar as the training simulators' own."""
    ky = np.fft.fftfreq(x.shape[0])[:, None]
    kx = np.fft.rfftfreq(x.shape[1])[None, :]
    k2 = (ky * ky + kx * kx) / rng.uniform(0.1, 0.5) ** 2
    a = rng.uniform(0.0, 0.7)
    t = 1.0 - a + a * np.cos(2 * np.pi * k2 + rng.uniform(0, 2 * np.pi))
    return np.fft.irfft2(np.fft.rfft2(x) * t, s=x.shape).astype(np.float32)


def _paste_solids(x: np.ndarray, heat: np.ndarray, rng: np.random.Generator) -> None:
    """1 + Poisson(1) solid particles (no membrane: ice, protein aggregates, gold, debris)
    added to the octave-map patch ``x`` in place, as negatives: radius log-uniform 2.5-20 px,
    profile (1 - (r / R)^2)^p with p 0.3-1.2 (flat disc to peaked), axis ratio 0.75-1,
    amplitude 1-6 robust z, dark with chance 0.8; never where ``heat`` within R + 2 px
    exceeds 0.1 (no liposome centre covered)."""
    yy, xx = np.mgrid[: x.shape[0], : x.shape[1]].astype(np.float32)
    for _ in range(1 + int(rng.poisson(1.0))):
        r = float(np.exp(rng.uniform(np.log(2.5), np.log(20.0))))
        cy, cx = rng.uniform(0, x.shape[0]), rng.uniform(0, x.shape[1])
        e, ang = rng.uniform(0.75, 1.0), rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dy * np.cos(ang) + dx * np.sin(ang)) / e
        v = -dy * np.sin(ang) + dx * np.cos(ang)
        rr = (u * u + v * v) / (r * r)
        if np.any(heat[(dy * dy + dx * dx) <= (r + 2) ** 2] > 0.1):
            continue
        amp = rng.uniform(1.0, 6.0) * (-1.0 if rng.random() < 0.8 else 1.0)
        x += (amp * np.clip(1.0 - rr, 0.0, None) ** rng.uniform(0.3, 1.2)).astype(np.float32)


def _augment(xb: np.ndarray, rng: np.random.Generator, strong: bool) -> np.ndarray:
    """A random blur and extra noise, then the map renormalised; ``strong`` (finder v2) also
    a random band-pass, a random power and a random clip level."""
    if strong and rng.random() < 0.5:
        xb = xb - rng.uniform(0, 1) * ndi.gaussian_filter(xb, rng.uniform(2, 12))
    s = rng.uniform(0, 1.5 if strong else 1.0)
    if s > 0.3:
        xb = ndi.gaussian_filter(xb, s)
    xb = xb + rng.normal(0, rng.uniform(0, 1.0 if strong else 0.7), xb.shape).astype(np.float32)
    if strong:
        xb = np.sign(xb) * np.abs(xb) ** rng.uniform(0.7, 1.4)
    mad = float(np.median(np.abs(xb - np.median(xb)))) * 1.4826 or 1.0
    clip = rng.uniform(3, 5) if strong else CLIP
    return np.clip((xb - np.median(xb)) / mad, -clip, clip).astype(np.float32)


def focal(logit: Any, heat: Any, weight: Any) -> Any:
    """CenterNet's penalty-reduced focal loss over the weighted pixels."""
    import torch

    p = torch.sigmoid(logit).clamp(1e-4, 1 - 1e-4)
    pos = (heat > 0.99).float()
    lp = -pos * (1 - p) ** 2 * torch.log(p)
    ln = -(1 - pos) * (1 - heat) ** 4 * p**2 * torch.log(1 - p)
    return ((lp + ln) * weight).sum() / pos.sum().clamp(min=1.0)


def train(data: Path, out: Path, steps: int, batch: int, seed: int, strong: bool = False,
          solids: bool = False, ctf: bool = False) -> None:  # fmt: skip
    """Fit the finder on the built training maps (Adam, cosine schedule)."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    maps = []
    for fn in sorted(data.glob("*.npz")):
        d = np.load(fn)
        octs = range(int(d["n"]))
        maps.append([(d[f"x{o}"], d[f"h{o}"], d[f"w{o}"], d[f"r{o}"],
                      np.argwhere(d[f"h{o}"] > 0.99)) for o in octs])  # fmt: skip
    print(f"{len(maps)} training micrographs", flush=True)
    net = finder_network()
    with torch.no_grad():
        net[-2].bias[0] = -2.19  # CenterNet's prior: few pixels are centres
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    t0 = time.time()
    for step in range(steps):
        x, h, w, r = (
            torch.from_numpy(np.ascontiguousarray(a))[:, None]
            for a in _patches(maps, rng, batch, strong, solids, ctf)
        )
        y = net(x)
        lh = focal(y[:, :1], h, w)
        m = (h > 0.3).float() * w
        lr_ = ((y[:, 1:] - r).abs() * m).sum() / m.sum().clamp(min=1.0)
        loss = lh + lr_
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step} heat {lh.item():.3f} radius {lr_.item():.3f} "
                  f"{time.time() - t0:.0f} s", flush=True)  # fmt: skip
    net.eval()
    aug = "ctf" if ctf else "solids" if solids else "strong" if strong else "plain"
    info = {"trained_by": f"benchmarks/learned_finder.py --train --steps {steps} --aug "
            f"{aug} (seed {seed}, batch {batch})",
            "training_micrographs": f"{len(maps)} in {data}", "torch": torch.__version__,
            "R0": R0, "BG_SIGMA": BG_SIGMA, "CLIP": CLIP, "threshold": 0.45}  # fmt: skip
    LearnedFinder(net, info).save(out)


def find(finder: LearnedFinder, image: np.ndarray, px: float) -> tuple[int, np.ndarray]:
    """(working factor, candidates (N, 4): heat, cy, cx, r in working px, heat >= HEAT_MIN)."""
    factor, work, rmax = octaves(image, px)
    return factor, finder.find(work, rmax, HEAT_MIN)


def recall(labels: np.ndarray, cy: np.ndarray, cx: np.ndarray, radii: np.ndarray) -> int:
    """Truth instances matched one-to-one ("alone" outlines, mask IoU >= 0.5)."""
    from lipoclass.micrograph.match import greedy_one_to_one

    if len(cy) == 0:
        return 0
    pairs, iou = D.alone_overlaps(labels, cy, cx, radii)
    keep = iou >= 0.5
    pairs, iou = pairs[keep], iou[keep]
    return len(greedy_one_to_one(pairs, iou)) if len(pairs) else 0


def full_outlines(
    image: np.ndarray, px: float, factor: int, c: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Full-resolution centres and refined outline radii (N, 48) as ``detect_candidates``."""
    cfg = D.DetectConfig(verifier="none")
    work = D._working(image, factor, cfg.invert)
    z, _low = D._bandpass(work, D._sigma(cfg, px, factor))
    _raw, radii, _rim = D._refine(z, c[:, 1], c[:, 2], c[:, 3])
    cy = (c[:, 1] + 0.5) * factor - 0.5
    cx = (c[:, 2] + 0.5) * factor - 0.5
    return cy, cx, radii * factor + 2.3 / px


def score(model: Path, cache: Path, ring: Path, sims: list[str], limit: int = 0) -> None:
    """Candidate recall of the ring filter, the finder at the ring's count, and the union."""

    net = load_finder(model)
    for sim in sims:
        tot = np.zeros(6)
        for fn in sorted(cache.glob(f"{sim}-*.npz"))[: limit or None]:
            d, rc = np.load(fn), np.load(ring / fn.name)
            lab = d["labels"].astype(np.int64)
            n_truth = len(np.unique(lab)) - 1
            n_ring = len(rc["cy"])
            img = d["image"].astype(np.float32)
            px = float(d["px"])
            factor, c = find(net, img, px)
            inside = (c[:, 1] >= 0) & (c[:, 1] <= img.shape[0] / factor - 1)
            inside &= (c[:, 2] >= 0) & (c[:, 2] <= img.shape[1] / factor - 1)
            c = c[inside][:n_ring]
            cy, cx, rr = full_outlines(img, px, factor, c)
            r_ring = recall(lab, rc["cy"], rc["cx"], rc["radii"])
            r_learn = recall(lab, cy, cx, rr)
            uy = np.concatenate([rc["cy"], cy])
            ux = np.concatenate([rc["cx"], cx])
            ur = np.concatenate([rc["radii"], rr])
            r_union = recall(lab, uy, ux, ur)
            tot += [n_truth, n_ring, len(c), r_ring, r_learn, r_union]
            print(f"{fn.stem} truth {n_truth} ring {r_ring}/{n_ring} learned {r_learn}/{len(c)} "
                  f"union {r_union}", flush=True)  # fmt: skip
        nt = max(tot[0], 1)
        print(f"== {sim}: truth {tot[0]:.0f}, candidates ring {tot[1]:.0f} learned {tot[2]:.0f}; "
              f"recall ring {tot[3] / nt:.3f} learned {tot[4] / nt:.3f} union {tot[5] / nt:.3f}",
              flush=True)  # fmt: skip


def _todo(cache: Path, out: Path, sims: list[str]) -> Any:
    """(file, its arrays, image float32, pixel size) of each cached micrograph of ``sims``
    not yet in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for sim in sims:
        for fn in sorted(cache.glob(f"{sim}-*.npz")):
            if not (out / fn.name).exists():
                d = np.load(fn)
                yield fn, d, d["image"].astype(np.float32), float(d["px"])


def cache_detections(model: Path, cache: Path, out: Path, sims: list[str]) -> None:
    """Every finder candidate (heat, full-resolution centre, outline radii) of the cached
    micrographs, one .npz each in ``out``."""

    net = load_finder(model)
    for fn, d, img, px in _todo(cache, out, sims):
        t0 = time.time()
        factor, c = find(net, img, px)
        inside = (c[:, 1] >= 0) & (c[:, 1] <= img.shape[0] / factor - 1)
        inside &= (c[:, 2] >= 0) & (c[:, 2] <= img.shape[1] / factor - 1)
        c = c[inside]
        cy, cx, rr = full_outlines(img, px, factor, c)
        np.savez(out / fn.name, heat=c[:, 0], cy=cy, cx=cx, radii=rr, labels=d["labels"])
        print(fn.stem, len(c), f"{time.time() - t0:.1f} s", flush=True)


def detection_grid(lcands: Path, ring: Path, sims: list[str]) -> None:
    """Pooled precision / recall / F1 per heat threshold, and the shipped detector's."""
    from lipoclass.micrograph.match import match_instances, pool_matches
    from lipoclass.micrograph.verify import load_verifier
    from verifier_labels import score as ring_score

    grid = np.round(np.arange(0.05, 0.951, 0.05), 2)
    for sim in sims:
        files = sorted(lcands.glob(f"{sim}-*.npz"))
        ms: dict[float, list[Any]] = {t: [] for t in grid}
        for fn in files:
            d = np.load(fn)
            truth = d["labels"].astype(np.int64)
            for t in grid:
                k = d["heat"] >= t
                lab, _ = D.paint_outlines(truth.shape, d["cy"][k], d["cx"][k], d["radii"][k])
                ms[t].append(match_instances(truth, lab))
        for t in grid:
            a = pool_matches(ms[t])
            print(f"{sim} t {t:.2f} P {a.precision:.4f} R {a.recall:.4f} F1 {a.f1:.4f}")
        res = ring_score([ring / f.name for f in files], {"shipped": load_verifier("default")})
        _n, _f, p, r, f1 = res["shipped"]
        print(f"{sim} shipped P {p:.4f} R {r:.4f} F1 {f1:.4f}", flush=True)


UNION_HEAT = 0.20  # finder candidates joining the ring filter's (step 2c, chosen on altsim)


def _with_extras(orig: Any, state: dict[str, Any], gate: bool) -> Any:
    """``D._suppress`` followed by the finder's candidates in ``state["extra"]`` that no ring
    seed covers, each with its ring significance measured on the ring bank (at least 1, or 4
    with ``gate``); records ``n_seeds`` and ``n_extra`` in ``state``."""
    from diagnose_candidates import ring_bank, sig_at_truth

    def patched(rings: list[Any], zmap: np.ndarray | None = None) -> list[Any]:
        seeds = np.asarray(orig(rings, zmap), np.float64).reshape(-1, 4)
        extra = state["extra"]
        extra = extra[~covered(extra, seeds)]
        bank = {"octs": ring_bank(zmap, state["rmin"], state["rmax"])}
        add = []
        for c in extra:
            sig = sig_at_truth(bank, c[1], c[2], c[3])
            sig = max(sig, 4.0) if gate else max(sig, 1.0)
            add.append((float(sig), float(c[1]), float(c[2]), float(c[3])))
        state["n_seeds"], state["n_extra"] = len(seeds), len(add)
        return [tuple(r) for r in seeds] + add

    return patched


def _stage(state: dict[str, Any], net: LearnedFinder, img: np.ndarray, px: float) -> None:
    """The finder's candidates with heat >= ``UNION_HEAT`` and the ring bank's radius range
    (working px) of one micrograph, for ``_with_extras``."""
    factor, c = find(net, img, px)
    state["extra"] = c[c[:, 0] >= UNION_HEAT]
    dmin, dmax = D.DetectConfig().diameters_px(px)
    state["rmin"], state["rmax"] = max(dmin / 2 / factor, 4.0), max(dmax / 2 / factor, 5.0)


def union_detections(model: Path, cache: Path, out: Path, sims: list[str], gate: bool) -> None:
    """The shipped path with the finder's uncovered candidates added after the suppression
    (``D._suppress`` wrapped), features, packaged verifier and prior shift as shipped."""

    net = load_finder(model)
    orig = D._suppress
    state: dict[str, Any] = {}

    D._suppress = _with_extras(orig, state, gate)
    cfg = D.DetectConfig()
    try:
        for fn, d, img, px in _todo(cache, out, sims):
            t0 = time.time()
            _stage(state, net, img, px)
            det = D.detect_candidates(img, cfg, px)
            np.savez(out / fn.name, cy=det.cy, cx=det.cx, radii=det.radii,
                     accepted=det.accepted, score=det.score, labels=d["labels"])  # fmt: skip
            print(fn.stem, len(det), state["n_extra"], int(det.accepted.sum()),
                  f"{time.time() - t0:.1f} s", flush=True)  # fmt: skip
    finally:
        D._suppress = orig


def union_score(out: Path, sims: list[str]) -> None:
    """Pooled precision / recall / F1 of the union's accepted outlines."""
    from lipoclass.micrograph.match import match_instances, pool_matches

    for sim in sims:
        ms = []
        for fn in sorted(out.glob(f"{sim}-*.npz")):
            d = np.load(fn)
            truth = d["labels"].astype(np.int64)
            k = d["accepted"]
            lab, _ = D.paint_outlines(truth.shape, d["cy"][k], d["cx"][k], d["radii"][k])
            ms.append(match_instances(truth, lab))
        a = pool_matches(ms)
        print(f"== union {sim}: P {a.precision:.4f} R {a.recall:.4f} F1 {a.f1:.4f}", flush=True)


def either_grid(lcands: Path, ring: Path, sims: list[str]) -> None:
    """Pooled P / R / F1 of the shipped detections plus the finder's uncovered ones with heat
    >= t, for each t of the grid (step 2d)."""
    from lipoclass.micrograph.match import match_instances, pool_matches
    from lipoclass.micrograph.verify import load_verifier
    from verifier_labels import accepted as ring_accepted

    ver = load_verifier("default")
    grid = np.round(np.arange(0.05, 0.951, 0.05), 2)
    for sim in sims:
        ms: dict[float, list[Any]] = {t: [] for t in grid}
        for fn in sorted(lcands.glob(f"{sim}-*.npz")):
            d, rc = np.load(fn), np.load(ring / fn.name)
            truth = d["labels"].astype(np.int64)
            k = np.flatnonzero(ring_accepted(ver, rc["features"]))
            seeds = np.column_stack([np.zeros(len(k)), rc["cy"][k], rc["cx"][k],
                                     rc["radii"][k].mean(axis=1)])  # fmt: skip
            mine = np.column_stack([d["heat"], d["cy"], d["cx"], d["radii"].mean(axis=1)])
            free = ~covered(mine, seeds)
            for t in grid:
                j = np.flatnonzero(free & (d["heat"] >= t))
                cy = np.concatenate([rc["cy"][k], d["cy"][j]])
                cx = np.concatenate([rc["cx"][k], d["cx"][j]])
                rr = np.concatenate([rc["radii"][k], d["radii"][j]])
                lab, _ = D.paint_outlines(truth.shape, cy, cx, rr)
                ms[t].append(match_instances(truth, lab))
        for t in grid:
            a = pool_matches(ms[t])
            print(f"either {sim} t {t:.2f} P {a.precision:.4f} R {a.recall:.4f} F1 {a.f1:.4f}",
                  flush=True)  # fmt: skip


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, np.float64), 1e-9, 1 - 1e-9)
    return np.log(q / (1 - q))


def _context(ring_feats: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """``extra``'s three micrograph-context features recomputed against the ring candidates'
    own median, strong share and strong reference (step 2e)."""
    names = list(D.FEATURES)
    ls, vm, ss, vs = (names.index(k) for k in ("log_significance", "sig_vs_micrograph",
                                                "strong_share", "sig_vs_strong"))  # fmt: skip
    out = extra.copy()
    if len(ring_feats):
        med = ring_feats[0, ls] - ring_feats[0, vm]
        ref = ring_feats[0, ls] - ring_feats[0, vs]
        out[:, vm] = extra[:, ls] - med
        out[:, ss] = ring_feats[0, ss]
        out[:, vs] = extra[:, ls] - ref
    return out


def scored_extras(
    model: Path, cache: Path, ring: Path, out: Path, sims: list[str], gate: bool
) -> None:
    """Step 2e: the finder's uncovered candidates scored by the packaged verifier in the ring
    candidates' context and prior shift; the shipped detections unchanged."""

    from lipoclass.micrograph.verify import load_verifier
    from verifier_labels import accepted as ring_accepted

    ver = load_verifier("default")
    net = load_finder(model)
    orig = D._suppress
    state: dict[str, Any] = {}

    D._suppress = _with_extras(orig, state, gate)
    cfg = D.DetectConfig(verifier="none")
    try:
        for fn, d, img, px in _todo(cache, out, sims):
            rc = np.load(ring / fn.name)
            _stage(state, net, img, px)
            det = D.detect_candidates(img, cfg, px, "", False)
            n = len(rc["cy"])
            if not np.allclose(det.cy[:n], rc["cy"]) or state["n_seeds"] != n:
                raise AssertionError(f"{fn.name}: ring candidates differ from the cache")
            keep = ring_accepted(ver, rc["features"])
            ex = _context(rc["features"], det.features[n:])
            if len(ex) and n:
                shifted, raw = ver.micrograph_scores(rc["features"])
                shift = float(np.median(_logit(shifted) - _logit(raw)))
                ex_score = 1 / (1 + np.exp(-(_logit(ver.score(ex)) + shift)))
            else:
                ex_score = np.zeros(len(ex))
            acc = np.concatenate([keep, ex_score >= ver.threshold])
            np.savez(out / fn.name, cy=det.cy, cx=det.cx, radii=det.radii, accepted=acc,
                     n_ring=np.int64(n), labels=d["labels"])  # fmt: skip
            print(fn.stem, n, len(ex), int(keep.sum()), int((ex_score >= ver.threshold).sum()),
                  flush=True)  # fmt: skip
    finally:
        D._suppress = orig


def fresh_cache(out: Path, seed: int, count: int) -> None:
    """Thirdsim micrographs of ``bench_detect_thirdsim.py``'s conditions, seeds ``seed`` +
    1000 k + i, in ``arc_cache.py``'s layout (image, labels, px, name), for a fresh check."""
    from bench_detect_thirdsim import CONDITIONS, _cfg
    from thirdsim import render

    out.mkdir(parents=True, exist_ok=True)
    j = 0
    for k, (name, _c) in enumerate(CONDITIONS):
        for i in range(count):
            dst = out / f"thirdsim-{j:03d}.npz"
            j += 1
            if dst.exists():
                continue
            m = render(_cfg(k), seed + 1000 * k + i)
            tmp = dst.with_name(f".{dst.stem}.tmp.npz")
            np.savez(tmp, image=np.asarray(m.image, np.float32), labels=m.labels.astype(np.int32),
                     px=np.float64(m.pixel_nm), name=np.str_(name),
                     seed=np.str_(seed + 1000 * k + i))  # fmt: skip
            tmp.replace(dst)
            print(dst.name, name, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", type=Path, help="folder of the training maps (built if missing)")
    ap.add_argument("--ours", type=int, default=160)
    ap.add_argument("--alt", type=int, default=80)
    ap.add_argument("--train", type=Path, help="write the trained finder here")
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--aug",
        choices=("plain", "strong", "solids", "ctf"),
        default="plain",
        help="solids: strong plus pasted solid particles as negatives (v3); ctf: strong "
        "plus a random transfer function (twenty-fourth round)",
    )
    ap.add_argument("--model", type=Path)
    ap.add_argument("--score", type=Path, help="arc_cache.py's folder")
    ap.add_argument("--ring-cands", type=Path, help="verifier_labels.py --cands folder")
    ap.add_argument("--detect", type=Path, help="cache the finder's detections here and score")
    ap.add_argument("--union", type=Path, help="cache the union's detections here and score")
    ap.add_argument("--either", type=Path, help="--detect's cache: step 2d's grid")
    ap.add_argument("--extras", type=Path, help="step 2e: cache its detections here and score")
    ap.add_argument("--fresh", type=Path, help="render fresh thirdsim micrographs here")
    ap.add_argument("--fresh-seed", type=int, default=150000)
    ap.add_argument("--count", type=int, default=8, help="with --fresh: micrographs a condition")
    ap.add_argument("--gate", action="store_true", help="with --union: significance >= 4")
    ap.add_argument("--sims", default="ours,altsim,thirdsim")
    ap.add_argument("--limit", type=int, default=0, help="micrographs per simulator (0: all)")
    args = ap.parse_args()
    if args.fresh:
        fresh_cache(args.fresh, args.fresh_seed, args.count)
    if args.build:
        build(args.build, args.ours, args.alt)
    if args.train:
        train(args.build, args.train, args.steps, args.batch, args.seed,
              args.aug in ("strong", "solids", "ctf"), args.aug == "solids",
              args.aug == "ctf")  # fmt: skip
    if args.extras:
        scored_extras(
            args.model, args.score, args.ring_cands, args.extras, args.sims.split(","), args.gate
        )
        union_score(args.extras, args.sims.split(","))
    elif args.either:
        either_grid(args.either, args.ring_cands, args.sims.split(","))
    elif args.union:
        union_detections(args.model, args.score, args.union, args.sims.split(","), args.gate)
        union_score(args.union, args.sims.split(","))
    elif args.detect:
        cache_detections(args.model, args.score, args.detect, args.sims.split(","))
        detection_grid(args.detect, args.ring_cands, args.sims.split(","))
    elif args.score:
        score(
            args.model or args.train, args.score, args.ring_cands, args.sims.split(","), args.limit
        )


if __name__ == "__main__":
    main()
