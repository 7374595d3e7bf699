"""Micrographs in, micrographs out: synthetic micrographs (label image + class table), cropping
from label images / COCO (polygon, RLE, bbox) / CSV coordinates / STAR, edge skipping, the
detector's recall on an easy micrograph, and every bad input through the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from lipoclass.cli import main
from lipoclass.data import load_dataset, read_image
from lipoclass.micrograph import (
    DetectConfig,
    MicrographWarning,
    decode_rle,
    detect_particles,
    encode_rle_string,
    read_label_image,
    read_pixel_size,
)
from lipoclass.synth import MicrographConfig, render_micrograph, synthesize_micrographs

SIZE = 320
PX = 1.5  # nm/px: liposomes of ~30-60 px, several fit a tiny micrograph


@pytest.fixture(scope="module")
def mics(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mic") / "syn"
    synthesize_micrographs("lamellarity", out, count=2, size=SIZE, density=0.25,
                           pixel_size_nm=PX, carbon=0.0, seed=0)  # fmt: skip
    return out


def _table(root: Path) -> list[dict[str, str]]:
    with (root / "annotations.csv").open() as fh:
        return list(csv.DictReader(fh))


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(args)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _bad(args: list[str], capsys: pytest.CaptureFixture[str], name: str, out: Path) -> str:
    """A bad input: exit 2, one 'lipoclass: error:' line naming ``name``, nothing left."""
    rc, _, err = _run(args, capsys)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lipoclass: error:"), err
    assert name in lines[0] and "Traceback" not in err
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
    return lines[0]


# --------------------------------------------------------------------------- synth


def test_synth_label_image_and_table_agree(mics: Path) -> None:
    rows = _table(mics)
    assert rows and {r["micrograph"] for r in rows} == {"mic0001", "mic0002"}
    for name in ("mic0001", "mic0002"):
        img = mics / "micrographs" / f"{name}.tif"
        lab = read_label_image(mics / "labels" / f"{name}.tif", (SIZE, SIZE))
        assert read_image(img).shape == (SIZE, SIZE)
        assert read_pixel_size(img) == pytest.approx(PX, rel=1e-3)
        mine = [r for r in rows if r["micrograph"] == name]
        assert {int(r["instance"]) for r in mine} == set(np.unique(lab[lab > 0]).tolist())
        areas = np.bincount(lab.ravel(), minlength=len(mine) + 1)
        for r in mine:
            assert int(r["area_px"]) == areas[int(r["instance"])]
            assert r["label"] in ("unilamellar", "multilamellar", "uncertain")
            assert float(r["diameter_nm"]) == pytest.approx(float(r["diameter_px"]) * PX, 0.01)
    assert any(r["touching"] == "1" for r in rows)
    assert json.loads((mics / "synth.json").read_text())["settings"]["size"] == SIZE


def test_synth_deterministic_and_mrc(tmp_path: Path) -> None:
    cfg = MicrographConfig(size=128, density=0.2, seed=3, pixel_size_nm=1.0)
    a, b = render_micrograph(cfg, 0), render_micrograph(cfg, 0)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    out = synthesize_micrographs("encapsulation", tmp_path / "m", size=128, fmt="mrc",
                                 pixel_size_nm=0.8)  # fmt: skip
    assert read_pixel_size(out / "micrographs" / "mic0001.mrc") == pytest.approx(0.8)


# --------------------------------------------------------------------------- crop


def _fits(lab: np.ndarray, m: int) -> int:
    from scipy import ndimage as ndi

    n = 0
    for sl in ndi.find_objects(lab):
        if sl is None:
            continue
        t, b, left, r = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
        n += t - m >= 0 and left - m >= 0 and b + m <= lab.shape[0] and r + m <= lab.shape[1]
    return n


def test_crop_from_label_images(mics: Path, tmp_path: Path, capsys) -> None:
    files = sorted(str(p) for p in (mics / "micrographs").iterdir())
    out = tmp_path / "ds"
    rc, text, _ = _run(["crop", *files, "--labels", str(mics / "labels"), "--classes",
                        str(mics / "annotations.csv"), "--surround", "10", "--out", str(out)],
                       capsys)  # fmt: skip
    assert rc == 0
    labs = [read_label_image(mics / "labels" / f"mic000{i}.tif") for i in (1, 2)]
    expected = sum(_fits(lab, 10) for lab in labs)
    total = sum(int(lab.max()) for lab in labs)
    ds = load_dataset(out)
    assert len(ds) == expected > 0
    assert f"{total - expected} particle(s) at the micrograph edge skipped" in text
    truth = {(r["micrograph"], int(r["instance"])): r["label"] for r in _table(mics)}
    for p in ds.particles:
        mic, inst = p.id.rsplit("_", 1)
        assert p.label == truth[(mic, int(inst))] and p.sample == mic and p.micrograph == mic
        assert p.pixel_size_nm == pytest.approx(PX, rel=1e-3)
        mask = read_image(p.mask) > 0
        ys, xs = np.nonzero(mask)
        # centred: 10 px of surroundings on every side of the mask's box
        assert ys.min() == 10 and xs.min() == 10
        assert mask.shape[0] - 1 - ys.max() == 10 and mask.shape[1] - 1 - xs.max() == 10
    rc, _, _ = _run(["crop", files[0], "--labels", str(mics / "labels"), "--keep-edge",
                     "--surround", "10", "--out", str(tmp_path / "all")], capsys)  # fmt: skip
    assert rc == 0 and len(load_dataset(tmp_path / "all")) == int(labs[0].max())


def test_crop_from_coco_polygon_rle_bbox(mics: Path, tmp_path: Path, capsys) -> None:
    mic = mics / "micrographs" / "mic0001.tif"
    lab = read_label_image(mics / "labels" / "mic0001.tif")
    rows = [r for r in _table(mics) if r["micrograph"] == "mic0001"][:6]
    assert len(rows) >= 4
    anns = []
    for k, r in enumerate(rows):
        x, y, rad = float(r["x"]), float(r["y"]), float(r["diameter_px"]) / 2
        a: dict[str, object] = {"id": k + 1, "image_id": 7, "category_id": 1 + k % 2}
        m = lab == int(r["instance"])
        if k in (0, 1):  # polygon (pixel-edge coordinates)
            t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
            poly = np.stack([x + 0.5 + rad * np.cos(t), y + 0.5 + rad * np.sin(t)], 1)
            a["segmentation"] = [np.clip(poly, 0, SIZE).ravel().round(2).tolist()]
        elif k == 2:  # compressed RLE
            a["segmentation"] = encode_rle_string(m)
        elif k == 3:  # uncompressed RLE
            flat = m.T.ravel().astype(np.int8)
            bounds = np.r_[0, np.flatnonzero(np.diff(flat)) + 1, flat.size]
            runs = np.diff(bounds).tolist()
            a["segmentation"] = {"size": [SIZE, SIZE], "counts": [0, *runs] if flat[0] else runs}
        else:  # bbox only
            ys, xs = np.nonzero(m)  # the instance's box, inside the image as CVAT writes it
            a["bbox"] = [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]
        anns.append(a)
    coco = {"images": [{"id": 7, "file_name": "imgs/mic0001.tif", "width": SIZE, "height": SIZE}],
            "categories": [{"id": 1, "name": "unilamellar"}, {"id": 2, "name": "multilamellar"}],
            "annotations": anns}  # fmt: skip
    cj = tmp_path / "coco.json"
    cj.write_text(json.dumps(coco))
    out = tmp_path / "ds"
    rc, _, err = _run(["crop", str(mic), "--coco", str(cj), "--keep-edge", "--surround", "5",
                       "--out", str(out)], capsys)  # fmt: skip
    assert rc == 0, err
    ds = load_dataset(out)
    assert len(ds) == len(rows)
    assert [p.label for p in ds.particles] == [("unilamellar", "multilamellar")[k % 2]
                                               for k in range(len(rows))]  # fmt: skip
    for p in ds.particles:
        assert (read_image(p.mask) > 0).sum() > 100
    # the RLE crops' masks are exactly the truth instance
    p3 = ds.particles[2]
    assert (read_image(p3.mask) > 0).sum() == (lab == int(rows[2]["instance"])).sum()


def test_rle_round_trip() -> None:
    rng = np.random.default_rng(0)
    for first in (False, True):
        m = rng.random((37, 23)) < 0.3
        m[0, 0] = first
        assert np.array_equal(decode_rle(encode_rle_string(m), "x"), m)


def test_crop_from_csv_and_star(mics: Path, tmp_path: Path, capsys) -> None:
    import pandas as pd
    import starfile

    mic = mics / "micrographs" / "mic0002.tif"
    rows = [r for r in _table(mics) if r["micrograph"] == "mic0002"]
    coords = tmp_path / "coords.csv"
    with coords.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["micrograph", "x", "y", "diameter", "label"])
        for r in rows:
            w.writerow(["mic0002.tif", r["x"], r["y"], r["diameter_px"], r["label"]])
    out = tmp_path / "csv"
    rc, _, err = _run(["crop", str(mic), "--coords", str(coords), "--keep-edge",
                       "--surround", "8", "--out", str(out)], capsys)  # fmt: skip
    assert rc == 0, err
    ds = load_dataset(out)
    assert len(ds) == len(rows)
    assert [p.label for p in ds.particles] == [r["label"] for r in rows]
    for p, r in zip(ds.particles, rows):
        img = read_image(p.image)
        d = round(float(r["diameter_px"]))
        assert img.shape == (d + 16, d + 16)
        assert (read_image(p.mask) > 0).any()
    star = tmp_path / "particles.star"
    df = pd.DataFrame({"rlnCoordinateX": [float(r["x"]) for r in rows],
                       "rlnCoordinateY": [float(r["y"]) for r in rows],
                       "rlnMicrographName": ["job002/mic0002.tif"] * len(rows)})  # fmt: skip
    starfile.write({"particles": df}, star)
    rc, _, err = _run(["crop", str(mic), "--coords", str(star), "--diameter", "40",
                       "--keep-edge", "--out", str(tmp_path / "star")], capsys)  # fmt: skip
    assert rc == 0, err
    assert len(load_dataset(tmp_path / "star")) == len(rows)


def test_detector_recall_easy() -> None:
    cfg = MicrographConfig(size=384, density=0.2, noise=0.7, seed=5, pixel_size_nm=1.0,
                           carbon=0.0, ice=0.0, touching=0.3)  # fmt: skip
    mic = render_micrograph(cfg, 0)
    lab = detect_particles(mic.image, DetectConfig(), mic.sample.pixel_size_nm)
    t, p = mic.labels.ravel().astype(np.int64), lab.ravel().astype(np.int64)
    npr = int(p.max()) + 1
    inter = np.bincount(t * npr + p, minlength=(int(t.max()) + 1) * npr).reshape(-1, npr)
    iou = inter / np.maximum(inter.sum(1)[:, None] + inter.sum(0)[None, :] - inter, 1)
    best = iou[1:, 1:].max(axis=1)
    assert (best >= 0.5).mean() >= 0.7
    assert (iou[1:, 1:].max(axis=0) >= 0.5).mean() >= 0.7  # precision


def test_detect_cli_and_crop_detect(mics: Path, tmp_path: Path, capsys) -> None:
    mic = str(mics / "micrographs" / "mic0001.tif")
    rc, text, err = _run(["detect", mic, "--out", str(tmp_path / "det")], capsys)
    assert rc == 0, err
    lab = read_label_image(tmp_path / "det" / "mic0001.tif", (SIZE, SIZE))
    assert lab.max() >= 3 and "mic0001:" in text
    assert (tmp_path / "det" / "detections.csv").is_file()
    rc, _, err = _run(["crop", mic, "--detect", "--keep-edge", "--out", str(tmp_path / "c")],
                      capsys)  # fmt: skip
    assert rc == 0, err
    assert len(load_dataset(tmp_path / "c")) == lab.max()


def test_no_particle_warns(tmp_path: Path, capsys) -> None:
    import tifffile

    flat = tmp_path / "empty.tif"
    rng = np.random.default_rng(0)
    tifffile.imwrite(flat, rng.normal(30000, 50, (128, 128)).astype(np.uint16))
    with pytest.warns(MicrographWarning, match="empty.tif"):
        rc, _, _ = _run(["detect", str(flat), "--min-diameter", "16px", "--max-diameter",
                         "60px", "--out", str(tmp_path / "d")], capsys)  # fmt: skip
    assert rc == 0


# --------------------------------------------------------------------------- bad input


def test_bad_unreadable_micrograph(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"not a tiff at all")
    out = tmp_path / "out"
    _bad(["crop", str(bad), "--detect", "--out", str(out)], capsys, "broken.tif", out)
    _bad(["detect", str(bad), "--out", str(out)], capsys, "broken.tif", out)


def test_bad_label_size(mics: Path, tmp_path: Path, capsys) -> None:
    import tifffile

    lab = tmp_path / "small.tif"
    tifffile.imwrite(lab, np.ones((100, 90), np.uint16))
    out = tmp_path / "out"
    msg = _bad(["crop", str(mics / "micrographs" / "mic0001.tif"), "--labels", str(lab),
                "--out", str(out)], capsys, "small.tif", out)  # fmt: skip
    assert "90 x 100" in msg and "mic0001.tif" in msg


def test_bad_coco_missing_image(mics: Path, tmp_path: Path, capsys) -> None:
    cj = tmp_path / "ann.json"
    cj.write_text(json.dumps({"images": [{"id": 1, "file_name": "nothere.tif"}],
                              "annotations": [], "categories": []}))  # fmt: skip
    out = tmp_path / "out"
    msg = _bad(["crop", str(mics / "micrographs" / "mic0001.tif"), "--coco", str(cj),
                "--out", str(out)], capsys, "ann.json", out)  # fmt: skip
    assert "nothere.tif" in msg
    _bad(["crop", "--coco", str(cj), "--out", str(out)], capsys, "nothere.tif", out)


def test_bad_coordinates_outside(mics: Path, tmp_path: Path, capsys) -> None:
    coords = tmp_path / "c.csv"
    coords.write_text("micrograph,x,y,diameter\nmic0001,100,100,30\nmic0001,5000,10,30\n")
    out = tmp_path / "out"
    msg = _bad(["crop", str(mics / "micrographs" / "mic0001.tif"), "--coords", str(coords),
                "--out", str(out)], capsys, "c.csv row 2", out)  # fmt: skip
    assert "outside" in msg


def test_bad_mrc_without_pixel_size(tmp_path: Path, capsys) -> None:
    import mrcfile

    mrc = tmp_path / "nopix.mrc"
    with mrcfile.new(mrc) as m:
        m.set_data(np.zeros((64, 64), np.float32))
    out = tmp_path / "out"
    msg = _bad(["crop", str(mrc), "--detect", "--out", str(out)], capsys, "nopix.mrc", out)
    assert "pixel size" in msg
    _bad(["detect", str(mrc), "--out", str(out)], capsys, "nopix.mrc", out)
    # with the option it is accepted (no particle on a blank image: nothing written)
    with pytest.warns(MicrographWarning):
        rc, _, _ = _run(["detect", str(mrc), "--pixel-size", "1", "--out", str(out)], capsys)
    assert rc == 0 and (out / "nopix.tif").is_file()
