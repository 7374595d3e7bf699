"""SVM baseline: config validation, scikit-learn contract, no leakage into scaling /
resampling / the C-gamma search, permutation importance."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from sklearn.base import clone

from lipoclass.errors import LipoclassError
from lipoclass.models import svm as S

CLASSES = ("a", "b", "c")


def feature_dataset(
    root: Path, counts: tuple[int, ...] = (30, 12, 8), *, sep: float = 3.0, seed: int = 0
) -> Any:
    """Tiny dataset whose particles.csv holds features: ``signal`` (class mean * sep),
    ``noise`` and ``uid`` (the particle number, so a spy can tell rows apart)."""
    from lipoclass.data import DatasetWriter, load_dataset

    rng = np.random.default_rng(seed)
    out = root / f"feat-{seed}-{'-'.join(map(str, counts))}"
    i = 0
    with DatasetWriter(out, name="feat", classes=list(CLASSES[: len(counts)])) as w:
        for k, n in enumerate(counts):
            for _ in range(n):
                img = rng.integers(0, 255, size=(6, 6)).astype(np.uint8)
                feats = {
                    "signal": k * sep + rng.normal(),
                    "noise": rng.normal(),
                    "uid": float(i),
                }
                w.add(f"q{i:03d}", image=img, label=CLASSES[k], sample=f"s{i % 6}", features=feats)
                i += 1
    return load_dataset(out)


def blobs(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=[0.6, 0.3, 0.1])
    X = rng.normal(size=(n, 4))
    X[:, 0] += 3.0 * y
    return X, y


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="balance"):
        S.SVMConfig(balance="focal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="features"):
        S.SVMConfig(features="pixels")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="C_grid"):
        S.SVMConfig(C_grid=())
    with pytest.raises(ValueError, match="inner_folds"):
        S.SVMConfig(inner_folds=1)
    cfg = S.SVMConfig(C_grid=[1, 2])  # type: ignore[arg-type]
    assert cfg.C_grid == (1.0, 2.0)
    assert S.SVMConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("balance", ["weights", "none", "oversample", "undersample", "smote"])
def test_classifier_learns_and_gives_probabilities(balance: str) -> None:
    X, y = blobs(150)
    Xt, yt = blobs(90, seed=1)
    clf = S.SVMClassifier(balance=balance, C_grid=(1.0, 10.0), random_state=0).fit(X, y)
    p = clf.predict_proba(Xt)
    assert p.shape == (90, 3)
    assert np.allclose(p.sum(axis=1), 1.0)
    assert clf.best_params_["C"] in clf.C_grid
    assert clf.best_params_["gamma"] in [g / 4 for g in clf.gamma_grid]
    recall = [(clf.predict(Xt)[yt == k] == k).mean() for k in range(3)]
    assert min(recall) > 0.7, recall


def test_classifier_is_seeded() -> None:
    X, y = blobs(120)
    a = S.SVMClassifier(C_grid=(1.0, 10.0), random_state=3).fit(X, y).predict_proba(X)
    b = S.SVMClassifier(C_grid=(1.0, 10.0), random_state=3).fit(X, y).predict_proba(X)
    assert np.array_equal(a, b)


def test_sklearn_contract() -> None:
    clf = S.SVMClassifier(balance="oversample", C_grid=(1.0, 10.0))
    params = clf.get_params()
    assert params["balance"] == "oversample" and params["C_grid"] == (1.0, 10.0)
    twin = clone(clf)
    assert twin.get_params() == params and twin is not clf
    X, y = blobs(90)
    labels = np.array(["x", "y", "z"])[y]
    fitted = clone(clf).fit(X, labels)
    assert set(fitted.predict(X)) <= {"x", "y", "z"}
    assert list(fitted.classes_) == ["x", "y", "z"]
    with pytest.raises(ValueError, match="features"):
        fitted.predict_proba(X[:, :3])
    with pytest.raises(ValueError, match="2 classes"):
        S.SVMClassifier().fit(X, np.zeros(len(X)))


def test_sklearn_light_estimator_checks() -> None:
    """A few of scikit-learn's own estimator checks (the cheap, relevant ones)."""
    from sklearn.utils import estimator_checks as ec

    est = S.SVMClassifier(C_grid=(1.0,), gamma_grid=(1.0,))
    for check in (
        ec.check_no_attributes_set_in_init,
        ec.check_get_params_invariance,
        ec.check_set_params,
        ec.check_classifiers_classes,
        ec.check_fit2d_predict1d,
        ec.check_n_features_in,
        ec.check_dont_overwrite_parameters,
    ):
        check("SVMClassifier", clone(est))


class _Spy:
    """Records the 'uid' column of every matrix a patched step is fitted on."""

    seen: ClassVar[list[set[int]]] = []

    @classmethod
    def record(cls, X: np.ndarray, col: int) -> None:
        cls.seen.append({round(v) for v in np.asarray(X)[:, col]})


