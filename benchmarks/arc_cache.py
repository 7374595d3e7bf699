"""Cache of the candidate-level micrographs (``diagnose_candidates.micrographs``: tuning
3000+, altsim check 7000+, thirdsim exploratory 9000 + 50 k + i) with their ring maxima
before the suppression (``detect._ring_candidates``) and the ring map, so that suppression
variants (``candidate_variants.py arc:...``) are scored without re-rendering and re-running
the ring filter bank. One ``.npz`` a micrograph in DIR (written then renamed).

    PYTHONPATH=src:benchmarks .venv/bin/python benchmarks/arc_cache.py DIR [--per 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diagnose_candidates import micrographs
from lipoclass.micrograph import detect as D


def stage_inputs(image: np.ndarray, px: float) -> dict[str, np.ndarray]:
    """Working factor, ring map and ring maxima (significance, cy, cx, r; working px) of
    ``detect_candidates`` at default settings."""
    cfg = D.DetectConfig(verifier="none")
    dmin, dmax = cfg.diameters_px(px)
    factor = D._work_factor(dmin, image.shape)
    work = D._working(image, factor, cfg.invert)
    z, _low = D._bandpass(work, D._sigma(cfg, px, factor))
    rmin, rmax = max(dmin / 2 / factor, 4.0), max(dmax / 2 / factor, 5.0)
    zr = D._ring_map(image, work, z, factor)
    rings = D._ring_candidates(zr, rmin, rmax, cfg.threshold, 1) if np.any(z) else []
    return {"factor": np.int64(factor), "zr": zr, "z": z,
            "rings": np.asarray(rings, np.float64).reshape(-1, 4)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--per", type=int, default=3)
    ap.add_argument("--sims", default="ours,altsim,thirdsim")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    for sim in args.sims.split(","):
        for k, (name, seed, image, labels, px, tl, _dis) in enumerate(micrographs(sim, args.per)):
            out = args.dir / f"{sim}-{k:03d}.npz"
            if out.exists():
                continue
            img = np.asarray(image, np.float32)
            st = stage_inputs(img, px)
            truth = np.asarray([[t["k"], t["cy"], t["cx"], t["r"]] for t in tl], np.float64)
            tmp = out.with_name(f".{out.stem}.tmp.npz")
            np.savez(tmp, image=img, labels=np.asarray(labels, np.int32), px=np.float64(px),
                     truth=truth.reshape(-1, 4), name=np.str_(name), seed=np.str_(seed),
                     **st)  # fmt: skip
            tmp.replace(out)
            print(sim, k, name, seed, len(st["rings"]), flush=True)


if __name__ == "__main__":
    main()
