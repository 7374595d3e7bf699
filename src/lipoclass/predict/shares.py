"""Class shares of a population: raw classify-and-count and adjusted classify-and-count
(Forman 2008) using the model's held-out confusion matrix, with bootstrap intervals.

A classifier with class-dependent errors biases raw shares: a rare class that is often
predicted as the majority looks rarer than it is. With ``C[t, p] = P(pred = p | true = t)``
(the row-normalised held-out confusion matrix) the observed predicted shares satisfy
``p_obs = C^T q`` for the true shares ``q``. We solve ``argmin ||C^T q - p_obs||`` over the
probability simplex by non-negative least squares with a heavily weighted sum-to-one row,
then renormalise (see docs/deployment.md)."""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ShareConfig", "ShareRow", "adjusted_shares", "class_shares", "write_shares"]

_SUM_WEIGHT = 1e3  # weight of the sum-to-one row in the NNLS system


@dataclass(frozen=True)
class ShareConfig:
    """Bootstrap settings: ``n_boot`` resamples, central ``level`` interval, ``seed``."""

    n_boot: int = 1000
    level: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if int(self.n_boot) < 10:
            raise ValueError(f"n_boot must be at least 10, got {self.n_boot}")
        if not 0 < self.level < 1:
            raise ValueError(f"level must be in (0, 1), got {self.level}")


@dataclass(frozen=True)
class ShareRow:
    """One (sample, class) line of shares.csv. ``true_share`` is NaN without labels."""

    sample: str
    cls: str
    n: int
    raw: float
    raw_lo: float
    raw_hi: float
    adjusted: float
    adjusted_lo: float
    adjusted_hi: float
    true_share: float = math.nan


def _row_normalise(confusion: np.ndarray) -> np.ndarray:
    """Counts (C, C), rows true -> P(pred | true); an empty row becomes the identity row."""
    cm = np.asarray(confusion, dtype=np.float64)
    tot = cm.sum(axis=1, keepdims=True)
    eye = np.eye(cm.shape[0])
    return np.where(tot > 0, cm / np.where(tot > 0, tot, 1.0), eye)


def adjusted_shares(p_obs: np.ndarray, confusion: np.ndarray) -> np.ndarray:
    """True class shares q (C,) on the simplex minimising ``||C^T q - p_obs||``.

    ``confusion`` (C, C) holds counts or rates with rows = true class (rows are normalised
    here; a class absent from the held-out rows is assumed always recognised). ``p_obs`` may be
    (C,) or a stack (B, C) of bootstrap replicates, giving (B, C)."""
    from scipy.optimize import nnls

    rates = _row_normalise(confusion)  # (C, C) P(pred | true)
    c = rates.shape[0]
    a = np.vstack([rates.T, np.full((1, c), _SUM_WEIGHT)])  # (C+1, C)
    obs = np.atleast_2d(np.asarray(p_obs, dtype=np.float64))  # (B, C)
    out = np.empty_like(obs)
    for i, p in enumerate(obs):
        q, _ = nnls(a, np.append(p, _SUM_WEIGHT))
        s = q.sum()
        out[i] = q / s if s > 0 else np.full(c, 1.0 / c)
    return out[0] if np.ndim(p_obs) == 1 else out


def _resample_confusion(
    confusion: np.ndarray, b: int, rng: np.random.Generator
) -> np.ndarray | None:
    """(B, C, C) parametric bootstrap of an integer count matrix (each true-class row redrawn
    multinomially), so intervals include the uncertainty of the held-out estimate; None when
    the matrix holds rates rather than counts."""
    cm = np.asarray(confusion, dtype=np.float64)
    if not np.allclose(cm, np.round(cm)):
        return None
    rates = _row_normalise(cm)
    n = cm.sum(axis=1).astype(np.int64)
    reps = np.empty((b, *cm.shape))
    for t in range(cm.shape[0]):
        reps[:, t] = rng.multinomial(n[t], rates[t], size=b) if n[t] > 0 else np.eye(len(n))[t]
    return reps