@pytest.mark.parametrize("balance", ["weights", "oversample", "smote"])
def test_no_test_rows_reach_scaling_resampling_or_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, balance: str
) -> None:
    ds = feature_dataset(tmp_path)
    uid_col = list(ds.feature_columns).index("uid")
    _Spy.seen = []
    searched: list[set[int]] = []
    resampled: list[set[int]] = []

    class SpyScaler(S.StandardScaler):  # type: ignore[misc]
        def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
            _Spy.record(X, uid_col)
            super().fit(X, y, sample_weight)
            self.mean_[uid_col], self.scale_[uid_col] = 0.0, 1.0  # uid passes through as is
            return self

    class SpyOver(S.RandomOverSampler):  # type: ignore[misc]
        def fit_resample(self, X: Any, y: Any, **kw: Any) -> Any:
            resampled.append({round(v) for v in np.asarray(X)[:, uid_col]})
            return super().fit_resample(X, y, **kw)

    class SpySmote(S.SMOTE):  # type: ignore[misc]
        def fit_resample(self, X: Any, y: Any, **kw: Any) -> Any:
            resampled.append({round(v) for v in np.asarray(X)[:, uid_col]})
            return super().fit_resample(X, y, **kw)

    class SpySearch(S.GridSearchCV):  # type: ignore[misc]
        def fit(self, X: Any, y: Any = None, **kw: Any) -> Any:
            searched.append({round(v) for v in np.asarray(X)[:, uid_col]})
            return super().fit(X, y, **kw)

    monkeypatch.setattr(S, "StandardScaler", SpyScaler)
    monkeypatch.setattr(S, "RandomOverSampler", SpyOver)
    monkeypatch.setattr(S, "SMOTE", SpySmote)
    monkeypatch.setattr(S, "GridSearchCV", SpySearch)

    cfg = S.SVMConfig(features="precomputed", balance=balance, search_max_per_class=20)  # type: ignore[arg-type]
    est = S.SVMEstimator(cfg, seed=0, classes=ds.classes)
    assert est.usable(ds).all()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(ds))
    train, test = np.sort(order[:35]), np.sort(order[35:])
    uid = ds.feature_matrix(["uid"])[:, 0].round().astype(int)
    train_uids = set(uid[train].tolist())
    est.fit(ds, train)
    assert _Spy.seen, "spy never called"
    assert len(_Spy.seen) > 1  # inner search fits plus final fit
    assert len(resampled) == (0 if balance == "weights" else len(_Spy.seen))
    for rows in _Spy.seen + resampled:
        assert rows <= train_uids
    assert len(searched) == 1 and searched[0] <= train_uids
    assert len(searched[0]) < len(train_uids)  # majority class capped for the search
    p = est.predict_proba(ds, test)
    assert p.shape == (len(test), 3)


def test_estimator_importance_ranks_signal_first(tmp_path: Path) -> None:
    ds = feature_dataset(tmp_path, counts=(40, 20, 20), sep=4.0)
    cfg = S.SVMConfig(features="precomputed", C_grid=(1.0,), gamma_grid=(1.0,))
    est = S.SVMEstimator(cfg, seed=0, classes=ds.classes)
    idx = np.arange(len(ds))
    est.fit(ds, idx[::2])
    names, values = est.importance(ds, idx[1::2])
    assert names == ("signal", "noise", "uid")
    assert values.shape == (3,) and np.all(np.isfinite(values))
    assert int(np.argmax(values)) == 0
    assert est.fit_info()["C"] == 1.0


def test_precomputed_without_columns_is_a_clear_error(tmp_path: Path) -> None:
    from lipoclass.data import DatasetWriter, load_dataset

    with DatasetWriter(tmp_path / "nofeat", name="x", classes=["a", "b"]) as w:
        for i in range(4):
            w.add(f"{i}", image=np.zeros((4, 4), np.uint8), label="ab"[i % 2])
    ds = load_dataset(tmp_path / "nofeat")
    est = S.SVMEstimator(S.SVMConfig(features="precomputed"), seed=0, classes=ds.classes)
    with pytest.raises(LipoclassError, match="feature columns"):
        est.usable(ds)


def test_features_csv_is_used_and_cached(tmp_path: Path) -> None:
    from lipoclass import features

    ds = feature_dataset(tmp_path, counts=(12, 8, 6))
    path = features.precomputed_table(ds).to_csv(tmp_path / "f.csv")
    cfg = S.SVMConfig(features="all", features_csv=str(path), C_grid=(1.0,), gamma_grid=(1.0,))
    est = S.SVMEstimator(cfg, seed=0, classes=ds.classes)
    assert est.usable(ds).all() and est.feature_names == ("signal", "noise", "uid")
    assert S._load_features(ds, cfg) is S._load_features(ds, cfg)  # cached across estimators
    est.fit(ds, np.arange(0, len(ds), 2))
    assert est.predict_proba(ds, np.arange(1, len(ds), 2)).shape == (13, 3)
