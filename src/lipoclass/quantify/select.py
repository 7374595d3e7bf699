"""Which quantification method a model's shares are reported with: chosen per model, from its
own out-of-fold data, by simulating prior shift (docs/deployment.md, *Method chosen per model*).

Each repeat splits the out-of-fold set into a fit half and a test half (by micrograph when the
particles name enough micrographs, else particle by particle within each class), fits every
method on the fit half (:func:`~lipoclass.quantify.fit_quantifiers`, with its calibration
bootstrap), and estimates shares with intervals on samples of the test half drawn at the
prevalences of QuaPy's artificial-prevalence protocol (APP: its grid of class shares) and at
the test half's natural shares (NPP). The quantifier under test never sees the particles it is
scored on. Per method it records the error (mean absolute error per class), the coverage of
the intervals and their width; the recommended method is the one with the lowest error among
those whose intervals cover at least ``level - coverage_tol`` of the true shares and are on
average no wider than ``MAX_WIDTH`` (25 points: a method whose shares would mostly be "not
determinable" is no answer), else CC with its bias bounded: CC's interval widened to hold
:data:`BOUND_METHOD`'s (:func:`bounded_interval`; CC's own interval holds the sampling error
only, not CC's bias towards the training shares). The fit half holds half the out-of-fold
data, so the simulated widths are on the wide side of the model's own (conservative).

QuaPy's protocols seed numpy's global random generator; the prevalence grid comes from
QuaPy's ``APP.prevalence_grid`` (deterministic) and the samples are drawn here with a local
``numpy.random.Generator`` the way QuaPy's ``sampling_index`` draws them (with replacement
within each class).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import numpy as np

from lipoclass.errors import LipoclassError
from lipoclass.outputs import save_figure

__all__ = [
    "BOUNDED_KEY",
    "BOUND_METHOD",
    "FALLBACK_METHOD",
    "MAX_WIDTH",
    "MethodSelection",
    "SelectConfig",
    "bounded_interval",
    "class_rate_uncertainty",
    "plot_selection",
    "select_method",
]

FALLBACK_METHOD: Final = "cc"
"""Recommended when no method's intervals reach the nominal coverage (and for model folders
without out-of-fold data)."""

BOUND_METHOD: Final = "acc"
"""The adjusted method whose interval bounds the fallback's (CC's) bias: the reported interval
of a fallback share is the hull of CC's and this method's (chosen over PACC on the 10-epoch
models of benchmarks/bench_shares.py at ``--seed 1``, docs/deployment.md)."""

BOUNDED_KEY: Final = "cc_bounded"
"""Selection-table row of CC with its bias bounded (:func:`bounded_interval`)."""

MAX_WIDTH: Final = 0.25
"""Widest interval (25 percentage points) reported as a share; a wider one is "not
determinable" (docs/deployment.md, *Not determinable*)."""


@dataclass(frozen=True)
class SelectConfig:
    """Settings of the prior-shift simulation: ``repeats`` fit/test splits; on each, the APP
    grid with ``n_prevalences`` values per class (``QuaPy``'s ``n_prevalences``) and
    ``n_natural`` samples at the test half's own shares, each of ``sample_size`` particles
    (fewer when the test half is smaller); intervals with ``n_boot`` replicates over
    ``n_cal_boot`` calibration replicates at ``level``; a method qualifies when its coverage
    is at least ``level - coverage_tol``."""

    repeats: int = 2
    n_prevalences: int = 5
    n_natural: int = 5
    sample_size: int = 500
    n_boot: int = 100
    n_cal_boot: int = 20
    level: float = 0.95
    coverage_tol: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        for name, low in (("repeats", 1), ("n_prevalences", 2), ("n_natural", 0),
                          ("sample_size", 20), ("n_boot", 50), ("n_cal_boot", 10)):  # fmt: skip
            v = getattr(self, name)
            if not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
        if self.n_cal_boot > self.n_boot:
            raise ValueError(f"n_cal_boot ({self.n_cal_boot}) must not exceed n_boot")
        if not 0.5 <= float(self.level) < 1.0:
            raise ValueError(f"level must be in [0.5, 1), got {self.level!r}")
        if not 0.0 <= float(self.coverage_tol) < float(self.level):
            raise ValueError(f"coverage_tol must be in [0, level), got {self.coverage_tol!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")


