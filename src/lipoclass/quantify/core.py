"""Class shares of a sample (quantification) from a cross-fitted model's out-of-fold posteriors.

The point estimators are QuaPy's aggregative quantifiers (CC, PCC, ACC, PACC, EMQ), fitted on
precomputed posteriors through a stub "classifier" that returns them unchanged, so nothing is
trained here. The 95 % intervals come from a joint bootstrap done here with a seeded
``numpy.random.Generator`` (QuaPy's own ``AggregativeBootstrap`` uses the global RNG and joblib):
every replicate resamples the calibration (out-of-fold) set within each class, refits the
adjustment with QuaPy, resamples the test sample, and re-estimates. See docs (quantification).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from lipoclass.errors import LipoclassError

__all__ = [
    "EMQ_CALIBRATIONS",
    "METHODS",
    "QuantifierConfig",
    "Quantifiers",
    "ShareEstimate",
    "fit_quantifiers",
]

METHODS: Final = ("cc", "pcc", "acc", "pacc", "emq")
"""Quantification methods, in the order they are reported."""

EMQ_CALIBRATIONS: Final = (None, "bcts", "ts", "vs", "nbvs")
"""Recalibrations QuaPy's EMQ offers (Alexandari et al. 2020); ``None``: plain EM (Saerens 2002)."""

_ROW_SUM_TOL = 1e-3  # |row sum - 1| allowed in posteriors
_EPS = 1e-12  # floor on posteriors fed to EMQ (its calibrators take logs)


