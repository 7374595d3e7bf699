"""The SVM baseline on handcrafted features (thesis sections 4.1 and 8.4).

Two layers:

* ``SVMClassifier`` is a plain scikit-learn classifier on a feature matrix: an
  imbalanced-learn ``Pipeline(StandardScaler -> [resampler] -> SVC(rbf))`` whose C and gamma
  are chosen by an inner stratified k-fold grid search on the data given to ``fit`` only
  (the training part of an outer fold), then refitted on all of it with sigmoid-calibrated
  probabilities (``CalibratedClassifierCV(ensemble=False)``, the successor of
  ``SVC(probability=True)``). libsvm always trains one-vs-one classifiers (as LIBSVM in the
  thesis); the calibrator needs one score per class, so the decision shape is "ovr".
* ``SVMEstimator`` adapts it to the particle-index estimator protocol of
  ``lipoclass.evaluate``: it looks up each particle's features (computed by
  ``lipoclass.features``, a features CSV, or particles.csv columns) and reports which
  particles have none.

Choices where the thesis is silent are in docs/evaluation.md.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from imblearn.over_sampling import SMOTE, RandomOverSampler
from imblearn.pipeline import Pipeline
from imblearn.under_sampling import RandomUnderSampler
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from lipoclass.choices import BALANCES_SVM, FEATURE_SETS, VAL_METRICS
from lipoclass.errors import LipoclassError

__all__ = [
    "FEATURE_SETS",
    "SVM_BALANCES",
    "SVMClassifier",
    "SVMConfig",
    "SVMEstimator",
]

SVM_BALANCES = BALANCES_SVM
SCORINGS = VAL_METRICS
#: scikit-learn's scorer name of each score (``macro_f1`` is sklearn's ``f1_macro``)
_SKLEARN_SCORER = {"balanced_accuracy": "balanced_accuracy", "macro_f1": "f1_macro"}


@dataclass(frozen=True)
class SVMConfig:
    """SVM baseline settings.

    ``gamma_grid`` holds multiples of 1/n_features, i.e. of scikit-learn's ``gamma="scale"``
    on standardised features (1.0 == "scale"). ``search_max_per_class`` caps each class in
    the inner C/gamma search (random subset of the training part; ``None`` = all); the final
    model always uses the whole training part. ``importance_*`` control the permutation
    importance on held-out folds (repeats, and at most this many held-out particles per
    class, drawn at random; balanced accuracy does not depend on the class mix).
    """

    features: Literal["vironova", "all", "precomputed"] = "vironova"
    balance: Literal["weights", "none", "oversample", "undersample", "smote"] = "weights"
    C_grid: tuple[float, ...] = (1.0, 10.0, 100.0)
    gamma_grid: tuple[float, ...] = (0.25, 1.0, 4.0)
    inner_folds: int = 3
    scoring: Literal["balanced_accuracy", "macro_f1"] = "balanced_accuracy"
    search_max_per_class: int | None = 1000
    calibration_folds: int = 2
    importance: bool = True
    importance_repeats: int = 2
    importance_max_per_class: int = 100
    features_csv: str | None = None
    n_jobs: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "C_grid", tuple(float(c) for c in self.C_grid))
        object.__setattr__(self, "gamma_grid", tuple(float(g) for g in self.gamma_grid))
        if self.features not in FEATURE_SETS:
            raise ValueError(
                f"features must be one of {', '.join(FEATURE_SETS)}, got {self.features!r}"
            )
        if self.balance not in SVM_BALANCES:
            raise ValueError(
                f"balance must be one of {', '.join(SVM_BALANCES)}, got {self.balance!r}"
            )
        if not self.C_grid or min(self.C_grid) <= 0:
            raise ValueError(f"C_grid must be non-empty and positive, got {self.C_grid}")
        if not self.gamma_grid or min(self.gamma_grid) <= 0:
            raise ValueError(f"gamma_grid must be non-empty and positive, got {self.gamma_grid}")
        if int(self.inner_folds) < 2:
            raise ValueError(f"inner_folds must be at least 2, got {self.inner_folds}")
        if self.scoring == "f1_macro":  # the name model folders before issue 19 recorded
            object.__setattr__(self, "scoring", "macro_f1")
        if self.scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {', '.join(SCORINGS)}, got {self.scoring!r}")
        if self.search_max_per_class is not None and int(self.search_max_per_class) < 2:
            raise ValueError(
                f"search_max_per_class must be at least 2 or None, got {self.search_max_per_class}"
            )
        if int(self.calibration_folds) < 2:
            raise ValueError(f"calibration_folds must be at least 2, got {self.calibration_folds}")
        if int(self.importance_repeats) < 1:
            raise ValueError(f"importance_repeats must be >= 1, got {self.importance_repeats}")
        if int(self.importance_max_per_class) < 1:
            raise ValueError(
                f"importance_max_per_class must be >= 1, got {self.importance_max_per_class}"
            )
        if int(self.n_jobs) == 0:
            raise ValueError("n_jobs must not be 0")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["C_grid"] = list(self.C_grid)
        d["gamma_grid"] = list(self.gamma_grid)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SVMConfig:
        d = dict(d)
        for k in ("C_grid", "gamma_grid"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


# --------------------------------------------------------------------------- classifier


class _SoftmaxSVC(SVC):
    """SVC whose probabilities are a softmax of the one-vs-rest decision scores; only used
    when a class has too few members for calibration folds (tiny data)."""

    def predict_proba(self, X: Any) -> np.ndarray:  # type: ignore[override]
        d = self.decision_function(X)  # (n, C) for C > 2, (n,) for 2 classes
        if d.ndim == 1:
            d = np.stack([-d, d], axis=1)
        e = np.exp(d - d.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def _sampler(balance: str, min_count: int, seed: int) -> Any:
    """The resampling step for ``balance`` given the smallest class size it will see."""
    if balance == "oversample":
        return RandomOverSampler(random_state=seed)
    if balance == "undersample":
        return RandomUnderSampler(random_state=seed)
    if balance == "smote":
        k = min(5, min_count - 1)
        if k < 1:
            warnings.warn(
                f"SMOTE needs 2 members of every class, smallest has {min_count}; "
                "using random oversampling instead",
                stacklevel=3,
            )
            return RandomOverSampler(random_state=seed)
        return SMOTE(k_neighbors=k, random_state=seed)
    return "passthrough"


class SVMClassifier(ClassifierMixin, BaseEstimator):
    """RBF SVM with inner-CV C/gamma search and calibrated probabilities (sklearn contract).

    ``fit(X, y)`` searches ``C_grid`` x ``gamma_grid`` (gamma as multiples of 1/n_features)
    by ``inner_folds``-fold stratified CV on (a per-class capped subset of) X only, scoring
    ``scoring``; then refits scaler, resampler and SVC on all of X. ``best_params_`` holds
    the chosen C and gamma.
    """

    def __init__(
        self,
        balance: str = "weights",
        C_grid: Sequence[float] = (1.0, 10.0, 100.0),
        gamma_grid: Sequence[float] = (0.25, 1.0, 4.0),
        inner_folds: int = 3,
        scoring: str = "balanced_accuracy",
        search_max_per_class: int | None = 1000,
        calibration_folds: int = 2,
        n_jobs: int = 1,
        random_state: int = 0,
    ) -> None:
        self.balance = balance
        self.C_grid = C_grid
        self.gamma_grid = gamma_grid
        self.inner_folds = inner_folds
        self.scoring = scoring
        self.search_max_per_class = search_max_per_class
        self.calibration_folds = calibration_folds
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _pipeline(self, svc: Any, min_count: int) -> Pipeline:
        return Pipeline(
            [
                ("scale", StandardScaler()),
                ("sample", _sampler(self.balance, min_count, int(self.random_state))),
                ("svc", svc),
            ]
        )

    def _svc(self, C: float, gamma: float, class_weight: str | None) -> SVC:
        return SVC(
            kernel="rbf", C=C, gamma=gamma, class_weight=class_weight, cache_size=500,
            random_state=int(self.random_state),
        )  # fmt: skip

    def fit(self, X: Any, y: Any) -> SVMClassifier:
        """Search C/gamma on X (inner CV) and fit the final calibrated pipeline on X."""
        # scikit-learn estimators validate in fit; the one check of ``balance`` is SVMConfig's
        SVMConfig(balance=self.balance)  # type: ignore[arg-type]
        X, y = validate_data(self, X, y)  # X (n, F) float64
        check_classification_targets(y)
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"SVMClassifier needs at least 2 classes in y, got {len(self.classes_)} class"
            )
        seed = int(self.random_state)
        rng = np.random.default_rng(seed)
        n_feat = X.shape[1]
        gammas = [float(g) / n_feat for g in self.gamma_grid]
        cw = "balanced" if self.balance == "weights" else None

        # inner search rows: every class capped at search_max_per_class (training part only)
        rows = np.arange(len(y_enc))
        cap = self.search_max_per_class
        if cap is not None:
            keep = []
            for k in range(len(self.classes_)):
                members = rows[y_enc == k]
                if len(members) > cap:
                    members = np.sort(rng.choice(members, size=int(cap), replace=False))
                keep.append(members)
            rows = np.sort(np.concatenate(keep))
        counts = np.bincount(y_enc[rows], minlength=len(self.classes_))
        inner = min(int(self.inner_folds), int(counts.min()))
        combos = len(self.C_grid) * len(gammas)
        if combos > 1 and inner >= 2:
            min_inner_train = int(counts.min()) * (inner - 1) // inner
            search = GridSearchCV(
                self._pipeline(self._svc(1.0, gammas[0], cw), min_inner_train),
                {"svc__C": [float(c) for c in self.C_grid], "svc__gamma": gammas},
                scoring=_SKLEARN_SCORER.get(self.scoring, self.scoring),
                cv=StratifiedKFold(inner, shuffle=True, random_state=seed),
                refit=False,
                n_jobs=self.n_jobs,
                error_score="raise",
            )
            search.fit(X[rows], y_enc[rows])
            best = search.best_params_
            self.best_params_ = {"C": float(best["svc__C"]), "gamma": float(best["svc__gamma"])}
            self.search_score_ = float(search.best_score_)
        else:  # nothing to choose, or too few members for inner folds: middle of the grid
            grid_c = sorted(self.C_grid)
            grid_g = sorted(gammas)
            self.best_params_ = {
                "C": float(grid_c[len(grid_c) // 2]),
                "gamma": float(grid_g[len(grid_g) // 2]),
            }
            self.search_score_ = float("nan")

        # final model on all of X; class weights enter as sample weights so that the SVC and
        # the sigmoid calibrators both see the balanced problem (argmax = balanced decision)
        full_counts = np.bincount(y_enc, minlength=len(self.classes_))
        n_cal = min(int(self.calibration_folds), int(full_counts.min()))
        C, gamma = self.best_params_["C"], self.best_params_["gamma"]
        fit_params: dict[str, Any] = {}
        svc: Any
        if n_cal >= 2:
            svc = CalibratedClassifierCV(
                self._svc(C, gamma, None), method="sigmoid", ensemble=False,
                cv=StratifiedKFold(n_cal, shuffle=True, random_state=seed),
            )  # fmt: skip
            if cw == "balanced":
                fit_params["svc__sample_weight"] = compute_sample_weight("balanced", y_enc)
        else:
            svc = _SoftmaxSVC(kernel="rbf", C=C, gamma=gamma, class_weight=cw, random_state=seed)
        self.calibrated_ = n_cal >= 2
        self.pipeline_ = self._pipeline(svc, int(full_counts.min())).fit(X, y_enc, **fit_params)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, n_classes) probabilities, columns in ``classes_`` order."""
        check_is_fitted(self, "pipeline_")
        X = validate_data(self, X, reset=False)
        proba = np.asarray(self.pipeline_.predict_proba(X), dtype=np.float64)
        out = np.zeros((X.shape[0], len(self.classes_)), dtype=np.float64)
        out[:, self.pipeline_.classes_] = proba  # classes the final fit saw (all, normally)
        return out

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class per row."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


