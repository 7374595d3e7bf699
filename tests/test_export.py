"""ONNX export: metadata, onnxruntime vs PyTorch, predict --onnx, failure leaves no file."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from lipoclass.cli import main
from lipoclass.data import PrepConfig, load_dataset, prepare
from lipoclass.errors import LipoclassError
from lipoclass.export import ExportConfig, export_onnx, load_onnx
from lipoclass.predict import PredictConfig, predict
from test_predict import CLASSES, TEMPERATURE, read_csv, write_model_folder

CPU = PredictConfig(device="cpu")


def test_export_metadata_and_match_on_real_particles(tmp_path, tiny_dataset, capsys):
    ds_dir = tiny_dataset(counts=(6, 5, 4))
    module = write_model_folder(tmp_path / "m", extra={"dataset": str(ds_dir)})
    path = export_onnx(tmp_path / "m", tmp_path / "model.onnx")
    out = capsys.readouterr().out
    assert "particles of" in out and "max abs diff" in out  # checked on the training set

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert meta["classes"] == list(CLASSES)
    assert meta["prep"] == {"mode": "masked", "size": 16, "aspect": "pad", "normalize": "zscore",
                            "nm_per_px": None}  # fmt: skip
    assert meta["lipoclass_version"] and meta["temperature"] == pytest.approx(TEMPERATURE)

    prep = prepare(load_dataset(ds_dir), PrepConfig(size=16), cache=False)
    import torch

    with torch.no_grad():
        want = torch.softmax(module(torch.from_numpy(prep.x)) / TEMPERATURE, dim=1).numpy()
    om = load_onnx(path)
    for bs in (1, 7, 1024):  # dynamic batch axis
        np.testing.assert_allclose(om.predict_proba_arrays(prep.x, batch_size=bs), want,
                                   atol=1e-5)  # fmt: skip


def test_predict_with_onnx_matches_model_folder(tmp_path, tiny_dataset):
    ds_dir = tiny_dataset(counts=(6, 5, 4))
    write_model_folder(tmp_path / "m")
    assert main(["export", str(tmp_path / "m"), "--out", str(tmp_path / "m.onnx")]) == 0
    a = predict(tmp_path / "m", ds_dir, tmp_path / "a.csv", config=CPU, verbose=False)
    rc = main(["predict", str(ds_dir), "--onnx", str(tmp_path / "m.onnx"),
               "--out", str(tmp_path / "b.csv"), "--shares", str(tmp_path / "bs.csv")])  # fmt: skip
    assert rc == 0
    rows = read_csv(tmp_path / "b.csv")
    assert [r["id"] for r in rows] == a.ids
    assert [r["pred"] for r in rows] == [CLASSES[k] for k in a.pred]
    got = np.array([[float(r[f"p_{c}"]) for c in CLASSES] for r in rows])
    np.testing.assert_allclose(got, a.probs, atol=1e-5)
    # review threshold and confusion travel in the ONNX metadata: same shares
    assert read_csv(tmp_path / "bs.csv") == read_csv(tmp_path / "a_shares.csv")


@pytest.mark.parametrize("tta", [False, True])
def test_onnx_holds_the_whole_ensemble(tmp_path, tiny_dataset, tta):
    """Three fold models (and the 8 dihedral views with TTA) averaged inside one graph match
    the PyTorch ensemble on real prepared particles."""
    from lipoclass.ensemble import load_model

    ds_dir = tiny_dataset(counts=(6, 5, 4))
    write_model_folder(tmp_path / "m", n_members=3, extra={"tta": tta})
    lm = load_model(tmp_path / "m")
    assert lm.n_members == 3 and lm.tta == tta
    export_onnx(tmp_path / "m", tmp_path / "m.onnx", dataset=ds_dir)
    om = load_onnx(tmp_path / "m.onnx")
    assert om.tta == tta and om.meta["members"] == 3
    x = prepare(load_dataset(ds_dir), lm.prep).x
    want = lm.predict_proba_arrays(x)
    np.testing.assert_allclose(om.predict_proba_arrays(x), want, atol=1e-5)
    single = lm.member_proba_arrays(x)[0]
    assert np.abs(want - single).max() > 1e-4  # really an ensemble, not one member


def test_export_fails_above_tolerance_and_leaves_nothing(tmp_path, monkeypatch):
    from lipoclass.export import onnx as onnx_mod

    write_model_folder(tmp_path / "m")
    real = onnx_mod.OnnxModel.predict_proba_arrays

    def off(self, x, aux=None, batch_size=1024):
        return real(self, x, aux, batch_size) + 1e-3

    monkeypatch.setattr(onnx_mod.OnnxModel, "predict_proba_arrays", off)
    with pytest.raises(LipoclassError, match="differs from PyTorch"):
        export_onnx(tmp_path / "m", tmp_path / "x.onnx", ExportConfig(tolerance=1e-4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_export_cli_errors(tmp_path, capsys):
    from types import SimpleNamespace

    import joblib

    (tmp_path / "svm" / "members").mkdir(parents=True)
    (tmp_path / "svm" / "model.json").write_text(json.dumps({
        "format_version": 2, "kind": "svm", "model": "svm", "classes": ["a", "b"],
        "members": ["members/fold0.joblib"], "prep": {"mode": "masked", "size": 28}}))  # fmt: skip
    joblib.dump(SimpleNamespace(classes=("a", "b")), tmp_path / "svm" / "members" / "fold0.joblib")
    assert main(["export", str(tmp_path / "svm"), "--out", str(tmp_path / "s.onnx")]) == 2
    assert "CNN model folders only" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "s.onnx")]) == 2
    assert "not a model folder" in capsys.readouterr().err
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    rc = main(["predict", str(tmp_path), "--onnx", str(tmp_path / "junk.onnx"),
               "--out", str(tmp_path / "p.csv")])  # fmt: skip
    assert rc == 2 and "not a readable ONNX model" in capsys.readouterr().err
    assert not (tmp_path / "s.onnx").exists() and not (tmp_path / "p.csv").exists()


@pytest.mark.slow
def test_train_export_predict_end_to_end(tmp_path, tiny_dataset, capsys):
    """A really cross-fitted model folder through export, checked on the training set it
    records, and predict --onnx."""
    from lipoclass.crossfit import fit_model
    from lipoclass.data import load_dataset
    from lipoclass.evaluate import CVConfig
    from lipoclass.spec import ModelSpec
    from lipoclass.train import TrainConfig

    ds_dir = tiny_dataset(counts=(12, 10, 8))
    cfg = TrainConfig(epochs=2, augment=(), device="cpu", progress=False, threads=1)
    spec = ModelSpec("tiny", PrepConfig(size=16), cfg)
    fit_model(load_dataset(ds_dir), spec, CVConfig(folds=3), tmp_path / "m", progress=False)
    export_onnx(tmp_path / "m", tmp_path / "m.onnx")
    assert f"on 30 prepared particles of training dataset {ds_dir.resolve()}" in (
        capsys.readouterr().out
    )
    a = predict(tmp_path / "m", ds_dir, tmp_path / "a.csv", config=CPU, verbose=False)
    b = predict(None, ds_dir, tmp_path / "b.csv", onnx_path=tmp_path / "m.onnx", verbose=False)
    assert a.ids == b.ids
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)
    assert a.review_threshold == b.review_threshold


def test_export_checks_on_recorded_training_dataset(tmp_path, tiny_dataset, capsys):
    """model.json's ``dataset`` record (as fit_model writes it) names the check particles;
    a changed fingerprint is reported, not refused."""
    from lipoclass.data.prepare import dataset_fingerprint

    ds_dir = tiny_dataset(counts=(6, 5, 4), empty_masks=2)
    fp = dataset_fingerprint(load_dataset(ds_dir))
    write_model_folder(tmp_path / "m", extra={"dataset": {"path": str(ds_dir), "fingerprint": fp}})
    assert main(["export", str(tmp_path / "m"), "--out", str(tmp_path / "a.onnx")]) == 0
    out = capsys.readouterr().out
    # 15 particles, 2 with empty masks skipped in masked mode: 13 real ones compared
    assert f"on 13 prepared particles of training dataset {ds_dir}: max abs diff" in out
    assert "changed since training" not in out and "random" not in out
    write_model_folder(tmp_path / "m", extra={"dataset": {"path": str(ds_dir), "fingerprint": "0"}})
    assert main(["export", str(tmp_path / "m"), "--out", str(tmp_path / "b.onnx")]) == 0
    assert "(changed since training)" in capsys.readouterr().out


def test_export_falls_back_to_random_inputs_with_a_note(tmp_path, capsys):
    gone = tmp_path / "moved-away"
    write_model_folder(tmp_path / "m", extra={"dataset": {"path": str(gone), "fingerprint": "0"}})
    assert main(["export", str(tmp_path / "m"), "--out", str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert f"note: training dataset {gone} not found" in out and "--dataset" in out
    assert "on 256 seeded random inputs: max abs diff" in out
    assert (tmp_path / "m.onnx").is_file()
    write_model_folder(tmp_path / "n")  # no record at all (older model folders)
    assert main(["export", str(tmp_path / "n"), "--out", str(tmp_path / "n.onnx")]) == 0
    assert "note: model.json records no training dataset" in capsys.readouterr().out


def test_export_dataset_option(tmp_path, tiny_dataset, capsys):
    ds_dir = tiny_dataset(counts=(6, 5, 4))
    write_model_folder(tmp_path / "m", extra={"dataset": {"path": str(tmp_path / "gone")}})
    rc = main(["export", str(tmp_path / "m"), "--out", str(tmp_path / "m.onnx"),
               "--dataset", str(ds_dir)])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert f"on 15 prepared particles of --dataset {ds_dir}: max abs diff" in out
    assert "note:" not in out
    # a --dataset that cannot be read is bad input: one line, exit 2, no file
    rc = main(["export", str(tmp_path / "m"), "--out", str(tmp_path / "x.onnx"),
               "--dataset", str(tmp_path / "nowhere")])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lipoclass: error: --dataset {tmp_path / 'nowhere'}: ")
    assert "\n" not in err
    assert not (tmp_path / "x.onnx").exists()


def test_export_check_uses_real_vesicle_particles(tmp_path, vesicle_dir, capsys):
    """On the real EM set (254 particles, 207 masks empty: auto-masked) the check compares
    real particles exactly as prepare() makes them."""
    from lipoclass.ensemble import load_model
    from lipoclass.export.onnx import _check_inputs

    write_model_folder(tmp_path / "m", ("CV", "DV", "DVH"),
                       extra={"dataset": {"path": str(vesicle_dir)}})  # fmt: skip
    full = prepare(load_dataset(vesicle_dir), PrepConfig(size=16), cache=False)
    x, aux, what = _check_inputs(load_model(tmp_path / "m"), ExportConfig(n_check=100))
    assert aux is None and len(x) == 100 and len(full.x) == 254
    assert what.startswith(f"{len(x)} prepared particles of training dataset")
    flat = {row.tobytes() for row in full.x}
    assert all(row.tobytes() in flat for row in x)  # real prepared particles, not noise
    assert main(["export", str(tmp_path / "m"), "--out", str(tmp_path / "v.onnx"),
                 "--dataset", str(vesicle_dir)]) == 0  # fmt: skip
    assert "on 254 prepared particles of --dataset" in capsys.readouterr().out
