"""Benchmark the SVM baseline: full 5-fold ``cross_validate`` (inner C/gamma search, final
calibrated fit, held-out permutation importance) on a thesis-sized synthetic feature table.
Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_svm.py [--n 14169] [--features 40] [--folds 5]
                                             [--no-importance] [--out DIR]

The dataset has the lamellarity class shares of the thesis (87.4% / 12.1% / 0.6%) and
``--features`` numeric columns in particles.csv (class-shifted Gaussians with overlap, so the
SVM keeps many support vectors, as on real data); every row names the same tiny image, so
writing it takes a second. Goal: < 120 s on 2 cores for 14,169 particles.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from lipoclass.data import load_dataset, write_image
from lipoclass.evaluate import CVConfig, build_spec, cross_validate

SHARES = (0.874, 0.1203, 0.0057)
CLASSES = ("unilamellar", "multilamellar", "uncertain")


def write_table(root: Path, n: int, n_feat: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=SHARES)
    X = rng.normal(size=(n, n_feat))
    shift = rng.normal(0.0, 0.25, size=(3, n_feat))  # class means, overlapping
    X += shift[y]
    out = root / "svm-bench"
    (out / "images").mkdir(parents=True)
    write_image(out / "images" / "one.png", np.zeros((8, 8), np.uint8))
    (out / "dataset.toml").write_text(f'name = "svm-bench"\nclasses = {list(CLASSES)!r}\n')
    with (out / "particles.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "image", "label"] + [f"f{j:02d}" for j in range(n_feat)])
        for i in range(n):
            w.writerow([f"p{i}", "images/one.png", CLASSES[y[i]]]
                       + [f"{v:.5g}" for v in X[i]])  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=14169)
    ap.add_argument("--features", type=int, default=40)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-importance", action="store_true")
    ap.add_argument("--out", default=None, help="keep the run folder here")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-svm-"))
    try:
        t = time.perf_counter()
        ds = load_dataset(write_table(tmp, args.n, args.features, args.seed))
        print(f"dataset: {len(ds)} particles x {args.features} features, "
              f"{ds.class_counts()} ({time.perf_counter() - t:.1f} s to write+load)")  # fmt: skip
        spec = build_spec("svm", features="precomputed")
        if args.no_importance:
            spec = spec.with_config(importance=False)
        out = Path(args.out) if args.out else tmp / "run"
        t = time.perf_counter()
        cpu = time.process_time()
        res = cross_validate(ds, spec, CVConfig(folds=args.folds, seed=args.seed), out=out)
        wall = time.perf_counter() - t
        cpu = time.process_time() - cpu
        print(res.table())
        cfg = (out / "config.json").read_text()
        import json

        for f in json.loads(cfg)["fold_info"]:
            print(f"fold {f['fold']}: C={f['C']:g} gamma={f['gamma']:.4g} "
                  f"inner {f['inner_score']:.3f}  {f['seconds']:.1f} s")  # fmt: skip
        print(
            f"{args.folds}-fold SVM CV on {len(ds)} particles: {wall:.1f} s wall, "
            f"{cpu:.1f} s CPU of this process "
            f"(goal < 120 s on 2 cores){'' if not args.no_importance else ', no importance'}"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
