"""The candidate threshold a verifier was trained with: detect uses it unless --threshold is
given (a warning when it differs), and detect-train --threshold auto chooses it from the
lab's annotations by out-of-fold detection F1."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from lipoclass.choices import RING_CLIP
from lipoclass.cli import main
from lipoclass.micrograph import DetectConfig, LabelImageSource, read_label_image
from lipoclass.micrograph.detect import detect_candidates
from lipoclass.micrograph.io import read_micrograph
from lipoclass.micrograph.verify import (
    DETECT_TRAIN_THRESHOLDS,
    candidate_threshold,
    load_verifier,
    train_detect_verifier,
)
from lipoclass.synth import synthesize_micrographs


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small micrographs with distractors (seeds unused in verifier training)."""
    out = tmp_path_factory.mktemp("messy") / "syn"
    synthesize_micrographs("lamellarity", out, count=3, size=384, density=0.25, seed=778,
                           pixel_size_nm=1.5, ice=12.0, debris=20.0, carbon=1.0,
                           gradient=0.4, touching=0.5)  # fmt: skip
    return out


def _mics(messy: Path) -> list[str]:
    return [str(p) for p in sorted((messy / "micrographs").glob("*.tif"))]


def _candidates(folder: Path) -> int:
    with (folder / "detections.csv").open() as fh:
        return len(list(csv.DictReader(fh)))


def test_detect_uses_the_verifiers_candidate_threshold(messy: Path, tmp_path: Path,
                                                       capsys) -> None:  # fmt: skip
    mics = _mics(messy)
    ver = tmp_path / "ver"
    rc = main(["detect-train", *mics, "--labels", str(messy / "labels"), "--threshold", "3.5",
               "--model", "logistic", "--blanks", "0", "--out", str(ver)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert candidate_threshold(str(ver)) == 3.5
    assert candidate_threshold("default") == 4.0 and candidate_threshold("none") is None
    mic = read_micrograph(Path(mics[0]))
    n = {t: len(detect_candidates(mic.image, DetectConfig(threshold=t, verifier="none"), 1.5))
         for t in (3.5, 4.0)}  # fmt: skip
    assert n[3.5] > n[4.0]
    capsys.readouterr()
    base = ["detect", mics[0], "--pixel-size", "1.5", "--verifier", str(ver)]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert "warning" not in capsys.readouterr().err
    assert _candidates(tmp_path / "a") == n[3.5]  # the verifier's 3.5, not the default 4
    assert main([*base, "--threshold", "4", "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "3.5" in err and len(err.strip().splitlines()) == 1
    assert _candidates(tmp_path / "b") == n[4.0]  # a given threshold wins
    assert main([*base, "--threshold", "3.5", "--out", str(tmp_path / "c")]) == 0
    assert "warning" not in capsys.readouterr().err
    # crop --detect builds its detector the same way
    rc = main(["crop", mics[0], "--detect", "--pixel-size", "1.5", "--verifier", str(ver),
               "--threshold", "4", "--out", str(tmp_path / "crops")])  # fmt: skip
    assert rc == 0 and "3.5" in capsys.readouterr().err


def test_detect_train_auto_chooses_by_detection_f1(messy: Path, tmp_path: Path, capsys) -> None:
    mics = _mics(messy)
    out = tmp_path / "auto"
    rc = main(["detect-train", *mics, "--labels", str(messy / "labels"), "--threshold", "auto",
               "--model", "logistic", "--blanks", "2", "--out", str(out)])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0
    info = json.loads((out / "verifier.json").read_text())["info"]
    table = info["candidate_thresholds"]
    assert list(table) == [f"{t:g}" for t in DETECT_TRAIN_THRESHOLDS]
    best = max(table, key=lambda k: table[k]["f1"])  # max keeps the first of equals
    assert info["candidate_threshold"] == float(best) and f"threshold {best} chosen" in text
    assert info["training_ring_clip"] == RING_CLIP  # the candidates it learnt from
    assert table["3"]["candidates"] > table["4"]["candidates"]
    n_truth = sum(int(read_label_image(messy / "labels" / Path(m).name).max()) for m in mics)
    for f in table.values():  # recall of all annotated liposomes, not of the candidates
        tp = f["recall"] * n_truth
        assert tp == pytest.approx(round(tp), abs=0.01)
        assert f["f1"] == pytest.approx(2 * f["precision"] * f["recall"]
                                        / (f["precision"] + f["recall"]), abs=2e-3)  # fmt: skip
    assert load_verifier(str(out)) is not None


def test_detection_recall_counts_liposomes_without_a_candidate(messy: Path,
                                                               tmp_path: Path) -> None:  # fmt: skip
    mics = [Path(m) for m in _mics(messy)]
    _, stats = train_detect_verifier(mics, LabelImageSource(messy / "labels", mics),
                                     DetectConfig(threshold=6.0), tmp_path / "v",
                                     pixel_size_nm=1.5, model="logistic",
                                     blanks=0)  # fmt: skip
    n_truth = sum(int(np.unique(read_label_image(messy / "labels" / m.name)).size - 1)
                  for m in mics)  # fmt: skip
    assert stats["candidate_threshold"] == 6.0
    assert stats["detection_recall"] == pytest.approx(stats["oof_true_positives"] / n_truth)
    assert stats["detection_recall"] < stats["oof_recall"]  # a strict threshold misses some
