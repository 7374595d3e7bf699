"""Eighteenth round: verifiers trained on candidates labelled "painted" or "alone"
(``verify.candidate_truth``) scored at detection level on the cached micrographs of
``arc_cache.py`` (tuning 3000 + 100 k + i, altsim check 7000 + 1000 k + i, thirdsim
exploratory 9000 + 50 k + i; never a report seed).

``--cands OUT``: every micrograph's candidates at the default candidate threshold
(``detect_candidates`` without a verifier: centres, outlines, features) and its truth labels,
one ``.npz`` a micrograph in OUT. ``--score OUT``: each verifier of ``--verifiers``
(NAME=SPEC, comma-separated; SPEC as ``lipoclass detect --verifier``) applied to the cached
candidates as ``detect_candidates`` applies it (per-micrograph scores, the verifier's
threshold), the accepted outlines painted together and matched to the truth one-to-one at
mask IoU >= 0.5; pooled precision / recall / F1 per simulator of ``--sims``. A verifier
whose NAME ends in "#" followed by a number is averaged with the others of the same stem
(network seeds): the mean F1 is printed too.

    PYTHONPATH=src:benchmarks .venv/bin/python benchmarks/verifier_labels.py DIR --cands OUT
    PYTHONPATH=src:benchmarks .venv/bin/python benchmarks/verifier_labels.py DIR --score OUT \\
        --verifiers packaged=default,alone=/tmp/alone_verifier.json
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from lipoclass.choices import RING_NOISE
from lipoclass.micrograph import detect as D
from lipoclass.micrograph.match import match_instances, pool_matches
from lipoclass.micrograph.verify import load_verifier


def cache_candidates(
    files: list[Path], out: Path, threshold: float | None = None, noise: str = "all"
) -> None:
    """Candidates of each cached micrograph without a verifier, to ``out`` (``threshold``:
    the ring threshold, None: ``DetectConfig``'s; ``noise``: ``DetectConfig.ring_noise``)."""
    cfg = D.DetectConfig(verifier="none", ring_noise=noise)
    if threshold is not None:
        cfg = replace(cfg, threshold=threshold)
    out.mkdir(parents=True, exist_ok=True)
    for fn in files:
        dst = out / fn.name
        if dst.exists():
            continue
        c = np.load(fn)
        t0 = time.time()
        det = D.detect_candidates(c["image"], cfg, float(c["px"]), "", False)  # fmt: skip
        tmp = dst.with_name(f".{dst.stem}.tmp.npz")
        np.savez(tmp, cy=det.cy, cx=det.cx, radii=det.radii, features=det.features,
                 labels=c["labels"])  # fmt: skip
        tmp.replace(dst)
        print(fn.name, len(det), f"{time.time() - t0:.1f} s", flush=True)


def accepted(ver: Any, feats: np.ndarray) -> np.ndarray:
    """The candidates ``ver`` accepts, as ``detect_candidates`` decides."""
    if len(feats) == 0:
        return np.zeros(0, dtype=bool)
    score = np.asarray(ver.micrograph_scores(feats)[0], np.float64)
    return score >= ver.threshold


def score(files: list[Path], verifiers: dict[str, Any]) -> dict[str, tuple[float, ...]]:
    """name -> (truth, accepted, precision, recall, F1) pooled over ``files``."""
    ms: dict[str, list[Any]] = {k: [] for k in verifiers}
    for fn in files:
        c = np.load(fn)
        truth = c["labels"].astype(np.int64)
        for k, ver in verifiers.items():
            idx = np.flatnonzero(accepted(ver, c["features"]))
            lab, _ = D.paint_outlines(truth.shape, c["cy"][idx], c["cx"][idx], c["radii"][idx])
            ms[k].append(match_instances(truth, lab))
    out = {}
    for k, m in ms.items():
        a = pool_matches(m)
        out[k] = (a.n_truth, a.n_found, a.precision, a.recall, a.f1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path, help="arc_cache.py's folder")
    ap.add_argument("--cands", type=Path, help="cache the candidates to this folder")
    ap.add_argument("--score", type=Path, help="score the verifiers on this candidate cache")
    ap.add_argument("--verifiers", default="packaged=default")
    ap.add_argument("--sims", default="ours,altsim,thirdsim")
    ap.add_argument(
        "--ring-threshold",
        type=float,
        default=None,
        help="with --cands: the ring threshold (default DetectConfig's)",
    )
    ap.add_argument("--ring-noise", choices=RING_NOISE, default="all",
                    help="with --cands: DetectConfig.ring_noise (default all)")  # fmt: skip
    args = ap.parse_args()
    for sim in args.sims.split(","):
        files = sorted(args.dir.glob(f"{sim}-*.npz"))
        if args.cands:
            cache_candidates(files, args.cands, args.ring_threshold, args.ring_noise)
        if not args.score:
            continue
        vers = dict(v.split("=", 1) for v in args.verifiers.split(","))
        res = score([args.score / f.name for f in files],
                    {k: load_verifier(s) for k, s in vers.items()})  # fmt: skip
        stems: dict[str, list[float]] = {}
        for k, (nt, nf, p, r, f1) in res.items():
            print(f"| {sim} | {k} | {len(files)} | {nt} | {nf} | {p:.4f} | {r:.4f} | {f1:.4f} |")
            if "#" in k:
                stems.setdefault(k.split("#")[0], []).append(f1)
        for stem, f1s in stems.items():
            print(f"| {sim} | {stem} mean of {len(f1s)} | F1 {np.mean(f1s):.4f} |", flush=True)


if __name__ == "__main__":
    main()
