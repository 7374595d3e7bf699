"""Benchmark of the class-share methods (``lipoclass.quantify``) on a trained model folder.

The model's quantifiers are fitted on its out-of-fold posteriors (as ``lipoclass train``
does). A POOL dataset, rendered independently (another seed, e.g. ``lipoclass synth
lamellarity P --n 15000 --seed 2 --ratios balanced``), is predicted ONCE with the model's
ensemble; test samples of ``--sizes`` particles are then drawn from it at fixed shares
(multinomial class counts, particles drawn with replacement within each true class of the
pool), ``--reps`` per setting. Settings: the thesis prior of the problem, 80/10/10, 50/25/25,
98/1/1, uniform and one without the last class (90/10/0). Prints per setting and method the
mean absolute error of the shares (MAE over classes and samples), the worst absolute error,
and the coverage of the 95 % intervals (share of (sample, class) pairs whose interval holds
the population share), then the pooled summary and the method the rule recommends: the lowest
pooled MAE among methods with pooled coverage >= 90 % that beat CC's MAE.

    python benchmarks/bench_shares.py MODEL_DIR POOL [--reps 50] [--sizes 500 2000 10000]
        [--n-boot 100] [--n-cal-boot 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from lipoclass.quantify import METHODS, QuantifierConfig, fit_quantifiers

SIZES = (500, 2000, 10000)
COVERAGE_MIN = 0.90


def settings(problem: str, n_classes: int) -> dict[str, tuple[float, ...]]:
    """Named test shares in the model's class order (the synth problems' order)."""
    from lipoclass.synth.scenes import PROBLEMS

    _, counts = PROBLEMS[problem]
    thesis = tuple(float(c) / sum(counts) for c in counts)
    out = {
        "thesis " + "/".join(f"{100 * t:.3g}" for t in thesis): thesis,
        "80/10/10": (0.8, 0.1, 0.1),
        "50/25/25": (0.5, 0.25, 0.25),
        "98/1/1": (0.98, 0.01, 0.01),
        "uniform": (1 / 3, 1 / 3, 1 / 3),
        "missing 90/10/0": (0.9, 0.1, 0.0),
    }
    if n_classes != 3:
        raise SystemExit("bench_shares: the settings are written for 3 classes")
    return out


def pool_posteriors(model: Path, pool: Path, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated ensemble posteriors (n, C) and true labels (n,) of the pool, predicted once
    (cached in ``cache``)."""
    if cache.is_file():
        z = np.load(cache)
        return z["probs"], z["labels"]
    from lipoclass.predict import PredictConfig, predict

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        res = predict(model, pool, Path(tmp) / "p.csv", config=PredictConfig(device="cpu",
                      n_boot=50), verbose=False)  # fmt: skip
    keep = res.labels >= 0
    print(f"pool: {keep.sum()} labelled particles predicted ({len(res.skipped)} skipped) in "
          f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
    np.savez(cache, probs=res.probs[keep], labels=res.labels[keep])
    return res.probs[keep], res.labels[keep]


def training_samples(info: dict, ids: list[str]) -> list[str] | None:
    """The ``sample`` of each out-of-fold particle, read from the training dataset that
    model.json names (as ``lipoclass train`` passes them to the quantifiers), or None."""
    from lipoclass.data import load_dataset

    path = Path(str((info.get("dataset") or {}).get("path", "")))
    if not (path / "particles.csv").is_file():
        return None
    return load_dataset(path).samples_of(ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("pool", type=Path)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    ap.add_argument("--n-boot", type=int, default=100)
    ap.add_argument("--n-cal-boot", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args()

    from lipoclass.ensemble import load_model

    loaded = load_model(args.model)
    problem = "lamellarity" if "unilamellar" in loaded.classes else "encapsulation"
    ids, _fold, y_cal, p_cal = loaded.oof()
    groups = training_samples(loaded.info, ids)
    cfg = QuantifierConfig(n_boot=args.n_boot, n_cal_boot=args.n_cal_boot, seed=args.seed)
    t0 = time.perf_counter()
    q = fit_quantifiers(p_cal, y_cal, cfg, groups=groups)
    t_fit = time.perf_counter() - t0
    cache = args.model / f".bench_pool_{args.pool.name}.npz"
    probs, labels = pool_posteriors(args.model, args.pool, cache)
    by_class = [np.flatnonzero(labels == k) for k in range(len(loaded.classes))]
    print(f"model {args.model} ({loaded.info['model']}, {loaded.kind}), classes "
          f"{', '.join(loaded.classes)}; calibration: {len(y_cal)} out-of-fold particles "
          f"{np.bincount(y_cal).tolist()}, calibration replicates redraw {q.cal_resampling}; "
          f"pool {np.bincount(labels).tolist()}; quantifiers "
          f"fitted in {t_fit:.1f} s (n_cal_boot={args.n_cal_boot}); n_boot={args.n_boot}; "
          f"{args.reps} samples per setting")  # fmt: skip
    rng = np.random.default_rng(args.seed)
    results: dict[str, dict[str, dict[str, float]]] = {}
    errs_all: dict[str, list[np.ndarray]] = {m: [] for m in METHODS}
    hits_all: dict[str, list[np.ndarray]] = {m: [] for m in METHODS}
    t_est: list[float] = []
    head = f"{'setting':<22} {'m':>6} " + " ".join(f"{m:>17}" for m in METHODS)
    print("cells: MAE / worst abs error / 95 % coverage (%)\n" + head)
    for name, prior in settings(problem, len(loaded.classes)).items():
        truth = np.asarray(prior) / np.sum(prior)
        for m in args.sizes:
            errs: dict[str, list[np.ndarray]] = {k: [] for k in METHODS}
            hits: dict[str, list[np.ndarray]] = {k: [] for k in METHODS}
            for _ in range(args.reps):
                counts = rng.multinomial(m, truth)
                idx = np.concatenate([rng.choice(ix, size=n) for ix, n in zip(by_class, counts)])
                t1 = time.perf_counter()
                est = q.estimate(probs[idx])
                t_est.append(time.perf_counter() - t1)
                for k in METHODS:
                    errs[k].append(np.abs(est.share[k] - truth))
                    hits[k].append((est.lo[k] <= truth + 1e-12) & (truth <= est.hi[k] + 1e-12))
            cells, key = [], f"{name} | {m}"
            results[key] = {}
            for k in METHODS:
                e, h = np.array(errs[k]), np.array(hits[k])
                errs_all[k].append(e)
                hits_all[k].append(h)
                results[key][k] = {"mae": float(e.mean()), "worst": float(e.max()),
                                   "coverage": float(h.mean())}  # fmt: skip
                cells.append(f"{e.mean():.4f}/{e.max():.3f}/{100 * h.mean():3.0f}")
            print(f"{name:<22} {m:>6} " + " ".join(f"{c:>17}" for c in cells), flush=True)
    summary = {}
    for k in METHODS:
        e, h = np.concatenate(errs_all[k]), np.concatenate(hits_all[k])
        summary[k] = {"mae": float(e.mean()), "worst": float(e.max()), "coverage": float(h.mean())}
    print("pooled: " + "  ".join(f"{k} {v['mae']:.4f}/{v['worst']:.3f}/{100 * v['coverage']:.0f}"
                                 for k, v in summary.items()))  # fmt: skip
    ok = [k for k in METHODS if summary[k]["coverage"] >= COVERAGE_MIN
          and summary[k]["mae"] < summary["cc"]["mae"]]  # fmt: skip
    rec = min(ok, key=lambda k: summary[k]["mae"]) if ok else None
    print(f"recommended by the rule: {rec} (coverage >= {100 * COVERAGE_MIN:.0f} % and MAE "
          f"below CC's: {ok}); estimate time per sample: median {np.median(t_est):.2f} s, "
          f"max {np.max(t_est):.2f} s")  # fmt: skip
    if args.json:
        out = {"model": str(args.model), "settings": results, "summary": summary,
               "recommended": rec}  # fmt: skip
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
