"""Benchmark of the class shares a lab gets from ``predict`` (``lipoclass.quantify``): the
method chosen per model, its intervals with the "not determinable" rule, and the
audit-corrected shares (prediction-powered inference) with audits of 50, 100 and 200.

For each MODEL_DIR (e.g. LipNet-4 trained at the thesis prior, ``lipoclass synth lamellarity
T --n 2500 --seed 1`` then ``lipoclass train T --model lipnet4 --epochs 10 --folds 3
--group-by sample``), the model's quantifiers and its chosen method are loaded as ``predict``
loads them (a folder trained before the per-model choice gets it now, from its oof.csv). A
POOL dataset of the same problem, rendered independently (``lipoclass synth ... P --n 6000
--seed 2 --ratios balanced``), is predicted once with the model's ensemble. Test samples of
``--size`` particles are drawn from whole micrographs of the pool (micrographs in random
order until they hold the sample's size and every class it needs; particles drawn within
each class from those only, so a sample carries its own micrographs' error rates) at
80/10/10, 50/25/25 and the model's own problem's thesis prior, ``--reps`` per setting.

Per model and setting it prints: the recommended method's mean absolute error (MAE, per class
and sample, in points) against CC's; the coverage of the recommended 95 % intervals that are
reported (determinable, width <= 25 points; for the CC fallback its bias-bounded interval) and
their mean width; the share of (sample, class) pairs reported as not determinable; then for
audits of ``--audits`` particles (drawn with ``draw_audit``, labelled with the true labels) the
coverage, mean and max width and effective sample size of the audit-corrected interval, and the
coverage and width of the labels-only interval. ``--json`` writes everything, ``--figure`` a
PNG.

    python benchmarks/bench_shares.py MODEL_DIR [MODEL_DIR ...] --pool-lam P1 --pool-enc P2
        [--reps 30] [--size 1000] [--audits 50 100 200] [--json out.json] [--figure f.png]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from lipoclass.quantify import MAX_WIDTH, draw_audit, labels_only_interval, ppi_shares

AUDITS = (50, 100, 200)


def settings(problem: str) -> dict[str, tuple[float, ...]]:
    """Named test shares in the problem's class order: 80/10/10, 50/25/25, thesis prior."""
    from lipoclass.synth.scenes import PROBLEMS

    counts = PROBLEMS[problem][1]
    thesis = tuple(float(c) / sum(counts) for c in counts)
    return {"80/10/10": (0.8, 0.1, 0.1), "50/25/25": (0.5, 0.25, 0.25),
            "thesis " + "/".join(f"{100 * t:.3g}" for t in thesis): thesis}  # fmt: skip


