"""benchmarks/altsim.py, the independent micrograph simulator of the detector check: seeded,
its truth labels cover the drawn liposomes and nothing else, and ``lipoclass detect`` reads
the MRC it writes (pixel size from the header) and scores against its labels. Seconds."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np

from conftest import load_benchmark


def _altsim():
    return load_benchmark("altsim")


def test_seeded_and_labels_cover_the_liposomes() -> None:
    alt = _altsim()
    cfg = alt.AltConfig(size=256, density=0.3, ice=20.0, debris=40.0, carbon=1.0)
    a, b = alt.render(cfg, 11), alt.render(cfg, 11)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.image.dtype == np.float32 and a.image.min() >= 0
    assert len(a.vesicles) >= 3
    yy, xx = np.mgrid[:256, :256]
    for k, v in enumerate(a.vesicles, start=1):
        mine = a.labels == k
        assert mine.any()  # none hidden entirely by its neighbours
        r_px = v["r_nm"] * np.sqrt(v["aspect"]) / a.pixel_nm + 1
        assert np.all(np.hypot(yy[mine] - v["cy"], xx[mine] - v["cx"]) <= r_px)
        assert a.labels[round(v["cy"]), round(v["cx"])] > 0  # centre is covered
    assert int(a.labels.max()) == len(a.vesicles)
    assert not (a.carbon & (a.labels > 0)).mean() > 0.01  # liposomes lie in the hole
    assert alt.render(replace(cfg, dose=10.0), 11).image.mean() < a.image.mean()


def test_detect_cli_reads_its_mrc(tmp_path: Path) -> None:
    from lipoclass.cli import main
    from lipoclass.micrograph.io import write_label_image

    alt = _altsim()
    m = alt.render(alt.AltConfig(size=384, density=0.3, ice=0.0, carbon=0.0), 5)
    alt.write_mrc(str(tmp_path / "a.mrc"), m.image, m.pixel_nm)
    write_label_image(tmp_path / "a_labels.tif", m.labels, m.pixel_nm)
    main(["detect", str(tmp_path / "a.mrc"), "--out", str(tmp_path / "det"), "--truth",
          str(tmp_path / "a_labels.tif")])  # fmt: skip
    rows = list(csv.DictReader(open(tmp_path / "det" / "detection_scores.csv")))
    assert int(rows[-1]["truth"]) == int(m.labels.max()) > 0
    assert (tmp_path / "det" / "a.tif").exists()