@dataclass(frozen=True)
class QuantifierConfig:
    """Which methods to fit and how to build their intervals.

    ``n_boot`` bootstrap replicates give the ``level`` percentile intervals; each pairs a
    resampled test sample with one of ``n_cal_boot`` resampled calibration sets (drawn and
    fitted once, in :func:`fit_quantifiers`). ``seed`` seeds both (the same sample always gets
    the same interval). ``recommended`` is the method a report shows first; ``emq_calibration``
    is the recalibration EMQ fits on the out-of-fold posteriors (``None``: plain EM).
    """

    methods: tuple[str, ...] = METHODS
    level: float = 0.95
    n_boot: int = 200
    n_cal_boot: int = 40
    seed: int = 0
    recommended: str = "acc"  # default from the simulation study (docs); re-check on real models
    emq_calibration: str | None = "bcts"

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
        if self.recommended not in methods:
            raise ValueError(f"recommended {self.recommended!r} is not in methods {list(methods)}")
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

    @property
    def best(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(share, lo, hi) of the recommended method, each (C,)."""
        m = self.recommended
        return self.share[m], self.lo[m], self.hi[m]


@functools.cache
def _stub_class() -> type:
    """sklearn-compatible stub, built lazily (keeps ``import lipoclass.quantify`` light)."""
    from sklearn.base import BaseEstimator, ClassifierMixin

    class _Posteriors(ClassifierMixin, BaseEstimator):  # type: ignore[misc, valid-type]
        """An already "fitted" classifier whose input *is* its posteriors (n, C)."""

        def __init__(self, n_classes: int = 2) -> None:
            self.n_classes = n_classes
            self.classes_ = np.arange(n_classes)

        def __sklearn_is_fitted__(self) -> bool:
            return True

        def fit(self, X: np.ndarray, y: np.ndarray) -> _Posteriors:
            return self

        def predict_proba(self, X: np.ndarray) -> np.ndarray:
            return X

        def predict(self, X: np.ndarray) -> np.ndarray:
            return np.argmax(X, axis=1)

    return _Posteriors


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

    def __init__(self, proba: np.ndarray, labels: np.ndarray, config: QuantifierConfig) -> None:
        # proba (n_cal, C) validated; labels (n_cal,) int in [0, C), every class present
        self.config = config
        self.n_classes = int(proba.shape[1])
        self._fitted = {m: self._fit(m, proba, labels) for m in config.methods}
        # calibration replicates: resampled within each class (class counts are a design
        # choice of the annotator, and no class may vanish), adjustment refitted with QuaPy
        rng = np.random.default_rng([config.seed, 1])
        by_class = [np.flatnonzero(labels == k) for k in range(self.n_classes)]
        refit = [m for m in config.methods if m in ("acc", "pacc", "emq")]
        self._cal_reps: list[dict[str, Any]] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # calibrator overflow notes on odd replicates
            for _ in range(config.n_cal_boot):
                idx = np.concatenate([rng.choice(ix, size=ix.size) for ix in by_class])
                p, y = proba[idx], labels[idx]
                self._cal_reps.append({m: self._fit(m, p, y, backup=True) for m in refit})

    def _fit(self, name: str, proba: np.ndarray, labels: np.ndarray, backup: bool = False) -> Any:
        """QuaPy quantifier ``name`` fitted on (proba (n, C), labels (n,)) through the stub."""
        if name == "emq":
            proba = _floor(proba)
        q = _quapy_method(name, self.n_classes, self.config, (proba, labels))
        if backup and name == "emq":
            q.on_calib_error = "backup"  # a replicate whose recalibration fails uses raw posteriors
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

    def estimate(self, test_proba: Any) -> ShareEstimate:
        """Shares of the sample with posteriors ``test_proba`` (m, C), m >= 1, per method.

        A sample without particles (m == 0) raises LipoclassError.
        """
        cfg = self.config
        test = _check_proba(test_proba, "test posteriors", self.n_classes)
        m = test.shape[0]
        if m == 0:
            raise LipoclassError("test posteriors: the sample has no particles to quantify")
        share = {name: _aggregate(name, self._fitted[name], test) for name in cfg.methods}
        reps = self._bootstrap(test)  # name -> (n_boot, C)
        alpha = 1.0 - float(cfg.level)
        lo: dict[str, np.ndarray] = {}
        hi: dict[str, np.ndarray] = {}
        for name in cfg.methods:
            a, b = np.quantile(reps[name], [alpha / 2, 1 - alpha / 2], axis=0)  # (C,) each
            # boundary rule: an interval of the unconstrained replicates that falls outside
            # [0, 1] is clipped, but keeps at least its half-width w next to the boundary
            w = (b - a) / 2
            a, b = np.minimum(a, 1 - w), np.maximum(b, w)
            # binomial floor: never narrower than the exact (Clopper-Pearson) interval of the
            # implied count, i.e. what a perfect classifier could claim from m particles; at a
            # count of 0 this is [0, 1 - (alpha/2)^(1/m)] (about 3.7/m), so no zero width
            cp_lo, cp_hi = _clopper_pearson(np.rint(share[name] * m), m, alpha)
            a, b = np.minimum(a, cp_lo), np.maximum(b, cp_hi)
            lo[name] = np.minimum(np.clip(a, 0.0, 1.0), share[name])
            hi[name] = np.maximum(np.clip(b, 0.0, 1.0), share[name])
        return ShareEstimate(
            share=share,
            lo=lo,
            hi=hi,
            n_particles=m,
            level=float(cfg.level),
            recommended=cfg.recommended,
            methods=cfg.methods,
        )

    def _bootstrap(self, test: np.ndarray) -> dict[str, np.ndarray]:
        """Replicates (n_boot, C) per method: test sample (m, C) resampled, paired in turn with
        the calibration replicates; ACC/PACC replicates are unconstrained (may leave [0, 1])."""
        from quapy.method.aggregative import ACC

        cfg = self.config
        rng = np.random.default_rng([cfg.seed, 2])
        m = test.shape[0]
        reps = {name: np.empty((cfg.n_boot, self.n_classes)) for name in cfg.methods}
        test_emq = _floor(test) if "emq" in cfg.methods else test  # (m, C)
        crisp = np.argmax(test, axis=1)  # (m,)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EM max-iteration notes on odd replicates
            for b in range(cfg.n_boot):
                cal = self._cal_reps[b % len(self._cal_reps)]
                t_idx = rng.integers(0, m, size=m)  # (m,)
                for name in cfg.methods:
                    if name == "cc":
                        est = self._fitted["cc"].aggregate(crisp[t_idx])
                    elif name == "pcc":
                        est = self._fitted["pcc"].aggregate(test[t_idx])
                    elif name == "emq":
                        est = cal["emq"].aggregate(test_emq[t_idx])
                    else:
                        # unconstrained solution of q = M p (QuaPy's exact solver, no clipping)
                        q = cal[name]
                        unadj = (
                            q.cc.aggregate(crisp[t_idx])
                            if name == "acc"
                            else q.pcc.aggregate(test[t_idx])
                        )
                        est = ACC.solve_adjustment(
                            class_conditional_rates=q.Pte_cond_estim_,
                            unadjusted_counts=unadj,
                            method="inversion",
                            solver="exact-cc",
                        )
                    reps[name][b] = est
        return reps


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
    """QuaPy point estimate (C,) of method ``name`` on posteriors ``test`` (m, C)."""
    x = _floor(test) if name == "emq" else test
    est = np.asarray(q.predict(x), dtype=np.float64)
    return est / est.sum()


def fit_quantifiers(
    oof_proba: Any, oof_labels: Any, config: QuantifierConfig | None = None
) -> Quantifiers:
    """Fit the configured QuaPy quantifiers on out-of-fold posteriors (n, C) and labels (n,).

    No classifier is trained: ACC/PACC estimate their misclassification rates and EMQ its
    prior (and recalibration) from these data. Every class needs at least one example
    (an adjustment for a class never seen cannot be estimated).
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
    return Quantifiers(proba, labels, cfg)
