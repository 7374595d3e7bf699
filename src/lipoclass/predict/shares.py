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

from lipoclass.outputs import save_figure
from lipoclass.quantify import METHODS, SAMPLING_METHODS, QuantifierConfig, ShareEstimate

__all__ = [
    "AUDIT_COLUMNS",
    "RECOMMENDED_WITHOUT_OOF",
    "ShareConfig",
    "ShareRow",
    "audit_positions",
    "class_shares",
    "ensure_selection",
    "method_line",
    "plot_shares",
    "share_columns",
    "shares_table",
    "write_audit_sheet",
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
    ``share_hi``: the ``recommended`` method's (NaN when ``n`` is 0; for the CC fallback the
    interval is bias-bounded: the hull with ACC's, ``quantify.bounded_interval``);
    ``true_share``: among the ``n`` predicted particles, NaN without labels; ``micrographs``:
    distinct micrographs of the sample (0 when particles.csv names none); ``resampling``:
    ``micrographs`` when the interval's replicates redrew whole micrographs, else
    ``particles``."""

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
    # False when the recommended interval is wider than quantify.MAX_WIDTH: share, share_lo,
    # share_hi are then NaN and ``reason`` says why and what would make it determinable
    determinable: bool = True
    reason: str = ""
    # with an audit: audit-corrected (PPI++) and labels-only (share, lo, hi), the audited
    # real particles of the sample, the effective sample size of the corrected share, and
    # why there is no audit interval (too few labels) when so
    audit: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    labels_only: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    audit_n: int = 0
    audit_ess: float = math.nan
    audit_note: str = ""


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
    audit: Mapping[int, int] | None = None,
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
    between micrographs), otherwise particles. ``audit``: position (in ``probs``) -> a
    person's label index (C: not a particle) of the audited particles: adds the
    audit-corrected (PPI++) and labels-only shares (docs/deployment.md, Audit)."""
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
        qcfg = quantifiers.config  # its recommended method: chosen for this model
        qcfg = replace(qcfg, n_boot=max(cfg.n_boot, qcfg.n_cal_boot), level=float(cfg.level),
                       seed=cfg.seed)  # fmt: skip
    else:
        qcfg = QuantifierConfig(methods=SAMPLING_METHODS, n_boot=cfg.n_boot, n_cal_boot=10,
                                level=float(cfg.level), seed=cfg.seed,
                                recommended=RECOMMENDED_WITHOUT_OOF)  # fmt: skip
    outcome = np.full(len(p), -1, dtype=np.int64)  # audited label index, -1: not audited
    outcome[list(map(int, audit or {}))] = list(map(int, (audit or {}).values()))
    audited = outcome >= 0
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
        aud = _audit_columns(p[sel], audited[sel], outcome[sel], c, float(cfg.level), audit)
        for k, name in enumerate(classes):
            per = {} if est is None else {
                m: (float(est.share[m][k]), float(est.lo[m][k]), float(est.hi[m][k]))
                for m in est.methods
            }  # fmt: skip
            best, bound = _reported(per, qcfg.recommended, est, k, quantifiers)
            ok, why = _determinable(est, k, name, qcfg.recommended, quantifiers, float(cfg.level),
                                    best[1:], bound)  # fmt: skip
            rows.append(ShareRow(str(g), str(name), n, int(excl.get(g, 0)), qcfg.recommended,
                                 *(best if ok else (math.nan,) * 3), methods=per,
                                 true_share=float(true[k]), fallback=int(fb.get(g, 0)),
                                 micrographs=0 if est is None else est.n_groups,
                                 resampling="" if est is None else est.resampling,
                                 determinable=ok, reason=why, **aud[k]))  # fmt: skip
    return rows


def _audit_columns(
    p: np.ndarray,
    audited: np.ndarray,
    outcome: np.ndarray,
    c: int,
    level: float,
    audit: Mapping[int, int] | None,
) -> list[dict[str, Any]]:
    """Per class, the ShareRow audit fields of one sample: posteriors (m, C), which particles
    were audited (m,) and their outcome (m,; C: not a particle)."""
    from lipoclass.quantify import MIN_AUDIT, labels_only_interval, ppi_shares

    if audit is None:
        return [{} for _ in range(c)]
    real = audited & (outcome < c)
    n_real = int(real.sum())
    if n_real < MIN_AUDIT:
        note = (f"audit too small for an interval: {n_real} labelled particle(s) in this "
                f"sample, at least {MIN_AUDIT} needed")  # fmt: skip
        return [{"audit_n": n_real, "audit_note": note} for _ in range(c)]
    r = ppi_shares(p, audited, outcome, level)
    lab, lab_lo, lab_hi = labels_only_interval(np.bincount(outcome[real], minlength=c)[:c],
                                               n_real, level)  # fmt: skip
    return [{"audit": (float(r.share[k]), float(r.lo[k]), float(r.hi[k])),
             "labels_only": (float(lab[k]), float(lab_lo[k]), float(lab_hi[k])),
             "audit_n": n_real, "audit_ess": float(r.ess[k])} for k in range(c)]  # fmt: skip


def _reported(
    per: Mapping[str, tuple[float, float, float]],
    method: str,
    est: ShareEstimate | None,
    k: int,
    quantifiers: Any,
) -> tuple[tuple[float, float, float], str]:
    """The reported (share, lo, hi) of class ``k`` by ``method`` and the method bounding its
    bias ("" when none): for the fallback, the hull with the bound's interval."""
    best = per.get(method, (math.nan, math.nan, math.nan))
    bound = _bound_of(quantifiers, est)
    if bound and est is not None:  # the fallback's bias bounded (quantify.select)
        best = (best[0], min(best[1], float(est.lo[bound][k])),
                max(best[2], float(est.hi[bound][k])))  # fmt: skip
    return best, bound


def _bound_of(quantifiers: Any, est: ShareEstimate | None) -> str:
    """The method bounding the recommended (fallback) method's bias ("" when none)."""
    sel = getattr(quantifiers, "selection", None)
    bound = getattr(sel, "bound", "") if sel is not None else ""
    return bound if est is not None and bound in est.methods else ""


def _determinable(
    est: ShareEstimate | None,
    k: int,
    name: str,
    method: str,
    quantifiers: Any,
    level: float,
    interval: tuple[float, float] | None = None,
    bound: str = "",
) -> tuple[bool, str]:
    """(determinable, reason) of class ``k``'s share by ``method``: not determinable when its
    interval (``interval``, default the method's own) is wider than ``quantify.MAX_WIDTH``;
    the reason says why and, from the split of the interval's variance (calibration set vs
    the sample itself; of ``bound``'s when the interval is bias-bounded by it), how many
    labelled training particles (power calculation: the calibration part falls as 1 / n) or
    how many particles in the sample would bring it to MAX_WIDTH (docs/deployment.md)."""
    from lipoclass.quantify import MAX_WIDTH

    if est is None:
        return True, ""
    lo_k, hi_k = interval or (float(est.lo[method][k]), float(est.hi[method][k]))
    width = float(hi_k - lo_k)
    if width <= MAX_WIDTH:
        return True, ""
    pct = round(100 * level)
    by = method.upper() + (f" (bias bounded by {bound.upper()})" if bound else "")
    head = (f"'{name}' not determinable by {by}: its {pct}% interval "
            f"[{100 * lo_k:.0f}, {100 * hi_k:.0f}] % is wider than "
            f"{100 * MAX_WIDTH:.0f} points")  # fmt: skip
    sd_cal = est.sd_cal.get(bound or method)
    sd_test = est.sd_test.get(bound or method)
    m = est.n_particles
    more_sample = max(0, math.ceil(m * (width / MAX_WIDTH) ** 2) - m)
    if sd_cal is None or sd_test is None or quantifiers is None:
        return False, (f"{head}: the sample's {m} particles alone leave it this wide; about "
                       f"{more_sample} more particles in the sample would narrow it to "
                       f"{100 * MAX_WIDTH:.0f} points (or audit it: --audit)")  # fmt: skip
    counts = np.asarray(getattr(quantifiers, "class_counts", []), dtype=np.int64)
    sel = getattr(quantifiers, "selection", None)
    rare = int(np.argmin(counts)) if counts.size else k
    n_rare = int(counts[rare]) if counts.size else 0
    known = ""
    if sel is not None and sel.recall_pm:
        known = (f"; only {counts[k]} labelled '{name}' particles in training (out of fold): "
                 f"its error rate is known to +-{100 * sel.recall_pm[k]:.0f} %")  # fmt: skip
    total = float(np.hypot(sd_cal[k], sd_test[k]))
    target = total * MAX_WIDTH / width  # sd that would give a MAX_WIDTH interval
    if sd_test[k] >= target or sd_cal[k] <= 0:
        if _transfer_on(quantifiers):  # that part also holds the transfer term
            return False, (f"{head}{known}; the sample's own spread and the allowance for a "
                           "new sample's error rates differing from the training data's "
                           "(transfer term) leave it this wide: an audit (--audit) would "
                           "narrow it")  # fmt: skip
        return False, (f"{head}{known}; the sample itself ({m} particles) leaves it this wide: "
                       f"about {more_sample} more particles in the sample, or an audit "
                       "(--audit), would narrow it")  # fmt: skip
    need = math.ceil(n_rare * sd_cal[k] ** 2 / (target**2 - sd_test[k] ** 2))
    rare_name = _class_name(quantifiers, rare)
    return False, (f"{head}{known}; the training labels' uncertainty dominates: with about "
                   f"{need} labelled particles of every class that has fewer (now "
                   f"{rare_name + ' ' if rare_name else ''}{n_rare}), it would narrow to "
                   f"{100 * MAX_WIDTH:.0f} points (power calculation from the out-of-fold "
                   "data), or audit this sample (--audit)")  # fmt: skip


def _transfer_on(quantifiers: Any) -> bool:
    """Whether the intervals carry the transfer term (quantify.QuantifierConfig
    ``shift_micrographs``; needs calibration micrographs): it lands in the sample's part
    of the variance split, and no number of particles in the sample narrows it."""
    cfg = getattr(quantifiers, "config", None)
    return bool(getattr(cfg, "shift_micrographs", 0)) and (
        getattr(quantifiers, "_rate_effects", None) is not None
    )


def _class_name(quantifiers: Any, k: int) -> str:
    """Class name ``k`` of the quantifiers' model ("" when unknown)."""
    names = getattr(quantifiers, "class_names", None)
    return str(names[k]) if names is not None and k < len(names) else ""


def ensure_selection(q: Any, loaded: Any) -> str:
    """Give quantifiers from a model folder trained before the per-model method choice their
    selection now (from its oof.csv, a few seconds; micrographs from the training dataset
    when it is still readable) and the class names; the note ("" when stored)."""
    import time

    from lipoclass.quantify import select_method

    q.class_names = list(loaded.classes)
    if getattr(q, "selection", None) is not None:
        return ""
    if not (loaded.path / "oof.csv").is_file():
        from lipoclass.quantify import FALLBACK_METHOD

        if FALLBACK_METHOD in q.config.methods:
            q.config = replace(q.config, recommended=FALLBACK_METHOD)
        return (f"{loaded.path} predates the per-model choice of the method and has no "
                f"oof.csv to make it: {q.config.recommended.upper()} (retrain)")  # fmt: skip
    t0 = time.perf_counter()
    ids, _fold, y, p = loaded.oof()
    groups = None
    ds_path = (loaded.info.get("dataset") or {}).get("path")
    if ds_path:
        try:
            from lipoclass.data import load_dataset

            groups = load_dataset(ds_path).micrographs_of(ids)
        except Exception:  # the training data moved or changed: split by particles
            groups = None
    q.with_selection(select_method(p, y, groups, q.config.methods))
    return (f"the shares' method was chosen now from {loaded.path / 'oof.csv'} "
            f"({time.perf_counter() - t0:.0f} s; retrain to store the choice in the model "
            "folder)")  # fmt: skip


def _fmt(v: float) -> str:
    return "" if math.isnan(v) else f"{v:.4f}"


AUDIT_COLUMNS = ("audit", "audit_lo", "audit_hi", "audit_ess", "audit_n", "labels_only",
                 "labels_only_lo", "labels_only_hi", "audit_note")  # fmt: skip
"""shares.csv columns added when an audit is given (--audit)."""


def share_columns(with_true: bool, with_audit: bool = False) -> list[str]:
    """shares.csv header: sample, class, n, excluded, <m>, <m>_lo, <m>_hi for every method in
    ``METHODS`` (empty cells where unavailable, and where the interval is wider than
    ``quantify.MAX_WIDTH``), recommended, share, share_lo, share_hi (empty when not
    determinable), fallback, micrographs, resampling, determinable (yes/no), reason (why
    not) [, the audit columns ``AUDIT_COLUMNS``] [, true_share]."""
    cols = ["sample", "class", "n", "excluded"]
    for m in METHODS:
        cols += [m, f"{m}_lo", f"{m}_hi"]
    cols += ["recommended", "share", "share_lo", "share_hi", "fallback", "micrographs",
             "resampling", "determinable", "reason"]  # fmt: skip
    return cols + list(AUDIT_COLUMNS) * with_audit + ["true_share"] * with_true


def _method_cells(v: tuple[float, float, float]) -> list[str]:
    """A method's share, lo, hi cells; all empty when the interval is wider than MAX_WIDTH
    (never a [0, 100] interval as if it were a result)."""
    from lipoclass.quantify import MAX_WIDTH

    if not math.isnan(v[1]) and v[2] - v[1] > MAX_WIDTH:
        return ["", "", ""]
    return [_fmt(x) for x in v]


def write_shares(rows: Sequence[ShareRow], path: str | os.PathLike[str]) -> Path:
    """Write shares.csv (columns: :func:`share_columns`; written to a temp name, renamed)."""
    out = Path(path)
    with_true = any(not math.isnan(r.true_share) for r in rows)
    with_audit = any(r.audit_n or r.audit_note for r in rows)
    nan3 = (math.nan, math.nan, math.nan)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        with tmp.open("w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(share_columns(with_true, with_audit))
            for r in rows:
                line: list[Any] = [r.sample, r.cls, r.n, r.excluded]
                for m in METHODS:
                    line += _method_cells(r.methods.get(m, nan3))
                line += [r.recommended, *map(_fmt, (r.share, r.share_lo, r.share_hi)), r.fallback,
                         r.micrographs, r.resampling, "yes" if r.determinable else "no",
                         r.reason]  # fmt: skip
                if with_audit:
                    line += [*map(_fmt, r.audit), _fmt(r.audit_ess), r.audit_n,
                             *map(_fmt, r.labels_only), r.audit_note]  # fmt: skip
                if with_true:
                    line.append(_fmt(r.true_share))
                w.writerow(line)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _cell(v: tuple[float, float, float]) -> str:
    return (
        "n/a" if math.isnan(v[0]) else f"{100 * v[0]:5.1f} [{100 * v[1]:5.1f}, {100 * v[2]:5.1f}]"
    )


def shares_table(rows: Sequence[ShareRow], level: float = 0.95) -> str:
    """Console table of the recommended shares (percent) per sample: sample, class, n,
    excluded and fallback (when any), share [lo, hi] ("not determinable" when its interval
    is too wide; the reasons follow the table), with an audit the audit-corrected and
    labels-only shares and the audit's effective sample size, true (when known)."""
    pct = f"{round(level * 100)}%"
    with_true = any(not math.isnan(r.true_share) for r in rows)
    with_excl = any(r.excluded for r in rows)
    with_fb = any(r.fallback for r in rows)
    with_audit = any(r.audit_n or r.audit_note for r in rows)
    method = rows[0].recommended.upper() if rows else ""
    head = f"{'sample':<12} {'class':<16} {'n':>6}" + (f" {'excluded':>8}" if with_excl else "")
    head += f" {'fallback':>8}" if with_fb else ""
    head += f"  {method + ' share [' + pct + ' CI]':<26}"
    if with_audit:
        head += f"  {'audit-corrected [' + pct + ']':<24} {'labels only':<24} {'ESS':>6}"
    head += " true" if with_true else ""
    lines = [head]
    notes: list[str] = []
    for r in rows:
        line = f"{r.sample:<12} {r.cls:<16} {r.n:>6}" + (f" {r.excluded:>8}" if with_excl else "")
        line += f" {r.fallback:>8}" if with_fb else ""
        cell = _cell((r.share, r.share_lo, r.share_hi))
        if not r.determinable:
            cell = "not determinable (*)"
            notes.append(f"(*) {r.sample}: {r.reason}")
        line += f"  {cell:<26}"
        if with_audit:
            ess = "" if math.isnan(r.audit_ess) else f"{r.audit_ess:6.0f}"
            line += f"  {_cell(r.audit):<24} {_cell(r.labels_only):<24} {ess:>6}"
            if r.audit_note and f"{r.sample}: {r.audit_note}" not in notes:
                notes.append(f"{r.sample}: {r.audit_note}")
        if with_true:
            line += f" {100 * r.true_share:5.1f}" if not math.isnan(r.true_share) else "  n/a"
        lines.append(line)
    if with_audit:
        n_aud = {r.sample: r.audit_n for r in rows}
        lines.append("audit-corrected: prediction-powered inference (PPI++) on the model's "
                     "predictions of every particle and the person's labels of the audited ones "
                     f"({', '.join(f'{g}: {k}' for g, k in n_aud.items())} labelled); ESS: how "
                     "many labels alone would give the same precision")  # fmt: skip
    return "\n".join(lines + notes)


def method_line(quantifiers: Any) -> str:
    """Which method the shares are reported with and why (one line; docs/deployment.md)."""
    if quantifiers is None:
        return (f"method: {RECOMMENDED_WITHOUT_OOF.upper()} (no out-of-fold data: no adjusted "
                "method can be fitted)")  # fmt: skip
    sel = getattr(quantifiers, "selection", None)
    rec = quantifiers.config.recommended.upper()
    if sel is None:
        return f"method: {rec}"
    return f"method: {rec}, chosen for this model: {sel.reason}"


def plot_shares(
    rows: Sequence[ShareRow], path: str | os.PathLike[str], level: float = 0.95
) -> Path:
    """``<out stem>_shares.png``: one panel per class, each sample's recommended share with
    its interval (error bar; none where not determinable), with an audit the audit-corrected
    share with its interval (columns audit, audit_lo, audit_hi) beside it and, with labels,
    the true share (written to a temp name, renamed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    classes = list(dict.fromkeys(r.cls for r in rows))
    samples = list(dict.fromkeys(r.sample for r in rows))
    by = {(r.sample, r.cls): r for r in rows}
    with_true = any(not math.isnan(r.true_share) for r in rows)
    with_audit = any(not math.isnan(r.audit[0]) for r in rows)
    fig, axes = plt.subplots(1, len(classes), figsize=(max(4.0, 1.2 + 0.5 * len(samples)) *
                             len(classes), 3.6), squeeze=False)  # fmt: skip
    x = np.arange(len(samples))
    method = rows[0].recommended.upper() if rows else ""
    for ax, cls in zip(axes[0], classes):
        s = np.array([100 * by[(g, cls)].share for g in samples])  # (S,)
        lo = np.array([100 * by[(g, cls)].share_lo for g in samples])
        hi = np.array([100 * by[(g, cls)].share_hi for g in samples])
        ax.errorbar(x - 0.15 * (with_true or with_audit), s, yerr=np.vstack([s - lo, hi - s]),
                    fmt="o", capsize=3, label=f"{method} [{round(100 * level)}% CI]")  # fmt: skip
        if with_audit:
            a = np.array([[100 * v for v in by[(g, cls)].audit] for g in samples])  # (S, 3)
            ax.errorbar(x, a[:, 0], yerr=np.vstack([a[:, 0] - a[:, 1], a[:, 2] - a[:, 0]]),
                        fmt="s", color="tab:green", capsize=3,
                        label=f"audit-corrected [{round(100 * level)}% CI]")  # fmt: skip
        if with_true:
            t = np.array([100 * by[(g, cls)].true_share for g in samples])
            ax.plot(x + 0.15, t, "kx", label="true")
        ax.set_title(cls)
        ax.set_xticks(x, samples, rotation=45 if len(samples) > 4 else 0, ha="right"
                      if len(samples) > 4 else "center")  # fmt: skip
        ax.set_ylabel("share (%)")
        ax.set_ylim(bottom=0)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out, dpi=100)


def audit_positions(
    path: str | os.PathLike[str], ids: Sequence[str], classes: Sequence[str]
) -> tuple[dict[int, int], str]:
    """The audit file's labels as position (in ``ids``) -> outcome index (``len(classes)``:
    not a particle), and a note on what was skipped ("" when nothing); LipoclassError on
    bad input (``lipoclass.quantify.read_audit``)."""
    from lipoclass.quantify import read_audit

    labels, skipped = read_audit(path, ids, classes)
    pos = {pid: i for i, pid in enumerate(ids)}
    parts = []
    if skipped["unsure"]:
        parts.append(f"{skipped['unsure']} 'unsure' decision(s) skipped")
    if skipped["unlabelled"]:
        parts.append(f"{skipped['unlabelled']} audit row(s) without a label skipped")
    if skipped["other_queues"]:
        parts.append(f"{skipped['other_queues']} decision(s) from other review queues ignored "
                     "(not a random sample)")  # fmt: skip
    n_nap = sum(1 for k in labels.values() if k == len(classes))
    if n_nap:
        parts.append(f"{n_nap} audited candidate(s) are not particles: the audit-corrected "
                     "shares are among real particles")  # fmt: skip
    note = f"audit {path}: {len(labels)} labels used" + (f"; {'; '.join(parts)}" if parts else "")
    return {pos[pid]: k for pid, k in labels.items()}, note


def write_audit_sheet(
    path: str | os.PathLike[str],
    ids: Sequence[str],
    samples: Sequence[str],
    micrographs: Sequence[str] | None,
    k: int,
    seed: int = 0,
) -> Path:
    """``path`` (CSV id,sample,micrograph,label with label empty): for each sample, ``k`` of
    its particles drawn by ``lipoclass.quantify.draw_audit`` (seeded, stratified by
    micrograph), in the drawn (random) order, for a person to label; then ``predict
    --audit path``. Written to a temp name, renamed."""
    from lipoclass.quantify import draw_audit

    out = Path(path)
    sarr = np.asarray(list(samples), dtype=object)
    marr = None if micrographs is None else np.asarray(list(micrographs), dtype=object)
    idarr = np.asarray(list(ids), dtype=object)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        with tmp.open("w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["id", "sample", "micrograph", "label"])
            for g in sorted(set(sarr.tolist())):
                sel = np.flatnonzero(sarr == g)
                mics = None if marr is None else [str(x) for x in marr[sel]]
                names = [str(x) for x in idarr[sel]]
                at = dict(zip(names, sel.tolist()))
                for pid in draw_audit(names, mics, k, seed=seed):
                    w.writerow([pid, g, "" if marr is None else marr[at[pid]], ""])
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
