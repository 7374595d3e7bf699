"""Speed of the class-share quantifiers (``lipoclass.quantify``) on synthetic posteriors:
``select_method`` (run once per model fit, on its out-of-fold posteriors) and
``Quantifiers.estimate`` (run per sample by ``predict``) at several sample sizes.

Posteriors of a mediocre 3-class classifier (class k ~ Dirichlet(A[k])), calibration set at
the thesis' lamellarity prior (97 / 2 / 1 %), samples at 80 / 10 / 10 %; seeded.

    python benchmarks/bench_quantify.py [--n-cal 2500] [--sizes 300 1000 5000 20000]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from lipoclass.quantify import QuantifierConfig, fit_quantifiers, select_method

A = np.array([[4.0, 1.5, 1.0], [1.5, 3.0, 1.5], [1.0, 1.5, 3.0]])


def draw(
    rng: np.random.Generator, prior: tuple[float, ...], n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Posteriors (n, 3) and labels (n,) of n particles drawn at ``prior``."""
    y = rng.choice(3, size=n, p=np.asarray(prior))
    proba = np.empty((n, 3))
    for k in range(3):
        proba[y == k] = rng.dirichlet(A[k], size=int((y == k).sum()))
    return proba, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-cal", type=int, default=2500, help="out-of-fold particles")
    ap.add_argument("--sizes", type=int, nargs="+", default=[300, 1000, 5000, 20000])
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    rng = np.random.default_rng(0)
    cal, y = draw(rng, (0.97, 0.02, 0.01), args.n_cal)
    t0 = time.perf_counter()
    select_method(*draw(np.random.default_rng(1), (0.5, 0.3, 0.2), 24))
    print(
        f"select_method on 24 particles (first call, imports QuaPy): "
        f"{time.perf_counter() - t0:.2f} s"
    )
    t0 = time.perf_counter()
    select_method(*draw(np.random.default_rng(1), (0.5, 0.3, 0.2), 24))
    print(f"select_method on 24 particles: {time.perf_counter() - t0:.2f} s")
    t0 = time.perf_counter()
    sel = select_method(cal, y)
    print(f"select_method on {args.n_cal} particles: {time.perf_counter() - t0:.2f} s "
          f"(chose {sel.chosen})")  # fmt: skip
    t0 = time.perf_counter()
    q = fit_quantifiers(cal, y, QuantifierConfig())
    print(f"fit_quantifiers: {time.perf_counter() - t0:.2f} s")
    for m in args.sizes:
        test, _ = draw(rng, (0.8, 0.1, 0.1), m)
        t0 = time.perf_counter()
        est = q.estimate(test)
        print(f"estimate, {m} particles: {time.perf_counter() - t0:.2f} s "
              f"(EMQ share {np.round(est.share['emq'], 3).tolist()})")  # fmt: skip
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
