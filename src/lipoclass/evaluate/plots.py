"""Figures of a cross-validation run (matplotlib Agg, no global pyplot state), written
atomically (temporary name, then ``os.replace``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["save_confusion", "save_importance"]


def _save(fig: object, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from lipoclass.outputs import save_figure

    FigureCanvasAgg(fig)  # type: ignore[arg-type]
    save_figure(fig, path, 120, bbox_inches="tight")


def save_confusion(
    cm: np.ndarray, classes: Sequence[str], path: Path, *, title: str, normalized: bool
) -> None:
    """Confusion matrix heat map (rows true, columns predicted) with annotated cells."""
    from matplotlib.figure import Figure

    cm = np.asarray(cm, dtype=np.float64)  # (C, C)
    c = len(classes)
    side = 1.6 + 0.9 * c
    fig = Figure(figsize=(side + 1.2, side))
    ax = fig.add_subplot()
    vmax = 1.0 if normalized else max(float(cm.max()), 1.0)
    im = ax.imshow(cm, cmap="Blues", vmin=0.0, vmax=vmax)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    for i in range(c):
        for j in range(c):
            text = f"{cm[i, j]:.2f}" if normalized else f"{round(float(cm[i, j]))}"
            colour = "white" if cm[i, j] > 0.6 * vmax else "black"
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=9)
    ax.set_xticks(range(c), labels=list(classes), rotation=30, ha="right")
    ax.set_yticks(range(c), labels=list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    _save(fig, path)


def save_importance(
    names: Sequence[str], mean: np.ndarray, std: np.ndarray, path: Path, *, top: int = 25
) -> None:
    """Horizontal bar chart of the ``top`` most important features (error bars: std)."""
    from matplotlib.figure import Figure

    order = np.argsort(-np.asarray(mean))[:top]
    k = len(order)
    fig = Figure(figsize=(6.5, 1.0 + 0.28 * max(k, 1)))
    ax = fig.add_subplot()
    pos = np.arange(k)[::-1]
    ax.barh(pos, np.asarray(mean)[order], xerr=np.asarray(std)[order], color="tab:blue")
    ax.set_yticks(pos, labels=[names[i] for i in order], fontsize=8)
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("drop in balanced accuracy when permuted (held-out folds)")
    ax.set_title(f"Permutation importance, top {k}", fontsize=10)
    _save(fig, path)