# --------------------------------------------------------------------------- features


@dataclass(frozen=True)
class _Features:
    """Feature rows for a dataset: ``row[i]`` is the row of particle i (-1 = none)."""

    names: tuple[str, ...]
    values: np.ndarray  # (M, F) float64
    row: np.ndarray  # (N,) int64
    failed: dict[str, str] = field(default_factory=dict)


_CACHE: dict[tuple[Any, ...], _Features] = {}
_CACHE_MAX = 4


def _cache_key(dataset: Any, cfg: SVMConfig) -> tuple[Any, ...]:
    ids = "\n".join(p.id for p in dataset.particles).encode()
    key: tuple[Any, ...] = (
        str(Path(dataset.root).resolve()), hashlib.sha1(ids).hexdigest(), cfg.features,
    )  # fmt: skip
    if cfg.features_csv is not None:
        p = Path(cfg.features_csv)
        st = p.stat() if p.exists() else None
        key += (str(p.resolve()), st.st_mtime_ns if st else 0, st.st_size if st else 0)
    return key


def _from_table(dataset: Any, table: Any, what: str) -> _Features:
    """Map a ``lipoclass.features.FeatureTable`` onto the dataset's particle positions."""
    n = len(dataset.particles)
    row = np.full(n, -1, dtype=np.int64)
    index = np.asarray(table.index, dtype=np.int64)
    row[index] = np.arange(len(index))
    values = np.asarray(table.values, dtype=np.float64)
    failed = {str(pid): str(reason) for pid, reason in (table.failed or [])}
    bad = ~np.isfinite(values).all(axis=1)
    for r in np.flatnonzero(bad):
        failed.setdefault(str(table.ids[r]), f"non-finite feature value in {what}")
        row[index[r]] = -1
    for i in np.flatnonzero(row < 0):
        failed.setdefault(dataset.particles[i].id, f"no features in {what}")
    return _Features(tuple(table.names), values, row, failed)