@dataclass(frozen=True)
class MethodSelection:
    """The simulation's table and its verdict. ``table[method]``: ``mae`` (mean absolute error
    per class and sample, share units), ``coverage`` (fraction of the true shares inside the
    intervals), ``width`` (mean interval width), ``max_width``, ``coverage_per_class`` (C,);
    ``chosen``: the recommended method; ``reason``: one sentence saying why; ``n_samples``:
    simulated samples; ``split``: ``micrographs`` or ``particles``; ``class_counts`` (C,)
    out-of-fold particles per class; ``recall`` / ``recall_pm`` (C,): each class's out-of-fold
    recall and the half-width of its 95 % interval (how well its error rate is known)."""

    chosen: str
    reason: str
    table: dict[str, dict[str, Any]]
    n_samples: int
    split: str
    level: float
    min_coverage: float
    sample_size: int
    class_counts: list[int] = field(default_factory=list)
    recall: list[float] = field(default_factory=list)
    recall_pm: list[float] = field(default_factory=list)
    seconds: float = 0.0
    bound: str = ""  # BOUND_METHOD when the fallback's intervals are bias-bounded, else ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (model.json ``quantifiers.selection``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MethodSelection:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def class_rate_uncertainty(
    proba: np.ndarray, labels: np.ndarray
) -> tuple[list[int], list[float], list[float]]:
    """Per class: out-of-fold count, recall, and the half-width of recall's 95 % (Wilson)
    interval, i.e. how well the class's error rate is known from its labelled particles."""
    c = proba.shape[1]
    pred = np.argmax(proba, axis=1)
    counts, rec, pm = [], [], []
    z = 1.959963984540054
    for k in range(c):
        sel = labels == k
        n = int(sel.sum())
        r = float((pred[sel] == k).mean()) if n else float("nan")
        half = (z * np.sqrt(r * (1 - r) / n + z * z / (4 * n * n)) / (1 + z * z / n)) if n else 1.0
        counts.append(n)
        rec.append(r)
        pm.append(float(half))
    return counts, rec, pm


