"""Simulation study of the quantifiers in ``lipoclass.quantify`` (no training needed).

A simulated 3-class classifier: the posteriors of a particle of true class k are drawn from
Dirichlet(A[k]) (fixed error rates). Calibration (out-of-fold) sets of ``--n-cal`` particles are
drawn at the thesis-like lamellarity prior 97/2/1; test samples of 500/2000/10000 particles at
several priors. Prints, per setting and method, the mean absolute error of the shares (MAE,
averaged over classes and samples), the worst absolute error, and the coverage of the 95 %
intervals (fraction of (sample, class) pairs whose interval holds the population share the
sample was drawn at), then a
summary over all settings and the method it would recommend.

    python benchmarks/sim_shares.py [--reps 50] [--n-boot 100] [--n-cal-boot 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from lipoclass.quantify import METHODS, QuantifierConfig, fit_quantifiers

A = np.array([[8.0, 1.5, 1.0], [1.5, 6.0, 1.5], [1.0, 1.5, 6.0]])  # Dirichlet per true class
CAL_PRIOR = (0.97, 0.02, 0.01)
PRIORS = {
    "thesis 97/2/.65": (0.9735, 0.02, 0.0065),
    "80/10/10": (0.8, 0.1, 0.1),
    "50/25/25": (0.5, 0.25, 0.25),
    "98/1/1": (0.98, 0.01, 0.01),
    "uniform": (1 / 3, 1 / 3, 1 / 3),
    "missing 90/10/0": (0.9, 0.1, 0.0),
}
SIZES = (500, 2000, 10000)


def draw(rng: np.random.Generator, prior: tuple[float, ...], n: int) -> tuple:
    """Posteriors (n, 3) and true labels (n,) of ``n`` particles drawn at ``prior``."""
    y = rng.choice(3, size=n, p=np.asarray(prior) / np.sum(prior))
    proba = np.empty((n, 3))
    for k in range(3):
        sel = y == k
        proba[sel] = rng.dirichlet(A[k], size=int(sel.sum()))
    return proba, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=50, help="test samples per setting")
    ap.add_argument("--n-cal", type=int, default=3000, help="calibration (oof) set size")
    ap.add_argument("--n-cal-sets", type=int, default=5, help="calibration sets, used in turn")
    ap.add_argument("--n-boot", type=int, default=100)
    ap.add_argument("--n-cal-boot", type=int, default=20)
    ap.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    cfg = QuantifierConfig(n_boot=args.n_boot, n_cal_boot=args.n_cal_boot, seed=args.seed)
    t0 = time.perf_counter()
    quants = [
        fit_quantifiers(*draw(rng, CAL_PRIOR, args.n_cal), cfg) for _ in range(args.n_cal_sets)
    ]
    t_fit = (time.perf_counter() - t0) / args.n_cal_sets
    print(
        f"fit: {t_fit:.1f} s per calibration set of {args.n_cal} (incl. {args.n_cal_boot} refits)"
    )
    # per method: lists of abs errors (C,), covered (C,) over all settings
    tot_err: dict[str, list] = {m: [] for m in METHODS}
    tot_cov: dict[str, list] = {m: [] for m in METHODS}
    est_time: dict[int, list] = {n: [] for n in args.sizes}
    head = f"{'prior':<16} {'m':>6}  " + "  ".join(f"{m:>17}" for m in METHODS)
    print("MAE / worst AE / coverage (%), per setting")
    print(head)
    for pname, prior in PRIORS.items():
        for n in args.sizes:
            err = {m: [] for m in METHODS}
            cov = {m: [] for m in METHODS}
            for r in range(args.reps):
                proba, _ = draw(rng, prior, n)
                truth = np.asarray(prior) / np.sum(prior)  # (3,) population shares
                t = time.perf_counter()
                est = quants[r % len(quants)].estimate(proba)
                est_time[n].append(time.perf_counter() - t)
                for m in METHODS:
                    err[m].append(np.abs(est.share[m] - truth))
                    cov[m].append((est.lo[m] <= truth) & (truth <= est.hi[m]))
            cells = []
            for m in METHODS:
                e, c = np.array(err[m]), np.array(cov[m])
                tot_err[m].append(e)
                tot_cov[m].append(c)
                cells.append(f"{e.mean():.4f}/{e.max():.3f}/{100 * c.mean():3.0f}")
            print(f"{pname:<16} {n:>6}  " + "  ".join(f"{x:>17}" for x in cells), flush=True)
    print("\nover all settings: MAE, worst AE, coverage (%), min coverage of a setting (%)")
    summary = {}
    for m in METHODS:
        e, c = np.concatenate(tot_err[m]), np.concatenate(tot_cov[m])
        min_cov = min(float(np.mean(x)) for x in tot_cov[m])
        summary[m] = (float(e.mean()), float(e.max()), float(c.mean()), min_cov)
        print(
            f"  {m:<5} {e.mean():.4f}  {e.max():.3f}  {100 * c.mean():5.1f}  {100 * min_cov:5.1f}"
        )
    # recommendation rule: lowest MAE among methods with overall coverage >= 90 % that beat CC
    ok = [m for m in METHODS if summary[m][2] >= 0.90 and summary[m][0] < summary["cc"][0]]
    rec = min(ok, key=lambda m: summary[m][0]) if ok else "none"
    print(f"\nrecommended (lowest MAE, coverage >= 90 %, beats CC): {rec}")
    for n in args.sizes:
        ts = np.array(est_time[n])
        print(
            f"estimate, m={n}: median {np.median(ts):.2f} s, max {ts.max():.2f} s (all 5 methods)"
        )


if __name__ == "__main__":
    main()