def _load_features(dataset: Any, cfg: SVMConfig) -> _Features:
    key = _cache_key(dataset, cfg)
    if key in _CACHE:
        return _CACHE[key]
    if cfg.features_csv is not None:
        from lipoclass.features import FeatureTable

        table = FeatureTable.from_csv(Path(cfg.features_csv), dataset)
        if cfg.features != "precomputed":
            table = table.select(cfg.features)
        feats = _from_table(dataset, table, str(cfg.features_csv))
        if not (feats.row >= 0).any():
            raise LipoclassError(
                f"{cfg.features_csv}: features CSV matches no particle id of {dataset.root}"
            )
    elif cfg.features == "precomputed":
        cols = tuple(dataset.feature_columns)
        if not cols:
            raise LipoclassError(
                f"{Path(dataset.root) / 'particles.csv'}: --features precomputed needs numeric "
                "feature columns in particles.csv, found none"
            )
        values = dataset.feature_matrix(cols)  # (N, F); loader guarantees finite values
        feats = _Features(cols, values, np.arange(len(values), dtype=np.int64), {})
    else:
        from lipoclass.features import compute_features

        table = compute_features(dataset).select(cfg.features)
        feats = _from_table(dataset, table, "computed features")
    if not feats.names:
        raise LipoclassError(f"{dataset.root}: feature set {cfg.features!r} has no columns")
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = feats
    return feats


