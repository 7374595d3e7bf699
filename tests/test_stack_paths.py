"""A ``stack`` model folder (``--recipe auto``'s CNN + SVM ensemble) on the lab's other
paths: predict on whole micrographs (equal to crop + predict), explain (its CNN base) and
export (the best exportable CNN candidate, said and recorded). Tiny synthetic micrographs,
the ``tiny`` CNN, 1 epoch (seconds)."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from lipoclass.cli import main
from lipoclass.data import load_dataset
from lipoclass.evaluate import CVConfig
from lipoclass.recipe import RecipeConfig, fit_auto
from lipoclass.recipe import auto as auto_mod
from lipoclass.synth import synthesize_micrographs

# two CNN seed members: every path below also sees a stack whose CNN is a group of members
FAST = RecipeConfig(
    base_model="tiny", hybrid_model=None, max_epochs=1, min_epochs=1, two_sizes=False,
    device="cpu", precision="fp32", max_cnn_seeds=2,
)  # fmt: skip
RATIOS = {"unilamellar": 0.5, "multilamellar": 0.4, "uncertain": 0.1}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Synthetic micrographs with true labels, their crops, and a ``mean`` stack folder
    (tiny CNN + SVM) trained on the crops."""
    root = tmp_path_factory.mktemp("stack")
    syn = synthesize_micrographs("lamellarity", root / "syn", count=2, size=320, density=0.35,
                                 pixel_size_nm=2.0, carbon=0.0, seed=0, ratios=RATIOS)  # fmt: skip
    mics = sorted((syn / "micrographs").glob("*.tif"))
    ds = root / "ds"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        args = ["crop", *map(str, mics), "--labels", str(syn / "labels"), "--classes",
                str(syn / "annotations.csv"), "--surround", "8", "--out", str(ds)]  # fmt: skip
        assert main(args) == 0
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(auto_mod, "_choose", lambda table: "mean")
        res = fit_auto(load_dataset(ds), CVConfig(folds=2, seed=0), root / "model", config=FAST,
                       progress=False)  # fmt: skip
    assert res.chosen == "mean"
    info = json.loads((root / "model" / "model.json").read_text())
    assert info["stack"]["groups"] == [["tiny_28", "tiny_28_seed1"], ["svm"]]
    return {"root": root, "syn": syn, "ds": ds, "model": root / "model", "mic": mics[0]}


def test_stack_predicts_micrographs_as_crop_then_predict(
    stack: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`predict STACK MICROGRAPHS` gives each particle the probabilities that predicting
    the crops `lipoclass crop` made of the same particles gives."""
    syn, model = stack["syn"], stack["model"]
    mics = sorted((syn / "micrographs").glob("*.tif"))
    out = tmp_path / "pred"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rc = main(["predict", str(model), *map(str, mics), "--labels", str(syn / "labels"),
                   "--classes", str(syn / "annotations.csv"), "--out", str(out)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    parts = _rows(out / "particles.csv")
    assert (out / "shares.csv").is_file() and (out / "index.html").is_file()
    ref_csv = tmp_path / "crops.csv"
    assert main(["predict", str(model), str(stack["ds"]), "--out", str(ref_csv)]) == 0
    ref = {r["id"]: r for r in _rows(ref_csv)}
    classes = load_dataset(stack["ds"]).classes
    got_ids = {f"{p['micrograph']}_{p['particle'].zfill(4)}": p for p in parts}
    # every cropped particle; micrograph predict also pads the few whose surroundings leave
    # the image (masked input: the particle itself is whole), as for a CNN folder
    assert set(ref) <= set(got_ids) and len(ref) > 10 and len(got_ids) - len(ref) < 5
    for pid, r in ref.items():
        p = got_ids[pid]
        got = [float(p[f"p_{c}"]) for c in classes]
        want = [float(r[f"p_{c}"]) for c in classes]
        np.testing.assert_allclose(got, want, atol=2e-6)
        assert p["label"] == r["label"]


def _table(model: Path) -> dict[str, float]:
    info = json.loads((model / "model.json").read_text())
    return {r["name"]: float(r["macro_f1"]) for r in info["recipe"]["table"]}


def test_explain_a_stack_explains_its_cnn_base(
    stack: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ex"
    assert main(["explain", str(stack["model"]), str(stack["ds"]), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    f1 = _table(stack["model"])
    line = next(ln for ln in said.splitlines() if "explain uses its best CNN base" in ln)
    assert "candidates/tiny_" in line and f"{f1['mean']:.3f}" in line
    assert "svm has no pixel attribution" in line
    page = (out / "index.html").read_text()
    assert "Which model is explained" in page and "Grad-CAM" in page


def test_export_a_stack_exports_its_cnn_candidate_and_says_so(
    stack: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ONNX: the best CNN candidate, a printed note with both out-of-fold figures, the
    metadata's ``exported_from``, and its predictions equal the candidate folder's."""
    from lipoclass.ensemble import load_model
    from lipoclass.export import load_onnx

    model, onnx_path = stack["model"], tmp_path / "m.onnx"
    assert main(["export", str(model), "--out", str(onnx_path)]) == 0
    said = capsys.readouterr().out
    f1 = _table(model)
    note = next(ln for ln in said.splitlines() if ln.startswith("note:") and "stack" in ln)
    assert "the exported file is that candidate" in note and "svm not in the file" in note
    assert "vs PyTorch on" in said  # the usual check, on real particles
    meta = load_onnx(onnx_path).meta["exported_from"]
    cand = meta["used"].split("/")[-1]
    assert meta["folder_macro_f1"] == pytest.approx(f1["mean"], abs=1e-4)
    assert meta["used_macro_f1"] == pytest.approx(f1[cand], abs=1e-4)
    assert f"{f1[cand]:.3f}" in note and f"{f1['mean']:.3f}" in note
    ds = load_dataset(stack["ds"])
    want, _ = load_model(model / meta["used"]).predict_proba(ds)
    got = tmp_path / "onnx.csv"
    assert main(["predict", str(stack["ds"]), "--onnx", str(onnx_path), "--out", str(got)]) == 0
    rows = _rows(got)
    probs = np.array([[float(r[f"p_{c}"]) for c in ds.classes] for r in rows])
    np.testing.assert_allclose(probs, want, atol=1e-4)
    # the stack folder's out-of-fold data do not belong to the file: refused, one line
    rc = main(["predict", str(model), str(stack["ds"]), "--onnx", str(onnx_path), "--out",
               str(tmp_path / "x.csv")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "of the stack folder" in err and "Traceback" not in err


def test_bioimageio_export_of_a_stack_packages_its_cnn_candidate(
    stack: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import zipfile

    import yaml

    zp = tmp_path / "m.zip"
    assert main(["export", str(stack["model"]), "--format", "bioimageio", "--out", str(zp)]) == 0
    said = capsys.readouterr().out
    assert "the package holds that candidate, not the folder" in said
    with zipfile.ZipFile(zp) as zf:
        rdf = yaml.safe_load(zf.read("rdf.yaml"))
    rec = rdf["config"]["lipoclass"]["exported_from"]
    assert rec["used"].startswith("candidates/tiny_") and rec["without_networks"] == ["svm"]
    assert rdf["config"]["lipoclass"]["model"] == "tiny" and rec["used"] in rdf["description"]
