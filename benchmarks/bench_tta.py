"""Does test-time augmentation over the dihedral group (8 flips / quarter turns) help?

Cross-fits a CNN (the default recipe unless options say otherwise) and scores its
out-of-fold predictions twice: each labelled particle predicted by the fold model that did
not train on it, once on the particle as it is and once averaged over its 8 dihedral views.
Prints pooled and per-fold macro-F1 and balanced accuracy with and without TTA.

    python benchmarks/bench_tta.py DATASET [--model lipnet4] [--epochs 30] [--seeds 0 1 2]
        [--subset N]   (a stratified subset of N labelled particles, seeded)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from lipoclass.crossfit import fit_model
from lipoclass.data import load_dataset, prepare
from lipoclass.ensemble import load_model
from lipoclass.evaluate import CVConfig, build_spec
from lipoclass.metrics import balanced_accuracy, confusion_matrix, macro_f1


def _scores(
    y: np.ndarray, pred: np.ndarray, fold: np.ndarray, c: int
) -> tuple[float, float, float]:
    """(pooled macro-F1, mean over folds of macro-F1, pooled balanced accuracy)."""
    cm = confusion_matrix(y, pred, c)
    per = [float(macro_f1(confusion_matrix(y[fold == f], pred[fold == f], c)))
           for f in np.unique(fold)]  # fmt: skip
    return float(macro_f1(cm)), float(np.mean(per)), float(balanced_accuracy(cm))


def _subset(ds, n: int, seed: int):
    lab = np.flatnonzero(ds.labels >= 0)
    if n >= len(lab):
        return ds
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(ds.labels[lab]):
        members = lab[ds.labels[lab] == c]
        k = max(5, round(n * len(members) / len(lab)))
        keep.append(rng.choice(members, min(k, len(members)), replace=False))
    return ds.subset(np.sort(np.concatenate(keep)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("--model", default="lipnet4")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--subset", type=int, default=0)
    args = ap.parse_args()
    ds = load_dataset(args.dataset)
    if args.subset:
        ds = _subset(ds, args.subset, 0)
    spec = build_spec(args.model, epochs=args.epochs, device="cpu")
    c = len(ds.classes)
    print(f"{args.dataset}: {int((ds.labels >= 0).sum())} labelled particles, {args.model}, "
          f"{args.epochs} epochs")  # fmt: skip
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            out, res = fit_model(ds, spec, CVConfig(folds=5, seed=seed), Path(tmp) / "m",
                                 progress=False)  # fmt: skip
            lm = load_model(out)
            prep = prepare(ds, lm.prep)
            row = {pid: i for i, pid in enumerate(prep.ids)}
            rows = np.array([row[i] for i in res.ids])
            for tta in (False, True):
                members = lm.member_proba_arrays(prep.x[rows], tta=tta)  # (K, n, C)
                oof = members[res.fold, np.arange(len(rows))]  # (n, C): own fold's model
                pooled, per_fold, bacc = _scores(res.y_true, oof.argmax(1), res.fold, c)
                print(f"seed {seed} tta {'on ' if tta else 'off'}: pooled macro-F1 {pooled:.3f}, "
                      f"mean over folds {per_fold:.3f}, balanced accuracy {bacc:.3f}",
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
