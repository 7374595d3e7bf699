"""ONNX export: metadata, onnxruntime vs PyTorch, predict --onnx, failure leaves no file."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from lipoclass.cli import main
from lipoclass.data import PrepConfig, load_dataset, prepare
from lipoclass.errors import LipoclassError
from lipoclass.export import export_onnx, load_onnx
from lipoclass.predict import predict
from test_predict import CLASSES, TEMPERATURE, read_csv, write_model_folder


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
    assert meta["prep"] == {"mode": "masked", "size": 16, "aspect": "pad", "normalize": "zscore"}
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
    a = predict(tmp_path / "m", ds_dir, tmp_path / "a.csv", device="cpu", verbose=False)
    rc = main(["predict", str(ds_dir), "--onnx", str(tmp_path / "m.onnx"),
               "--out", str(tmp_path / "b.csv"), "--shares", str(tmp_path / "bs.csv")])  # fmt: skip
    assert rc == 0
    rows = read_csv(tmp_path / "b.csv")
    assert [r["id"] for r in rows] == a.ids
    assert [r["pred"] for r in rows] == [CLASSES[k] for k in a.pred]
    got = np.array([[float(r[f"p_{c}"]) for c in CLASSES] for r in rows])
    np.testing.assert_allclose(got, a.probs, atol=1e-5)
    # review threshold and confusion travel in the ONNX metadata: same shares
    assert read_csv(tmp_path / "bs.csv") == read_csv(tmp_path / "shares.csv")


def test_export_fails_above_tolerance_and_leaves_nothing(tmp_path, monkeypatch):
    from lipoclass.export import onnx as onnx_mod

    write_model_folder(tmp_path / "m")
    real = onnx_mod.OnnxModel.predict_proba_arrays

    def off(self, x, aux=None, batch_size=1024):
        return real(self, x, aux, batch_size) + 1e-3

    monkeypatch.setattr(onnx_mod.OnnxModel, "predict_proba_arrays", off)
    with pytest.raises(LipoclassError, match="differs from PyTorch"):
        export_onnx(tmp_path / "m", tmp_path / "x.onnx", tolerance=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_export_cli_errors(tmp_path, capsys):
    import joblib

    (tmp_path / "svm").mkdir()
    (tmp_path / "svm" / "model.json").write_text(json.dumps({
        "format_version": 1, "kind": "svm", "model": "svm", "classes": ["a", "b"],
        "prep": {"mode": "masked", "size": 28}}))  # fmt: skip
    joblib.dump({"placeholder": True}, tmp_path / "svm" / "svm.joblib")
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
def test_train_export_predict_end_to_end(tmp_path, tiny_dataset):
    """A really trained model folder (train_model) through export and predict --onnx."""
    from lipoclass.data import load_dataset
    from lipoclass.evaluate.spec import ModelSpec
    from lipoclass.train import TrainConfig, train_model

    ds_dir = tiny_dataset(counts=(12, 10, 8))
    cfg = TrainConfig(epochs=2, augment=(), device="cpu", progress=False, threads=1)
    spec = ModelSpec("tiny", PrepConfig(size=16), cfg)
    train_model(load_dataset(ds_dir), spec, tmp_path / "m", seed=0)
    export_onnx(tmp_path / "m", tmp_path / "m.onnx")
    a = predict(tmp_path / "m", ds_dir, tmp_path / "a.csv", device="cpu", verbose=False)
    b = predict(None, ds_dir, tmp_path / "b.csv", onnx_path=tmp_path / "m.onnx", verbose=False)
    assert a.ids == b.ids
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)
    assert a.review_threshold == b.review_threshold
