"""napari plugin, the parts without a display: layer data of a prediction folder and of a
particle dataset, class corrections into reviews.csv, the label-image writer read back by
``crop --labels``. The viewer itself: tests/test_napari_viewer.py."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_CLASSES
from lipoclass.cli import main
from lipoclass.napari import (
    dataset_layers,
    is_particle_dataset,
    is_prediction_folder,
    prediction_layers,
    save_reviews,
    set_class,
    write_label_image,
)
from lipoclass.quantify import REVIEW_COLUMNS
from test_predict import write_model_folder

CLASSES = ("unilamellar", "multilamellar", "uncertain")
PX = 2.0


def make_prediction(root: Path) -> tuple[Path, Path, Path]:
    """A synthetic micrograph (256 px, known pixel size), a tiny model folder and
    ``lipoclass predict`` on the true instance labels -> (prediction folder, micrograph,
    model folder)."""
    from lipoclass.synth import synthesize_micrographs

    syn = synthesize_micrographs("lamellarity", root / "syn", count=1, size=256, density=0.3,
                                 pixel_size_nm=PX, carbon=0.0, seed=3)  # fmt: skip
    mic = sorted((syn / "micrographs").glob("*.tif"))[0]
    write_model_folder(root / "m", CLASSES)
    out = root / "pred"
    rc = main(["predict", str(root / "m"), str(mic), "--labels", str(syn / "labels" / mic.name),
               "--out", str(out)])  # fmt: skip
    assert rc == 0
    return out, mic, root / "m"


@pytest.fixture(scope="module")
def prediction(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_prediction(tmp_path_factory.mktemp("napari"))


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_prediction_folder_layers(prediction):
    out, mic, _m = prediction
    assert is_prediction_folder(out) and not is_particle_dataset(out)
    (img, ik, it), (lab, lk, lt) = prediction_layers(out)
    assert (it, lt) == ("image", "labels")
    assert ik["scale"] == (PX, PX) and lk["scale"] == (PX, PX) and ik["units"] == "nm"
    assert img.shape == lab.shape == (256, 256)
    rows = _rows(out / "particles.csv")
    f = lk["features"]
    assert len(f) == len(rows) > 5
    assert list(f["pred"]) == [r["pred"] for r in rows]
    assert list(f["review"]) == [r["review"] == "1" for r in rows]
    np.testing.assert_allclose(f["p_multilamellar"], [float(r["p_multilamellar"]) for r in rows])
    assert set(f["new_label"]) == {""}
    assert f["id"].iloc[0] == f"{mic.stem}_{rows[0]['particle']}"
    # label k is the k-th row: its pixels' centroid is the row's x, y (no overlap: true masks)
    for k, r in enumerate(rows[:5], start=1):
        ys, xs = np.nonzero(lab == k)
        assert abs(xs.mean() - float(r["x"])) < 0.6 and abs(ys.mean() - float(r["y"])) < 0.6
        assert ys.size == int(r["area_px"])
    # coloured by predicted class: the overlays' palette in class order
    from lipoclass.micrograph.predict import PALETTE

    cmap = lk["colormap"]
    for k, r in enumerate(rows, start=1):
        assert cmap[k] == PALETTE[CLASSES.index(r["pred"])]
    assert lk["metadata"]["classes"] == list(CLASSES)


def test_particle_dataset_as_stack(tiny_dataset):
    ds = tiny_dataset(counts=(3, 2, 2), size=(20, 30))
    assert is_particle_dataset(ds) and not is_prediction_folder(ds)
    (stack, _sk, _), (labels, lk, lt) = dataset_layers(ds)
    assert lt == "labels" and stack.shape == labels.shape and stack.shape[0] == 7
    assert stack.shape[1] <= 30 and stack.shape[2] <= 30
    assert [set(np.unique(labels[k])) - {0} for k in range(7)] == [{k + 1} for k in range(7)]
    c = TINY_CLASSES
    assert list(lk["features"]["label"]) == [c[0]] * 3 + [c[1]] * 2 + [c[2]] * 2
    assert lk["colormap"][1] != lk["colormap"][4] != lk["colormap"][6]


def test_corrections_to_reviews_csv(prediction, tmp_path):
    from lipoclass.review.store import read_decisions

    out, _mic, _m = prediction
    f = prediction_layers(out)[1][1]["features"]
    other = next(c for c in CLASSES if c != f["pred"].iloc[1])
    f = set_class(f, 2, other, CLASSES)
    f = set_class(f, 3, "not_a_particle", CLASSES)
    with pytest.raises(ValueError, match="not a class"):
        set_class(f, 1, "banana", CLASSES)
    with pytest.raises(ValueError, match="not a particle"):
        set_class(f, 10_000, other, CLASSES)
    path = tmp_path / "reviews.csv"
    assert save_reviews(path, f, CLASSES, "ana") == 2
    assert save_reviews(path, f, CLASSES, "ana") == 0  # nothing new
    with path.open() as fh:
        assert tuple(next(csv.reader(fh))) == REVIEW_COLUMNS
    got = read_decisions(path, ids=set(f["id"]), labels=set(CLASSES))
    assert [(d.id, d.queue, d.new_label, d.reviewer) for d in got] == [
        (f["id"].iloc[1], "napari", other, "ana"),
        (f["id"].iloc[2], "napari", "not_a_particle", "ana"),
    ]
    assert got[0].micrograph == _rows(out / "particles.csv")[1]["micrograph"]
    f = set_class(f, 2, CLASSES[0] if other != CLASSES[0] else CLASSES[1], CLASSES)
    assert save_reviews(path, f, CLASSES, "bo") == 1  # a changed decision is appended


def test_writer_round_trip_through_crop(prediction, tmp_path, capsys):
    out, mic, _m = prediction
    lab = prediction_layers(out)[1][0].copy()
    n = int(lab.max())
    lab[lab == 2] = 0  # a person erased one particle in the labels layer
    path = write_label_image(tmp_path / "edited.tif", lab)
    ds = tmp_path / "crops"
    rc = main(["crop", str(mic), "--labels", str(path), "--out", str(ds), "--surround", "4",
               "--keep-edge"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    rows = _rows(ds / "particles.csv")
    assert len(rows) == n - 1
    with pytest.raises(Exception, match="2-D"):
        write_label_image(tmp_path / "x.tif", np.zeros((2, 4, 4), int))
    with pytest.raises(Exception, match="non-negative integers"):
        write_label_image(tmp_path / "x.tif", np.full((4, 4), 0.5))
    assert not (tmp_path / "x.tif").exists()


def test_old_prediction_folder_without_labels_is_one_line(prediction, tmp_path):
    import shutil

    from lipoclass.errors import LipoclassError

    out, _mic, _m = prediction
    old = tmp_path / "old"
    shutil.copytree(out, old)
    shutil.rmtree(old / "labels")
    with pytest.raises(LipoclassError, match="predict again"):
        prediction_layers(old)