# --------------------------------------------------------------------------- estimator


class SVMEstimator:
    """Particle-index estimator (``lipoclass.evaluate`` protocol) around ``SVMClassifier``."""

    def __init__(self, config: SVMConfig, seed: int, classes: Sequence[str]) -> None:
        self.config = config
        self.seed = int(seed)
        self.classes: tuple[str, ...] = tuple(classes)
        self.clf_: SVMClassifier | None = None
        self.feature_names: tuple[str, ...] = ()

    def _features(self, dataset: Any) -> _Features:
        return _load_features(dataset, self.config)

    def _rows(self, dataset: Any, idx: np.ndarray) -> np.ndarray:
        feats = self._features(dataset)
        rows = feats.row[np.asarray(idx, dtype=np.int64)]
        if (rows < 0).any():
            pid = dataset.particles[int(np.asarray(idx)[np.argmax(rows < 0)])].id
            raise LipoclassError(f"particle {pid}: has no features ({feats.failed.get(pid)})")
        return feats.values[rows]  # (len(idx), F)

    def usable(self, dataset: Any) -> np.ndarray:
        """(N,) bool: particles with a complete feature row."""
        feats = self._features(dataset)
        self.feature_names = feats.names
        return feats.row >= 0

    def unusable_reasons(self, dataset: Any) -> dict[str, str]:
        """id -> why the particle has no features."""
        return dict(self._features(dataset).failed)

    def fit(self, dataset: Any, train_idx: np.ndarray) -> SVMEstimator:
        """Fit scaler, resampler, C/gamma search and SVC on ``train_idx`` only."""
        train_idx = np.asarray(train_idx, dtype=np.int64)
        X = self._rows(dataset, train_idx)
        y = np.asarray(dataset.labels)[train_idx]
        if (y < 0).any():
            raise LipoclassError("SVM training particles must all be labelled")
        cfg = self.config
        self.feature_names = self._features(dataset).names
        if not self.classes:
            self.classes = tuple(dataset.classes)
        self.clf_ = SVMClassifier(
            balance=cfg.balance,
            C_grid=cfg.C_grid,
            gamma_grid=cfg.gamma_grid,
            inner_folds=cfg.inner_folds,
            scoring=cfg.scoring,
            search_max_per_class=cfg.search_max_per_class,
            calibration_folds=cfg.calibration_folds,
            n_jobs=cfg.n_jobs,
            random_state=self.seed,
        ).fit(X, y)
        return self

    def predict_proba(self, dataset: Any, idx: np.ndarray) -> np.ndarray:
        """(len(idx), C) probabilities in dataset class order (0 for a class absent in fit)."""
        if self.clf_ is None:
            raise RuntimeError("fit() first")
        return self.predict_proba_values(self._rows(dataset, np.asarray(idx, dtype=np.int64)))

    def predict_proba_values(self, X: np.ndarray) -> np.ndarray:
        """(n, C) probabilities for feature rows X (n, F) in ``feature_names`` order (e.g. the
        fallback features ``predict`` computes without a particle's mask)."""
        if self.clf_ is None:
            raise RuntimeError("fit() first")
        out = np.zeros((len(X), len(self.classes)), dtype=np.float64)
        if len(X):
            out[:, self.clf_.classes_] = self.clf_.predict_proba(np.asarray(X))
        return out

    def fit_info(self) -> dict[str, Any]:
        """What the inner search chose (for config.json)."""
        if self.clf_ is None:
            return {}
        return {
            **self.clf_.best_params_,
            "inner_score": self.clf_.search_score_,
            "calibrated": self.clf_.calibrated_,
        }

    def importance(self, dataset: Any, idx: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
        """Permutation importance (balanced-accuracy drop) on held-out particles ``idx``:
        (feature names, (F,) mean drop over ``importance_repeats``)."""
        from sklearn.inspection import permutation_importance

        if self.clf_ is None:
            raise RuntimeError("fit() first")
        idx = np.asarray(idx, dtype=np.int64)
        y = np.asarray(dataset.labels)[idx]
        rng = np.random.default_rng(self.seed)
        cap = int(self.config.importance_max_per_class)
        keep = []
        for k in np.unique(y):  # at most `cap` held-out particles per class
            members = np.flatnonzero(y == k)
            keep.append(rng.choice(members, size=cap, replace=False) if len(members) > cap
                        else members)  # fmt: skip
        rows = np.sort(np.concatenate(keep))
        X = self._rows(dataset, idx[rows])
        res = permutation_importance(
            self.clf_, X, y[rows], scoring="balanced_accuracy",
            n_repeats=int(self.config.importance_repeats), random_state=self.seed, n_jobs=1,
        )  # fmt: skip
        return self._features(dataset).names, np.asarray(res.importances_mean, dtype=np.float64)
