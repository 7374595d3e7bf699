"""Probability calibration on out-of-fold predictions: temperature scaling (Guo et al. 2017),
expected calibration error, the review threshold and the reliability diagram."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from lipoclass.models.inference import softmax

__all__ = ["expected_calibration_error", "fit_temperature", "plot_history", "plot_reliability",
           "review_threshold", "softmax"]  # fmt: skip


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature T > 0 minimising the NLL of softmax(logits / T) on held-out data (bounded
    search over log T in [-3, 3]; deterministic). One parameter cannot change the argmax."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    if len(y) == 0:
        return 1.0

    def nll(log_t: float) -> float:
        p = softmax(logits, float(np.exp(log_t)))
        return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))))

    res = minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded", options={"xatol": 1e-4})
    t = float(np.exp(res.x))
    return t if nll(float(res.x)) <= nll(0.0) else 1.0


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Top-label ECE: sum over equal-width confidence bins of |accuracy - confidence| * share."""
    if len(y) == 0:
        return float("nan")
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def review_threshold(probs: np.ndarray, y: np.ndarray, target: float = 0.95) -> dict[str, Any]:
    """Top-probability cut below which predictions go to a person for review, tied to a
    stated target: the smallest share of reviewed particles such that the out-of-fold
    accuracy on the rest (top probability >= ``threshold``) is at least ``target``.

    Returns {"threshold", "target_accuracy", "flagged_share", "expected_accuracy"
    (on the unflagged), "reached"}; when no cut reaches the target every particle is
    flagged (threshold above the largest top probability, reached False)."""
    if not 0 < target <= 1:
        raise ValueError(f"target accuracy must be in (0, 1], got {target}")
    n = len(y)
    if n == 0:
        return {"threshold": 1.0, "target_accuracy": target, "flagged_share": 1.0,
                "expected_accuracy": None, "reached": False, "n": 0}  # fmt: skip
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    order = np.argsort(-conf, kind="stable")
    cs = conf[order]
    acc = np.cumsum(correct[order]) / np.arange(1, n + 1)  # accuracy of the k most confident
    # a cut can only fall between distinct confidences: keep k where cs[k-1] > cs[k]
    last_of_tie = np.ones(n, dtype=bool)
    last_of_tie[:-1] = cs[:-1] > cs[1:]
    ok = np.flatnonzero((acc >= target) & last_of_tie)
    if len(ok) == 0:
        return {"threshold": float(np.nextafter(cs[0], np.inf)), "target_accuracy": target,
                "flagged_share": 1.0, "expected_accuracy": None, "reached": False,
                "n": n}  # fmt: skip
    k = int(ok[-1])
    thr = float(cs[k])
    keep = conf >= thr
    return {"threshold": thr, "target_accuracy": target,
            "flagged_share": float(1 - keep.mean()),
            "expected_accuracy": float(correct[keep].mean()), "reached": True,
            "n": n}  # fmt: skip


def plot_reliability(
    before: np.ndarray,
    after: np.ndarray,
    y: np.ndarray,
    path: str | os.PathLike[str],
    bins: int = 10,
) -> None:
    """Reliability diagram (accuracy vs confidence per bin) before/after calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    edges = np.linspace(0, 1, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    for probs, label, marker in ((before, "before", "o"), (after, "after", "s")):
        conf = probs.max(axis=1)
        correct = probs.argmax(axis=1) == y
        which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
        acc = [correct[which == b].mean() if (which == b).any() else np.nan for b in range(bins)]
        ece = expected_calibration_error(probs, y, bins)
        ax.plot(centres, acc, marker=marker, label=f"{label} (ECE {ece:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect")
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy (held-out)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"Reliability, {len(y)} held-out particles", fontsize=9)
    fig.tight_layout()
    fig.savefig(Path(path), dpi=100)
    plt.close(fig)


def plot_history(
    epochs: list[dict[str, float]], best_epoch: int, path: str | os.PathLike[str]
) -> None:
    """training_curve.png: training / validation loss and the validation metric per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ep = [r["epoch"] for r in epochs]
    ax.plot(ep, [r["train_loss"] for r in epochs], label="train loss (augmented, balanced)")
    if epochs and "val_loss" in epochs[0]:
        ax.plot(ep, [r["val_loss"] for r in epochs], label="validation loss")
        ax2 = ax.twinx()
        ax2.plot(ep, [r["val_metric"] for r in epochs], "g:", label="validation metric")
        ax2.set_ylabel("validation metric")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="upper right", fontsize=8)
    if best_epoch:
        ax.axvline(best_epoch, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(Path(path), dpi=100)
    plt.close(fig)
