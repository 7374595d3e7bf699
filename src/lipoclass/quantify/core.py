"""Class shares of a sample (quantification) from a cross-fitted model's out-of-fold posteriors.

The point estimators are QuaPy's aggregative quantifiers (CC, PCC, ACC, PACC, EMQ), fitted on
precomputed posteriors through a stub "classifier" that returns them unchanged, so nothing is
trained here. The 95 % intervals come from a joint bootstrap done here with a seeded
``numpy.random.Generator`` (QuaPy's own ``AggregativeBootstrap`` uses the global RNG and joblib):
every replicate resamples the calibration (out-of-fold) set within each class, refits the
adjustment with QuaPy, resamples the test sample, and re-estimates. See docs (quantification).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from lipoclass.errors import LipoclassError

__all__ = [
    "DATASET_SHIFT_MICROGRAPHS",
    "EMQ_CALIBRATIONS",
    "METHODS",
    "MIN_GROUPS",
    "RESAMPLING_UNITS",
    "SAMPLING_METHODS",
    "QuantifierConfig",
    "Quantifiers",
    "ShareEstimate",
    "fit_quantifiers",
    "load_quantifiers",
    "replicate_weights",
    "sampling_estimate",
    "save_quantifiers",
]

METHODS: Final = ("cc", "pcc", "acc", "pacc", "emq")
"""Quantification methods, in the order they are reported."""

SAMPLING_METHODS: Final = ("cc", "pcc")
"""The methods that need no calibration data (available with an ONNX file alone)."""

EMQ_CALIBRATIONS: Final = (None, "bcts", "ts", "vs", "nbvs")
"""Recalibrations QuaPy's EMQ offers (Alexandari et al. 2020); ``None``: plain EM (Saerens 2002)."""

RESAMPLING_UNITS: Final = ("particles", "micrographs", "particles+rates")
"""How a bootstrap replicate redraws a test sample: particle by particle; whole micrographs
(cluster bootstrap; needs at least ``MIN_GROUPS`` micrographs in the sample); or, for a
sample of fewer micrographs, particles plus the error-rate deviations of as many
micrographs drawn from the calibration set (needs ``MIN_GROUPS`` calibration micrographs)."""

DATASET_SHIFT_MICROGRAPHS: Final = 8
"""Default ``QuantifierConfig.shift_micrographs``: every interval allows the sample's error
rates to differ from the training data's as much as the mean of 8 training micrographs
differs from all of them (chosen on the 10-epoch models of benchmarks/bench_shares.py at its
``--seed 1``; reported on the others, docs/deployment.md)."""

MIN_GROUPS: Final = 5
"""Fewest distinct micrographs (or samples) for which replicates redraw whole ones."""

_ROW_SUM_TOL = 1e-3  # |row sum - 1| allowed in posteriors
_EPS = 1e-12  # floor on posteriors fed to EMQ (its calibrators take logs)


