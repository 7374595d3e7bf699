"""Fitting the stack's combiner (``lipoclass.kinds.stack``) on out-of-fold predictions.

The logistic combiner is a multinomial logistic regression (scikit-learn) on the bases'
out-of-fold log-probabilities + size features, standardised on its training rows. Its own
out-of-fold score is honest by cross-fitting over the same folds: the prediction for the
rows of fold k comes from a combiner fitted on the out-of-fold rows of the other folds only
(``cross_fit``). The deployed combiner is fitted once on all out-of-fold rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lipoclass.kinds.stack import combine, group_means, stack_inputs

__all__ = ["STACK_C", "cross_fit", "fit_combiner"]

#: inverse L2 strength of the logistic combiner (scikit-learn's default; standardised inputs)
STACK_C = 1.0


def fit_combiner(
    combiner: str,
    base_probs: Sequence[np.ndarray],
    size: np.ndarray | None,
    y: np.ndarray,
    n_classes: int,
    *,
    balanced: bool = True,
    seed: int = 0,
    groups: Sequence[Sequence[int]] | None = None,
) -> dict[str, Any]:
    """The combiner record (JSON-ready, read by ``kinds.stack.combine``) fitted on rows with
    bases' probabilities ``base_probs`` [(n, C)], size features ``size`` (n, K) or None and
    labels ``y`` (n,). ``balanced``: class weights inverse to the class counts. ``groups``:
    bases (indices) averaged into one input first (the seed members of a CNN configuration;
    recorded, so prediction averages them the same way)."""
    grouped = {"groups": [[int(i) for i in g] for g in groups]} if groups else {}
    if combiner == "mean":
        return {"combiner": "mean", **grouped}
    from sklearn.linear_model import LogisticRegression

    z = stack_inputs(group_means(base_probs, groups), size)
    mean = z.mean(axis=0)
    scale = z.std(axis=0)
    scale[~(scale > 1e-9)] = 1.0
    lr = LogisticRegression(
        C=STACK_C, max_iter=2000, random_state=seed, class_weight="balanced" if balanced else None
    )
    lr.fit((z - mean) / scale, y)
    present = [int(c) for c in lr.classes_]
    coef = np.zeros((n_classes, z.shape[1]))
    intercept = np.full(n_classes, -30.0)  # a class absent from the training rows: ~never
    if len(present) == 2:  # scikit-learn's binary form: p1 = sigmoid(w.z + b)
        coef[present[1]] = lr.coef_[0]
        intercept[present[0]], intercept[present[1]] = 0.0, lr.intercept_[0]
    else:
        coef[present] = lr.coef_
        intercept[present] = lr.intercept_
    return {
        "combiner": "logistic",
        "size_features": size is not None,
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "coef": coef.tolist(),
        "intercept": intercept.tolist(),
        "C": STACK_C,
        "balanced": bool(balanced),
        **grouped,
    }


def cross_fit(
    combiner: str,
    base_probs: Sequence[np.ndarray],
    size: np.ndarray | None,
    y: np.ndarray,
    fold: np.ndarray,
    n_classes: int,
    *,
    balanced: bool = True,
    seed: int = 0,
    groups: Sequence[Sequence[int]] | None = None,
) -> np.ndarray:
    """Out-of-fold probabilities (n, C) of the combiner: the rows of fold k predicted by a
    combiner fitted on the rows of the other folds only (``groups`` as in ``fit_combiner``)."""
    out = np.zeros((len(y), n_classes))
    for k in np.unique(fold):
        test = fold == k
        train = ~test
        rec = fit_combiner(
            combiner,
            [p[train] for p in base_probs],
            None if size is None else size[train],
            y[train],
            n_classes,
            balanced=balanced,
            seed=seed,
            groups=groups,
        )
        out[test] = combine(
            rec, [p[test] for p in base_probs], None if size is None else size[test]
        )
    return out
