"""bioimage.io model package: rdf.yaml content, real test particles, the package's own test
run with bioimageio.core (skipped without the extra ``lipoclass[bioimageio]``), bad input."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import yaml

from lipoclass.cli import main
from lipoclass.data import PrepConfig, load_dataset, prepare
from test_predict import CLASSES, write_model_folder


def _export(tmp_path, tiny_dataset, capsys, *extra: str, n_members: int = 2):
    ds_dir = tiny_dataset(counts=(6, 5, 4))
    write_model_folder(tmp_path / "m", extra={"dataset": str(ds_dir)}, n_members=n_members)
    zp = tmp_path / "out" / "model.zip"
    rc = main(["export", str(tmp_path / "m"), "--format", "bioimageio", "--out", str(zp), *extra])
    out = capsys.readouterr().out
    assert rc == 0, out
    return ds_dir, zp, out


def test_package_content_and_real_test_particles(tmp_path, tiny_dataset, capsys):
    ds_dir, zp, out = _export(tmp_path, tiny_dataset, capsys, "--author", "A. Person")
    assert "max abs diff" in out and f"test particles of {ds_dir}" in out
    with zipfile.ZipFile(zp) as zf:
        names = set(zf.namelist())
        rdf = yaml.safe_load(zf.read("rdf.yaml"))
        zf.extractall(tmp_path / "pkg")
    assert {"rdf.yaml", "weights.onnx", "test_input.npy", "test_output.npy", "cover.png",
            "README.md"} <= names  # fmt: skip
    assert rdf["type"] == "model" and rdf["format_version"].startswith("0.5.")
    assert rdf["license"] == "MIT" and rdf["authors"] == [{"name": "A. Person"}]
    assert "Uppsala University" in rdf["cite"][0]["text"] and rdf["cite"][0]["url"]
    assert rdf["outputs"][0]["axes"][1]["channel_names"] == list(CLASSES)
    assert [a.get("id", a["type"]) for a in rdf["inputs"][0]["axes"]] == ["batch", "channel",
                                                                          "y", "x"]  # fmt: skip
    assert rdf["config"]["lipoclass"]["prep"] == {
        "mode": "masked", "size": 16, "aspect": "pad", "normalize": "zscore", "nm_per_px": None
    }  # fmt: skip
    assert rdf["config"]["lipoclass"]["members"] == 2
    readme = (tmp_path / "pkg" / "README.md").read_text()
    assert "masked" in readme and "Validation" in readme
    # test inputs are real prepared particles of the training dataset, outputs the ensemble's
    x = np.load(tmp_path / "pkg" / "test_input.npy")
    y = np.load(tmp_path / "pkg" / "test_output.npy")
    assert x.shape[1:] == (1, 16, 16) and 1 <= len(x) <= 4 and y.shape == (len(x), len(CLASSES))
    prepared = prepare(load_dataset(ds_dir), PrepConfig(size=16), cache=False).x
    for xi in x:
        assert np.abs(prepared - xi).reshape(len(prepared), -1).max(axis=1).min() == 0.0
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)
    import torch

    from lipoclass.ensemble import load_model
    from lipoclass.export.onnx import ProbabilityModel

    loaded = load_model(tmp_path / "m")
    wrapper = ProbabilityModel(loaded.modules, loaded.temperature, loaded.tta).eval()
    with torch.no_grad():
        np.testing.assert_allclose(y, wrapper(torch.from_numpy(x)).numpy(), atol=1e-5)


def test_package_passes_bioimageio_core(tmp_path, tiny_dataset, capsys):
    """The package's own test run: bioimageio.spec validation + bioimageio.core reproducing
    the test outputs from the test inputs with the ONNX weights."""
    core = pytest.importorskip("bioimageio.core")
    from bioimageio.spec import load_description

    _ds, zp, _out = _export(tmp_path, tiny_dataset, capsys)
    descr = load_description(zp)
    assert descr.validation_summary.status in ("passed", "valid-format"), (
        descr.validation_summary.format()
    )
    assert [str(c) for c in descr.outputs[0].axes[1].channel_names] == list(CLASSES)
    summary = core.test_model(zp, weight_format="onnx", devices=["cpu"])
    assert summary.status == "passed", summary.format()
    names = [d.name for d in summary.details]
    assert any("Reproduce test outputs" in n for n in names)


def _svm_folder(path):
    from types import SimpleNamespace

    import joblib

    (path / "members").mkdir(parents=True)
    (path / "model.json").write_text(json.dumps({
        "format_version": 2, "kind": "svm", "model": "svm", "classes": ["a", "b"],
        "members": ["members/fold0.joblib"], "prep": {"mode": "masked", "size": 28}}))  # fmt: skip
    joblib.dump(SimpleNamespace(classes=("a", "b")), path / "members" / "fold0.joblib")


def test_bad_input_gives_one_line(tmp_path, tiny_dataset, capsys):
    ds_dir = tiny_dataset(counts=(4, 3, 3))
    zp = tmp_path / "model.zip"

    def run(model, *extra):
        rc = main(["export", str(model), "--format", "bioimageio", "--out", str(zp), *extra])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.count("\n") == 0 and err.startswith("lipoclass: error:"), err
        assert not zp.exists() and not list(tmp_path.glob(".model.zip*"))
        return err

    _svm_folder(tmp_path / "svm")
    assert "CNN model folders only" in run(tmp_path / "svm", "--dataset", str(ds_dir))
    write_model_folder(tmp_path / "m")  # records no training dataset
    assert "give --dataset" in run(tmp_path / "m")
    info = json.loads((tmp_path / "m" / "model.json").read_text())
    info["prep"] = {"mode": "masked", "size": 16}  # older folder: aspect, normalize unrecorded
    (tmp_path / "m" / "model.json").write_text(json.dumps(info))
    err = run(tmp_path / "m", "--dataset", str(ds_dir))
    assert "'aspect', 'normalize'" in err and "model.json" in err
    del info["prep"]
    (tmp_path / "m" / "model.json").write_text(json.dumps(info))
    assert "'prep' is missing" in run(tmp_path / "m", "--dataset", str(ds_dir))
    write_model_folder(tmp_path / "ok")
    assert "--dataset" in run(tmp_path / "ok", "--dataset", str(tmp_path / "nowhere"))
    rc = main(["export", str(tmp_path / "ok"), "--format", "bioimageio", "--out",
               str(tmp_path / "model.onnx"), "--dataset", str(ds_dir)])  # fmt: skip
    assert rc == 2 and ".zip" in capsys.readouterr().err
    rc = main(["export", str(tmp_path / "ok"), "--out", str(tmp_path / "a.onnx"), "--author", "X"])
    assert rc == 2 and "--author goes with --format bioimageio" in capsys.readouterr().err


def test_size_feature_input_of_lipnet_hybrid(tmp_path, tiny_dataset, capsys):
    """A model with size features gets a second input ``aux`` whose channels are named after
    the features, and the package still passes its own test run."""
    import torch

    from lipoclass.models import AUX_FEATURES, create_model

    ds_dir = tiny_dataset(counts=(4, 3, 3))
    write_model_folder(tmp_path / "m", size=28, extra={"dataset": str(ds_dir)})
    info = json.loads((tmp_path / "m" / "model.json").read_text())
    with torch.random.fork_rng():
        torch.manual_seed(0)
        m = create_model("lipnet_hybrid", len(CLASSES), 28).eval()
    torch.save({"state_dict": m.state_dict(), "model_kwargs": dict(m.lipo_config)},
               tmp_path / "m" / "members" / "fold0.pt")  # fmt: skip
    info.update(model="lipnet_hybrid", model_kwargs=dict(m.lipo_config))
    (tmp_path / "m" / "model.json").write_text(json.dumps(info))
    zp = tmp_path / "h.zip"
    assert main(["export", str(tmp_path / "m"), "--format", "bioimageio", "--out", str(zp)]) == 0
    with zipfile.ZipFile(zp) as zf:
        rdf = yaml.safe_load(zf.read("rdf.yaml"))
        assert "test_aux.npy" in zf.namelist()
    assert [t["id"] for t in rdf["inputs"]] == ["input", "aux"]
    assert rdf["inputs"][1]["axes"][1]["channel_names"] == list(AUX_FEATURES)
    core = pytest.importorskip("bioimageio.core")
    summary = core.test_model(zp, weight_format="onnx", devices=["cpu"])
    assert summary.status == "passed", summary.format()
