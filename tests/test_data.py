"""Dataset layer: validation messages, image formats, prepare modes and the prepare cache."""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from lipoclass.data import (
    META_COLUMNS,
    PrepConfig,
    check_folds,
    load_dataset,
    prepare,
    read_image,
    write_image,
)
from lipoclass.errors import LipoclassError

Factory = Callable[..., Path]


def _edit_csv(root: Path, fn: Callable[[list[list[str]]], None]) -> None:
    path = root / "particles.csv"
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    fn(rows)
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)


# ----------------------------------------------------------------------------- validation


def test_tiny_dataset_loads(tiny_dataset: Factory) -> None:
    ds = load_dataset(tiny_dataset(counts=(3, 2, 2), features=True, unlabelled=1))
    assert len(ds) == 8
    assert ds.classes == ("unilamellar", "multilamellar", "uncertain")
    assert ds.class_counts() == {"unilamellar": 3, "multilamellar": 2, "uncertain": 2}
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 2, 2, -1]
    assert ds.feature_columns == ("area_px", "noise")
    assert ds.feature_matrix().shape == (8, 2)
    assert ds.particles[0].pixel_size_nm == pytest.approx(0.8)
    assert set(ds.samples) == {"s0", "s1"}


def test_missing_particles_csv(tmp_path: Path) -> None:
    with pytest.raises(LipoclassError, match=r"not a particle dataset \(no particles.csv\)"):
        load_dataset(tmp_path)
    with pytest.raises(LipoclassError, match="dataset folder not found"):
        load_dataset(tmp_path / "nowhere")


def test_missing_image_file(tiny_dataset: Factory) -> None:
    root = tiny_dataset(counts=(2, 2, 2))
    (root / "images" / "p0001.png").unlink()
    with pytest.raises(
        LipoclassError, match=r"row 2 \(id p0001\): image file images/p0001.png not found"
    ):
        load_dataset(root)


def test_duplicate_id(tiny_dataset: Factory) -> None:
    root = tiny_dataset(counts=(2, 2, 2))
    _edit_csv(root, lambda rows: rows[3].__setitem__(0, "p0000"))
    with pytest.raises(
        LipoclassError, match=r"row 3 \(id p0000\): duplicate id, first used in row 1"
    ):
        load_dataset(root)


def test_unknown_class(tiny_dataset: Factory) -> None:
    root = tiny_dataset(counts=(2, 2, 2))
    _edit_csv(root, lambda rows: rows[2].__setitem__(rows[0].index("label"), "bilamellar"))
    with pytest.raises(
        LipoclassError,
        match=r"row 2 \(id p0001\): unknown class 'bilamellar' "
        r"\(dataset.toml lists unilamellar, multilamellar, uncertain\)",
    ):
        load_dataset(root)


def test_non_numeric_unknown_column(tiny_dataset: Factory) -> None:
    root = tiny_dataset(counts=(2, 2, 2))

    def add_col(rows: list[list[str]]) -> None:
        rows[0].append("operator")
        for k, r in enumerate(rows[1:]):
            r.append("anna" if k == 1 else "1")

    _edit_csv(root, add_col)
    with pytest.raises(
        LipoclassError,
        match=r"row 2 \(id p0001\): column 'operator' is not a known column "
        r"and 'anna' is not a number",
    ):
        load_dataset(root)


def test_check_folds(tiny_dataset: Factory) -> None:
    ds = load_dataset(tiny_dataset(counts=(6, 5, 3)))
    check_folds(ds, 3)  # fine
    with pytest.raises(
        LipoclassError, match="class 'uncertain' has 3 labelled particles, fewer than the 5 folds"
    ):
        check_folds(ds, 5)
    with pytest.raises(LipoclassError, match="--folds must be at least 2"):
        check_folds(ds, 1)


# ----------------------------------------------------------------------------- image formats


