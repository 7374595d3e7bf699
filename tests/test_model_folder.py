"""Model folders (issue: deploy what was evaluated): a model is the k fold models of one
cross-validation; ensemble prediction, out-of-fold calibration, reloading, checks of edited
folders, import boundaries and parallel folds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import write_tiny_dataset
from lipoclass.cli import main
from lipoclass.crossfit import fit_model
from lipoclass.data import PrepConfig, load_dataset
from lipoclass.ensemble import load_model
from lipoclass.errors import LipoclassError
from lipoclass.evaluate import CVConfig, ExecutorConfig, cross_validate
from lipoclass.spec import ModelSpec
from lipoclass.train import TrainConfig

FAST = {"epochs": 2, "progress": False, "batch_size": 16, "threads": 1, "device": "cpu"}


def _spec(model: str = "tiny", size: int = 16, **kw) -> ModelSpec:
    return ModelSpec(model, PrepConfig(size=size), TrainConfig(**{**FAST, **kw}))


@pytest.fixture(scope="module")
def ds_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One dataset for the module's tests (read only; each writes under its own tmp_path)."""
    return write_tiny_dataset(tmp_path_factory.mktemp("ds") / "tiny", (10, 8, 6), size=(20, 30))


@pytest.fixture(scope="module")
def model(ds_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model folder for the module's tests, fitted once (a test that edits it copies it
    first, ``_edit``)."""
    out = tmp_path_factory.mktemp("fit") / "m"
    fit_model(load_dataset(ds_dir), _spec(), CVConfig(folds=3, seed=3), out, progress=False)
    return out


def test_folder_holds_fold_models_and_cv_results(model: Path, ds_dir: Path) -> None:
    names = {p.name for p in model.iterdir()}
    assert {"model.json", "members", "metrics.json", "oof.csv", "config.json",
            "confusion.png", "reliability.png", "training_curves.png"} <= names  # fmt: skip
    assert not [p for p in model.parent.iterdir() if p.name.startswith(".")]  # no staging left
    info = json.loads((model / "model.json").read_text())
    metrics = json.loads((model / "metrics.json").read_text())
    assert info["format_version"] == 2 and info["kind"] == "cnn" and info["seed"] == 3
    assert info["members"] == [f"members/fold{k}.pt" for k in range(3)]
    assert info["cv"] == {"folds": 3, "seed": 3, "group_by": None}
    assert info["confusion"] == metrics["confusion"]  # one confusion: the out-of-fold one
    assert info["calibration"]["fitted_on"] == "out-of-fold predictions"
    assert info["calibration"]["n"] == 24 == np.sum(info["confusion"])
    assert info["review"]["target_accuracy"] == 0.95
    assert info["dataset"]["root"] == str(ds_dir)
    # the share method chosen for this model from its own out-of-fold data (table + figure)
    sel = info["quantifiers"]["selection"]
    assert info["quantifiers"]["recommended"] == sel["chosen"]
    assert sel["class_counts"] == [10, 8, 6] and sel["reason"]
    if sel["table"]:
        assert set(sel["table"]["cc"]) >= {"mae", "coverage", "width"}
        assert (model / info["quantifiers"]["selection_figure"]).is_file()


def test_ensemble_is_the_mean_of_its_members(model: Path, ds_dir: Path) -> None:
    from lipoclass.data import prepare
    from lipoclass.models.inference import softmax

    lm = load_model(model)
    ds = load_dataset(ds_dir)
    prep = prepare(ds, lm.prep)
    members = lm.member_proba_arrays(prep.x)  # (K, N, C)
    assert members.shape == (3, len(ds), 3)
    ens = lm.predict_proba_arrays(prep.x)
    np.testing.assert_allclose(ens, members.mean(axis=0), atol=1e-12)
    import torch

    for k, m in enumerate(lm.modules):  # each member is softmax(logits / T) of its network
        with torch.no_grad():
            logits = m(torch.from_numpy(prep.x)).numpy()
        np.testing.assert_allclose(members[k], softmax(logits, lm.temperature), atol=1e-5)
    assert not np.allclose(members[0], members[1])  # the members really differ


def test_reloaded_model_predicts_the_same(model: Path, ds_dir: Path, tmp_path: Path) -> None:
    from lipoclass.predict import PredictConfig, predict

    ds = load_dataset(ds_dir)
    p1, ids1 = load_model(model).predict_proba(ds)
    p2, ids2 = load_model(model).predict_proba(ds)
    assert ids1 == ids2 == ds.ids
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_allclose(p1.sum(1), 1, atol=1e-6)
    res = predict(model, ds_dir, tmp_path / "p.csv", config=PredictConfig(device="cpu"),
                  verbose=False)  # fmt: skip
    np.testing.assert_allclose(res.probs, p1, atol=1e-5)  # fast CPU engine = reference
    assert (tmp_path / "p_shares.csv").is_file()
    assert b"\r\n" not in (tmp_path / "p.csv").read_bytes()


def test_tta_averages_the_dihedral_views(model: Path, ds_dir: Path) -> None:
    import torch

    from lipoclass.data import prepare
    from lipoclass.models.inference import DIHEDRAL, dihedral

    lm = load_model(model)
    x = prepare(load_dataset(ds_dir), lm.prep).x
    views = [lm.predict_proba_arrays(dihedral(torch.from_numpy(x), k, f).numpy(), tta=False)
             for k, f in DIHEDRAL]  # fmt: skip
    np.testing.assert_allclose(lm.predict_proba_arrays(x, tta=True), np.mean(views, 0), atol=1e-9)
    assert len({(k, f) for k, f in DIHEDRAL}) == 8


def test_cv_tta_out_of_fold_predictions_use_the_tta_of_the_folder(
    ds_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``lipoclass cv --model ... --tta``: the folder predicts with TTA, so its out-of-fold
    predictions (oof.csv, metrics, calibration) are each fold model's mean softmax over the
    8 flips / quarter turns of the particles it did not train on, not its plain softmax."""
    import csv

    import torch

    import lipoclass.crossfit.core as core
    from lipoclass.data import prepare
    from lipoclass.models.inference import DIHEDRAL, dihedral, predict_logits, softmax

    monkeypatch.setattr(core, "_fit_quantifiers", lambda *a, **k: None)  # slow, not tested here
    out = tmp_path / "m"
    argv = ["cv", str(ds_dir), "--model", "tiny", "--epochs", "1", "--folds", "2", "--tta",
            "--device", "cpu", "--precision", "fp32", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    lm = load_model(out)
    assert lm.tta
    ds = load_dataset(ds_dir)
    x = torch.from_numpy(prepare(ds, lm.prep).x)
    pos = {pid: i for i, pid in enumerate(ds.ids)}
    with (out / "oof.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    raw = np.array([[float(r[f"p_{c}"]) for c in lm.classes] for r in rows])  # before calibration
    plain, tta = np.zeros_like(raw), np.zeros_like(raw)
    cpu = torch.device("cpu")
    for k, net in enumerate(lm.members):
        sel = [j for j, r in enumerate(rows) if int(r["fold"]) == k]
        xk = x[[pos[rows[j]["id"]] for j in sel]]
        views = [softmax(predict_logits(net, dihedral(xk, r, f).contiguous(), None, cpu))
                 for r, f in DIHEDRAL]  # fmt: skip
        plain[sel], tta[sel] = views[0], np.mean(views, axis=0)
    assert not np.allclose(plain, tta, atol=1e-3)  # TTA changes these predictions
    np.testing.assert_allclose(raw, tta, atol=1e-5)


def test_calibration_uses_out_of_fold_predictions_only(ds_dir: Path, tmp_path: Path) -> None:
    """Leakage test: the temperature, ECE and review rule are functions of the out-of-fold
    predictions of cross_validate (each particle predicted by the fold model that did not
    train on it), not of the fold models' predictions on their own training data."""
    from lipoclass.train.calibration import (
        expected_calibration_error,
        fit_temperature,
        review_threshold,
    )

    ds = load_dataset(ds_dir)
    spec, cv = _spec(epochs=3), CVConfig(folds=3, seed=1)
    out, res = fit_model(ds, spec, cv, tmp_path / "m", progress=False)
    info = load_model(out).info
    ref = cross_validate(ds, spec, cv, progress=False)  # the same folds and seeds
    np.testing.assert_allclose(ref.proba, res.proba, atol=1e-6)
    logits = np.log(np.clip(ref.proba, 1e-300, None))
    t = fit_temperature(logits, ref.y_true)
    assert info["calibration"]["temperature"] == pytest.approx(t, rel=1e-4)
    assert info["ece_before"] == pytest.approx(expected_calibration_error(ref.proba, ref.y_true))
    from lipoclass.models.inference import softmax

    rv = review_threshold(softmax(logits, t), ref.y_true)
    assert info["review"]["threshold"] == pytest.approx(rv["threshold"], rel=1e-6)
    # every out-of-fold prediction comes from a member that never saw the particle
    lm = load_model(out)
    ids, fold, _, _ = lm.oof()
    prep_ids = {pid: i for i, pid in enumerate(ds.ids)}
    from lipoclass.data import prepare

    prep = prepare(ds, lm.prep)
    members = lm.member_proba_arrays(prep.x, tta=False)  # (K, N, C) calibrated
    raw_oof = np.array([members[f, prep_ids[pid]] for pid, f in zip(ids, fold)])
    np.testing.assert_allclose(raw_oof, lm.oof()[3], atol=1e-4)


def test_cv_and_train_are_one_computation(ds_dir: Path, tmp_path: Path, capsys) -> None:
    args = [str(ds_dir), "--model", "tiny", "--epochs", "1", "--folds", "3", "--seed", "2"]
    assert main(["cv", *args, "--out", str(tmp_path / "cv")]) == 0
    assert main(["train", *args, "--out", str(tmp_path / "tr")]) == 0
    a = json.loads((tmp_path / "cv" / "metrics.json").read_text())
    b = json.loads((tmp_path / "tr" / "metrics.json").read_text())
    a.pop("wall_time_s"), b.pop("wall_time_s")
    assert a == b
    assert load_model(tmp_path / "cv").n_members == load_model(tmp_path / "tr").n_members == 3
    assert "fold models" in capsys.readouterr().out


def test_small_class_rule(tiny_dataset, tmp_path: Path) -> None:
    ds = load_dataset(tiny_dataset((6, 5, 3)))
    with pytest.warns(UserWarning, match="using 3 folds instead of 5"):
        out, _ = fit_model(ds, _spec(epochs=1), CVConfig(folds=5), tmp_path / "m",
                           progress=False)  # fmt: skip
    assert load_model(out).n_members == 3
    one = load_dataset(tiny_dataset((6, 5, 1)))
    with pytest.raises(LipoclassError, match="at least 2 per class"):
        fit_model(one, _spec(epochs=1), CVConfig(folds=5), tmp_path / "n", progress=False)
    assert not (tmp_path / "n").exists()


def test_refuses_a_foreign_folder(ds_dir: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    rc = main(["cv", str(ds_dir), "--model", "tiny", "--epochs", "1", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "not a model folder" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "x" / "notes.txt").read_text() == "mine"


def test_stale_staging_of_a_killed_run_is_removed(ds_dir: Path, tmp_path: Path) -> None:
    stale = tmp_path / ".m.staging-999999999-abcdef"
    stale.mkdir()
    fit_model(load_dataset(ds_dir), _spec(epochs=1), CVConfig(folds=3), tmp_path / "m",
              progress=False)  # fmt: skip
    assert not stale.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def _edit(src: Path, tmp_path: Path, changes: dict | None = None) -> Path:
    import shutil

    dst = tmp_path / f"edit{len(list(tmp_path.iterdir()))}"
    shutil.copytree(src, dst)
    info = json.loads((dst / "model.json").read_text())
    for key, value in (changes or {}).items():
        if "." in key:
            a, b = key.split(".")
            info[a][b] = value
        else:
            info[key] = value
    (dst / "model.json").write_text(json.dumps(info))
    return dst


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model": "lipnet4"}, "holds a 'tiny' network"),
        ({"prep.size": 64}, "trained at 16 px"),
        ({"classes": ["a", "b"]}, "2 classes listed but"),
        ({"calibration.temperature": 0}, "temperature must be a positive number"),
        ({"format_version": 1}, "retrain it"),
        ({"format_version": 99}, "format_version 99"),
        ({"members": ["members/fold9.pt"]}, "fold9.pt is missing"),
    ],
)
def test_edited_model_json_is_checked_against_the_weights(
    model: Path, tmp_path: Path, ds_dir: Path, capsys, changes: dict, message: str
) -> None:
    bad = _edit(model, tmp_path, changes)
    with pytest.raises(LipoclassError, match=message):
        load_model(bad)
    for argv in (["predict", str(bad), str(ds_dir), "--out", str(tmp_path / "p.csv")],
                 ["export", str(bad), "--out", str(tmp_path / "m.onnx")]):  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message.split()[0] in err and len(err.strip().splitlines()) == 1
        assert "Traceback" not in err
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "m.onnx").exists()


def test_truncated_member_is_one_line(model: Path, tmp_path: Path) -> None:
    bad = _edit(model, tmp_path)
    blob = (bad / "members" / "fold1.pt").read_bytes()
    (bad / "members" / "fold1.pt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(LipoclassError, match=r"fold1\.pt: cannot load weights"):
        load_model(bad)


def test_svm_model_is_an_ensemble_of_fold_svms(tiny_dataset, tmp_path: Path) -> None:
    from lipoclass.models.svm import SVMConfig

    ds = load_dataset(tiny_dataset((10, 8, 6), size=(24, 32)))
    spec = ModelSpec("svm", PrepConfig(), SVMConfig(inner_folds=2))
    out, _ = fit_model(ds, spec, CVConfig(folds=3), tmp_path / "s", progress=False)
    lm = load_model(out)
    assert lm.kind.name == "svm" and lm.n_members == 3
    probs, ids = lm.predict_proba(ds)
    pos = np.array([ds.ids.index(i) for i in ids])
    each = np.stack([e.predict_proba(ds, pos) for e in lm.members])  # (K, n, C)
    np.testing.assert_allclose(probs, each.mean(0), atol=1e-12)


def test_predict_export_explain_do_not_import_training_code() -> None:
    code = (
        "import sys, lipoclass.predict, lipoclass.export, lipoclass.explain, lipoclass.ensemble;"
        "bad = sorted(m for m in sys.modules if m.startswith(('lipoclass.train', "
        "'lipoclass.crossfit', 'lipoclass.evaluate')));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_no_import_cycle_between_stages() -> None:
    """Lower stages never import higher ones at module level (data < models < train <
    evaluate < crossfit < recipe; ensemble below predict / export / explain)."""
    order = ["data", "models", "train", "evaluate", "crossfit", "recipe"]
    root = Path(__file__).resolve().parents[1] / "src" / "lipoclass"
    for i, stage in enumerate(order):
        higher = tuple(f"lipoclass.{s}" for s in order[i + 1 :])
        for py in (root / stage).rglob("*.py"):
            for line in py.read_text().splitlines():
                if line.startswith(("from lipoclass.", "import lipoclass.")):
                    assert not line.split()[1].startswith(higher), f"{py}: {line}"


def test_parallel_folds_give_the_serial_result(ds_dir: Path) -> None:
    ds = load_dataset(ds_dir)
    spec, cv = _spec(epochs=1), CVConfig(folds=3, seed=4)
    serial = cross_validate(ds, spec, cv, progress=False)
    par = cross_validate(ds, spec, cv, progress=False, executor=ExecutorConfig(workers=2))
    np.testing.assert_allclose(par.proba, serial.proba, atol=1e-6)
    assert par.metrics["macro_f1"] == serial.metrics["macro_f1"]


@pytest.mark.slow
def test_ray_folds_give_the_serial_result(ds_dir: Path) -> None:
    pytest.importorskip("ray")
    ds = load_dataset(ds_dir)
    spec, cv = _spec(epochs=1), CVConfig(folds=5, seed=4)
    serial = cross_validate(ds, spec, cv, progress=False)
    ray = cross_validate(ds, spec, cv, progress=False,
                         executor=ExecutorConfig("ray", workers=2, threads=1))  # fmt: skip
    np.testing.assert_allclose(ray.proba, serial.proba, atol=1e-6)
    for key in ("macro_f1", "balanced_accuracy", "confusion"):
        assert ray.metrics[key] == serial.metrics[key]


def test_unwritable_out_is_refused_before_any_work(ds_dir: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "file").write_text("x")
    for cmd in ("cv", "train"):
        rc = main([cmd, str(ds_dir), "--model", "tiny", "--out", str(tmp_path / "file" / "m")])
        err = capsys.readouterr().err
        assert rc == 2 and "file" in err and len(err.strip().splitlines()) == 1, err
        assert "[cv]" not in err  # refused before the folds start


def test_predict_unwritable_out(model: Path, ds_dir: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "file").write_text("x")
    rc = main(["predict", str(model), str(ds_dir), "--out", str(tmp_path / "file" / "p.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and "file" in err and len(err.strip().splitlines()) == 1


def test_non_finite_probability_never_reaches_an_output(
    model: Path, ds_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    from lipoclass.predict import core

    real = core._Runner.run

    def nan_run(self, ds):
        probs, index, skipped = real(self, ds)
        probs[3] = np.nan
        return probs, index, skipped

    monkeypatch.setattr(core._Runner, "run", nan_run)
    rc = main(["predict", str(model), str(ds_dir), "--out", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and "non-finite probability" in err and "row" in err
    assert not list(tmp_path.glob("p*"))


def test_truncated_svm_member_is_one_line(tiny_dataset, tmp_path: Path, capsys) -> None:
    from lipoclass.models.svm import SVMConfig

    ds = load_dataset(tiny_dataset((8, 6, 6), size=(24, 32)))
    spec = ModelSpec("svm", PrepConfig(), SVMConfig(inner_folds=2))
    out, _ = fit_model(ds, spec, CVConfig(folds=3), tmp_path / "s", progress=False)
    blob = (out / "members" / "fold2.joblib").read_bytes()
    (out / "members" / "fold2.joblib").write_bytes(blob[: len(blob) // 3])
    rc = main(["predict", str(out), str(ds.root), "--out", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and "fold2.joblib: cannot load the SVM" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
