"""Classification metrics from confusion matrices and bootstrap intervals (numpy only): one
definition for cross-validation, early stopping and predict, so every stage may import it.

Every confusion-matrix metric works on arrays of shape (..., C, C) (rows true, columns
predicted), so the same code scores one fold and 1000 bootstrap resamples at once.

Division by zero (a class never predicted, never present, ...) gives 0.0, like
scikit-learn's ``zero_division=0``; see docs/evaluation.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "CLASS_METRICS",
    "SUMMARY_METRICS",
    "accuracy",
    "balanced_accuracy",
    "bootstrap_ci",
    "class_metrics",
    "confusion_matrix",
    "log_loss",
    "macro_f1",
    "mcc",
    "metric_label",
    "normalize_rows",
    "summary_metrics",
]

#: per-class metrics, in the order of the console table
CLASS_METRICS = ("tpr", "tnr", "ppv", "npv", "f1", "f1_tpr_tnr")
#: top-level metrics; all but log_loss come from the confusion matrix
SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "mcc", "log_loss")
_LABELS = {"f1_tpr_tnr": "F1(TPR,TNR)"}


def metric_label(name: str) -> str:
    """Column heading of a per-class metric in tables and figures ("TPR", "F1(TPR,TNR)")."""
    return _LABELS.get(name, name.upper())


_EPS = 1e-15  # probability clip for log loss (as scikit-learn did before 1.5)


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0.0 where den == 0 (zero_division=0)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast_shapes(num.shape, den.shape), dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) int64 counts, rows true class, columns predicted class."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} differ in shape")
    if t.size and (t.min() < 0 or p.min() < 0 or t.max() >= n_classes or p.max() >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )


def _counts(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One-vs-rest TP, FN, FP, TN per class, each (..., C)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    fn = cm.sum(axis=-1) - tp
    fp = cm.sum(axis=-2) - tp
    tn = cm.sum(axis=(-2, -1))[..., None] - tp - fn - fp
    return tp, fn, fp, tn


def class_metrics(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class one-vs-rest metrics, each (..., C).

    tpr = TP/(TP+FN) (recall), tnr = TN/(TN+FP), ppv = TP/(TP+FP) (precision),
    npv = TN/(TN+FN), f1 = harmonic mean of ppv and tpr, f1_tpr_tnr = harmonic mean of tpr
    and tnr (the "F1" formula printed in thesis 4.6).
    """
    tp, fn, fp, tn = _counts(cm)
    tpr = _div(tp, tp + fn)
    tnr = _div(tn, tn + fp)
    ppv = _div(tp, tp + fp)
    npv = _div(tn, tn + fn)
    return {
        "tpr": tpr,
        "tnr": tnr,
        "ppv": ppv,
        "npv": npv,
        "f1": _div(2 * ppv * tpr, ppv + tpr),
        "f1_tpr_tnr": _div(2 * tpr * tnr, tpr + tnr),
    }


def accuracy(cm: np.ndarray) -> np.ndarray:
    """Share of correct predictions, (...)."""
    cm = np.asarray(cm, dtype=np.float64)
    return _div(np.trace(cm, axis1=-2, axis2=-1), cm.sum(axis=(-2, -1)))


def balanced_accuracy(cm: np.ndarray) -> np.ndarray:
    """Mean recall over the classes present in the true labels (as scikit-learn), (...)."""
    cm = np.asarray(cm, dtype=np.float64)
    support = cm.sum(axis=-1)
    recall = _div(np.diagonal(cm, axis1=-2, axis2=-1), support)
    present = support > 0
    return _div((recall * present).sum(axis=-1), present.sum(axis=-1))


def macro_f1(cm: np.ndarray) -> np.ndarray:
    """Unweighted mean of per-class F1 over the classes that occur in the true or predicted
    labels (scikit-learn's default label set), (...)."""
    cm = np.asarray(cm, dtype=np.float64)
    f1 = class_metrics(cm)["f1"]
    seen = (cm.sum(axis=-1) + cm.sum(axis=-2)) > 0
    return _div((f1 * seen).sum(axis=-1), seen.sum(axis=-1))


def mcc(cm: np.ndarray) -> np.ndarray:
    """Multi-class Matthews correlation coefficient (Gorodkin's R_K, as scikit-learn), (...)."""
    cm = np.asarray(cm, dtype=np.float64)
    t_sum = cm.sum(axis=-1)
    p_sum = cm.sum(axis=-2)
    n = cm.sum(axis=(-2, -1))
    correct = np.trace(cm, axis1=-2, axis2=-1)
    cov_tp = correct * n - (t_sum * p_sum).sum(axis=-1)
    cov_pp = n * n - (p_sum * p_sum).sum(axis=-1)
    cov_tt = n * n - (t_sum * t_sum).sum(axis=-1)
    return _div(cov_tp, np.sqrt(cov_pp * cov_tt))


def log_loss(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Multi-class logarithmic loss (thesis eq. 1); probabilities clipped to [1e-15, 1]."""
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(proba, dtype=np.float64)  # (N, C)
    if len(y) == 0:
        return 0.0
    picked = np.clip(p[np.arange(len(y)), y], _EPS, 1.0)
    return float(-np.mean(np.log(picked)))


def normalize_rows(cm: np.ndarray) -> np.ndarray:
    """Row-normalised confusion matrix (each true class sums to 1; empty rows stay 0)."""
    cm = np.asarray(cm, dtype=np.float64)
    return _div(cm, cm.sum(axis=-1, keepdims=True))


def summary_metrics(cm: np.ndarray) -> dict[str, np.ndarray]:
    """The confusion-matrix summary metrics (all of SUMMARY_METRICS but log_loss), (...)."""
    return {
        "accuracy": accuracy(cm),
        "balanced_accuracy": balanced_accuracy(cm),
        "macro_f1": macro_f1(cm),
        "mcc": mcc(cm),
    }


def bootstrap_ci(
    cm: np.ndarray,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    metrics: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Percentile bootstrap CIs over particles for the confusion-matrix metrics.

    Resampling the N pooled out-of-fold particles with replacement only changes how many
    particles fall into each (true, predicted) cell, and those counts follow a multinomial
    with the observed cell shares, so drawing ``multinomial(N, cm / N)`` is exactly the
    particle bootstrap, vectorised and independent of N. Returns metric -> array
    (2, C) for per-class metrics ([lo, hi] along axis 0) or (2,) for summary metrics.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    cm = np.asarray(cm, dtype=np.int64)
    c = cm.shape[0]
    n = int(cm.sum())
    rng = np.random.default_rng(seed)
    if n == 0:
        boot = np.zeros((n_resamples, c, c), dtype=np.int64)
    else:
        # (B, C*C) -> (B, C, C) resampled confusion matrices
        boot = rng.multinomial(n, cm.ravel() / n, size=n_resamples).reshape(-1, c, c)
    values = {**class_metrics(boot), **summary_metrics(boot)}
    wanted = list(values) if metrics is None else list(metrics)
    alpha = (1 - level) / 2 * 100
    return {m: np.percentile(values[m], [alpha, 100 - alpha], axis=0) for m in wanted}
