"""k-fold runner: folds (stratified, seeded, grouped, identical across models), leakage,
exclusions, output files, baselines, and the ``cv`` command."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from lipoclass.cli import main
from lipoclass.data import PrepConfig, load_dataset
from lipoclass.errors import LipoclassError
from lipoclass.evaluate import CVConfig, CVResult, ModelSpec, build_spec, cross_validate, make_folds
from lipoclass.kinds import Kind, register_kind, unregister_kind
from test_svm import feature_dataset

METRIC_KEYS = {
    "model", "classes", "folds", "seed", "group_by", "n_particles", "excluded", "confusion",
    "confusion_normalized", "per_class", "accuracy", "balanced_accuracy", "macro_f1", "mcc",
    "log_loss", "accuracy_std", "balanced_accuracy_std", "macro_f1_std", "mcc_std",
    "log_loss_std", "baselines", "wall_time_s",
}  # fmt: skip


# --------------------------------------------------------------------------- spies


class SpyEstimator:
    """Records what it is fitted on / asked about; predicts the true label with probability
    ``skill`` (else uniform noise), never from test labels unless ``oracle``."""

    log: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, name: str, seed: int, classes: tuple[str, ...], unusable: int = 0,
                 oracle: bool = False) -> None:  # fmt: skip
        self.name, self.seed, self.classes = name, seed, classes
        self.unusable, self.oracle = unusable, oracle
        self.train: np.ndarray | None = None

    def usable(self, dataset: Any) -> np.ndarray:
        ok = np.ones(len(dataset), dtype=bool)
        ok[: self.unusable] = False
        return ok

    def unusable_reasons(self, dataset: Any) -> dict[str, str]:
        return {p.id: "spy says no" for p in dataset.particles[: self.unusable]}

    def fit(self, dataset: Any, train_idx: np.ndarray) -> SpyEstimator:
        self.train = np.array(train_idx)
        SpyEstimator.log.append({"model": self.name, "fit": self.train, "seed": self.seed})
        return self

    def predict_proba(self, dataset: Any, idx: np.ndarray) -> np.ndarray:
        assert self.train is not None
        SpyEstimator.log.append({"model": self.name, "test": np.array(idx)})
        n = len(self.classes)
        if self.oracle:
            return np.eye(n)[dataset.labels[idx]]
        rng = np.random.default_rng(self.seed)
        return rng.dirichlet(np.ones(n), size=len(idx))


@dataclass(frozen=True)
class SpyConfig:
    unusable: int = 0
    oracle: bool = False


class SpyKind(Kind):
    """A model kind whose estimators are spies (registered for this module's tests)."""

    name = "spy"
    member_suffix = ".spy"

    def model_names(self) -> tuple[str, ...]:
        return ("spy", "m1", "m2")

    def config_class(self) -> type:
        return SpyConfig

    def build(self, model: str, options: dict[str, Any]) -> tuple[PrepConfig, Any]:
        return PrepConfig(), SpyConfig()

    def make_estimator(self, spec: Any, seed: int, classes: tuple[str, ...]) -> Any:
        cfg = spec.config
        return SpyEstimator(spec.model, seed, classes, cfg.unusable, cfg.oracle)

    def save_member(self, estimator: Any, path: Any) -> None:
        raise NotImplementedError

    def load_member(self, path: Any, info: Any, prep: Any, classes: Any) -> Any:
        raise NotImplementedError


@pytest.fixture(autouse=True)
def _spy_kind() -> Iterator[None]:
    register_kind(SpyKind(), replace_existing=True)
    yield
    unregister_kind("spy")


def spy_spec(name: str = "spy", **kw: Any) -> ModelSpec:
    return ModelSpec(name, PrepConfig(), SpyConfig(**kw))


# --------------------------------------------------------------------------- folds


def test_folds_are_stratified_seeded_and_skip_unlabelled(tiny_dataset: Any) -> None:
    ds = load_dataset(tiny_dataset(counts=(23, 11, 7), unlabelled=3, size=(8, 10)))
    folds = make_folds(ds, CVConfig(folds=5, seed=1))
    y = ds.labels
    assert folds.shape == (len(ds),)
    assert np.all(folds[y < 0] == -1) and np.all(folds[y >= 0] >= 0)
    for k in range(3):
        per_fold = np.bincount(folds[y == k], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1, per_fold
    assert np.array_equal(folds, make_folds(ds, CVConfig(folds=5, seed=1)))
    assert not np.array_equal(folds, make_folds(ds, CVConfig(folds=5, seed=2)))


def test_group_by_sample_keeps_samples_together(tiny_dataset: Any) -> None:
    ds = load_dataset(tiny_dataset(counts=(20, 12, 8), samples=8, size=(8, 10)))
    folds = make_folds(ds, CVConfig(folds=4, seed=0, group_by="sample"))
    by_sample: dict[str, set[int]] = {}
    for p, f in zip(ds.particles, folds):
        by_sample.setdefault(str(p.sample), set()).add(int(f))
    assert all(len(v) == 1 for v in by_sample.values())
    assert len({f for v in by_sample.values() for f in v}) == 4


def test_group_by_errors(tiny_dataset: Any) -> None:
    no_samples = load_dataset(tiny_dataset(counts=(6, 6, 6), samples=0, size=(8, 9)))
    with pytest.raises(LipoclassError, match="sample"):
        make_folds(no_samples, CVConfig(folds=3, group_by="sample"))
    two = load_dataset(tiny_dataset(counts=(6, 6, 6), samples=2, size=(8, 9)))
    with pytest.raises(LipoclassError, match="at least 3 samples"):
        make_folds(two, CVConfig(folds=3, group_by="sample"))


def test_cvconfig_validation() -> None:
    with pytest.raises(ValueError):
        CVConfig(folds=1)
    with pytest.raises(ValueError):
        CVConfig(group_by="patient")


# --------------------------------------------------------------------------- runner


def test_same_folds_for_different_models_and_no_leakage(tiny_dataset: Any) -> None:
    ds = load_dataset(tiny_dataset(counts=(15, 10, 5), unlabelled=2, size=(8, 10)))
    cv = CVConfig(folds=5, seed=7)
    SpyEstimator.log = []
    cross_validate(ds, spy_spec("m1"), cv, progress=False)
    cross_validate(ds, spy_spec("m2", unusable=4), cv, progress=False)
    labelled = set(np.flatnonzero(ds.labels >= 0).tolist())
    tests: dict[str, list[set[int]]] = {"m1": [], "m2": []}
    fits: dict[str, list[set[int]]] = {"m1": [], "m2": []}
    for e in SpyEstimator.log:
        (tests if "test" in e else fits)[e["model"]].append(
            set(e.get("test", e.get("fit")).tolist())
        )
    for m, unusable in (("m1", set()), ("m2", {0, 1, 2, 3})):
        assert len(tests[m]) == 5
        assert set().union(*tests[m]) == labelled - unusable  # each particle tested once
        assert sum(len(t) for t in tests[m]) == len(labelled - unusable)
        for tr, te in zip(fits[m], tests[m]):
            assert not tr & te  # nothing of the test fold in training
            assert tr | te <= labelled - unusable
    # identical folds: m2's folds are m1's minus the unusable particles
    for t1, t2 in zip(tests["m1"], tests["m2"]):
        assert t1 - {0, 1, 2, 3} == t2
    seeds = [e["seed"] for e in SpyEstimator.log if "fit" in e]
    assert len(set(seeds[:5])) == 5  # a fresh, differently seeded estimator per fold


def test_outputs_metrics_and_reload(tiny_dataset: Any, tmp_path: Path) -> None:
    ds = load_dataset(tiny_dataset(counts=(16, 8, 6), size=(8, 10)))
    run = tmp_path / "run"
    res = cross_validate(ds, spy_spec(oracle=True, unusable=2), CVConfig(folds=3), out=run,
                         progress=False)  # fmt: skip
    for name in ("metrics.json", "oof.csv", "confusion.png", "confusion_normalized.png",
                 "config.json"):  # fmt: skip
        assert (run / name).is_file(), name
    assert not list(run.glob(".*tmp"))
    m = json.loads((run / "metrics.json").read_text())
    assert m == res.to_dict()
    assert METRIC_KEYS <= set(m)
    assert m["n_particles"] == 28 and len(m["excluded"]) == 2
    assert m["excluded"][0]["reason"] == "spy says no"
    assert m["accuracy"] == 1.0 and m["mcc"] == 1.0
    assert np.array_equal(np.array(m["confusion"]), np.diag([14, 8, 6]))
    for cls, e in m["per_class"].items():
        for k in ("tpr", "tnr", "ppv", "npv", "f1", "f1_tpr_tnr"):
            assert e[k] == 1.0 and e[f"{k}_std"] == 0.0 and e[f"{k}_ci"] == [1.0, 1.0], (cls, k)
    assert set(m["baselines"]) == {"majority", "stratified_random"}
    maj = m["baselines"]["majority"]
    # accuracy paradox: the majority baseline looks accurate but has balanced accuracy 1/3
    assert maj["accuracy"] == pytest.approx(14 / 28, abs=0.05)
    assert maj["balanced_accuracy"] == pytest.approx(1 / 3)
    assert maj["per_class"]["multilamellar"]["tpr"] == 0.0
    cfg = json.loads((run / "config.json").read_text())
    assert {"python", "numpy", "sklearn", "torch", "lipoclass"} <= set(cfg["versions"])
    assert cfg["cv"] == {"folds": 3, "seed": 0, "group_by": None}
    back = CVResult.load(run)
    assert back.to_dict() == m
    assert back.ids == res.ids and np.array_equal(back.y_pred, res.y_pred)
    assert np.allclose(back.proba, res.proba)
    header = (run / "oof.csv").read_text().splitlines()[0]
    assert header == "id,fold,label,pred,p_unilamellar,p_multilamellar,p_uncertain"
    assert "unilamellar" in res.table() and "majority" in res.table()


def test_random_model_metrics_are_consistent(tiny_dataset: Any) -> None:
    ds = load_dataset(tiny_dataset(counts=(20, 10, 10), size=(8, 10)))
    res = cross_validate(ds, spy_spec(), CVConfig(folds=4, seed=3), progress=False)
    m = res.to_dict()
    assert np.array(m["confusion"]).sum() == 40
    assert np.allclose(np.array(m["confusion_normalized"]).sum(axis=1), 1.0)
    for e in m["per_class"].values():
        lo, hi = e["tpr_ci"]
        assert 0.0 <= lo <= hi <= 1.0
    assert m["log_loss"] > 0


def test_runner_input_errors(tiny_dataset: Any) -> None:
    unlabelled = load_dataset(tiny_dataset(counts=(0, 0, 0), unlabelled=6, size=(8, 9)))
    with pytest.raises(LipoclassError, match="no labels"):
        cross_validate(unlabelled, spy_spec(), CVConfig(folds=2), progress=False)
    small = load_dataset(tiny_dataset(counts=(6, 6, 2), size=(8, 9)))
    with pytest.raises(LipoclassError, match="fewer than the 3 folds"):
        cross_validate(small, spy_spec(), CVConfig(folds=3), progress=False)
    with pytest.raises(LipoclassError, match="no labelled particle is usable"):
        cross_validate(small, spy_spec(unusable=99), CVConfig(folds=2), progress=False)


def test_build_spec() -> None:
    spec = build_spec("svm", features="all", balance=None)
    assert spec.config.balance == "weights" and spec.config.features == "all"
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(LipoclassError, match="choose from svm"):
        build_spec("resnet9000")
    with pytest.raises(LipoclassError, match="weights, none"):
        build_spec("svm", balance="focal")
    from lipoclass.models import default_input_size

    cnn = build_spec("tiny", balance=None, augment=("flip",), epochs=2)
    assert cnn.kind.name == "cnn" and spec.kind.name == "svm"
    assert cnn.config.balance == "oversample" and cnn.config.augment == ("flip",)
    assert cnn.prep.size == default_input_size("tiny")
    assert build_spec("tiny", size=20).prep.size == 20
    assert ModelSpec.from_dict(cnn.to_dict()) == cnn
    with pytest.raises(LipoclassError, match="CNN options: balance must be one of"):
        build_spec("tiny", balance="wrong")


@pytest.mark.slow
def test_cnn_runs_through_the_same_runner(tiny_dataset: Any, tmp_path: Path) -> None:
    ds = load_dataset(tiny_dataset(counts=(8, 6, 6), size=(16, 20), empty_masks=2))
    spec = build_spec("tiny", epochs=1, augment=(), device="cpu")
    res = cross_validate(ds, spec, CVConfig(folds=2), out=tmp_path / "cnn", progress=False)
    m = res.to_dict()
    assert m["model"] == "tiny" and m["n_particles"] == 18 and len(m["excluded"]) == 2
    assert np.allclose(res.proba.sum(axis=1), 1.0, atol=1e-4)
    assert not (tmp_path / "cnn" / "importance.csv").exists()


# --------------------------------------------------------------------------- CLI


@pytest.mark.slow
def test_cli_cv_svm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = feature_dataset(tmp_path, counts=(30, 15, 10))
    run = tmp_path / "run"
    rc = main(["cv", str(ds.root), "--model", "svm", "--features", "precomputed",
               "--folds", "3", "--out", str(run)])  # fmt: skip
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "fold 3/3" in out.err and "balanced accuracy" in out.err
    assert "majority" in out.out and str(run) in out.out
    m = json.loads((run / "metrics.json").read_text())
    assert m["model"] == "svm" and m["n_particles"] == 55
    assert m["balanced_accuracy"] > m["baselines"]["majority"]["balanced_accuracy"]
    assert (run / "importance.csv").read_text().splitlines()[1].startswith("signal,")
    assert (run / "importance.png").is_file()
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["spec"]["svm"]["features"] == "precomputed"
    assert all("C" in f for f in cfg["fold_info"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "nosuchnet"], "unknown; choose from svm"),
        (["--model", "svm", "--balance", "focal"], "SVM options: balance must be one of"),
        (["--model", "svm", "--features-csv", "missing.csv"], "features CSV not found"),
    ],
)
def test_cli_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    ds = feature_dataset(tmp_path, counts=(12, 6, 5))
    rc = main(["cv", str(ds.root), *extra, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and err.startswith("lipoclass: error:")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_cli_small_class_uses_fewer_folds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The small-set rule: folds = min(--folds, members of the smallest class), with a warning."""
    ds = feature_dataset(tmp_path, counts=(12, 6, 5))
    with pytest.warns(UserWarning, match="using 5 folds instead of 40"):
        rc = main(["cv", str(ds.root), "--model", "svm", "--features", "precomputed",
                   "--folds", "40", "--out", str(tmp_path / "run")])  # fmt: skip
    assert rc == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["folds"] == 5


def test_cli_no_labels(
    tiny_dataset: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = tiny_dataset(counts=(0, 0, 0), unlabelled=5, size=(8, 9), features=True)
    rc = main(["cv", str(ds), "--model", "svm", "--features", "precomputed", "--out",
               str(tmp_path / "r")])  # fmt: skip
    assert rc == 2
    assert "no labels" in capsys.readouterr().err


def test_cli_features_csv_of_another_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = feature_dataset(tmp_path, counts=(12, 6, 5))
    bad = tmp_path / "other.csv"
    bad.write_text("id,area\nzz1,1.0\nzz2,2.0\n")
    rc = main(["cv", str(ds.root), "--model", "svm", "--features-csv", str(bad),
               "--out", str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("lipoclass: error:") and "other.csv" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.shared
def test_svm_cv_on_real_vesicles(vesicle_dir: Path, tmp_path: Path) -> None:
    """Real EM vesicles (CV/DV/DVH), Vironova features, 3 folds: runs end to end and beats
    the majority baseline on balanced accuracy."""
    ds = load_dataset(vesicle_dir)
    res = cross_validate(ds, build_spec("svm"), CVConfig(folds=3), out=tmp_path / "r",
                         progress=False)  # fmt: skip
    m = res.to_dict()
    assert m["n_particles"] + len(m["excluded"]) == 254
    assert m["balanced_accuracy"] > m["baselines"]["majority"]["balanced_accuracy"]
