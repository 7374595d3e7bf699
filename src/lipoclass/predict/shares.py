"""Class shares per sample for ``predict``: every method of ``lipoclass.quantify`` (CC, PCC,
ACC, PACC, EMQ) with its interval, the recommended one first, and the particles the model
could not predict counted beside them (``excluded``), never silently dropped, as are those it
predicted by the documented fallback (``fallback``, part of ``n``).

With a model folder the quantifiers are those fitted on its out-of-fold posteriors
(``quantifiers.pkl``, fitted once by ``lipoclass train``); without out-of-fold data (an
ONNX file alone, an old folder) only CC and PCC are available, with sampling intervals."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from lipoclass.quantify import METHODS, SAMPLING_METHODS, QuantifierConfig, ShareEstimate

__all__ = [
    "RECOMMENDED_WITHOUT_OOF",
    "ShareConfig",
    "ShareRow",
    "class_shares",
    "plot_shares",
    "share_columns",
    "shares_table",
    "write_shares",
]

#: method reported without out-of-fold data (CC or PCC; chosen by benchmarks/bench_shares.py)
RECOMMENDED_WITHOUT_OOF = "cc"


@dataclass(frozen=True)
class ShareConfig:
    """Estimate-time settings: ``n_boot`` bootstrap replicates, central ``level`` interval,
    ``seed`` (the same sample always gets the same interval). The calibration replicates
    and the recommended method come from the fitted quantifiers (``QuantifierConfig``)."""

    n_boot: int = 200
    level: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.n_boot, int) or self.n_boot < 50:
            raise ValueError(f"n_boot must be an int >= 50, got {self.n_boot!r}")
        if not (isinstance(self.level, float | int) and 0.5 <= float(self.level) < 1.0):
            raise ValueError(f"level must be in [0.5, 1), got {self.level!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")


@dataclass(frozen=True)
class ShareRow:
    """One (sample, class) line of shares.csv. ``n``: particles of the sample in the shares;
    ``excluded``: particles of the sample the model could not predict (not in ``n``);
    ``fallback``: particles of ``n`` predicted by the documented fallback (docs/deployment.md);
    ``methods``: method -> (share, lo, hi) for the methods available; ``share``/``share_lo``/
    ``share_hi``: the ``recommended`` method's (NaN when ``n`` is 0); ``true_share``: among the
    ``n`` predicted particles, NaN without labels; ``micrographs``: distinct micrographs of
    the sample (0 when particles.csv names none); ``resampling``: ``micrographs`` when the
    interval's replicates redrew whole micrographs, else ``particles``."""

    sample: str
    cls: str
    n: int
    excluded: int
    recommended: str
    share: float
    share_lo: float
    share_hi: float
    methods: Mapping[str, tuple[float, float, float]] = field(default_factory=dict)
    true_share: float = math.nan
    fallback: int = 0
    micrographs: int = 0  # distinct micrographs among the n particles (0: not known)
    resampling: str = ""  # how the interval redrew the sample (quantify.RESAMPLING_UNITS)


def _as_proba(probs: Any, c: int) -> np.ndarray:
    """(N, C) posteriors; a (N,) array of predicted class indices becomes one-hot rows."""
    arr = np.asarray(probs)
    if arr.ndim == 1:
        return np.eye(c)[arr.astype(np.int64)]
    return np.asarray(arr, dtype=np.float64)


