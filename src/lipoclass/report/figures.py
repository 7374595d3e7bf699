"""Matplotlib figures of the study report (thesis Figures 4, 17-22), returned as PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lipoclass import metrics as M

__all__ = [
    "compare_figure",
    "dataset_figure",
    "f1_figure",
    "png_bytes",
    "steps_figure",
]

_METRICS = M.CLASS_METRICS


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig: Any, dpi: int = 100) -> bytes:
    """Render and close a figure; PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def _get(m: Mapping[str, Any] | None, cls: str, key: str) -> float:
    if not m:
        return float("nan")
    v = m.get("per_class", {}).get(cls, {}).get(key)
    return float(v) if isinstance(v, int | float) else float("nan")


def _mean_std(
    pairs: Sequence[tuple[Mapping[str, Any] | None, str]], key: str
) -> tuple[np.ndarray, np.ndarray]:
    """Fold mean ``key`` and its fold std ``key_std`` for each (metrics, class) pair; (P,) each,
    NaN where a run has no value."""
    y = np.array([_get(m, c, key) for m, c in pairs])
    e = np.array([_get(m, c, f"{key}_std") for m, c in pairs])
    return y, e


def _run_bars(
    ax: Any,
    x: np.ndarray,
    j: int,
    n: int,
    y: np.ndarray,
    yerr: np.ndarray,
    **style: Any,
) -> None:
    """Bars of run ``j`` of ``n`` in a grouped bar plot: one group per x position, the runs
    side by side in 0.8 of the group width. ``y`` (M,) values, ``yerr`` (M,) symmetric or
    (2, M) below/above error bars; NaN (metric not available) is drawn as 0 without error."""
    width = 0.8 / n
    ax.bar(
        x + (j - (n - 1) / 2) * width,
        np.nan_to_num(y),
        width,
        yerr=np.nan_to_num(yerr),
        capsize=2,
        **style,
    )


def dataset_figure(
    name: str, counts: Mapping[str, int], sizes: Mapping[str, Sequence[Sequence[int]]]
) -> bytes:
    """Class counts (log scale), image width x height scatter (Fig. 3) and per-class width
    distribution (Fig. 4)."""
    plt = _plt()
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    classes = list(counts)
    vals = [counts[c] for c in classes]
    bars = ax[0].bar(classes, vals, color=[f"C{i}" for i in range(len(classes))])
    ax[0].set_yscale("log")
    ax[0].bar_label(bars, labels=[str(v) for v in vals])
    ax[0].set_title(f"{name}: particles per class")
    for i, c in enumerate(classes):
        wh = np.asarray(sizes.get(c, []), dtype=float).reshape(-1, 2)  # (n, 2) width, height
        if len(wh) == 0:
            continue
        ax[1].scatter(wh[:, 0], wh[:, 1], s=6, alpha=0.5, color=f"C{i}", label=c)
        ax[2].hist(wh[:, 0], bins=30, density=True, histtype="step", color=f"C{i}", label=c)
    ax[1].set_xlabel("image width (px)")
    ax[1].set_ylabel("image height (px)")
    ax[1].set_title("image sizes")
    ax[1].legend(fontsize=8)
    ax[2].set_xlabel("image width (px)")
    ax[2].set_ylabel("density")
    ax[2].set_title("width distribution per class")
    fig.tight_layout()
    return png_bytes(fig)


def steps_figure(
    labels: Sequence[str],
    metrics: Sequence[Mapping[str, Any] | None],
    classes: Sequence[str],
    title: str,
) -> bytes:
    """Per-class TPR (fold mean, fold std error bars) against successive runs (Fig. 17)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4))
    x = np.arange(len(labels))
    for i, c in enumerate(classes):
        y, e = _mean_std([(m, c) for m in metrics], "tpr")  # (R,) each
        ax.errorbar(x, y, yerr=np.nan_to_num(e), marker="o", capsize=3, color=f"C{i}", label=c)
    ax.set_xticks(x, labels, rotation=20)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("true positive rate (fold mean ± std)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return png_bytes(fig)


def f1_figure(
    labels: Sequence[str],
    metrics: Sequence[Mapping[str, Any] | None],
    classes: Sequence[str],
    title: str,
) -> bytes:
    """Per-class F1 bars, one bar per run (Figs. 18-21), fold std error bars."""
    plt = _plt()
    n = max(1, len(labels))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 + len(classes) * n * 0.45), 4))
    x = np.arange(len(classes))
    for j, (lab, m) in enumerate(zip(labels, metrics)):
        y, e = _mean_std([(m, c) for c in classes], "f1")  # (C,) each
        _run_bars(ax, x, j, n, y, e, label=lab, color=f"C{j % 10}")
    ax.set_xticks(x, list(classes))
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("F1 (fold mean ± std)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(4, n))
    fig.tight_layout()
    return png_bytes(fig)


def compare_figure(
    labels: Sequence[str],
    metrics: Sequence[Mapping[str, Any] | None],
    classes: Sequence[str],
    title: str,
) -> bytes:
    """TPR/TNR/PPV/NPV/F1 per class, grouped bars per run with 95% bootstrap CI error bars
    (Fig. 22). Baseline rows (label starting with 'baseline') are drawn in grey."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(classes), figsize=(4.6 * len(classes), 3.8), sharey=True)
    axes = np.atleast_1d(axes)
    n = max(1, len(labels))
    x = np.arange(len(_METRICS))
    greys = iter(("0.55", "0.8", "0.7", "0.9"))
    colours = []
    k = 0
    for lab in labels:
        if lab.startswith("baseline"):
            colours.append(next(greys, "0.6"))
        else:
            colours.append(f"C{k % 10}")
            k += 1
    for ax, c in zip(axes, classes):
        for j, (lab, m) in enumerate(zip(labels, metrics)):
            y = np.array([_get(m, c, key) for key in _METRICS])
            pc = m.get("per_class", {}).get(c, {}) if m else {}
            ci = [pc.get(f"{key}_ci") for key in _METRICS]
            lo = np.array([v[0] if isinstance(v, list) and len(v) == 2 else np.nan for v in ci])
            hi = np.array([v[1] if isinstance(v, list) and len(v) == 2 else np.nan for v in ci])
            yerr = np.stack([y - lo, hi - y]).clip(min=0)  # (2, M) below / above
            _run_bars(
                ax, x, j, n, y, yerr, label=lab, color=colours[j], edgecolor="0.3", linewidth=0.3
            )
        ax.set_xticks(x, [M.metric_label(key) for key in _METRICS])
        ax.set_title(c)
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("value (95% bootstrap CI)")
    handles, names = axes[0].get_legend_handles_labels()
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 6), fontsize=8)
    return png_bytes(fig)
