"""Twenty-first-round prototype (docs/micrographs.md; not shipped): weak rings as a second
tier. Tier 1 is main's candidates (ring threshold 4) as the packaged verifier accepts them;
tier 2 the candidates of a threshold-3.5 run with significance under 4 whose raw liposome
score (no per-micrograph prior shift, which the many weak clutter rings would pull down for
every candidate) is >= ``t_low``, each centred farther than the larger radius from every
accepted one (greedy by score). All accepted outlines painted together, matched one-to-one
at mask IoU >= 0.5, pooled per simulator. Inputs: two candidate caches of
``verifier_labels.py --cands`` (threshold 4 and ``--ring-threshold 3.5``).

    PYTHONPATH=src:benchmarks .venv/bin/python benchmarks/weak_band.py MAIN_CANDS LOW_CANDS \\
        --t-low 0.5,0.7,0.9 [--sims ours,altsim,thirdsim]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lipoclass.micrograph import detect as D
from lipoclass.micrograph.match import match_instances, pool_matches
from lipoclass.micrograph.verify import load_verifier

LOG4 = float(np.log(4.0))  # FEATURES[0] is log_significance


def outlines(main: dict, low: dict, ver: object, t_low: float) -> tuple[np.ndarray, ...]:
    """(cy, cx, radii) of the accepted outlines of one micrograph: tier 1, then tier 2."""
    feats = main["features"]
    s1 = ver.micrograph_scores(feats)[0] if len(feats) else np.zeros(0)  # type: ignore[attr-defined]
    keep = np.flatnonzero(s1 >= ver.threshold)  # type: ignore[attr-defined]
    cy, cx, rr = list(main["cy"][keep]), list(main["cx"][keep]), list(main["radii"][keep])
    lf = low["features"]
    weak = np.flatnonzero(lf[:, 0] < LOG4) if len(lf) else np.zeros(0, int)
    raw = ver.score(lf[weak]) if len(weak) else np.zeros(0)  # type: ignore[attr-defined]
    for j in np.argsort(-raw):
        if raw[j] < t_low:
            break
        i = weak[j]
        y, x, r = low["cy"][i], low["cx"][i], low["radii"][i]
        if cy:
            reach = np.maximum(np.asarray(rr).max(axis=1), np.max(r))
            if np.any(np.hypot(np.asarray(cy) - y, np.asarray(cx) - x) < reach):
                continue
        cy.append(y)
        cx.append(x)
        rr.append(r)
    radii = np.asarray(rr).reshape(len(rr), -1) if rr else main["radii"][:0]
    return np.asarray(cy), np.asarray(cx), radii


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("main_cands", type=Path)
    ap.add_argument("low_cands", type=Path)
    ap.add_argument("--t-low", default="0.5,0.7,0.9,1.01", help="tier-2 raw score thresholds")
    ap.add_argument("--sims", default="ours,altsim,thirdsim")
    args = ap.parse_args()
    ver = load_verifier("default")
    grid = [float(x) for x in args.t_low.split(",")]
    for sim in args.sims.split(","):
        ms: dict[float, list[object]] = {t: [] for t in grid}
        for fa in sorted(args.main_cands.glob(f"{sim}-*.npz")):
            a, b = dict(np.load(fa)), dict(np.load(args.low_cands / fa.name))
            truth = a["labels"].astype(np.int64)
            for t in grid:
                cy, cx, radii = outlines(a, b, ver, t)
                lab, _ = D.paint_outlines(truth.shape, cy, cx, radii)
                ms[t].append(match_instances(truth, lab))
        for t in grid:
            m = pool_matches(ms[t])  # type: ignore[arg-type]
            print(f"{sim} t_low {t}: P {m.precision:.4f} R {m.recall:.4f} F1 {m.f1:.4f} "
                  f"found {m.n_found}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
