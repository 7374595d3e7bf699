"""Particle-export importer: both JSON layouts, class codes, feature columns, bad records,
syntax errors, the CLI's exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lipoclass.cli import main
from lipoclass.data import load_dataset, write_image
from lipoclass.data.importer import ImportConfig, import_export, parse_export
from lipoclass.errors import LipoclassError


def _record(rid: Any, code: int = 3, image: str | None = None, **extra: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"Id": rid, "Class": code, "Bmp": image or f"p{rid}.bmp"}
    rec.update(
        Area=100.0 + float(rid if isinstance(rid, int) else 0),
        Length=18.0,
        DiametersInPixels=20,
        SignalToNoise=2.5,
        Moments=[0.1, 0.2, 0.3, 0.4],
        Histogram=list(range(32)),
        RadialDensityProfile=[
            [150.0 - i, 1.8 * i] for i in range(5 + (rid % 3 if isinstance(rid, int) else 0))
        ],
        EdgeDensityProfile=[[140.0, -1.8], [90.0, 0.0], [140.0, 1.8]],
    )
    rec.update(extra)
    return rec


@pytest.fixture
def images(tmp_path: Path) -> Path:
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, 9):
        write_image(d / f"p{i}.bmp", rng.integers(0, 255, (20 + i, 22), dtype=np.uint8))
    (d / "garbage.bmp").write_bytes(b"this is not a bitmap at all")
    return d


def _write_stream(path: Path, recs: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, indent=2) + "\n" for r in recs))
    return path


def test_stream_and_list_layouts_give_same_dataset(tmp_path: Path, images: Path) -> None:
    recs = [_record(1, 3), _record(2, 4), _record(3, 5, Image="p3.bmp"), _record(4, 3)]
    del recs[2]["Bmp"]  # this one names its image with the 'Image' key
    stream = _write_stream(tmp_path / "stream.json", recs)
    lst = tmp_path / "list.json"
    lst.write_text(json.dumps(recs))
    assert parse_export(stream) == parse_export(lst) == recs
    a = import_export(stream, images, tmp_path / "a")
    b = import_export(lst, images, tmp_path / "b")
    assert a.errors == [] and b.errors == []
    assert a.dataset is not None and b.dataset is not None
    assert a.dataset.classes == ("unilamellar", "multilamellar", "uncertain")
    assert [p.label for p in a.dataset.particles] == [
        "unilamellar", "multilamellar", "uncertain", "unilamellar",
    ]  # fmt: skip
    np.testing.assert_array_equal(a.dataset.feature_matrix(), b.dataset.feature_matrix())
    cols = a.dataset.feature_columns
    assert {"area", "length", "diameters_in_pixels", "signal_to_noise"} <= set(cols)
    assert [c for c in cols if c.startswith("moment_")] == [
        "moment_mu20", "moment_mu02", "moment_mu30", "moment_mu03",
    ]  # fmt: skip
    assert [c for c in cols if c.startswith("hist_")] == [f"hist_{i:02d}" for i in range(32)]
    # profiles of different lengths are resampled to the same fixed number of points
    assert sum(c.startswith("rdp_int_") for c in cols) == 16
    assert sum(c.startswith("edp_dist_") for c in cols) == 7
    p0 = a.dataset.particles[0]
    assert p0.features["rdp_int_00"] == 150.0 and p0.features["rdp_dist_15"] == pytest.approx(
        1.8 * 5
    )
    assert p0.features["hist_31"] == 31.0
    assert p0.pixel_size_nm == pytest.approx(18.0 / 20)  # Length (nm) / DiametersInPixels
    # images are copied byte for byte
    assert p0.image.read_bytes() == (images / "p1.bmp").read_bytes()
    assert "4 record(s), 4 good, 0 bad (problem: lamellarity)" in a.text()
    reloaded = load_dataset(tmp_path / "a")
    assert reloaded.ids == ["1", "2", "3", "4"]


def test_encapsulation_codes(tmp_path: Path, images: Path) -> None:
    exp = _write_stream(tmp_path / "e.json", [_record(1, 7), _record(2, 8), _record(3, 10)])
    res = import_export(exp, images, tmp_path / "out")
    assert res.problem == "encapsulation"
    assert res.dataset is not None
    assert res.dataset.classes == ("empty", "full", "uncertain")
    assert res.dataset.class_counts() == {"empty": 1, "full": 1, "uncertain": 1}


def test_profile_points_config(tmp_path: Path, images: Path) -> None:
    exp = _write_stream(tmp_path / "e.json", [_record(1), _record(2)])
    res = import_export(exp, images, tmp_path / "o", config=ImportConfig(rdp_points=4))
    assert res.dataset is not None
    assert sum(c.startswith("rdp_dist_") for c in res.dataset.feature_columns) == 4
    with pytest.raises(ValueError, match="rdp_points"):
        ImportConfig(rdp_points=1)


def _bad_export(tmp_path: Path) -> Path:
    recs: list[Any] = [
        _record(1),
        {k: v for k, v in _record(2).items() if k != "Id"},  # missing Id -> "#2"
        _record(3, 6),  # unknown class code
        _record(4, image="missing.bmp"),
        _record(5, image="garbage.bmp"),
        _record(6, Moments=[1, 2]),  # malformed feature
        _record(7, Area="big"),  # non-numeric feature
        _record(1),  # duplicate id
        _record(8),
    ]
    return _write_stream(tmp_path / "bad.json", recs)


def test_bad_records_reported_with_id_and_nothing_written(tmp_path: Path, images: Path) -> None:
    out = tmp_path / "out"
    res = import_export(_bad_export(tmp_path), images, out)
    assert res.dataset is None
    assert not out.exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())  # no staging left
    errs = dict(res.errors)
    assert set(errs) == {"#2", "3", "4", "5", "6", "7", "1"}
    assert errs["#2"] == "missing Id"
    assert "unknown class code 6" in errs["3"]
    assert "missing.bmp not found" in errs["4"]
    assert "garbage.bmp: unreadable image" in errs["5"]
    assert "Moments must be a list of 4 numbers" in errs["6"]
    assert "feature Area" in errs["7"] and "not a number" in errs["7"]
    assert "duplicate Id" in errs["1"]
    text = res.text()
    assert "9 record(s), 2 good, 7 bad" in text
    assert "nothing written" in text and "--keep-going" in text
    assert "error: record 3: unknown class code 6" in text


def test_keep_going_writes_good_records(tmp_path: Path, images: Path) -> None:
    res = import_export(_bad_export(tmp_path), images, tmp_path / "out", keep_going=True)
    assert res.dataset is not None
    assert res.dataset.ids == ["1", "8"]
    assert len(res.errors) == 7
    assert "wrote 2 particles" in res.text()


def test_mixed_problems_is_an_error(tmp_path: Path, images: Path) -> None:
    exp = _write_stream(tmp_path / "m.json", [_record(1, 3), _record(2, 8)])
    with pytest.raises(LipoclassError, match="mixes problems: record 1 has class code 3"):
        import_export(exp, images, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_syntax_error_names_line_and_byte(tmp_path: Path, images: Path) -> None:
    bad = tmp_path / "s.json"
    bad.write_text('{\n  "Id": 1,\n  "Class": 3\n}\n{\n  "Id": 2,\n  "Class" 3\n}\n')
    with pytest.raises(
        LipoclassError, match=r"s.json: JSON syntax error at line 7 column 11 \(byte 51\)"
    ):
        parse_export(bad)
    lst = tmp_path / "l.json"
    lst.write_text('[{"Id": 1}, {"Id": 2},]')
    with pytest.raises(LipoclassError, match="line 1 column 23"):
        parse_export(lst)


def test_fatal_input_errors(tmp_path: Path, images: Path) -> None:
    exp = _write_stream(tmp_path / "e.json", [_record(1)])
    with pytest.raises(LipoclassError, match="export file not found"):
        import_export(tmp_path / "nope.json", images, tmp_path / "o")
    with pytest.raises(LipoclassError, match="images folder not found"):
        import_export(exp, tmp_path / "noimgs", tmp_path / "o")
    (tmp_path / "exists").mkdir()
    with pytest.raises(LipoclassError, match="already exists"):
        import_export(exp, images, tmp_path / "exists")
    all_bad = _write_stream(tmp_path / "b.json", [_record(1, 99)])
    with pytest.raises(LipoclassError, match=r"no good record.*record 1: unknown class code 99"):
        import_export(all_bad, images, tmp_path / "o", keep_going=True)


def test_cli_import_exit_codes(
    tmp_path: Path, images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _bad_export(tmp_path)
    rc = main(["import-export", str(bad), "--images", str(images), "--out", str(tmp_path / "o1")])
    out = capsys.readouterr().out
    assert rc == 1 and "nothing written" in out and not (tmp_path / "o1").exists()
    rc = main(["import-export", str(bad), "--images", str(images), "--out", str(tmp_path / "o2"),
               "--keep-going"])  # fmt: skip
    assert rc == 0 and "wrote 2 particles" in capsys.readouterr().out
    rc = main(["import-export", str(tmp_path / "none.json"), "--images", str(images),
               "--out", str(tmp_path / "o3")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "lipoclass: error:" in err and "export file not found" in err


@pytest.mark.shared
def test_shared_sample_exports(tmp_path: Path, export_dir: Path) -> None:
    for name, problem, counts in [
        ("lamellarity", "lamellarity", {"unilamellar": 6, "multilamellar": 3, "uncertain": 1}),
        ("encapsulation", "encapsulation", {"empty": 2, "full": 6, "uncertain": 2}),
    ]:
        res = import_export(export_dir / f"{name}_particles.json", export_dir / "images",
                            tmp_path / name)  # fmt: skip
        assert res.errors == [] and res.problem == problem
        assert res.dataset is not None
        assert res.dataset.class_counts() == counts
        assert len(res.dataset.feature_columns) == 8 + 4 + 32 + 2 * 16 + 2 * 7
        assert res.dataset.particles[0].pixel_size_nm == pytest.approx(0.9)