def class_shares(
    probs: Any,
    groups: Sequence[str],
    classes: Sequence[str],
    quantifiers: Any = None,
    config: ShareConfig | None = None,
    labels: np.ndarray | None = None,
    excluded: Mapping[str, int] | None = None,
    fallback: Mapping[str, int] | None = None,
    micrographs: Sequence[str] | None = None,
) -> list[ShareRow]:
    """Shares per group (sample) with intervals, for every available method.

    ``probs`` (N, C) calibrated posteriors of the predicted particles (a (N,) array of class
    indices is taken as one-hot: CC = PCC); ``groups`` (N,) sample names; ``quantifiers``
    fitted ``lipoclass.quantify.Quantifiers`` (None: CC and PCC only, sampling intervals);
    ``labels`` (N,) true index or -1; ``excluded`` sample -> particles not predicted (a
    sample with only such particles gets rows with n = 0 and no shares); ``fallback`` sample
    -> particles among its ``n`` predicted by the documented fallback; ``micrographs`` (N,)
    the micrograph of each particle or None: a sample of ``quantify.MIN_GROUPS`` or more
    micrographs gets intervals whose replicates redraw whole micrographs (error rates vary
    between micrographs), otherwise particles."""
    from lipoclass.quantify import sampling_estimate

    cfg = config or ShareConfig()
    c = len(classes)
    p = _as_proba(probs, c)  # (N, C)
    garr = np.asarray(list(groups), dtype=object)
    if len(garr) != len(p):
        raise ValueError(f"{len(p)} particles but {len(garr)} group names")
    mic = None if micrographs is None else np.asarray(list(micrographs), dtype=object)
    if mic is not None and len(mic) != len(p):
        raise ValueError(f"{len(p)} particles but {len(mic)} micrograph names")
    excl = dict(excluded or {})
    fb = dict(fallback or {})
    if quantifiers is not None:
        qcfg = quantifiers.config
        rec = QuantifierConfig().recommended  # today's rule, also for older model folders
        rec = rec if rec in qcfg.methods else qcfg.recommended
        qcfg = replace(qcfg, n_boot=max(cfg.n_boot, qcfg.n_cal_boot), level=float(cfg.level),
                       seed=cfg.seed, recommended=rec)  # fmt: skip
    else:
        qcfg = QuantifierConfig(methods=SAMPLING_METHODS, n_boot=cfg.n_boot, n_cal_boot=10,
                                level=float(cfg.level), seed=cfg.seed,
                                recommended=RECOMMENDED_WITHOUT_OOF)  # fmt: skip
    rows: list[ShareRow] = []
    for g in sorted(set(garr.tolist()) | set(excl)):
        sel = garr == g
        n = int(sel.sum())
        est: ShareEstimate | None = None
        gm = None if mic is None else mic[sel].astype(str)
        if n:
            est = (quantifiers.estimate(p[sel], qcfg, groups=gm) if quantifiers is not None
                   else sampling_estimate(p[sel], qcfg, groups=gm))  # fmt: skip
        true = np.full(c, math.nan)
        if labels is not None and n:
            lab = np.asarray(labels)[sel]
            lab = lab[lab >= 0]
            if len(lab):
                true = np.bincount(lab, minlength=c) / len(lab)
        for k, name in enumerate(classes):
            per = {} if est is None else {
                m: (float(est.share[m][k]), float(est.lo[m][k]), float(est.hi[m][k]))
                for m in est.methods
            }  # fmt: skip
            best = per.get(qcfg.recommended, (math.nan, math.nan, math.nan))
            rows.append(ShareRow(str(g), str(name), n, int(excl.get(g, 0)), qcfg.recommended,
                                 *best, methods=per, true_share=float(true[k]),
                                 fallback=int(fb.get(g, 0)),
                                 micrographs=0 if est is None else est.n_groups,
                                 resampling="" if est is None else est.resampling))  # fmt: skip
    return rows


def _fmt(v: float) -> str:
    return "" if math.isnan(v) else f"{v:.4f}"


def share_columns(with_true: bool) -> list[str]:
    """shares.csv header: sample, class, n, excluded, <m>, <m>_lo, <m>_hi for every method in
    ``METHODS`` (empty cells where unavailable), recommended, share, share_lo, share_hi,
    fallback, micrographs, resampling [, true_share] (added after the existing columns, so the
    earlier positions stay)."""
    cols = ["sample", "class", "n", "excluded"]
    for m in METHODS:
        cols += [m, f"{m}_lo", f"{m}_hi"]
    cols += ["recommended", "share", "share_lo", "share_hi", "fallback", "micrographs",
             "resampling"]  # fmt: skip
    return cols + ["true_share"] * with_true


