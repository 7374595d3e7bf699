"""Benchmark of the class-share methods (``lipoclass.quantify``) on a trained model folder.

The model's quantifiers are fitted on its out-of-fold posteriors (as ``lipoclass train``
does). A POOL dataset, rendered independently (another seed, e.g. ``lipoclass synth
lamellarity P --n 15000 --seed 2 --ratios balanced``), is predicted ONCE with the model's
ensemble; test samples of ``--sizes`` particles are then drawn from it at fixed shares,
``--reps`` per setting: multinomial class counts, particles drawn with replacement within
each true class. With ``--draw micrographs`` (the default) a sample comes from whole
micrographs of the pool, as a lab's sample does: micrographs are taken in random order until
they hold ``m`` particles and every class the sample needs, and the particles are drawn from
those only, so the sample's error rates are those of its own few micrographs (the intervals
then redraw micrographs, ``lipoclass.quantify``); ``--draw particles`` draws from the whole
pool (every sample sees the pool's average error rates). Settings: the thesis priors of both
problems (in the model's class order), 80/10/10, 50/25/25, 98/1/1, uniform and one without
the last class (90/10/0). Prints per setting and method the mean absolute error of the
shares (MAE over classes and samples), the worst absolute error, and the coverage of the
95 % intervals (share of (sample, class) pairs whose interval holds the population share),
then the pooled summary and the method the rule recommends: the lowest
pooled MAE among methods with pooled coverage >= 90 % that beat CC's MAE.

Several MODEL_DIRs, each trained on its own independently rendered synthetic set, are pooled
in the tables (per-model summaries are printed first): with one model every sample shares
one draw of the calibration set, so the coverage of the large samples, whose intervals are
mostly calibration uncertainty, would measure that single draw.

    python benchmarks/bench_shares.py MODEL_DIR [MODEL_DIR ...] POOL [--reps 50]
        [--sizes 500 2000 10000]
        [--n-boot 100] [--n-cal-boot 20] [--draw micrographs|particles] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from lipoclass.quantify import METHODS, QuantifierConfig, fit_quantifiers

SIZES = (500, 2000, 10000)
COVERAGE_MIN = 0.90


def settings(problem: str, n_classes: int) -> dict[str, tuple[float, ...]]:
    """Named test shares in the model's class order (the synth problems' order)."""
    from lipoclass.synth.scenes import PROBLEMS

    out: dict[str, tuple[float, ...]] = {}
    # the thesis priors of both problems, in the model's class order (its own problem first)
    for name in sorted(PROBLEMS, key=lambda p: p != problem):
        counts = PROBLEMS[name][1]
        thesis = tuple(float(c) / sum(counts) for c in counts)
        out[f"thesis {name[:3]}. " + "/".join(f"{100 * t:.3g}" for t in thesis)] = thesis
    out |= {
        "80/10/10": (0.8, 0.1, 0.1),
        "50/25/25": (0.5, 0.25, 0.25),
        "98/1/1": (0.98, 0.01, 0.01),
        "uniform": (1 / 3, 1 / 3, 1 / 3),
        "missing 90/10/0": (0.9, 0.1, 0.0),
    }
    if n_classes != 3:
        raise SystemExit("bench_shares: the settings are written for 3 classes")
    return out


def pool_posteriors(
    model: Path, pool: Path, cache: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibrated ensemble posteriors (n, C), true labels (n,) and ids (n,) of the labelled
    pool particles, predicted once (cached in ``cache``)."""
    if cache.is_file():
        z = np.load(cache)
        if "ids" in z:
            return z["probs"], z["labels"], z["ids"]
    from lipoclass.predict import PredictConfig, predict

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        res = predict(model, pool, Path(tmp) / "p.csv", config=PredictConfig(device="cpu",
                      n_boot=50), verbose=False)  # fmt: skip
    keep = res.labels >= 0
    print(f"pool: {keep.sum()} labelled particles predicted ({len(res.skipped)} skipped) in "
          f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
    ids = np.asarray(res.ids, dtype=str)[keep]
    np.savez(cache, probs=res.probs[keep], labels=res.labels[keep], ids=ids)
    return res.probs[keep], res.labels[keep], ids


def training_samples(info: dict, ids: list[str]) -> list[str] | None:
    """The ``sample`` of each out-of-fold particle, read from the training dataset that
    model.json names (as ``lipoclass train`` passes them to the quantifiers), or None."""
    from lipoclass.data import load_dataset

    path = Path(str((info.get("dataset") or {}).get("path", "")))
    if not (path / "particles.csv").is_file():
        return None
    return load_dataset(path).micrographs_of(ids)


def pool_micrographs(pool: Any, ids: np.ndarray) -> np.ndarray | None:
    """The micrograph (else sample) of each particle ``ids`` of the pool dataset, or None
    when unknown."""
    mics = pool.micrographs_of([str(i) for i in ids])
    return None if mics is None else np.asarray(mics, dtype=str)


class SampleDrawer:
    """Draws one test sample's pool positions at given class counts (see the module doc)."""

    def __init__(self, labels: np.ndarray, mics: np.ndarray | None, n_cls: int, how: str):
        if how == "micrographs" and mics is None:
            raise SystemExit("bench_shares: --draw micrographs needs a pool whose particles "
                             "name their micrograph (or sample)")  # fmt: skip
        self.labels, self.n_cls = labels, n_cls
        self.mics = mics if how == "micrographs" else None
        self.members: list[np.ndarray] = []
        if self.mics is not None:
            names, inv = np.unique(self.mics, return_inverse=True)
            self.members = [np.flatnonzero(inv == g) for g in range(len(names))]

    def describe(self) -> str:
        if self.mics is None:
            return "the whole pool, particle by particle"
        sizes = [len(x) for x in self.members]
        return (f"whole micrographs ({len(sizes)} in the pool, {min(sizes)}-{max(sizes)} "
                "particles each)")  # fmt: skip

    def __call__(
        self, rng: np.random.Generator, counts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(positions (m,), their micrographs (m,) or None) for class counts (C,)."""
        if self.mics is None:
            pos = np.arange(len(self.labels))
        else:
            need, chosen, total = set(np.flatnonzero(counts).tolist()), [], 0
            for g in rng.permutation(len(self.members)):
                chosen.append(self.members[g])
                total += len(self.members[g])
                need -= set(self.labels[self.members[g]].tolist())
                if total >= counts.sum() and not need:
                    break
            pos = np.concatenate(chosen)
        by_class = [pos[self.labels[pos] == k] for k in range(self.n_cls)]
        idx = np.concatenate([rng.choice(ix, size=n) for ix, n in zip(by_class, counts) if n])
        return idx, (None if self.mics is None else self.mics[idx])


class Bench:
    """One model folder's part of the benchmark: quantifiers, pool posteriors, drawer."""

    def __init__(self, path: Path, pool: Path, pool_ds: Any, args: argparse.Namespace) -> None:
        from lipoclass.ensemble import load_model

        self.path = path
        loaded = load_model(path)
        self.classes = loaded.classes
        self.problem = "lamellarity" if "unilamellar" in loaded.classes else "encapsulation"
        ids, _fold, y_cal, p_cal = loaded.oof()
        groups = training_samples(loaded.info, ids)
        cfg = QuantifierConfig(n_boot=args.n_boot, n_cal_boot=args.n_cal_boot, seed=args.seed)
        t0 = time.perf_counter()
        self.q = fit_quantifiers(p_cal, y_cal, cfg, groups=groups)
        t_fit = time.perf_counter() - t0
        cache = path / f".bench_pool_{pool.name}.npz"
        self.probs, labels, pool_ids = pool_posteriors(path, pool, cache)
        self.draw = SampleDrawer(labels, pool_micrographs(pool_ds, pool_ids), len(self.classes),
                                 args.draw)  # fmt: skip
        print(f"model {path} ({loaded.info['model']}, {loaded.kind}), classes "
              f"{', '.join(loaded.classes)}; calibration: {len(y_cal)} out-of-fold particles "
              f"{np.bincount(y_cal).tolist()} from {len(set(groups or [])) or 'unknown'} "
              f"micrographs, calibration replicates redraw {self.q.cal_resampling}; pool "
              f"{np.bincount(labels).tolist()}; quantifiers fitted in {t_fit:.1f} s "
              f"(n_cal_boot={args.n_cal_boot}); n_boot={args.n_boot}; {args.reps} samples "
              f"per setting, drawn from {self.draw.describe()}")  # fmt: skip


def _summary(e: np.ndarray, h: np.ndarray) -> dict[str, Any]:
    """MAE, worst error, coverage and coverage per class of errors/hits (n, C)."""
    return {"mae": float(e.mean()), "worst": float(e.max()), "coverage": float(h.mean()),
            "coverage_by_class": h.mean(axis=0).tolist()}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", type=Path, nargs="+",
                    help="model folder(s), each trained on its own synthetic set; the "
                    "summary pools them (coverage over several calibration draws)")  # fmt: skip
    ap.add_argument("pool", type=Path)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    ap.add_argument("--n-boot", type=int, default=100)
    ap.add_argument("--n-cal-boot", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--draw", choices=("micrographs", "particles"), default="micrographs")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args()

    from lipoclass.data import load_dataset

    pool_ds = load_dataset(args.pool)  # read once: the micrographs of the pool's particles
    benches = [Bench(path, args.pool, pool_ds, args) for path in args.models]
    classes = benches[0].classes
    if any(b.classes != classes for b in benches):
        raise SystemExit("bench_shares: the model folders have different classes")
    cells_of: dict[tuple[str, int], dict[str, list[np.ndarray]]] = {}
    hits_of: dict[tuple[str, int], dict[str, list[np.ndarray]]] = {}
    per_model: dict[str, dict[str, dict[str, Any]]] = {}
    t_est: list[float] = []
    n_mics: list[int] = []
    setting_list = settings(benches[0].problem, len(classes))
    for i, b in enumerate(benches):
        rng = np.random.default_rng([args.seed, i])
        e_mod: dict[str, list[np.ndarray]] = {k: [] for k in METHODS}
        h_mod: dict[str, list[np.ndarray]] = {k: [] for k in METHODS}
        for name, prior in setting_list.items():
            truth = np.asarray(prior) / np.sum(prior)
            for m in args.sizes:
                errs = cells_of.setdefault((name, m), {k: [] for k in METHODS})
                hits = hits_of.setdefault((name, m), {k: [] for k in METHODS})
                for _ in range(args.reps):
                    idx, groups = b.draw(rng, rng.multinomial(m, truth))
                    t1 = time.perf_counter()
                    est = b.q.estimate(b.probs[idx], groups=groups)
                    t_est.append(time.perf_counter() - t1)
                    n_mics.append(est.n_groups)
                    for k in METHODS:
                        err = np.abs(est.share[k] - truth)
                        hit = (est.lo[k] <= truth + 1e-12) & (truth <= est.hi[k] + 1e-12)
                        errs[k].append(err)
                        hits[k].append(hit)
                        e_mod[k].append(err)
                        h_mod[k].append(hit)
        per_model[str(b.path)] = {k: _summary(np.array(e_mod[k]), np.array(h_mod[k]))
                                  for k in METHODS}  # fmt: skip
        print(f"{b.path}: " + "  ".join(
            f"{k} {v['mae']:.4f}/{v['worst']:.3f}/{100 * v['coverage']:.0f}"
            for k, v in per_model[str(b.path)].items()), flush=True)  # fmt: skip
    print(f"cells: MAE / worst abs error / 95 % coverage (%), over {len(benches)} model(s)")
    print(f"{'setting':<28} {'m':>6} " + " ".join(f"{m:>17}" for m in METHODS))
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for (name, m), errs in cells_of.items():
        key = f"{name} | {m}"
        results[key] = {k: _summary(np.array(errs[k]), np.array(hits_of[(name, m)][k]))
                        for k in METHODS}  # fmt: skip
        cells = [f"{v['mae']:.4f}/{v['worst']:.3f}/{100 * v['coverage']:3.0f}"
                 for v in results[key].values()]  # fmt: skip
        print(f"{name:<28} {m:>6} " + " ".join(f"{c:>17}" for c in cells))
    summary = {k: _summary(np.concatenate([np.array(e[k]) for e in cells_of.values()]),
                           np.concatenate([np.array(h[k]) for h in hits_of.values()]))
               for k in METHODS}  # fmt: skip
    print("pooled: " + "  ".join(f"{k} {v['mae']:.4f}/{v['worst']:.3f}/{100 * v['coverage']:.0f}"
                                 for k, v in summary.items()))  # fmt: skip
    print("coverage per class (%): " + "  ".join(
        f"{k} " + "/".join(f"{100 * c:.0f}" for c in v["coverage_by_class"])
        for k, v in summary.items()) + f"  ({', '.join(classes)})")  # fmt: skip
    ok = [k for k in METHODS if summary[k]["coverage"] >= COVERAGE_MIN
          and summary[k]["mae"] < summary["cc"]["mae"]]  # fmt: skip
    rec = min(ok, key=lambda k: summary[k]["mae"]) if ok else None
    print(f"recommended by the rule: {rec} (coverage >= {100 * COVERAGE_MIN:.0f} % and MAE "
          f"below CC's: {ok}); estimate time per sample: median {np.median(t_est):.2f} s, "
          f"max {np.max(t_est):.2f} s; micrographs per sample: median {np.median(n_mics):.0f}, "
          f"range {min(n_mics)}-{max(n_mics)}")  # fmt: skip
    if args.json:
        out = {"models": [str(p) for p in args.models], "settings": results,
               "summary": summary, "per_model": per_model, "recommended": rec}  # fmt: skip
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
