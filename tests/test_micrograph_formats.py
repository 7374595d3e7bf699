"""Every micrograph format labs export (JPEG, PNG 8/16-bit grey/RGB, TIFF 8/16/32-bit and
float, MRC), label images of any integer type, COCO exports with JPEG/PNG images, and
non-finite pixels (filled by the median with a warning, never a silent empty result)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lipoclass.cli import main
from lipoclass.data import load_dataset, read_image
from lipoclass.micrograph import (
    MicrographWarning,
    read_label_image,
    read_micrograph,
)
from lipoclass.micrograph.annotations import encode_rle_string
from lipoclass.synth import MicrographConfig, render_micrograph

PX = 1.5


@pytest.fixture(scope="module")
def synth() -> tuple[np.ndarray, np.ndarray]:
    """(image (H, W) float 0-255, labels (H, W)) of one small synthetic micrograph."""
    cfg = MicrographConfig(size=256, density=0.25, pixel_size_nm=PX, carbon=0.0, ice=0.0,
                           noise=0.7, seed=3)  # fmt: skip
    mic = render_micrograph(cfg, 0)
    return mic.image, mic.labels.astype(np.int64)


def _write(path: Path, arr: np.ndarray) -> None:
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(path, arr)
    elif suffix == ".mrc":
        import mrcfile

        with mrcfile.new(path) as m:
            m.set_data(arr)
            m.voxel_size = PX * 10
    elif suffix == ".png":
        import imagecodecs

        path.write_bytes(imagecodecs.png_encode(arr))
    else:
        from PIL import Image

        Image.fromarray(arr).save(path, quality=95)


def _formats(img: np.ndarray) -> dict[str, np.ndarray]:
    u8 = np.clip(img, 0, 255).astype(np.uint8)
    u16 = (np.clip(img, 0, 255) * 256).astype(np.uint16)
    return {
        "g8.png": u8,
        "g16.png": u16,
        "rgb8.png": np.repeat(u8[..., None], 3, axis=2),
        "rgb16.png": np.repeat(u16[..., None], 3, axis=2),
        "rgba8.png": np.dstack([u8, u8, u8, np.full_like(u8, 255)]),
        "g8.jpg": u8,
        "rgb8.jpeg": np.repeat(u8[..., None], 3, axis=2),
        "t8.tif": u8,
        "t16.tif": u16,
        "t32.tif": u16.astype(np.uint32) * 3,
        "ti32.tif": u16.astype(np.int32) - 20000,
        "tf32.tif": img.astype(np.float32),
        "tf64.tif": img.astype(np.float64),
        "m.mrc": img.astype(np.float32),
        "mi16.mrc": (u16.astype(np.int32) - 30000).astype(np.int16),
    }


def test_every_micrograph_format_reads(synth, tmp_path: Path) -> None:
    img, _ = synth
    for name, arr in _formats(img).items():
        p = tmp_path / name
        _write(p, arr)
        colour = arr.ndim == 3 and arr.shape[-1] in (3, 4)
        if colour:
            with pytest.warns(UserWarning, match="greyscale"):
                mic = read_micrograph(p, require_pixel_size=False)
        else:
            mic = read_micrograph(p, require_pixel_size=False)
        assert mic.shape == img.shape, name
        assert mic.filled is None
        got = mic.image.astype(np.float64)
        corr = np.corrcoef(got.ravel(), img.ravel())[0, 1]
        assert corr > 0.98, (name, corr)
        if name == "rgb16.png":  # 16-bit colour keeps its 16 bits
            assert got.max() > 1000


def test_detect_on_every_format(synth, tmp_path: Path, capsys) -> None:
    img, _ = synth
    counts = {}
    for name in ("g8.jpg", "rgb16.png", "t32.tif", "tf32.tif", "mi16.mrc"):
        arr = _formats(img)[name]
        p = tmp_path / name
        _write(p, arr)
        out = tmp_path / f"det_{p.stem}"
        rc = main(["detect", str(p), "--pixel-size", str(PX), "--out", str(out)])
        err = capsys.readouterr().err
        assert rc == 0, err
        counts[name] = int(read_label_image(out / f"{p.stem}.tif").max())
    assert min(counts.values()) >= 3, counts
    assert max(counts.values()) - min(counts.values()) <= 2, counts


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32, np.int64]
)
def test_label_images_any_integer_type(synth, tmp_path: Path, dtype) -> None:
    import tifffile

    _, lab = synth
    lab = lab % 120  # fits int8
    p = tmp_path / f"lab_{np.dtype(dtype).name}.tif"
    tifffile.imwrite(p, lab.astype(dtype))
    got = read_label_image(p, lab.shape)
    assert got.dtype == np.int64 and np.array_equal(got, lab)
    if dtype in (np.uint8, np.uint16):
        q = p.with_suffix(".png")
        _write(q, lab.astype(dtype))
        assert np.array_equal(read_label_image(q, lab.shape), lab)


def test_label_image_negative_is_error(tmp_path: Path, capsys) -> None:
    import tifffile

    from lipoclass.errors import LipoclassError

    p = tmp_path / "neg.tif"
    tifffile.imwrite(p, np.full((16, 16), -1, np.int16))
    with pytest.raises(LipoclassError, match="negative"):
        read_label_image(p)


def test_crop_coco_with_jpeg_and_png_images(synth, tmp_path: Path, capsys) -> None:
    """A Roboflow/CVAT export: JPEG/PNG images next to the JSON, RLE masks."""
    img, lab = synth
    u8 = np.clip(img, 0, 255).astype(np.uint8)
    images, anns = [], []
    for k, name in enumerate(("a.jpg", "b.png")):
        _write(tmp_path / name, u8 if name.endswith(".png") else np.dstack([u8] * 3))
        images.append({"id": k + 1, "file_name": name, "width": 256, "height": 256})
        for inst in range(1, int(lab.max()) + 1):
            m = lab == inst
            if m.sum() < 50:
                continue
            anns.append({"id": len(anns) + 1, "image_id": k + 1, "category_id": 1,
                         "segmentation": encode_rle_string(m)})  # fmt: skip
    cj = tmp_path / "export.json"
    cj.write_text(json.dumps({"images": images, "annotations": anns,
                              "categories": [{"id": 1, "name": "liposome"}]}))  # fmt: skip
    out = tmp_path / "ds"
    rc = main(["crop", "--coco", str(cj), "--keep-edge", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "unsupported" not in err
    assert len(load_dataset(out)) == len(anns)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_pixels_filled_with_warning(synth, tmp_path: Path, capsys, bad) -> None:
    import tifffile

    img, _ = synth
    clean = tmp_path / "clean.tif"
    tifffile.imwrite(clean, img.astype(np.float32))
    dirty = img.astype(np.float32)
    dirty[100:103, 50:53] = bad  # a 3 x 3 patch of dead pixels
    mic = tmp_path / "mic.tif"
    tifffile.imwrite(mic, dirty)
    rc = main(["detect", str(clean), "--pixel-size", str(PX), "--out", str(tmp_path / "c")])
    assert rc == 0
    n_clean = int(read_label_image(tmp_path / "c" / "clean.tif").max())
    capsys.readouterr()
    with pytest.warns(MicrographWarning, match=r"mic.tif: 9 NaN/Inf pixel\(s\) filled"):
        rc = main(["detect", str(mic), "--pixel-size", str(PX), "--out", str(tmp_path / "d")])
    assert rc == 0
    n = int(read_label_image(tmp_path / "d" / "mic.tif").max())
    assert n_clean >= 3 and abs(n - n_clean) <= 1, (n, n_clean)
    # crop --detect sees the same filled micrograph
    with pytest.warns(MicrographWarning, match="9 NaN/Inf"):
        rc = main(["crop", str(mic), "--detect", "--pixel-size", str(PX), "--keep-edge",
                   "--out", str(tmp_path / "crops")])  # fmt: skip
    assert rc == 0
    ds = load_dataset(tmp_path / "crops")
    assert len(ds) == n
    assert all(np.isfinite(read_image(p.image)).all() for p in ds.particles)


def test_all_nonfinite_is_error(tmp_path: Path, capsys) -> None:
    import tifffile

    p = tmp_path / "dead.tif"
    tifffile.imwrite(p, np.full((32, 32), np.nan, np.float32))
    out = tmp_path / "o"
    rc = main(["detect", str(p), "--pixel-size", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("lipoclass: error:") and "dead.tif" in err
    assert "finite" in err and not out.exists()


def test_detections_csv_counts_filled_pixels(synth, tmp_path: Path) -> None:
    import csv

    import tifffile

    img, lab = synth
    dirty = img.astype(np.float32)
    ys, xs = np.nonzero(lab == np.bincount(lab.ravel())[1:].argmax() + 1)  # largest liposome
    cy, cx = int(ys.mean()), int(xs.mean())
    dirty[cy - 1 : cy + 2, cx - 1 : cx + 2] = np.nan
    p = tmp_path / "mic.tif"
    tifffile.imwrite(p, dirty)
    with pytest.warns(MicrographWarning, match="9 NaN/Inf"):
        assert main(["detect", str(p), "--pixel-size", str(PX), "--out", str(tmp_path / "d")]) == 0
    with (tmp_path / "d" / "detections.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sum(int(r["filled_px"]) for r in rows) == 9