def test_read_formats(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    u8 = rng.integers(0, 256, (9, 7), dtype=np.uint8)
    u16 = rng.integers(0, 65536, (9, 7), dtype=np.uint16)
    f32 = rng.normal(size=(9, 7)).astype(np.float32)
    cases = {
        "a.png": u8, "a.bmp": u8, "a.tif": u8,
        "b.png": u16, "b.tiff": u16,
        "c.tif": f32, "c.mrc": f32,
    }  # fmt: skip
    for name, arr in cases.items():
        write_image(tmp_path / name, arr)
        got = read_image(tmp_path / name)
        assert got.dtype == np.float32 and got.shape == (9, 7), name
        np.testing.assert_array_equal(got, arr.astype(np.float32), err_msg=name)
    write_image(tmp_path / "d.jpg", u8)  # lossy: same shape, close values
    jpg = read_image(tmp_path / "d.jpg")
    assert jpg.shape == (9, 7) and np.abs(jpg - u8).mean() < 40


def test_colour_image_converted_with_warning(tmp_path: Path) -> None:
    rgb = np.zeros((5, 6, 3), dtype=np.uint8)
    rgb[..., 1] = 200
    write_image(tmp_path / "c.png", rgb)
    with pytest.warns(UserWarning, match="c.png: colour image converted to greyscale"):
        got = read_image(tmp_path / "c.png")
    assert got.shape == (5, 6)
    np.testing.assert_allclose(got, 0.587 * 200, rtol=1e-5)


def test_unreadable_image(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"\x89PNG garbage bytes")
    with pytest.raises(LipoclassError, match=r"x.png: unreadable image \("):
        read_image(tmp_path / "x.png")
    with pytest.raises(LipoclassError, match=r"y\.tif: image file not found"):
        read_image(tmp_path / "y.tif")


def test_prepare_unreadable_image_and_mask_size(tiny_dataset: Factory) -> None:
    root = tiny_dataset(counts=(2, 2, 2))
    (root / "images" / "p0002.png").write_bytes(b"garbage")
    ds = load_dataset(root)
    with pytest.raises(LipoclassError, match=r"p0002.png: unreadable image"):
        prepare(ds, PrepConfig(), cache=False)
    root = tiny_dataset(counts=(2, 2, 2))
    write_image(root / "masks" / "p0003.png", np.full((3, 4), 255, dtype=np.uint8))
    with pytest.raises(
        LipoclassError,
        match=r"p0003.png: mask is 4x3 but image p0003.png is \d+x\d+ "
        r"\(particles.csv row 4, id p0003\)",
    ):
        prepare(load_dataset(root), PrepConfig(), cache=False)


def test_prepare_colour_image_warns(tiny_dataset: Factory) -> None:
    root = tiny_dataset(counts=(2, 2, 2))
    grey = read_image(root / "images" / "p0000.png").astype(np.uint8)
    write_image(root / "images" / "p0000.png", np.stack([grey] * 3, axis=-1))
    with pytest.warns(UserWarning, match="p0000.png: colour image converted to greyscale"):
        prep = prepare(load_dataset(root), PrepConfig(), cache=False)
    assert len(prep) == 6


# ----------------------------------------------------------------------------- prepare


@pytest.mark.parametrize("mode", ["surround", "crop", "masked"])
@pytest.mark.parametrize("normalize", ["zscore", "minmax", "none"])
def test_prepare_modes_shapes_and_normalisation(
    tiny_dataset: Factory, mode: str, normalize: str
) -> None:
    ds = load_dataset(tiny_dataset(counts=(3, 3, 2), size=(20, 36)))
    prep = prepare(ds, PrepConfig(mode=mode, size=16, normalize=normalize), cache=False)  # type: ignore[arg-type]
    assert prep.x.shape == (8, 1, 16, 16) and prep.x.dtype == np.float32
    assert prep.y.tolist() == ds.labels.tolist()
    assert prep.index.tolist() == list(range(8))
    assert prep.meta.shape == (8, len(META_COLUMNS))
    w, h = prep.meta_column("image_width"), prep.meta_column("image_height")
    assert ((w >= 20) & (w <= 36) & (h >= 20) & (h <= 36)).all()
    assert (prep.meta_column("bbox_width") <= w).all()
    np.testing.assert_allclose(prep.meta_column("pixel_size_nm"), 0.8)
    x = prep.x
    if normalize == "none":
        assert x.max() > 50  # raw 8-bit values survive
    elif normalize == "minmax":
        assert x.min() >= -1e-5 and x.max() <= 1 + 1e-5
    else:
        assert abs(float(x.mean())) < 0.6 and x.std() > 0.3
    if mode == "masked":  # outside the mask: exactly 0 in every corner
        assert (x[:, 0, 0, 0] == 0).all() and (x[:, 0, -1, -1] == 0).all()
    if mode == "surround" and normalize == "zscore":  # whole image z-scored, before resizing
        assert np.abs(x.reshape(8, -1).mean(axis=1)).max() < 0.2


def test_stretch_vs_pad(tiny_dataset: Factory) -> None:
    ds = load_dataset(tiny_dataset(counts=(2, 1, 1), size=(20, 40), seed=3))
    pad = prepare(ds, PrepConfig(mode="crop", size=12, aspect="pad"), cache=False)
    stretch = prepare(ds, PrepConfig(mode="crop", size=12, aspect="stretch"), cache=False)
    assert pad.x.shape == stretch.x.shape == (4, 1, 12, 12)
    assert not np.allclose(pad.x, stretch.x)


def test_empty_mask_skipped_for_crop_kept_for_surround(tiny_dataset: Factory) -> None:
    ds = load_dataset(tiny_dataset(counts=(4, 2, 2), empty_masks=2))
    for mode in ("crop", "masked"):
        with pytest.warns(
            UserWarning,
            match=f"2 particle\\(s\\) skipped for mode '{mode}' "
            r"\(mask has no particle pixels\): p0000, p0001",
        ):
            prep = prepare(ds, PrepConfig(mode=mode), cache=False)  # type: ignore[arg-type]
        assert len(prep) == 6 and prep.index.tolist() == [2, 3, 4, 5, 6, 7]
        assert prep.skipped == [
            ("p0000", "mask has no particle pixels"),
            ("p0001", "mask has no particle pixels"),
        ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prep = prepare(ds, PrepConfig(mode="surround"), cache=False)
    assert len(prep) == 8 and prep.skipped == []


def test_missing_mask_gets_auto_mask(tiny_dataset: Factory) -> None:
    ds = load_dataset(tiny_dataset(counts=(2, 2, 2), masks=False))
    prep = prepare(ds, PrepConfig(mode="masked"), cache=False)
    assert prep.auto_masked == 6 and len(prep) == 6
    assert (
        prep.meta_column("mask_area")
        < prep.meta_column("image_width") * prep.meta_column("image_height")
    ).all()
    assert prepare(ds, PrepConfig(mode="surround"), cache=False).auto_masked == 0


def test_prepare_config_validation() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        PrepConfig(mode="tight")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size must be between 4 and 1024"):
        PrepConfig(size=2)


def test_cache_hit_and_invalidation(tiny_dataset: Factory, tmp_path: Path) -> None:
    root = tiny_dataset(counts=(3, 2, 2))
    cache = tmp_path / "cache"
    ds = load_dataset(root)
    first = prepare(ds, PrepConfig(), cache_dir=cache)
    assert not first.from_cache
    second = prepare(ds, PrepConfig(), cache_dir=cache)
    assert second.from_cache
    np.testing.assert_array_equal(first.x, second.x)
    np.testing.assert_array_equal(first.meta, second.meta)
    assert second.ids == first.ids and second.y.tolist() == first.y.tolist()
    assert not prepare(ds, PrepConfig(size=20), cache_dir=cache).from_cache  # other settings
    # an edited image invalidates the cache
    img = root / "images" / "p0003.png"
    old = read_image(img)
    write_image(img, (255 - old).astype(np.uint8))  # same size, inverted contrast
    st = img.stat()
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = prepare(load_dataset(root), PrepConfig(), cache_dir=cache)
    assert not third.from_cache
    assert not np.array_equal(third.x[3], first.x[3])
    np.testing.assert_array_equal(third.x[0], first.x[0])


@pytest.mark.slow
def test_parallel_equals_serial(tiny_dataset: Factory) -> None:
    ds = load_dataset(tiny_dataset(counts=(140, 140, 130), size=(16, 24)))
    serial = prepare(ds, PrepConfig(), cache=False, workers=1)
    parallel = prepare(ds, PrepConfig(), cache=False, workers=2)
    np.testing.assert_array_equal(serial.x, parallel.x)
    np.testing.assert_array_equal(serial.meta, parallel.meta)


@pytest.mark.shared
def test_real_vesicle_set_loads_and_prepares(vesicle_dir: Path) -> None:
    ds = load_dataset(vesicle_dir)
    assert len(ds) == 254
    assert ds.class_counts() == {"CV": 169, "DV": 43, "DVH": 42}
    assert sum(p.mask is None for p in ds.particles) == 207
    prep = prepare(ds, PrepConfig(mode="masked", size=28), cache=False, workers=1)
    assert prep.x.shape == (254, 1, 28, 28)
    assert prep.auto_masked == 207
    assert np.isfinite(prep.x).all()
    np.testing.assert_array_equal(prep.meta_column("image_width"), 31)


def test_auto_mode_resolves_from_masks(tiny_dataset: Callable[..., Path]) -> None:
    """auto -> masked when every particle has a mask, surround when any lacks one; concrete
    modes are kept, and an unresolved auto never reaches the pixel code."""
    from lipoclass.data.prepare import prepare_arrays

    with_masks = load_dataset(tiny_dataset((3, 3, 3), size=(12, 14)))
    without = load_dataset(tiny_dataset((3, 3, 3), size=(12, 14), masks=False))
    auto = PrepConfig(mode="auto", size=8)
    assert auto.resolve(with_masks).mode == "masked"
    assert auto.resolve(without).mode == "surround"
    assert PrepConfig(mode="crop").resolve(without).mode == "crop"
    assert prepare(without, auto, cache=False).config.mode == "surround"
    with pytest.raises(ValueError, match="resolved"):
        prepare_arrays(np.zeros((5, 5)), None, auto)


def test_image_with_misleading_suffix_still_reads(tmp_path: Path) -> None:
    """The suffix only picks the decoder tried first: a PNG saved as .bmp still reads."""
    from PIL import Image

    from lipoclass.data.io import read_native

    arr = np.arange(120, dtype=np.uint8).reshape(10, 12)
    Image.fromarray(arr).save(tmp_path / "a.png")
    (tmp_path / "b.bmp").write_bytes((tmp_path / "a.png").read_bytes())
    assert np.array_equal(read_native(tmp_path / "b.bmp"), arr)


def test_grey_png_fast_path_matches_pillow(tmp_path: Path) -> None:
    """8/16-bit greyscale PNGs are decoded by imagecodecs, every other PNG by Pillow; both
    give Pillow's values and dtype. A truncated greyscale PNG is one clear error."""
    from PIL import Image

    from lipoclass.data.io import _decode_grey_png, read_native

    rng = np.random.default_rng(2)
    u8 = rng.integers(0, 256, (23, 31), dtype=np.uint8)
    u16 = rng.integers(0, 65536, (17, 13), dtype=np.uint16)
    Image.fromarray(u8).save(tmp_path / "u8.png")
    Image.fromarray(u8).save(tmp_path / "il.png", interlace=1)
    Image.fromarray(u16).save(tmp_path / "u16.png")
    for name in ("u8", "il", "u16"):
        data = (tmp_path / f"{name}.png").read_bytes()
        assert _decode_grey_png(data) is not None, name  # the fast path was taken
        with Image.open(tmp_path / f"{name}.png") as im:
            want = np.asarray(im)
        got = read_native(tmp_path / f"{name}.png")
        assert got.dtype == want.dtype and np.array_equal(got, want), name
    Image.fromarray(u8).convert("LA").save(tmp_path / "la.png")
    Image.fromarray(u8 > 127).save(tmp_path / "bits.png")  # 1-bit
    for name in ("la", "bits"):
        assert _decode_grey_png((tmp_path / f"{name}.png").read_bytes()) is None, name
    assert np.array_equal(read_native(tmp_path / "la.png"), u8)
    assert np.array_equal(read_native(tmp_path / "bits.png") > 0, u8 > 127)
    data = (tmp_path / "u8.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(LipoclassError, match=r"cut\.png: unreadable image \("):
        read_native(tmp_path / "cut.png")


def test_compressed_tiff_reads(tmp_path: Path) -> None:
    """LZW- and deflate-compressed TIFFs (common microscope exports; LZW needs imagecodecs)."""
    import tifffile

    arr = np.random.default_rng(3).integers(0, 65536, (19, 21), dtype=np.uint16)
    for comp in ("lzw", "zlib"):
        tifffile.imwrite(tmp_path / f"{comp}.tif", arr, compression=comp)
        assert np.array_equal(read_image(tmp_path / f"{comp}.tif"), arr.astype(np.float32))