def pool_posteriors(model: Path, pool: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibrated ensemble posteriors (n, C), true labels (n,) and micrographs (n,) of the
    labelled pool particles, predicted once (cached in the model folder)."""
    cache = model / f".bench_pool_{pool.name}.npz"
    if cache.is_file():
        z = np.load(cache)
        if "mics" in z:
            return z["probs"], z["labels"], z["mics"]
    from lipoclass.data import load_dataset
    from lipoclass.predict import PredictConfig, predict

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        res = predict(model, pool, Path(tmp) / "p.csv", config=PredictConfig(device="cpu",
                      n_boot=50), verbose=False)  # fmt: skip
    keep = res.labels >= 0
    ids = [i for i, k in zip(res.ids, keep) if k]
    mics = np.asarray(load_dataset(pool).micrographs_of(ids), dtype=str)
    print(f"pool {pool}: {keep.sum()} labelled particles predicted by {model} in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
    np.savez(cache, probs=res.probs[keep], labels=res.labels[keep], mics=mics)
    return res.probs[keep], res.labels[keep], mics


def draw_sample(
    rng: np.random.Generator, labels: np.ndarray, members: list[np.ndarray], counts: np.ndarray
) -> np.ndarray:
    """Pool positions of one sample at class counts (C,), from whole micrographs."""
    need, chosen, total = set(np.flatnonzero(counts).tolist()), [], 0
    for g in rng.permutation(len(members)):
        chosen.append(members[g])
        total += len(members[g])
        need -= set(labels[members[g]].tolist())
        if total >= counts.sum() and not need:
            break
    pos = np.concatenate(chosen)
    by_class = [pos[labels[pos] == k] for k in range(len(counts))]
    return np.concatenate([rng.choice(ix, size=n) for ix, n in zip(by_class, counts) if n])


def run_model(path: Path, pool: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every setting of one model folder; returns its results (JSON-ready)."""
    from lipoclass.ensemble import load_model
    from lipoclass.predict import ShareConfig, class_shares, model_quantifiers

    loaded = load_model(path)
    problem = "lamellarity" if "unilamellar" in loaded.classes else "encapsulation"
    t0 = time.perf_counter()
    q, note = model_quantifiers(loaded)
    if args.reselect:  # the method chosen again by today's rule (folder trained earlier)
        from lipoclass.predict.shares import ensure_selection

        q.selection = None
        note = ensure_selection(q, loaded)
    t_sel = time.perf_counter() - t0
    sel = q.selection
    probs, labels, mics = pool_posteriors(path, pool)
    names, inv = np.unique(mics, return_inverse=True)
    members = [np.flatnonzero(inv == g) for g in range(len(names))]
    rec = q.config.recommended
    epochs = (loaded.info.get("spec") or {}).get("train", {}).get("epochs", "?")
    print(f"\n== {path} ({problem}, {loaded.info['model']}, epochs {epochs}): "
          f"out-of-fold counts {sel.class_counts}; chosen {rec.upper()} "
          f"({'stored' if not note else f'chosen now, {t_sel:.0f} s'}): {sel.reason}",
          flush=True)  # fmt: skip
    out: dict[str, Any] = {"problem": problem, "epochs": epochs, "chosen": rec,
                           "reason": sel.reason, "selection": sel.to_dict(),
                           "settings": {}}  # fmt: skip
    scfg = ShareConfig(n_boot=args.n_boot, seed=args.seed)
    rng = np.random.default_rng([args.seed, len(str(path))])
    c = len(loaded.classes)
    for name, prior in settings(problem).items():
        truth = np.asarray(prior) / np.sum(prior)
        acc: dict[str, list[Any]] = {k: [] for k in (
            "err_rec", "err_cc", "cov", "width", "undet", "t")}  # fmt: skip
        aud: dict[int, dict[str, list[Any]]] = {k: {"cov": [], "w": [], "ess": [], "lcov": [],
                                                    "lw": []} for k in args.audits}  # fmt: skip
        for _ in range(args.reps):
            idx = draw_sample(rng, labels, members, rng.multinomial(args.size, truth))
            p, y, g = probs[idx], labels[idx], mics[idx]
            t1 = time.perf_counter()
            rows = class_shares(p, ["s"] * len(p), loaded.classes, q, scfg, micrographs=g)
            acc["t"].append(time.perf_counter() - t1)
            for k, r in enumerate(rows):
                acc["err_rec"].append(abs(r.methods[rec][0] - truth[k]))
                acc["err_cc"].append(abs(r.methods["cc"][0] - truth[k]))
                acc["undet"].append(not r.determinable)
                if r.determinable:
                    acc["cov"].append(r.share_lo - 1e-12 <= truth[k] <= r.share_hi + 1e-12)
                    acc["width"].append(r.share_hi - r.share_lo)
            ids = [str(i) for i in range(len(idx))]
            for ka in args.audits:
                pick = np.array([int(i) for i in draw_audit(ids, list(g), ka,
                                 seed=int(rng.integers(2**31)))])  # fmt: skip
                audited = np.zeros(len(idx), dtype=bool)
                audited[pick] = True
                r = ppi_shares(p, audited, y, 0.95)
                _s, llo, lhi = labels_only_interval(np.bincount(y[pick], minlength=c), ka)
                a = aud[ka]
                a["cov"] += ((r.lo <= truth + 1e-12) & (truth - 1e-12 <= r.hi)).tolist()
                a["w"] += (r.hi - r.lo).tolist()
                a["ess"].append(float(np.nanmean(r.ess)))
                a["lcov"] += ((llo <= truth + 1e-12) & (truth - 1e-12 <= lhi)).tolist()
                a["lw"] += (lhi - llo).tolist()
        res = {"mae_rec": float(np.mean(acc["err_rec"])), "mae_cc": float(np.mean(acc["err_cc"])),
               "coverage": float(np.mean(acc["cov"])) if acc["cov"] else float("nan"),
               "width": float(np.mean(acc["width"])) if acc["width"] else float("nan"),
               "max_width": float(np.max(acc["width"])) if acc["width"] else float("nan"),
               "not_determinable": float(np.mean(acc["undet"])),
               "seconds_per_sample": float(np.median(acc["t"])),
               "audit": {str(k): {"coverage": float(np.mean(v["cov"])),
                                  "width": float(np.mean(v["w"])),
                                  "max_width": float(np.max(v["w"])),
                                  "ess": float(np.mean(v["ess"])),
                                  "labels_only_coverage": float(np.mean(v["lcov"])),
                                  "labels_only_width": float(np.mean(v["lw"]))}
                         for k, v in aud.items()}}  # fmt: skip
        out["settings"][name] = res
        audit_txt = "; ".join(
            f"audit {k}: cov {100 * v['coverage']:.0f}% width {100 * v['width']:.1f} (max "
            f"{100 * v['max_width']:.1f}) ESS {v['ess']:.0f}, labels only cov "
            f"{100 * v['labels_only_coverage']:.0f}% width {100 * v['labels_only_width']:.1f}"
            for k, v in res["audit"].items())  # fmt: skip
        print(f"{name:<22} {rec.upper()} MAE {100 * res['mae_rec']:.2f} vs CC "
              f"{100 * res['mae_cc']:.2f} points; coverage {100 * res['coverage']:.0f}% width "
              f"{100 * res['width']:.1f} (max {100 * res['max_width']:.1f}); not determinable "
              f"{100 * res['not_determinable']:.0f}%; {res['seconds_per_sample']:.2f} s/sample"
              f"\n    {audit_txt}", flush=True)  # fmt: skip
    return out


def plot(results: dict[str, Any], path: Path, audits: list[int]) -> None:
    """One row per model: recommended vs CC error, coverage, and the audits' coverage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results)
    fig, axes = plt.subplots(len(models), 3, figsize=(13, 2.6 * len(models)), squeeze=False)
    for row, m in zip(axes, models):
        r = results[m]
        names = list(r["settings"])
        x = np.arange(len(names))
        s = [r["settings"][n] for n in names]
        row[0].bar(x - 0.2, [100 * v["mae_cc"] for v in s], 0.4, label="CC")
        row[0].bar(x + 0.2, [100 * v["mae_rec"] for v in s], 0.4,
                   label=f"recommended ({r['chosen'].upper()})")  # fmt: skip
        row[0].set_ylabel("MAE (points)")
        row[0].set_title(f"{Path(m).name}: {r['problem']}, {r['epochs']} epochs", fontsize=9)
        row[1].bar(x - 0.3, [100 * v["coverage"] for v in s], 0.2, label="model only")
        for j, k in enumerate(audits):
            row[1].bar(x - 0.1 + 0.2 * j, [100 * v["audit"][str(k)]["coverage"] for v in s], 0.2,
                       label=f"audit {k}")  # fmt: skip
        row[1].axhline(90, color="k", ls="--", lw=1)
        row[1].set_ylim(0, 101)
        row[1].set_ylabel("coverage (%)")
        row[2].bar(x - 0.3, [100 * v["width"] for v in s], 0.2, label="model only")
        for j, k in enumerate(audits):
            row[2].bar(x - 0.1 + 0.2 * j, [100 * v["audit"][str(k)]["width"] for v in s], 0.2,
                       label=f"audit {k}")  # fmt: skip
        row[2].axhline(100 * MAX_WIDTH, color="k", ls="--", lw=1)
        row[2].set_ylabel("mean width (points)")
        for ax in row:
            ax.set_xticks(x, names, fontsize=7)
    axes[0][0].legend(fontsize=7)
    axes[0][1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", type=Path, nargs="+")
    ap.add_argument("--pool-lam", type=Path, default=None, help="lamellarity pool dataset")
    ap.add_argument("--pool-enc", type=Path, default=None, help="encapsulation pool dataset")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--audits", type=int, nargs="*", default=list(AUDITS))
    ap.add_argument("--n-boot", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--reselect",
        action="store_true",
        help="choose each model's method again from its oof.csv (today's rule)",
    )
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--figure", type=Path, default=None)
    args = ap.parse_args()
    from lipoclass.ensemble import load_model

    results = {}
    for path in args.models:
        lam = "unilamellar" in load_model(path).classes
        pool = args.pool_lam if lam else args.pool_enc
        if pool is None:
            raise SystemExit(f"bench_shares: {path} needs --pool-{'lam' if lam else 'enc'}")
        results[str(path)] = run_model(path, pool, args)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    if args.figure:
        plot(results, args.figure, args.audits)


if __name__ == "__main__":
    main()