def bounded_interval(
    lo: np.ndarray, hi: np.ndarray, bound_lo: np.ndarray, bound_hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The fallback's interval with its bias bounded: the hull of CC's interval (``lo``,
    ``hi``) and the bound method's (``bound_lo``, ``bound_hi``), each (C,). CC's own interval
    holds only the sampling error; under prior shift CC is biased towards the training shares
    by (M - I) p (M: the error rates), which the adjusted method's interval accounts for, so
    the hull covers at least as often as the bound method while CC's share stays inside."""
    return np.minimum(lo, bound_lo), np.maximum(hi, bound_hi)


def _split(
    labels: np.ndarray, groups: np.ndarray | None, rng: np.random.Generator, n_classes: int
) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(fit positions, test positions, unit): half of the micrographs each (every class
    present in both; 20 tries) when ``groups`` names at least 2 * MIN_GROUPS, else half of
    each class's particles. None when a class has fewer than 2 particles."""
    from lipoclass.quantify.core import MIN_GROUPS

    if groups is not None:
        names, inv = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
        if len(names) >= 2 * MIN_GROUPS:
            for _ in range(20):
                half = rng.permutation(len(names))[: len(names) // 2]
                in_fit = np.isin(inv, half)
                if all(np.unique(labels[m]).size == n_classes for m in (in_fit, ~in_fit)):
                    return np.flatnonzero(in_fit), np.flatnonzero(~in_fit), "micrographs"
    fit, test = [], []
    for k in range(n_classes):
        ix = rng.permutation(np.flatnonzero(labels == k))
        if ix.size < 2:
            return None
        fit.append(ix[: ix.size // 2])
        test.append(ix[ix.size // 2 :])
    return np.concatenate(fit), np.concatenate(test), "particles"


def _prevalences(n_classes: int, n_prevalences: int) -> np.ndarray:
    """QuaPy's APP grid of class shares (G, C) (deterministic)."""
    import quapy as qp
    from quapy.protocol import APP

    dummy = qp.data.LabelledCollection(np.zeros((n_classes, 1)), np.arange(n_classes))
    app = APP(dummy, sample_size=n_classes, n_prevalences=n_prevalences, repeats=1)
    free = np.asarray(app.prevalence_grid(), dtype=np.float64)  # (G, C-1): last one implicit
    grid = np.hstack([free, 1.0 - free.sum(axis=1, keepdims=True)])
    return np.clip(grid, 0.0, 1.0)


def _draw(
    by_class: list[np.ndarray], prev: np.ndarray, size: int, rng: np.random.Generator
) -> np.ndarray:
    """Positions of a sample of ``size`` at shares ``prev`` (C,), with replacement within
    each class (QuaPy's ``sampling_index``; remainders to classes drawn by ``prev``)."""
    n = np.floor(size * prev).astype(int)
    short = size - int(n.sum())
    if short > 0:
        n += np.bincount(rng.choice(len(prev), size=short, p=prev), minlength=len(prev))
    parts = [rng.choice(ix, size=int(k), replace=True) for ix, k in zip(by_class, n) if k > 0]
    return np.concatenate(parts)


def select_method(
    proba: np.ndarray,
    labels: np.ndarray,
    groups: Any = None,
    methods: tuple[str, ...] | None = None,
    config: SelectConfig | None = None,
) -> MethodSelection:
    """Simulate prior shift on out-of-fold posteriors ``proba`` (n, C) with labels ``labels``
    (n,) and micrographs ``groups`` (n,) or None, and choose the recommended method (module
    docstring). Takes a few seconds."""
    import time

    from lipoclass.quantify.core import METHODS, QuantifierConfig, fit_quantifiers

    cfg = config or SelectConfig()
    t0 = time.perf_counter()
    proba = np.asarray(proba, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    c = proba.shape[1]
    meths = tuple(methods or METHODS)
    grp = None if groups is None else np.asarray(groups, dtype=str)
    rng = np.random.default_rng([cfg.seed, 3])
    grid = _prevalences(c, cfg.n_prevalences)  # (G, C)
    qcfg = QuantifierConfig(methods=meths, n_boot=cfg.n_boot, n_cal_boot=cfg.n_cal_boot,
                            level=float(cfg.level), seed=cfg.seed)  # fmt: skip
    bounded = FALLBACK_METHOD in meths and BOUND_METHOD in meths
    keys = meths + (BOUNDED_KEY,) * bounded
    err: dict[str, list[np.ndarray]] = {m: [] for m in keys}
    cov: dict[str, list[np.ndarray]] = {m: [] for m in keys}
    wid: dict[str, list[np.ndarray]] = {m: [] for m in keys}
    unit = "particles"
    size = cfg.sample_size
    for _ in range(cfg.repeats):
        split = _split(labels, grp, rng, c)
        if split is None:
            break
        fit, test, unit = split
        q = fit_quantifiers(proba[fit], labels[fit], qcfg,
                            groups=None if grp is None else grp[fit])  # fmt: skip
        by_class = [test[labels[test] == k] for k in range(c)]
        size = min(cfg.sample_size, test.size)
        natural = np.bincount(labels[test], minlength=c) / test.size
        prevs = np.vstack([grid, np.tile(natural, (cfg.n_natural, 1))])
        for j, prev in enumerate(prevs):
            if j < len(grid):
                idx = _draw(by_class, prev, size, rng)
            else:  # NPP: a plain random sample of the test half
                idx = rng.choice(test, size=size, replace=test.size < size)
            truth = np.bincount(labels[idx], minlength=c) / idx.size
            # the replicates redraw the sample's micrographs (else its distinct particles):
            # a particle drawn several times is one particle, and the sample's own error
            # rates vary with its micrographs, as in deployment
            tg = grp[idx] if grp is not None else idx.astype(str)
            est = q.estimate(proba[idx], replace(qcfg, seed=int(rng.integers(2**31))), groups=tg)
            _score(est, truth, keys, err, cov, wid)
    counts, rec, pm = class_rate_uncertainty(proba, labels)
    min_cov = float(cfg.level) - float(cfg.coverage_tol)
    if not err[meths[0]]:
        return MethodSelection(
            FALLBACK_METHOD if FALLBACK_METHOD in meths else meths[0],
            "a class has fewer than 2 out-of-fold particles: no prior-shift simulation "
            "possible; CC (counting) recommended",
            {}, 0, "none", float(cfg.level), min_cov, 0, counts, rec, pm,
            time.perf_counter() - t0,
        )  # fmt: skip
    table = {}
    for m in keys:
        e, v, w = np.array(err[m]), np.array(cov[m]), np.array(wid[m])  # (S, C) each
        table[m] = {"mae": float(e.mean()), "coverage": float(v.mean()),
                    "width": float(w.mean()), "max_width": float(w.max()),
                    "coverage_per_class": v.mean(axis=0).tolist(),
                    "mae_per_class": e.mean(axis=0).tolist()}  # fmt: skip
    n_samples = len(err[meths[0]])
    chosen, reason = _verdict(table, meths, min_cov, n_samples, float(cfg.level))
    bound = BOUND_METHOD if bounded and chosen == FALLBACK_METHOD else ""
    return MethodSelection(chosen, reason, table, n_samples, unit, float(cfg.level), min_cov,
                           size, counts, rec, pm, time.perf_counter() - t0, bound)  # fmt: skip


def _score(
    est: Any,
    truth: np.ndarray,
    keys: tuple[str, ...],
    err: dict[str, list[np.ndarray]],
    cov: dict[str, list[np.ndarray]],
    wid: dict[str, list[np.ndarray]],
) -> None:
    """Append one simulated sample's error, coverage and width (C,) per method (and for the
    bias-bounded fallback, ``BOUNDED_KEY``) against its true shares ``truth`` (C,)."""
    for m in keys:
        if m == BOUNDED_KEY:
            f, b = FALLBACK_METHOD, BOUND_METHOD
            share = est.share[f]
            lo, hi = bounded_interval(est.lo[f], est.hi[f], est.lo[b], est.hi[b])
        else:
            share, lo, hi = est.share[m], est.lo[m], est.hi[m]
        err[m].append(np.abs(share - truth))
        cov[m].append((lo <= truth + 1e-12) & (truth - 1e-12 <= hi))
        wid[m].append(hi - lo)


def _verdict(
    table: dict[str, dict[str, Any]],
    meths: tuple[str, ...],
    min_cov: float,
    n: int,
    level: float,
    max_width: float = MAX_WIDTH,
) -> tuple[str, str]:
    """(chosen method, one-sentence reason) by the rule of the module docstring."""
    covers = [m for m in meths if table[m]["coverage"] >= min_cov]
    ok = [m for m in covers if table[m]["width"] <= max_width]
    pct = round(100 * level)
    if not ok:
        chosen = FALLBACK_METHOD if FALLBACK_METHOD in meths else meths[0]
        caveat = (
            f"; its intervals hold the sampling error only, not the bias towards the training "
            f"shares (they covered {100 * table[chosen]['coverage']:.0f}% in the simulation): "
            "audit the sample (--audit) for valid intervals"
        )
        b = table.get(BOUNDED_KEY)
        if chosen == FALLBACK_METHOD and b is not None:
            caveat = (
                f"; CC's own intervals hold the sampling error only (they covered "
                f"{100 * table[chosen]['coverage']:.0f}% in the simulation), so each is widened "
                f"to hold {BOUND_METHOD.upper()}'s, which bounds CC's bias towards the training "
                f"shares (covered {100 * b['coverage']:.0f}%, mean width "
                f"{100 * b['width']:.0f} points; a share whose interval is wider than "
                f"{100 * max_width:.0f} is not determinable): audit the sample (--audit) for "
                "narrower valid intervals"
            )
        return chosen, _fallback_reason(table, meths, covers, chosen, min_cov, n, pct,
                                        max_width) + caveat  # fmt: skip
    return _chosen_reason(table, ok, min_cov, n, pct)


def _fallback_reason(
    table: dict[str, dict[str, Any]],
    meths: tuple[str, ...],
    covers: list[str],
    chosen: str,
    min_cov: float,
    n: int,
    pct: int,
    max_width: float,
) -> str:
    """Why no method qualified (the fallback's reason)."""
    if covers:
        wide = ", ".join(f"{m.upper()} {100 * table[m]['width']:.0f}" for m in covers)
        return (
            f"the methods whose {pct}% intervals cover the true shares in at least "
            f"{100 * min_cov:.0f}% of {n} simulated samples have intervals too wide to "
            f"report (mean width {wide} points, more than {100 * max_width:.0f}): "
            f"{chosen.upper()} (counting) recommended"
        )
    best = max(meths, key=lambda m: table[m]["coverage"])
    return (
        f"no method's {pct}% intervals covered the true shares in at least "
        f"{100 * min_cov:.0f}% of {n} simulated samples (best: {best.upper()} "
        f"{100 * table[best]['coverage']:.0f}%): {chosen.upper()} (counting) recommended"
    )


def _chosen_reason(
    table: dict[str, dict[str, Any]], ok: list[str], min_cov: float, n: int, pct: int
) -> tuple[str, str]:
    """(the qualifying method with the lowest error, its reason)."""
    chosen = min(ok, key=lambda m: table[m]["mae"])
    t = table[chosen]
    cc = table.get("cc")
    vs = f"; CC {100 * cc['mae']:.1f}" if cc is not None and chosen != "cc" else ""
    return chosen, (
        f"lowest error (mean absolute error {100 * t['mae']:.1f} points per class{vs}) among "
        f"the methods whose {pct}% intervals covered the true shares in at least "
        f"{100 * min_cov:.0f}% of {n} samples simulated from the model's out-of-fold data "
        f"({chosen.upper()}: {100 * t['coverage']:.0f}%, mean width {100 * t['width']:.1f} points)"
    )


def plot_selection(
    sel: MethodSelection, classes: list[str] | tuple[str, ...], path: str | os.PathLike[str]
) -> Path:
    """Figure of the selection table: per method its error, its coverage (with the required
    minimum) and its mean interval width, the chosen method highlighted (written to a temp
    name, renamed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    meths = list(sel.table)
    if not meths:
        raise LipoclassError("method selection: no simulated samples to plot")
    x = np.arange(len(meths))
    colors = ["tab:orange" if m == sel.chosen or (m == BOUNDED_KEY and sel.bound) else
              "tab:blue" for m in meths]  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for ax, key, title in zip(axes, ("mae", "coverage", "width"),
                              ("mean abs. error (points)", "interval coverage (%)",
                               "mean interval width (points)")):  # fmt: skip
        ax.bar(x, [100 * sel.table[m][key] for m in meths], color=colors)
        ax.set_xticks(x, [f"CC<{sel.bound or BOUND_METHOD}>".upper() if m == BOUNDED_KEY
                          else m.upper() for m in meths], fontsize=8)  # fmt: skip
        ax.set_title(title, fontsize=10)
    axes[1].axhline(100 * sel.min_coverage, color="k", ls="--", lw=1)
    axes[1].set_ylim(0, 100)
    fig.suptitle(f"method chosen for this model: {sel.chosen.upper()} ({sel.n_samples} simulated "
                 f"samples of {sel.sample_size}, split by {sel.split}; classes "
                 f"{', '.join(classes)})", fontsize=9)  # fmt: skip
    fig.tight_layout()
    return save_figure(fig, out, dpi=90)
