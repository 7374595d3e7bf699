"""The model folder holds all it needs (issue 19): model.json records how an input is
prepared (mode, size, normalisation, the training crops' surroundings, the training pixel
size); moving the training dataset away does not change a single probability, for crops
datasets and for micrographs; folders from before the record fall back with a warning."""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from lipoclass.cli import main
from lipoclass.ensemble import DEFAULT_SURROUND_PX, load_model
from lipoclass.synth import synthesize_micrographs

SURROUND = 20  # not the 50 px default: a silent fallback would change the pixels


def _probs(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols = [k for k in rows[0] if k.startswith("p_")]
    keys = [f"{r.get('micrograph', '')}/{r.get('particle', r.get('id'))}" for r in rows]
    return keys, np.array([[float(r[c]) for c in cols] for r in rows])


@pytest.fixture(scope="module")
def surround_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Micrographs -> crops with --surround 20 -> a tiny surround-mode model."""
    root = tmp_path_factory.mktemp("rec")
    syn = synthesize_micrographs("lamellarity", root / "syn", count=2, size=256, density=0.35,
                                 pixel_size_nm=2.0, carbon=0.0, seed=3)  # fmt: skip
    mics = sorted((syn / "micrographs").glob("*.tif"))
    ds = root / "ds"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert main(["crop", *map(str, mics), "--labels", str(syn / "labels"), "--classes",
                     str(syn / "annotations.csv"), "--surround", str(SURROUND), "--out",
                     str(ds)]) == 0  # fmt: skip
        model = root / "model"
        assert main(["train", str(ds), "--model", "tiny", "--mode", "surround", "--size", "16",
                     "--epochs", "1", "--folds", "2", "--out", str(model)]) == 0  # fmt: skip
    return {"root": root, "syn": syn, "ds": ds, "model": model}


def _predict_both(m: dict[str, Path], model: Path, tag: str, crops: Path) -> list[Path]:
    """Predict a crops dataset and the micrographs; the two output files."""
    syn = m["syn"]
    mics = sorted((syn / "micrographs").glob("*.tif"))
    out_c = m["root"] / f"crops_{tag}.csv"
    out_m = m["root"] / f"mics_{tag}"
    assert main(["predict", str(model), str(crops), "--out", str(out_c), "--device", "cpu"]) == 0
    assert main(["predict", str(model), *map(str, mics), "--labels", str(syn / "labels"),
                 "--out", str(out_m), "--device", "cpu"]) == 0  # fmt: skip
    return [out_c, out_m / "particles.csv"]


def test_model_json_records_the_input(surround_model: dict[str, Path]) -> None:
    info = json.loads((surround_model["model"] / "model.json").read_text())
    rec = info["input"]
    assert rec["mode"] == "surround" and rec["size"] == 16
    assert rec["normalize"] == "zscore" and rec["aspect"] == "pad"
    assert rec["surround_px"] == SURROUND
    assert rec["pixel_size_nm"] == pytest.approx(2.0) and rec["rescaled"] is False
    assert load_model(surround_model["model"]).surround_px() == SURROUND


def test_predictions_do_not_change_when_the_training_data_moves(
    surround_model: dict[str, Path], recwarn: pytest.WarningsRecorder
) -> None:
    m = surround_model
    crops = m["root"] / "crops_copy"  # particles to predict, not the training folder itself
    shutil.copytree(m["ds"], crops)
    before = _predict_both(m, m["model"], "before", crops)
    moved = m["root"] / "moved_away"
    m["ds"].rename(moved)
    try:
        after = _predict_both(m, m["model"], "after", crops)
    finally:
        moved.rename(m["ds"])
    for a, b in zip(before, after):
        ka, pa = _probs(a)
        kb, pb = _probs(b)
        assert ka == kb and len(ka) > 5
        np.testing.assert_array_equal(pa, pb)
    assert not [w for w in recwarn if "input record" in str(w.message)]
    summary = json.loads((m["root"] / "mics_after" / "summary.json").read_text())
    assert summary["surround_px"] == SURROUND


def test_old_model_folder_falls_back_with_a_warning(surround_model: dict[str, Path]) -> None:
    """A folder without the input record reads the training dataset.toml while it is there,
    else uses the documented default; both with a warning, never silently."""
    m = surround_model
    old = m["root"] / "old_model"
    shutil.copytree(m["model"], old)
    info = json.loads((old / "model.json").read_text())
    del info["input"]
    (old / "model.json").write_text(json.dumps(info))
    with pytest.warns(UserWarning, match=f"without an input record.*using {SURROUND} px"):
        assert load_model(old).surround_px() == SURROUND
    moved = m["root"] / "moved_again"
    m["ds"].rename(moved)
    try:
        with pytest.warns(UserWarning, match=f"using {DEFAULT_SURROUND_PX} px from the default"):
            assert load_model(old).surround_px() == DEFAULT_SURROUND_PX
    finally:
        moved.rename(m["ds"])
