"""The study report is built from stored results alone. The study folder below is fabricated
test data (hand-written metrics, not results of any model)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from lipoclass.cli import main
from lipoclass.report import build_report
from test_study import fake_metrics, make_dataset


def fabricate_study(root: Path) -> Path:
    """study.json + one finished run (metrics, oof.csv, config, run.json) + one failed run."""
    ds = make_dataset(root)
    from lipoclass.data import load_dataset

    dset = load_dataset(ds)
    classes = list(dset.classes)
    study = root / "study"
    good = study / "runs" / "aaaa11112222"
    bad = study / "runs" / "bbbb33334444"
    good.mkdir(parents=True)
    bad.mkdir(parents=True)
    rows = ["id,fold,label,pred," + ",".join(f"p_{c}" for c in classes)]
    for i, p in enumerate(dset.particles):
        wrong = i % 7 == 0
        pred = classes[(classes.index(str(p.label)) + 1) % 3] if wrong else p.label
        probs = [0.9 if c == pred else 0.05 for c in classes]
        if i % 5 == 0 and not wrong:
            probs = [0.4 if c == pred else 0.3 for c in classes]
        rows.append(f"{p.id},{i % 3},{p.label},{pred}," + ",".join(map(str, probs)))
    (good / "oof.csv").write_text("\n".join(rows) + "\n")
    (good / "metrics.json").write_text(json.dumps(fake_metrics(classes, 8, 0.75)))
    (good / "config.json").write_text(json.dumps({"versions": {"torch": "x"}, "spec": {}}))
    (good / "run.json").write_text(json.dumps({"wall_time_s": 1.5, "host": "test"}))
    (good / "status").write_text("done\n")
    (bad / "error.txt").write_text("Traceback ...\nRuntimeError: fabricated failure xyz\n")
    (bad / "status").write_text("failed\n")
    sizes = {c: [[24, 26], [30, 30]] for c in classes}
    meta = {
        "format_version": 1,
        "study": {"name": "fabricated", "description": "test data", "folds": 3, "seed": 0,
                  "plots": ["steps", "f1", "compare"], "varying": ["augment"], "source": "t"},
        "quick": False,
        "datasets": [{"path": str(ds), "name": "tiny", "classes": classes, "n_used": 44,
                      "class_counts": dset.class_counts(), "image_sizes": sizes}],
        "runs": [
            {"key": "aaaa11112222", "label": "+Rotation", "dataset": 0,
             "settings": {"model": "lipnet4", "augment": ["rotate"]}},
            {"key": "bbbb33334444", "label": "+Shift", "dataset": 0,
             "settings": {"model": "lipnet4", "augment": ["rotate", "shift"]}},
        ],
        "versions": {"python": "3.11", "lipoclass": "0.1.0"},
        "created": "2024-01-01T00:00:00+00:00",
    }  # fmt: skip
    (study / "study.json").write_text(json.dumps(meta))
    return study


def test_report_from_stored_results(tmp_path: Path) -> None:
    study = fabricate_study(tmp_path)
    page = build_report(study).read_text()
    assert page.startswith("<!DOCTYPE html>")
    # self-contained: no scripts, no external resources
    assert "<script" not in page
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)
    assert page.count("data:image/png;base64,") >= 4 + 3  # figures + thumbnails
    assert "fabricated failure xyz" in page and "+Shift" in page and "+Rotation" in page
    assert "majority" in page and "wall time" in page
    # a misclassified particle (p000 is wrong by construction) is in the gallery
    assert ">p000<" in page
    assert not list(study.glob(".*.tmp"))


def test_report_without_dataset_still_builds(tmp_path: Path) -> None:
    study = fabricate_study(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "ds")
    page = build_report(study).read_text()
    assert "thumbnails left out" in page and "+Rotation" in page


def test_report_of_single_cv_run(tmp_path: Path) -> None:
    run = fabricate_study(tmp_path) / "runs" / "aaaa11112222"
    page = build_report(run).read_text()
    assert "single cross-validation run" in page


def test_cli_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = fabricate_study(tmp_path)
    assert main(["report", str(study)]) == 0
    assert "report.html" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no study.json" in capsys.readouterr().err
    (study / "study.json").write_text("{broken")
    assert main(["report", str(study)]) == 2
    assert "invalid JSON" in capsys.readouterr().err


def _pixels(png: bytes) -> np.ndarray:
    """Greyscale pixels (H, W) of a PNG."""
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)


def test_figures_render() -> None:
    from lipoclass.report import figures as F

    m = {"per_class": {"a": {"tpr": 0.5, "tpr_std": 0.1, "f1": 0.4, "f1_ci": [0.3, 0.5]}}}
    m2 = {"per_class": {"a": {"tpr": 0.9, "tpr_std": 0.1, "f1": 0.8, "f1_ci": [0.7, 0.9]}}}
    for fn in (F.steps_figure, F.f1_figure, F.compare_figure):
        png = fn(["x", "y"], [m, None], ["a"], "t")
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        img = _pixels(png)
        assert img.shape[0] > 100 and img.shape[1] > 100
        assert (img < 200).mean() > 0.005  # drawn: axes, labels, bars (not a blank page)
        # the content follows the metrics: other values draw another figure
        other = _pixels(fn(["x", "y"], [m2, None], ["a"], "t"))
        assert other.shape != img.shape or np.abs(other - img).max() > 0
    assert np.isnan(F._get(None, "a", "tpr"))


def test_grouped_bars_helper_places_runs_side_by_side() -> None:
    """The one bar helper behind the F1 and comparison figures: run j of n sits at
    x + (j - (n-1)/2) * 0.8/n, NaN values and errors become 0, (2, M) errors are asymmetric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from lipoclass.report import figures as F

    fig, ax = plt.subplots()
    x = np.arange(3)
    for j in range(2):
        y = np.array([0.2, np.nan, 0.9]) + j * 0.05
        err = np.array([[0.1, 0.1, 0.1], [0.0, np.nan, 0.05]])  # (2, 3) below / above
        F._run_bars(ax, x, j, 2, y, err, label=f"run{j}", color=f"C{j}")
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(bars) == len(ax.patches) == 6
    centres = [b.get_x() + b.get_width() / 2 for b in bars]
    np.testing.assert_allclose(centres, [-0.2, 0.8, 1.8, 0.2, 1.2, 2.2])
    np.testing.assert_allclose([b.get_width() for b in bars], 0.4)
    np.testing.assert_allclose([b.get_height() for b in bars], [0.2, 0.0, 0.9, 0.25, 0.0, 0.95])
    assert ax.get_legend_handles_labels()[1] == ["run0", "run1"]
    plt.close(fig)