def write_shares(rows: Sequence[ShareRow], path: str | os.PathLike[str]) -> Path:
    """Write shares.csv (columns: :func:`share_columns`; written to a temp name, renamed)."""
    out = Path(path)
    with_true = any(not math.isnan(r.true_share) for r in rows)
    nan3 = (math.nan, math.nan, math.nan)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        with tmp.open("w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(share_columns(with_true))
            for r in rows:
                line: list[Any] = [r.sample, r.cls, r.n, r.excluded]
                for m in METHODS:
                    line += [_fmt(v) for v in r.methods.get(m, nan3)]
                line += [r.recommended, *map(_fmt, (r.share, r.share_lo, r.share_hi)), r.fallback,
                         r.micrographs, r.resampling]  # fmt: skip
                if with_true:
                    line.append(_fmt(r.true_share))
                w.writerow(line)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def shares_table(rows: Sequence[ShareRow], level: float = 0.95) -> str:
    """Console table of the recommended shares (percent) per sample: sample, class, n,
    excluded and fallback (when any), share [lo, hi], true (when known)."""
    pct = f"{round(level * 100)}%"
    with_true = any(not math.isnan(r.true_share) for r in rows)
    with_excl = any(r.excluded for r in rows)
    with_fb = any(r.fallback for r in rows)
    method = rows[0].recommended.upper() if rows else ""
    head = f"{'sample':<12} {'class':<16} {'n':>6}" + (f" {'excluded':>8}" if with_excl else "")
    head += f" {'fallback':>8}" if with_fb else ""
    head += f"  {method + ' share [' + pct + ' CI]':<26}" + (" true" if with_true else "")
    lines = [head]
    for r in rows:
        line = f"{r.sample:<12} {r.cls:<16} {r.n:>6}" + (f" {r.excluded:>8}" if with_excl else "")
        line += f" {r.fallback:>8}" if with_fb else ""
        cell = "n/a"
        if not math.isnan(r.share):
            cell = f"{100 * r.share:5.1f} [{100 * r.share_lo:5.1f}, {100 * r.share_hi:5.1f}]"
        line += f"  {cell:<26}"
        if with_true:
            line += f" {100 * r.true_share:5.1f}" if not math.isnan(r.true_share) else "  n/a"
        lines.append(line)
    return "\n".join(lines)


def plot_shares(
    rows: Sequence[ShareRow], path: str | os.PathLike[str], level: float = 0.95
) -> Path:
    """``<out stem>_shares.png``: one panel per class, each sample's recommended share with
    its interval (error bar) and, with labels, the true share beside it (written to a temp
    name, renamed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    classes = list(dict.fromkeys(r.cls for r in rows))
    samples = list(dict.fromkeys(r.sample for r in rows))
    by = {(r.sample, r.cls): r for r in rows}
    with_true = any(not math.isnan(r.true_share) for r in rows)
    fig, axes = plt.subplots(1, len(classes), figsize=(max(4.0, 1.2 + 0.5 * len(samples)) *
                             len(classes), 3.6), squeeze=False)  # fmt: skip
    x = np.arange(len(samples))
    method = rows[0].recommended.upper() if rows else ""
    for ax, cls in zip(axes[0], classes):
        s = np.array([100 * by[(g, cls)].share for g in samples])  # (S,)
        lo = np.array([100 * by[(g, cls)].share_lo for g in samples])
        hi = np.array([100 * by[(g, cls)].share_hi for g in samples])
        ax.errorbar(x - 0.1 * with_true, s, yerr=np.vstack([s - lo, hi - s]), fmt="o",
                    capsize=3, label=f"{method} [{round(100 * level)}% CI]")  # fmt: skip
        if with_true:
            t = np.array([100 * by[(g, cls)].true_share for g in samples])
            ax.plot(x + 0.1, t, "kx", label="true")
        ax.set_title(cls)
        ax.set_xticks(x, samples, rotation=45 if len(samples) > 4 else 0, ha="right"
                      if len(samples) > 4 else "center")  # fmt: skip
        ax.set_ylabel("share (%)")
        ax.set_ylim(bottom=0)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}.png")
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return out