def class_shares(
    pred: np.ndarray,
    groups: Sequence[str],
    classes: Sequence[str],
    confusion: np.ndarray | None,
    config: ShareConfig | None = None,
    labels: np.ndarray | None = None,
) -> list[ShareRow]:
    """Raw and adjusted shares per group (sample) with bootstrap intervals.

    ``pred`` (N,) predicted class index; ``groups`` (N,) sample names; ``confusion`` (C, C)
    held-out counts, rows true (None: adjusted shares are NaN); ``labels`` (N,) true index or
    -1, to report the true share beside the estimates. The bootstrap resamples particles
    (multinomially, equivalent to drawing particles with replacement) and, when the confusion
    matrix holds counts, its rows too."""
    cfg = config or ShareConfig()
    rng = np.random.default_rng(cfg.seed)
    c = len(classes)
    pred = np.asarray(pred, dtype=np.int64)
    garr = np.asarray(list(groups), dtype=object)
    cm = None if confusion is None else np.asarray(confusion, dtype=np.float64)
    if cm is not None and cm.shape != (c, c):
        raise ValueError(f"confusion must be {c}x{c}, got {cm.shape}")
    if cm is not None and (cm.sum(axis=1) == 0).any():
        missing = [classes[int(i)] for i in np.flatnonzero(cm.sum(axis=1) == 0)]
        warnings.warn(
            f"no held-out particles of class(es) {', '.join(missing)}: adjusted shares assume "
            "they are always recognised",
            stacklevel=2,
        )
    if cm is not None and np.linalg.matrix_rank(_row_normalise(cm)) < c:
        warnings.warn(
            "the held-out confusion matrix is singular (some classes are indistinguishable): "
            "adjusted shares are not identifiable and may be arbitrary",
            stacklevel=2,
        )
    alpha = (1 - cfg.level) / 2
    rows: list[ShareRow] = []
    for g in sorted(set(garr.tolist())):
        sel = garr == g
        n = int(sel.sum())
        counts = np.bincount(pred[sel], minlength=c).astype(np.float64)
        raw = counts / n
        boot = rng.multinomial(n, raw, size=cfg.n_boot) / n  # (B, C)
        raw_lo, raw_hi = np.quantile(boot, [alpha, 1 - alpha], axis=0)
        if cm is not None:
            adj = adjusted_shares(raw, cm)
            cms = _resample_confusion(cm, cfg.n_boot, rng)
            if cms is None:
                adj_boot = adjusted_shares(boot, cm)
            else:
                adj_boot = np.stack([adjusted_shares(bp, bc) for bp, bc in zip(boot, cms)])
            adj_lo, adj_hi = np.quantile(adj_boot, [alpha, 1 - alpha], axis=0)
        else:
            adj = adj_lo = adj_hi = np.full(c, np.nan)
        true = np.full(c, np.nan)
        if labels is not None:
            lab = np.asarray(labels)[sel]
            lab = lab[lab >= 0]
            if len(lab):
                true = np.bincount(lab, minlength=c) / len(lab)
        for k, name in enumerate(classes):
            rows.append(
                ShareRow(str(g), name, n, float(raw[k]), float(raw_lo[k]), float(raw_hi[k]),
                         float(adj[k]), float(adj_lo[k]), float(adj_hi[k]), float(true[k]))
            )  # fmt: skip
    return rows


def _fmt(v: float) -> str:
    return "" if math.isnan(v) else f"{v:.4f}"


def write_shares(rows: Sequence[ShareRow], path: str | os.PathLike[str]) -> Path:
    """shares.csv: sample, class, n, raw_share, raw_lo, raw_hi, adjusted_share, adjusted_lo,
    adjusted_hi[, true_share] (atomic write)."""
    out = Path(path)
    with_true = any(not math.isnan(r.true_share) for r in rows)
    header = ["sample", "class", "n", "raw_share", "raw_lo", "raw_hi",
              "adjusted_share", "adjusted_lo", "adjusted_hi"]  # fmt: skip
    if with_true:
        header.append("true_share")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        for r in rows:
            vals = [r.raw, r.raw_lo, r.raw_hi, r.adjusted, r.adjusted_lo, r.adjusted_hi]
            line = [r.sample, r.cls, r.n, *map(_fmt, vals)]
            if with_true:
                line.append(_fmt(r.true_share))
            w.writerow(line)
    os.replace(tmp, out)
    return out
