"""``lipoclass detect-train``'s design measured on a lab-sized scenario where the lab's
microscope differs from our simulator (docs/micrographs.md, "A lab's own verifier").

The lab's annotated micrographs are ``--lab`` (comma-separated sizes, each the first N of
the same draw) micrographs of the independent simulator benchmarks/altsim.py, settings drawn
as ``scripts/train_detect_verifier.py``'s ``alt_micrographs`` but with seeds ``--lab-seed``
(default 11100) and up, so that they overlap neither the packaged verifier's altsim training
seeds 10000-10079 nor the altsim check seeds (7000 + 1000 k + i, i < 3: 11000-11002 among
them). For each size, ensemble (``--ensembles``) and network seed (``--seeds``)
the verifier is fitted as ``detect-train`` fits it (``fit_verifier``; out-of-fold scores
once, threshold at their F1 optimum) and scored at detection level (mask IoU >= 0.5,
``scripts/tune_detect_verifier.py``'s ``evaluate``) on the altsim check micrographs (seeds
7000+) and, to see that nothing breaks on our own simulator, the tuning (3000+) and
validation (2000+) micrographs and the blanks:

- ``no shift``: ``detect-train --no-prior-shift`` (threshold on the out-of-fold scores);
- ``shift``: ``detect-train --prior-shift`` (``verify.PRIOR_SHIFT`` per micrograph, the
  threshold on the out-of-fold scores shifted the same way, per micrograph);
- ``shift, raw threshold``: the shift with the threshold of ``no shift``.

``--blanks`` (comma-separated counts, default 0) adds that many noise-only micrographs to the
lab's training candidates as negatives, as ``detect-train --blanks`` does
(``verify.blank_micrographs`` seeded 1900 + network seed, pixel sizes in the range of the
lab's micrographs; each count the first N of the same draw); ``--no-shift-only`` scores
only the ``no shift`` variant (detect-train's default).

The packaged verifier (no retraining) is scored first. Candidates come from
``tune_detect_verifier.build`` and its ``--cache`` (the lab's in ``lab<seed>_<N>.pkl``
there). Benchmark seeds (50000+) are never used.

    PYTHONPATH=src python scripts/lab_detect_verifier.py --cache /tmp/lab --lab 8,24 \\
        --seeds 0,1,2 --ensembles 1,5
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from train_detect_verifier import alt_conditions, alt_micrographs
from tune_detect_verifier import Cand, _cands, build, cached, evaluate

from lipoclass.micrograph import verify as V


def lab_set(seed0: int, n: int, cache: Path | None) -> list[Cand]:
    """Candidates of ``n`` altsim micrographs, seeds ``seed0``..., from the cache if there."""
    path = cache / f"lab{seed0}_{n}.pkl" if cache else None
    return cached(
        path,
        "lab",
        lambda: [
            _cands(name, img, truth, px) for name, img, truth, px in alt_micrographs(seed0, n)
        ],
    )


def lab_blanks(seed0: int, size: int, n: int, seed: int, cache: Path | None) -> list[Cand]:
    """Candidates of ``n`` blank micrographs as ``detect-train --blanks`` adds them to the
    first ``size`` lab micrographs (network seed ``seed``), from the cache if there."""
    path = cache / f"labblank{seed0}_{size}_{n}_{seed}.pkl" if cache else None

    def make() -> list[Cand]:
        pxs = [c["pixel_nm"] for c in alt_conditions(seed0, size)]
        blanks = V.blank_micrographs(1900 + seed, n, (min(pxs), max(pxs)))
        return [_cands(f"blank-{k}", img, np.zeros(img.shape, np.int64), px)
                for k, (img, px) in enumerate(blanks)]  # fmt: skip

    return cached(path, f"blanks (lab {size})", make)


def _fit(cands: list[Cand], seed: int, k: int) -> tuple[V.Verifier, float, float, float]:
    """The verifier detect-train fits on ``cands`` (network seed ``seed``, ``k`` networks),
    its threshold without and with the prior shift, and the seconds the fits took."""
    t0 = time.time()
    ts = V.TrainingSet(np.concatenate([c.features for c in cands]),
                       np.concatenate([c.y for c in cands]),
                       [c.name for c in cands for _ in c.y])  # fmt: skip
    y, groups = ts.y.astype(np.int64), np.asarray(ts.micrograph)
    _, _, xs = V._standardised(ts.x)
    oof = V._oof_scores(xs, y, groups, seed, V._model_maker("mlp", 1.0, seed), k, True)
    share = round(float(y.mean()), 6)
    t_raw = V._best_threshold(y, oof)
    t_shift = V._best_threshold(y, V._shift_by_micrograph(oof, groups, share, V.PRIOR_SHIFT))
    ver, _ = V.fit_verifier(ts, seed=seed, ensemble=k, oof=False, threshold=t_raw)
    return ver, t_raw, t_shift, time.time() - t0


def _row(label: str, r: dict[str, float], thr: float) -> str:
    return (f"| {label} | {thr:.2f} | {r['alt_p']:.3f} / {r['alt_r']:.3f} / {r['alt_f1']:.4f} | "
            f"{r['tune_p']:.3f} / {r['tune_r']:.3f} / {r['tune_f1']:.4f} | {int(r['met'])} | "
            f"{r['val_f1']:.4f} | {int(r['blanks'])} |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=None, help="folder for the candidates")
    ap.add_argument("--lab", default="8,24", help="lab training set sizes, comma-separated")
    ap.add_argument("--lab-seed", type=int, default=11100, help="first altsim seed of the lab")
    ap.add_argument("--seeds", default="0", help="network seeds, comma-separated")
    ap.add_argument("--ensembles", default="1,5", help="networks a verifier, comma-separated")
    ap.add_argument("--blanks", default="0", help="blank micrographs added, comma-separated")
    ap.add_argument("--no-shift-only", action="store_true", help="only the 'no shift' variant")
    ap.add_argument("--tune-count", type=int, default=12, help="tuning micrographs a condition")
    args = ap.parse_args()
    sizes = [int(s) for s in args.lab.split(",")]
    seeds = range(args.lab_seed, args.lab_seed + max(sizes))
    if any(s < 10080 or s >= 50000 or (s - 7000) % 1000 < 3 for s in seeds):
        ap.error("the lab's seeds must avoid altsim training (10000-10079), check (7000 + "
                 "1000 k + 0..2) and benchmark (50000+) seeds")  # fmt: skip
    warnings.simplefilter("ignore")
    sets_args = argparse.Namespace(cache=args.cache, count=160, blank=128, alt=80,
                                   tune_count=args.tune_count)  # fmt: skip
    sets = {w: build(w, sets_args) for w in ("tune", "val", "blank", "altcheck")}
    lab = lab_set(args.lab_seed, max(sizes), args.cache)
    n = args.tune_count
    packaged = V.load_verifier("default")
    assert packaged is not None
    rows = [_row("packaged verifier (no retraining)",
                 evaluate("packaged verifier,", packaged, packaged.threshold, sets, n),
                 packaged.threshold)]  # fmt: skip
    for size in sizes:
        ys = np.concatenate([c.y for c in lab[:size]])
        print(f"== lab {size} micrographs: {len(ys)} candidates, {int(ys.sum())} liposomes")
        for k, seed, nb in itertools.product(
            [int(e) for e in args.ensembles.split(",")],
            [int(s) for s in args.seeds.split(",")],
            [int(b) for b in args.blanks.split(",")],
        ):
            nmax = max(int(b) for b in args.blanks.split(","))
            blanks = lab_blanks(args.lab_seed, size, nmax, seed, args.cache)[:nb] if nb else []
            ver, t_raw, t_shift, sec = _fit(lab[:size] + blanks, seed, k)
            tag = f"lab {size}, {k} network(s), seed {seed}, {nb} blanks"
            print(f"== {tag}: fitted in {sec:.0f} s, threshold {t_raw:.2f} / shifted "
                  f"{t_shift:.2f}", flush=True)  # fmt: skip
            variants: list[tuple[str, float, Any]] = [
                ("no shift", t_raw, None), ("shift", t_shift, V.PRIOR_SHIFT),
                ("shift, raw threshold", t_raw, V.PRIOR_SHIFT)]  # fmt: skip
            if args.no_shift_only:
                variants = variants[:1]
            for name, thr, prior in variants:
                r = evaluate(f"{tag}, {name},", ver, thr, sets, n, prior)
                rows.append(_row(f"{tag}, {name}", r, thr))
    print("| verifier | threshold | altsim check P / R / F1 | tuning P / R / F1 | met | "
          "validation F1 | blanks |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