@dataclass(frozen=True)
class QuantifierConfig:
    """Which methods to fit and how to build their intervals.

    ``n_boot`` bootstrap replicates give the ``level`` percentile intervals; each pairs a
    resampled test sample with one of ``n_cal_boot`` resampled calibration sets (drawn and
    fitted once, in :func:`fit_quantifiers`). ``seed`` seeds both (the same sample always gets
    the same interval). ``recommended`` is the method a report shows first: the default, CC,
    is only the fallback; ``lipoclass train`` replaces it by the method chosen for the model
    from its own out-of-fold data (:func:`lipoclass.quantify.select_method`,
    :meth:`Quantifiers.with_selection`). ``emq_calibration`` is the recalibration EMQ fits on
    the out-of-fold posteriors (``None``: plain EM).
    """

    methods: tuple[str, ...] = METHODS
    level: float = 0.95
    n_boot: int = 200
    n_cal_boot: int = 40
    seed: int = 0
    recommended: str = ""  # "": the fallback, CC (or the first method); select.py decides
    emq_calibration: str | None = "bcts"
    # transfer term: every replicate also moves the sample's error rates as the mean of this
    # many calibration micrographs deviates from the calibration set's (a new sample's
    # imaging differs from the training data's); 0: off. DATASET_SHIFT_MICROGRAPHS
    shift_micrographs: int = DATASET_SHIFT_MICROGRAPHS

    def __post_init__(self) -> None:
        methods = tuple(self.methods)
        object.__setattr__(self, "methods", methods)
        if not methods:
            raise ValueError("methods must name at least one method")
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; allowed: {list(METHODS)}")
        if len(set(methods)) != len(methods):
            raise ValueError(f"methods has duplicates: {list(methods)}")
        if not (isinstance(self.level, float | int) and 0.5 <= float(self.level) < 1.0):
            raise ValueError(f"level must be in [0.5, 1), got {self.level!r}")
        if not isinstance(self.n_boot, int) or self.n_boot < 50:
            raise ValueError(f"n_boot must be an int >= 50, got {self.n_boot!r}")
        if not isinstance(self.n_cal_boot, int) or not 10 <= self.n_cal_boot <= self.n_boot:
            raise ValueError(f"n_cal_boot must be an int in [10, n_boot], got {self.n_cal_boot!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        if not self.recommended:
            object.__setattr__(self, "recommended", "cc" if "cc" in methods else methods[0])
        if self.recommended not in methods:
            raise ValueError(f"recommended {self.recommended!r} is not in methods {list(methods)}")
        if not isinstance(self.shift_micrographs, int) or self.shift_micrographs < 0:
            raise ValueError(
                f"shift_micrographs must be an int >= 0, got {self.shift_micrographs!r}"
            )
        if self.emq_calibration not in EMQ_CALIBRATIONS:
            raise ValueError(
                f"emq_calibration must be one of {list(EMQ_CALIBRATIONS)}, "
                f"got {self.emq_calibration!r}"
            )


@dataclass(frozen=True)
class ShareEstimate:
    """Class shares of one sample: per method a point estimate and a ``level`` interval.

    ``share[m]``, ``lo[m]``, ``hi[m]`` are arrays (C,) for method ``m``; shares sum to 1 and
    ``lo <= share <= hi`` element-wise, all within [0, 1]. The interval is for the share in
    the population the sample was drawn from (it includes the sampling of the particles).
    """

    share: dict[str, np.ndarray]
    lo: dict[str, np.ndarray]
    hi: dict[str, np.ndarray]
    n_particles: int
    level: float
    recommended: str
    methods: tuple[str, ...] = field(default=METHODS)
    resampling: str = "particles"  # how replicates redrew the sample: RESAMPLING_UNITS
    n_groups: int = 0  # distinct micrographs in the sample (0: not known)
    # per method (C,): standard deviation of the replicates due to the calibration
    # (out-of-fold) set and due to the sample itself (a two-way split of the bootstrap
    # variance; empty for methods without calibration replicates)
    sd_cal: dict[str, np.ndarray] = field(default_factory=dict)
    sd_test: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def best(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(share, lo, hi) of the recommended method, each (C,)."""
        m = self.recommended
        return self.share[m], self.lo[m], self.hi[m]


def _stub_class() -> type:
    """The posterior stub (lazy import: keeps ``import lipoclass.quantify`` light)."""
    from lipoclass.quantify._stub import Posteriors

    return Posteriors


def _quapy_method(name: str, n_classes: int, cfg: QuantifierConfig, cal: tuple | None) -> Any:
    """An unfitted QuaPy quantifier around the stub; ``cal`` (P, y) is EMQ's calibration data."""
    from quapy.method.aggregative import ACC, CC, EMQ, PACC, PCC

    stub = _stub_class()(n_classes)
    if name == "cc":
        return CC(stub, fit_classifier=False)
    if name == "pcc":
        return PCC(stub, fit_classifier=False)
    if name == "acc":
        return ACC(stub, fit_classifier=False, val_split=None)
    if name == "pacc":
        return PACC(stub, fit_classifier=False, val_split=None)
    if cfg.emq_calibration is None:
        return EMQ(stub, fit_classifier=False, val_split=None)
    # exact_train_prev=False: the prior is the mean calibrated posterior (Alexandari et al.)
    return EMQ(
        stub,
        fit_classifier=False,
        val_split=cal,
        exact_train_prev=False,
        calib=cfg.emq_calibration,
        on_calib_error="raise",
    )


def _check_proba(p: Any, what: str, n_classes: int | None = None) -> np.ndarray:
    """Posteriors as float64 (n, C), or LipoclassError naming what is wrong."""
    arr = np.asarray(p, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise LipoclassError(f"{what}: expected posteriors of shape (n, C>=2), got {arr.shape}")
    if n_classes is not None and arr.shape[1] != n_classes:
        raise LipoclassError(
            f"{what}: {arr.shape[1]} classes, but the quantifiers were fitted with {n_classes}"
        )
    if not np.isfinite(arr).all():
        raise LipoclassError(f"{what}: posteriors contain NaN or infinite values")
    if (arr < 0).any() or (arr > 1).any():
        raise LipoclassError(f"{what}: posteriors outside [0, 1]")
    bad = np.abs(arr.sum(axis=1) - 1.0) > _ROW_SUM_TOL
    if bad.any():
        raise LipoclassError(
            f"{what}: {int(bad.sum())} row(s) do not sum to 1 (first: row {int(np.argmax(bad))})"
        )
    return arr


class Quantifiers:
    """QuaPy quantifiers fitted on out-of-fold posteriors; :meth:`estimate` gives shares."""

    def __init__(
        self,
        proba: np.ndarray,
        labels: np.ndarray,
        config: QuantifierConfig,
        groups: np.ndarray | None = None,
    ) -> None:
        # proba (n_cal, C) validated; labels (n_cal,) int in [0, C), every class present;
        # groups (n_cal,) micrograph (else sample) of each particle, or None
        self.config = config
        self.n_classes = int(proba.shape[1])
        self._n_cal = int(proba.shape[0])
        # EMQ's recalibration (BCTS) can fail to converge on some posteriors: EMQ then runs
        # on the uncalibrated posteriors (QuaPy's "backup") instead of losing every method
        self._fitted = {m: self._fit(m, proba, labels) for m in config.methods}
        # calibration replicates, adjustment refitted with QuaPy on each. Particles of one
        # sample share its imaging conditions, so their errors are not independent: with
        # MIN_GROUPS or more micrographs a replicate redraws whole ones (cluster bootstrap,
        # the rates then vary as they vary between samples); otherwise particles are redrawn
        # within each class (class counts are a design choice of the annotator, and no class
        # may vanish). A cluster replicate that lacks a class is redrawn (up to 20 times),
        # then falls back to the within-class draw.
        rng = np.random.default_rng([config.seed, 1])
        by_class = [np.flatnonzero(labels == k) for k in range(self.n_classes)]
        members = _group_members(groups)
        # one of RESAMPLING_UNITS
        self.cal_resampling = "micrographs" if members is not None else "particles"
        refit = [m for m in config.methods if m in ("acc", "pacc", "emq")]
        self._cal_reps: list[dict[str, Any]] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # calibrator overflow notes on odd replicates
            for _ in range(config.n_cal_boot):
                idx = _cluster_draw(members, labels, self.n_classes, rng)
                if idx is None:
                    idx = np.concatenate([rng.choice(ix, size=ix.size) for ix in by_class])
                p, y = proba[idx], labels[idx]
                self._cal_reps.append({m: self._fit(m, p, y) for m in refit})
        # per calibration micrograph, how its error rates deviate from the calibration set's
        # (borrowed by test samples of too few micrographs to redraw: "particles+rates")
        self._rate_effects = None if members is None else _rate_effects(proba, labels, members)
        self.class_counts = np.bincount(labels, minlength=self.n_classes)  # (C,)
        self.selection: Any = None  # MethodSelection once chosen (with_selection)

    def with_selection(self, selection: Any) -> Quantifiers:
        """These quantifiers with ``selection`` (a :class:`~lipoclass.quantify.MethodSelection`)
        attached and its chosen method as the recommended one (in place; returns self)."""
        from dataclasses import replace as _replace

        self.selection = selection
        self.config = _replace(self.config, recommended=selection.chosen)
        return self

    def _fit(self, name: str, proba: np.ndarray, labels: np.ndarray) -> Any:
        """QuaPy quantifier ``name`` fitted on (proba (n, C), labels (n,)) through the stub."""
        if name == "emq":
            proba = _floor(proba)
        q = _quapy_method(name, self.n_classes, self.config, (proba, labels))
        if name == "emq":
            q.on_calib_error = "backup"  # a failed recalibration falls back to raw posteriors
        try:
            # fit_classifier=False: QuaPy calls the stub's predict/predict_proba on ``proba``;
            # errstate: the recalibrator's line search may probe a zero temperature
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                q.fit(proba, labels)
        except RuntimeError as e:  # EMQ calibration failure
            raise LipoclassError(
                f"quantifier {name}: fitting on out-of-fold data failed: {e}"
            ) from e
        return q

    @property
    def n_cal(self) -> int:
        """Size of the calibration (out-of-fold) set the quantifiers were fitted on."""
        return self._n_cal

    def estimate(
        self, test_proba: Any, config: QuantifierConfig | None = None, groups: Any = None
    ) -> ShareEstimate:
        """Shares of the sample with posteriors ``test_proba`` (m, C), m >= 1, per method.

        ``config`` (default: the fitting config) may change ``n_boot``, ``level``, ``seed``
        and ``recommended`` at estimate time; its ``methods`` must be among the fitted ones
        (the calibration replicates are the ``n_cal_boot`` drawn at fit time). ``groups``
        (m,): the micrograph of each particle; with ``MIN_GROUPS`` or more the replicates
        redraw whole micrographs (the classifier's error rates differ between micrographs,
        so the sample's own rates are a draw too), otherwise particles. A sample without
        particles (m == 0) raises LipoclassError.
        """
        cfg = self.config if config is None else config
        missing = [m for m in cfg.methods if m not in self._fitted]
        if missing:
            raise LipoclassError(f"quantifiers: method(s) {missing} were not fitted")
        test = _check_proba(test_proba, "test posteriors", self.n_classes)
        m = test.shape[0]
        if m == 0:
            raise LipoclassError("test posteriors: the sample has no particles to quantify")
        share = {name: _aggregate(name, self._fitted[name], test) for name in cfg.methods}
        rng = np.random.default_rng([cfg.seed, 2])
        weights, unit, n_groups = replicate_weights(m, groups, cfg.n_boot, rng)  # (B, m)
        shift = None
        effects = getattr(self, "_rate_effects", None)  # (absent in older pickles)
        if unit == "particles" and n_groups >= 1 and effects is not None:
            # the sample's own micrographs' error rates are a draw as well: each replicate
            # adds the deviations of n_groups calibration micrographs, weighted by the
            # estimated shares (docs/deployment.md, Intervals)
            q_hat = next(share[k] for k in ("pacc", "acc", "pcc", "cc") if k in share)
            shift = _rate_shift(effects, q_hat, n_groups, cfg.n_boot, rng)
            unit = "particles+rates"
        n_shift = int(getattr(cfg, "shift_micrographs", 0))  # (absent in older pickles)
        if n_shift and effects is not None:
            # transfer: the sample's imaging as a whole may differ from the training data's
            # as much as the mean of n_shift training micrographs differs from all of them
            # (docs/deployment.md, Intervals); own generator: the rest stays as it was
            q_hat = next(share[k] for k in ("pacc", "acc", "pcc", "cc") if k in share)
            ds = _rate_shift(effects, q_hat, n_shift, cfg.n_boot,
                             np.random.default_rng([cfg.seed, 4]))  # fmt: skip
            shift = ds if shift is None else {k: shift[k] + ds[k] for k in shift}
        reps = self._bootstrap(test, weights, cfg, shift)  # name -> (n_boot, C)
        lo, hi = _intervals(share, reps, m, 1.0 - float(cfg.level))
        sd_cal, sd_test = _variance_split(reps, len(self._cal_reps))
        return ShareEstimate(
            share=share,
            lo=lo,
            hi=hi,
            n_particles=m,
            level=float(cfg.level),
            recommended=cfg.recommended,
            methods=cfg.methods,
            resampling=unit,
            n_groups=n_groups,
            sd_cal=sd_cal,
            sd_test=sd_test,
        )

    def _bootstrap(
        self,
        test: np.ndarray,
        weights: np.ndarray,
        cfg: QuantifierConfig,
        shift: dict[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Replicates (n_boot, C) per method: the test sample (m, C) reweighted by the
        replicate weights (B, m) (how often each particle was redrawn), the unadjusted shares
        moved by ``shift`` ("crisp", "soft": (B, C) each) when given, replicate b paired
        with calibration replicate ``b % n_cal_boot``; ACC/PACC replicates are unconstrained
        (may leave [0, 1]). Vectorised over replicates: the ACC/PACC systems are solved with
        numpy (QuaPy's exact solver, ``solve_adjustment(..., "inversion", "exact-cc")``), EMQ
        runs the EM update of QuaPy's ``EMQ.EM`` (accelerated, to convergence) on all
        replicates at once on the posteriors recalibrated once per calibration replicate."""
        b_total, c = weights.shape[0], test.shape[1]
        n_cal = len(self._cal_reps)
        cal_of = np.arange(b_total) % n_cal  # (B,)
        crisp = np.argmax(test, axis=1)  # (m,)
        reps: dict[str, np.ndarray] = {}
        cc, pcc = _weighted_means(weights, np.eye(c)[crisp]), _weighted_means(weights, test)
        if shift is not None:
            cc, pcc = cc + shift["crisp"], pcc + shift["soft"]
        if "cc" in cfg.methods:
            reps["cc"] = cc
        if "pcc" in cfg.methods:
            reps["pcc"] = pcc
        for name, unadj in (("acc", cc), ("pacc", pcc)):
            if name not in cfg.methods:
                continue
            out = np.empty((b_total, c))
            for k in range(n_cal):
                sel = cal_of == k
                rates = np.asarray(self._cal_reps[k][name].Pte_cond_estim_, dtype=np.float64)
                try:  # q = M p, unconstrained (exact-cc: rank-deficient M gives q itself)
                    out[sel] = np.linalg.solve(rates, unadj[sel].T).T
                except np.linalg.LinAlgError:
                    out[sel] = unadj[sel]
            reps[name] = out
        if "emq" in cfg.methods:
            reps["emq"] = self._emq_bootstrap(_floor(test), weights, cal_of)
        return reps

    def _emq_bootstrap(
        self, test: np.ndarray, weights: np.ndarray, cal_of: np.ndarray
    ) -> np.ndarray:
        """EMQ replicates (B, C): posteriors (m, C) recalibrated by each calibration
        replicate's EMQ, then weighted EM (replicate weights (B, m)) with that replicate's
        prior: all replicates in one accelerated EM run when their recalibrated posteriors
        (B, m, C) fit in ``_EM_GATHER`` numbers (small samples, e.g. the method selection's
        simulated ones), else one run per calibration replicate."""
        b_total, (m, c) = weights.shape[0], test.shape
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore")
            emq = [rep["emq"] for rep in self._cal_reps]

            def posteriors(q: Any) -> np.ndarray:  # (m, C) recalibrated by one replicate
                return np.asarray(q._calibrate_if_requested(test), dtype=np.float64)

            ptr = np.stack([np.asarray(q.train_prevalence, dtype=np.float64) for q in emq])
            if b_total * m * c <= _EM_GATHER:
                px = np.stack([posteriors(q) for q in emq])  # (K, m, C)
                return _em_batch(ptr[cal_of], px[cal_of], weights)
            out = np.empty((b_total, c))
            for k, q in enumerate(emq):
                sel = np.flatnonzero(cal_of == k)
                if sel.size:
                    out[sel] = _em_batch(ptr[k], posteriors(q), weights[sel])
        return out


def _variance_split(
    reps: dict[str, np.ndarray], n_cal: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per method, (sd due to the calibration set, sd due to the sample), each (C,), from
    replicates (B, C) where replicate b used calibration replicate ``b % n_cal``: one-way
    analysis of variance (within a calibration replicate only the sample varies; the variance
    of the replicate means, less the within part over the group size, is the calibration's)."""
    sd_cal: dict[str, np.ndarray] = {}
    sd_test: dict[str, np.ndarray] = {}
    for name, r in reps.items():
        b = r.shape[0]
        per = b // n_cal if n_cal else 0
        if name in SAMPLING_METHODS or per < 2:
            continue
        g = r[: per * n_cal].reshape(per, n_cal, -1)  # [j, k]: replicate j * n_cal + k
        within = g.var(axis=0, ddof=1).mean(axis=0)  # (C,)
        between = g.mean(axis=0).var(axis=0, ddof=1) - within / per  # (C,)
        sd_test[name] = np.sqrt(within)
        sd_cal[name] = np.sqrt(np.maximum(between, 0.0))
    return sd_cal, sd_test


def _intervals(
    share: dict[str, np.ndarray], reps: dict[str, np.ndarray], m: int, alpha: float
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Percentile intervals (lo, hi), each method -> (C,), from replicates (B, C) per method,
    with the boundary rule and the binomial floor (docs/deployment.md, Intervals)."""
    lo: dict[str, np.ndarray] = {}
    hi: dict[str, np.ndarray] = {}
    for name, point in share.items():
        a, b = np.quantile(reps[name], [alpha / 2, 1 - alpha / 2], axis=0)  # (C,) each
        # boundary rule: an interval of the unconstrained replicates that falls outside
        # [0, 1] is clipped, but keeps at least its half-width w next to the boundary
        w = (b - a) / 2
        a, b = np.minimum(a, 1 - w), np.maximum(b, w)
        # binomial floor: never narrower than the exact (Clopper-Pearson) interval of the
        # implied count, i.e. what a perfect classifier could claim from m particles; at a
        # count of 0 this is [0, 1 - (alpha/2)^(1/m)] (about 3.7/m), so no zero width
        cp_lo, cp_hi = _clopper_pearson(np.rint(point * m), m, alpha)
        a, b = np.minimum(a, cp_lo), np.maximum(b, cp_hi)
        lo[name] = np.minimum(np.clip(a, 0.0, 1.0), point)
        hi[name] = np.maximum(np.clip(b, 0.0, 1.0), point)
    return lo, hi


def sampling_estimate(
    test_proba: Any, config: QuantifierConfig, groups: Any = None
) -> ShareEstimate:
    """CC and PCC shares of a sample (m, C) without calibration data (e.g. an ONNX file
    alone): intervals from resampling the sample only (its micrographs when ``groups``
    names ``MIN_GROUPS`` or more), no QuaPy needed.

    Both are biased towards the training class shares when the sample's shares differ;
    ``config.recommended`` must be ``cc`` or ``pcc``."""
    test = _check_proba(test_proba, "test posteriors")
    m, c = test.shape
    if m == 0:
        raise LipoclassError("test posteriors: the sample has no particles to quantify")
    if config.recommended not in SAMPLING_METHODS:
        raise LipoclassError(
            f"without calibration data only {list(SAMPLING_METHODS)} are available, "
            f"not {config.recommended!r}"
        )
    crisp = np.argmax(test, axis=1)  # (m,)
    share = {"cc": np.bincount(crisp, minlength=c) / m, "pcc": test.mean(axis=0)}
    rng = np.random.default_rng([config.seed, 2])
    w8, unit, n_groups = replicate_weights(m, groups, config.n_boot, rng)  # (B, m)
    reps = {"cc": _weighted_means(w8, np.eye(c)[crisp]), "pcc": _weighted_means(w8, test)}
    lo, hi = _intervals(share, reps, m, 1.0 - float(config.level))
    return ShareEstimate(share, lo, hi, m, float(config.level), config.recommended,
                         SAMPLING_METHODS, unit, n_groups)  # fmt: skip


_EM_TOL = 1e-7  # max |change| of the priors between SQUAREM steps
_EM_MAX_ITER = 300  # SQUAREM steps (3 EM updates each)
_EM_GATHER = 500_000  # numbers of per-replicate posteriors (B, m, C) run as one batch


def _em_update(ptr: np.ndarray, px: np.ndarray, w8: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """One EM update (QuaPy's ``EMQ.EM`` step) per replicate: priors qs (b, C) -> (b, C) for
    posteriors px, (m, C) shared or (b, m, C) one set per replicate, obtained under the
    training prior ptr, (C,) or (b, C), the particles weighted by w8 (b, m) (bootstrap
    counts, each row summing to its replicate's size)."""
    w = qs / ptr  # (b, C)
    if px.ndim == 2:
        num = (w8 / (w @ px.T)) @ px  # (b, C); w @ px.T: sum_c px[i, c] w[b, c], (b, m)
    else:
        num = np.einsum("bm,bmc->bc", w8 / np.einsum("bmc,bc->bm", px, w), px)
    return w * num / w8.sum(axis=1, keepdims=True)  # (b, C)


def _em_batch(tr_prev: np.ndarray, px: np.ndarray, w8: np.ndarray) -> np.ndarray:
    """Saerens et al. (2002) EM prior adjustment, as QuaPy's ``EMQ.EM`` but run to
    convergence with SQUAREM acceleration (Varadhan & Roland 2008; the same fixed point, in
    ~10-30 steps instead of hundreds of plain EM updates): training prior (C,) or one per
    replicate (b, C), posteriors (m, C) or one set per replicate (b, m, C), particle weights
    of each replicate (b, m) -> estimated priors (b, C), each replicate stopping on its own."""
    b = w8.shape[0]
    ptr = np.broadcast_to(np.asarray(tr_prev, dtype=np.float64), (b, px.shape[-1]))
    zero = np.prod(ptr, axis=1) == 0  # as QuaPy: smooth a zero prior
    ptr = np.where(zero[:, None], (ptr + 1e-4) / (ptr + 1e-4).sum(axis=1, keepdims=True), ptr)
    qs = ptr.copy()  # (b, C)
    active = np.arange(b)
    pa, wa, xa = ptr, w8, px
    for _ in range(_EM_MAX_ITER):
        q0 = qs[active]
        q1 = _em_update(pa, xa, wa, q0)
        q2 = _em_update(pa, xa, wa, q1)
        r, v = q1 - q0, q2 - 2 * q1 + q0  # (a, C)
        nr, nv = np.linalg.norm(r, axis=1), np.linalg.norm(v, axis=1)
        alpha = np.where(nv > 0, -nr / np.where(nv > 0, nv, 1.0), -1.0)
        alpha = np.minimum(alpha, -1.0)[:, None]  # -1: plain EM (q2)
        # a step that would more than halve a prior is shortened (0 is absorbing for EM: a
        # clipped overshoot would pin a class at 0), at last to plain EM (alpha = -1: q2)
        for _ in range(4):
            qx = q0 - 2 * alpha * r + alpha**2 * v
            bad = (qx <= 0.5 * q2).any(axis=1)
            if not bad.any():
                break
            alpha[bad] = (alpha[bad] - 1.0) / 2
        qx[bad] = q2[bad]
        qx /= qx.sum(axis=1, keepdims=True)
        new = _em_update(pa, xa, wa, qx)  # stabilising EM update
        done = np.abs(new - q0).max(axis=1) < _EM_TOL
        qs[active] = new
        if done.any():  # shrink the batch only when a replicate has converged
            keep = ~done
            active, pa, wa = active[keep], pa[keep], wa[keep]
            xa = xa[keep] if xa.ndim == 3 else xa
        if active.size == 0:
            break
    return qs


def _weighted_means(w8: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per replicate, the weighted mean of the rows of ``values`` (m, C): (B, C)."""
    return (w8 @ values) / w8.sum(axis=1, keepdims=True)


def _rate_effects(
    proba: np.ndarray, labels: np.ndarray, members: list[np.ndarray]
) -> dict[str, np.ndarray]:
    """Per calibration micrograph g and true class k, the deviation of its mean prediction
    from the calibration set's: "soft" (mean posterior) and "crisp" (share of argmax), each
    (G, C, C) [g, true k, predicted], NaN where micrograph g has no particle of class k."""
    c = proba.shape[1]
    crisp = np.eye(c)[np.argmax(proba, axis=1)]  # (n, C)
    out = {}
    for key, val in (("soft", proba), ("crisp", crisp)):
        overall = np.stack([val[labels == k].mean(axis=0) for k in range(c)])  # (C, C)
        eff = np.full((len(members), c, c), np.nan)
        for g, ix in enumerate(members):
            for k in range(c):
                sel = ix[labels[ix] == k]
                if sel.size:
                    eff[g, k] = val[sel].mean(axis=0) - overall[k]
        out[key] = eff
    return out


def _rate_shift(
    effects: dict[str, np.ndarray],
    q_hat: np.ndarray,
    n_groups: int,
    n_boot: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Per replicate, how ``n_groups`` micrographs drawn from the calibration set would move
    a sample's unadjusted shares: sum_k q_hat[k] * (mean deviation of class k over the drawn
    micrographs that hold it; 0 where none does), "soft" and "crisp", (B, C) each.

    A micrograph's deviation is measured on its few particles, so it also carries their
    sampling noise, which the redrawn test particles carry already: slightly conservative."""
    out = {}
    picks = rng.integers(0, effects["soft"].shape[0], size=(n_boot, n_groups))  # (B, G)
    q = np.clip(np.asarray(q_hat, dtype=np.float64), 0.0, 1.0)  # (C,)
    for key, eff in effects.items():
        drawn = eff[picks]  # (B, G, C, C)
        have = ~np.isnan(drawn[..., 0])  # (B, G, C)
        total = np.nansum(drawn, axis=1)  # (B, C, C)
        mean = total / np.maximum(have.sum(axis=1), 1)[..., None]  # (B, C, C)
        out[key] = np.einsum("k,bkc->bc", q, mean)  # (B, C)
    return out


def replicate_weights(
    m: int, groups: Any, n_boot: int, rng: np.random.Generator
) -> tuple[np.ndarray, str, int]:
    """Bootstrap replicates of a sample of ``m`` particles as weights (n_boot, m): how often
    each particle is drawn. With ``groups`` (m,) naming ``MIN_GROUPS`` or more micrographs,
    whole micrographs are redrawn with replacement (every particle of a micrograph drawn k
    times gets weight k); otherwise particles are. Returns (weights, unit, distinct groups)."""
    if groups is not None:
        garr = np.asarray(groups, dtype=str).reshape(-1)
        if garr.shape != (m,):
            raise LipoclassError(f"test groups: expected {m} micrograph names, got {garr.size}")
        _, inv = np.unique(garr, return_inverse=True)
        g = int(inv.max()) + 1
        if g >= MIN_GROUPS:
            picks = rng.integers(0, g, size=(n_boot, g))  # (B, G) micrographs drawn
            counts = np.stack([np.bincount(r, minlength=g) for r in picks])  # (B, G)
            return counts[:, inv].astype(np.float64), "micrographs", g
        n_groups = g
    else:
        n_groups = 0
    idx = rng.integers(0, m, size=(n_boot, m))  # (B, m) particles drawn
    w8 = np.stack([np.bincount(r, minlength=m) for r in idx]).astype(np.float64)
    return w8, "particles", n_groups


def _clopper_pearson(x: np.ndarray, m: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact binomial interval (lo, hi), each (C,), for counts ``x`` (C,) out of ``m``."""
    from scipy.stats import beta

    lo = np.where(x > 0, beta.ppf(alpha / 2, np.maximum(x, 1), m - x + 1), 0.0)
    hi = np.where(x < m, beta.ppf(1 - alpha / 2, x + 1, np.maximum(m - x, 1)), 1.0)
    return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)


def _floor(p: np.ndarray) -> np.ndarray:
    """Posteriors (n, C) floored at a tiny value and renormalised (EMQ's calibrators take logs)."""
    f = np.maximum(p, _EPS)
    return f / f.sum(axis=1, keepdims=True)


def _aggregate(name: str, q: Any, test: np.ndarray) -> np.ndarray:
    """Point estimate (C,) of method ``name`` on posteriors ``test`` (m, C): QuaPy's, except
    that EMQ's EM (on QuaPy's recalibrated posteriors and prior) runs to convergence
    (:func:`_em_batch`), as in its bootstrap replicates."""
    if name == "emq":
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore")
            px = np.asarray(q._calibrate_if_requested(_floor(test)), dtype=np.float64)
            prior = np.asarray(q.train_prevalence, dtype=np.float64)
            est = _em_batch(prior, px, np.ones((1, len(px))))[0]
    elif name in ("acc", "pacc"):
        # QuaPy's constrained solution; when the exact solution of q = M p is already on the
        # simplex it *is* that minimiser (zero loss), so the optimiser is skipped
        unadj = q.cc.aggregate(np.argmax(test, axis=1)) if name == "acc" else q.pcc.aggregate(test)
        try:
            est = np.linalg.solve(np.asarray(q.Pte_cond_estim_, dtype=np.float64), unadj)
        except np.linalg.LinAlgError:
            est = np.full(test.shape[1], -1.0)
        if not (est >= 0).all():
            est = np.asarray(q.predict(test), dtype=np.float64)
    else:
        est = np.asarray(q.predict(test), dtype=np.float64)
    return est / est.sum()


def _group_members(groups: np.ndarray | None) -> list[np.ndarray] | None:
    """Positions of each sample's particles, or None when there are too few samples."""
    if groups is None:
        return None
    _, inv = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    members = [np.flatnonzero(inv == g) for g in range(int(inv.max()) + 1)] if inv.size else []
    return members if len(members) >= MIN_GROUPS else None


def _cluster_draw(
    members: list[np.ndarray] | None, labels: np.ndarray, n_classes: int, rng: np.random.Generator
) -> np.ndarray | None:
    """Particle positions of one cluster-bootstrap replicate (samples drawn with replacement)
    holding every class, or None (no samples given, or 20 draws lacked a class)."""
    if members is None:
        return None
    for _ in range(20):
        pick = rng.integers(0, len(members), size=len(members))
        idx = np.concatenate([members[g] for g in pick])
        if np.unique(labels[idx]).size == n_classes:
            return idx
    return None


def fit_quantifiers(
    oof_proba: Any,
    oof_labels: Any,
    config: QuantifierConfig | None = None,
    groups: Any = None,
) -> Quantifiers:
    """Fit the configured QuaPy quantifiers on out-of-fold posteriors (n, C) and labels (n,).

    No classifier is trained: ACC/PACC estimate their misclassification rates and EMQ its
    prior (and recalibration) from these data. Every class needs at least one example
    (an adjustment for a class never seen cannot be estimated). ``groups`` (n,): the sample
    (micrograph, grid) of each particle; with ``MIN_GROUPS`` or more, the calibration
    replicates of the intervals redraw whole samples (``Quantifiers.cal_resampling``).
    """
    cfg = config if config is not None else QuantifierConfig()
    proba = _check_proba(oof_proba, "out-of-fold posteriors")
    labels = np.asarray(oof_labels)
    if labels.shape != (proba.shape[0],):
        raise LipoclassError(
            f"out-of-fold labels: expected shape ({proba.shape[0]},), got {labels.shape}"
        )
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise LipoclassError("out-of-fold labels: expected integer class indices")
    labels = labels.astype(np.int64)
    n_classes = proba.shape[1]
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise LipoclassError(f"out-of-fold labels: class indices must be in [0, {n_classes})")
    counts = np.bincount(labels, minlength=n_classes)
    if (counts == 0).any():
        raise LipoclassError(
            f"out-of-fold labels: class(es) {np.flatnonzero(counts == 0).tolist()} have no "
            "examples; every class needs at least one to fit the adjustment"
        )
    grp = None
    if groups is not None:
        grp = np.asarray(groups, dtype=object)
        if grp.shape != labels.shape:
            raise LipoclassError(
                f"out-of-fold groups: expected shape {labels.shape}, got {grp.shape}"
            )
    return Quantifiers(proba, labels, cfg, grp)


def save_quantifiers(q: Quantifiers, path: str | os.PathLike[str]) -> Path:
    """Write fitted quantifiers (with their calibration replicates) to ``path`` (a pickle made
    with cloudpickle, a dependency of joblib: EMQ's recalibration is a closure; written to a temp
    name and renamed). Only load files you trust (pickle)."""
    import cloudpickle  # a dependency of joblib

    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        with tmp.open("wb") as fh:
            cloudpickle.dump(q, fh)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def load_quantifiers(path: str | os.PathLike[str], n_classes: int | None = None) -> Quantifiers:
    """Quantifiers written by :func:`save_quantifiers`; LipoclassError (naming the file) when
    unreadable, not quantifiers, or fitted for another number of classes."""
    import pickle

    import cloudpickle  # noqa: F401  (a dependency of joblib; its reconstructors, on load)

    p = Path(path)
    try:
        with p.open("rb") as fh:
            q = pickle.load(fh)
    except Exception as exc:  # pickle/quapy version errors of many kinds
        raise LipoclassError(f"{p}: cannot load the quantifiers ({exc})") from None
    if not isinstance(q, Quantifiers):
        raise LipoclassError(f"{p}: holds a {type(q).__name__}, not fitted quantifiers")
    if n_classes is not None and q.n_classes != n_classes:
        raise LipoclassError(f"{p}: fitted for {q.n_classes} classes, the model has {n_classes}")
    return q
