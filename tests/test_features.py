"""Handcrafted features: known shapes, failures, CSV round trip, feature sets, cache, CLI."""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from lipoclass.cli import main
from lipoclass.data import load_dataset
from lipoclass.data.parallel import parallel_map, warn_collected
from lipoclass.errors import LipoclassError
from lipoclass.features import (
    FEATURE_SETS,
    FeatureConfig,
    FeatureTable,
    compute_features,
    feature_names,
    particle_features,
    precomputed_table,
)

NAMES = feature_names()


def _grid(n: int) -> np.ndarray:
    """(n, n) distance of each pixel to the image centre."""
    yy, xx = np.mgrid[:n, :n]
    c = (n - 1) / 2
    return np.hypot(yy - c, xx - c)


def _feats(img: np.ndarray, mask: np.ndarray, px: float | None = None, **kw) -> dict[str, float]:
    cfg = FeatureConfig(**kw) if kw else None
    v = particle_features(img, mask, px, cfg)
    assert not isinstance(v, str), v
    assert np.isfinite(v).all()
    return dict(zip(feature_names(cfg), v.tolist()))


def _cols(d: dict[str, float], prefix: str) -> np.ndarray:
    return np.array([v for k, v in d.items() if k.startswith(prefix)])


@pytest.mark.parametrize("radius", [8, 20])
def test_disk_shape_features(radius: int) -> None:
    r = _grid(80)
    disk = r <= radius
    img = np.where(disk, 90.0, 180.0) + np.random.default_rng(0).normal(0, 3, r.shape)
    f = _feats(img, disk)
    assert f["area"] == pytest.approx(math.pi * radius**2, rel=0.05)
    assert f["circularity"] == pytest.approx(1.0, abs=0.1)
    assert f["diameter_px"] == pytest.approx(2 * radius, abs=1.5)
    assert f["max_width_nm"] == pytest.approx(2 * radius, abs=2.5)  # pixel-centre estimate
    assert f["perimeter"] == pytest.approx(2 * math.pi * radius, rel=0.1)
    # a disk: isotropic second moments (mu20 = mu02 = 1 / (4 pi)), no third-order asymmetry
    assert f["mu20"] == pytest.approx(1 / (4 * math.pi), rel=0.03)
    assert f["mu02"] == pytest.approx(f["mu20"], rel=1e-6)
    assert abs(f["mu30"]) < 1e-3 and abs(f["mu03"]) < 1e-3
    assert f["hu1"] == pytest.approx(1 / (2 * math.pi), rel=0.03)
    hist = _cols(f, "hist_")
    assert hist.shape == (32,) and hist.sum() == pytest.approx(1.0)


def test_pixel_size_scales_physical_units() -> None:
    r = _grid(60)
    disk = r <= 12
    img = np.where(disk, 50.0, 150.0)
    one, half = _feats(img, disk), _feats(img, disk, px=0.5)
    assert half["area"] == pytest.approx(one["area"] * 0.25)
    assert half["length_nm"] == pytest.approx(one["diameter_px"] * 0.5)
    assert half["diameter_px"] == one["diameter_px"]
    assert half["circularity"] == pytest.approx(one["circularity"])


def test_elongated_shape() -> None:
    yy, xx = np.mgrid[:60, :100]
    ell = ((yy - 30) / 10.0) ** 2 + ((xx - 50) / 30.0) ** 2 <= 1
    f = _feats(np.where(ell, 60.0, 160.0), ell)
    assert f["diameter_px"] == pytest.approx(61, abs=1.5)
    assert f["max_width_nm"] == pytest.approx(21, abs=2.5)
    assert f["circularity"] < 0.85
    assert f["mu20"] > 5 * f["mu02"]  # x = column: the long axis


def test_radial_profile_peaks_at_ring_radius() -> None:
    r = _grid(90)
    ring_r, mask_r = 24.0, 30
    img = 60 + 150.0 * (np.abs(r - ring_r) <= 1.0) + np.random.default_rng(1).normal(0, 4, r.shape)
    mask = r <= mask_r
    f = _feats(img, mask)
    radial = _cols(f, "radial_")
    R = math.sqrt(mask.sum() / math.pi)
    expected = ring_r / (1.25 * R) * 16  # ring position in profile bins
    assert abs((int(np.argmax(radial)) + 0.5) - expected) <= 1.0
    # the edge profile sees it ~6 px inside the boundary: bin of s = -6 / R on [-0.5, 0.25]
    edge = _cols(f, "edge_")
    expected_e = (-(mask_r + 0.5 - ring_r) / R + 0.5) / 0.75 * 16
    assert abs((int(np.argmax(edge)) + 0.5) - expected_e) <= 1.5


@pytest.mark.parametrize("thick", [2, 5])
def test_membrane_thickness_and_snr(thick: int) -> None:
    r = _grid(100)
    rng = np.random.default_rng(2)
    img = 200 - 120.0 * ((r <= 30) & (r > 30 - thick)) + rng.normal(0, 5, r.shape)
    f = _feats(img, r <= 30, px=2.0)
    assert f["membrane_thickness_nm"] == pytest.approx(2.0 * thick, abs=2.0)
    noisy = 200 - 120.0 * ((r <= 30) & (r > 30 - thick)) + rng.normal(0, 60, r.shape)
    assert f["snr_membrane_db"] > _feats(noisy, r <= 30)["snr_membrane_db"] + 3


def test_internal_variance_sees_texture() -> None:
    r = _grid(100)
    rng = np.random.default_rng(3)
    base = 200 - 120.0 * ((r <= 30) & (r > 27)) + rng.normal(0, 5, r.shape)
    empty = _feats(base, r <= 30)["internal_variance"]
    textured = _feats(base + 80 * rng.random(r.shape) * (r < 24), r <= 30)["internal_variance"]
    assert empty == pytest.approx(1.0, abs=0.5)
    assert textured > 5 * empty


def _ring_particle(radius: int, thick: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, n) image with a dark membrane of ``thick`` px at ``radius`` and its disk mask."""
    r = _grid(n)
    noise = np.random.default_rng(seed).normal(0, 5, r.shape)
    return 200 - 120.0 * ((r <= radius) & (r > radius - thick)) + noise, r <= radius


@pytest.mark.parametrize("n", [300, 259])  # 259: odd image side, window cut to a multiple of k
def test_working_resolution_keeps_meaning(n: int) -> None:
    """Particles larger than work_size px get their window terms on k x k blocks: the shape
    features and histogram stay exact, the profiles and membrane terms stay close."""
    img, mask = _ring_particle(110, 6, n, seed=4)  # bbox 221 px: k = 2 by default
    fast = _feats(img, mask, px=0.5)
    exact = _feats(img, mask, px=0.5, work_size=100_000)
    for name in ["area", "perimeter", "circularity", "max_width_nm", "diameter_px", "mu20", "hu1"]:
        assert fast[name] == exact[name], name
    np.testing.assert_array_equal(_cols(fast, "hist_"), _cols(exact, "hist_"))
    assert not np.array_equal(_cols(fast, "edge_"), _cols(exact, "edge_"))  # k = 2 was used
    np.testing.assert_allclose(_cols(fast, "radial_"), _cols(exact, "radial_"), atol=0.05)
    np.testing.assert_allclose(_cols(fast, "edge_"), _cols(exact, "edge_"), atol=0.3)
    assert fast["membrane_thickness_nm"] == pytest.approx(3.0, abs=1.0)  # 6 px x 0.5 nm
    assert fast["internal_variance"] == pytest.approx(exact["internal_variance"], rel=0.25)
    with pytest.raises(ValueError, match="work_size"):
        FeatureConfig(work_size=8)


def test_mask_cleaning_paths_agree() -> None:
    """Row-convex masks skip the labelling; masks with holes, specks or concave rows do not:
    filled, largest component, same features either way."""
    r = _grid(80)
    img = np.where(r <= 25, 90.0, 180.0) + np.random.default_rng(5).normal(0, 3, r.shape)
    disk = r <= 25
    holed = disk & ~((r > 10) & (r < 14))  # a ring-shaped hole: filled back
    specked = disk.copy()
    specked[2:4, 2:4] = True  # a separate speck: dropped
    base = particle_features(img, disk)
    assert not isinstance(base, str)
    for m in (holed, specked):
        v = particle_features(img, m)
        assert not isinstance(v, str)
        np.testing.assert_allclose(v, base, rtol=1e-12, atol=1e-12)
    yy, xx = np.mgrid[:80, :80]
    cshape = disk & ~((np.abs(yy - 40) < 6) & (xx > 40))  # concave rows: two runs
    f = _feats(img, cshape)
    assert f["area"] == np.count_nonzero(cshape)


def test_degenerate_masks_give_reasons() -> None:
    img = np.random.default_rng(0).normal(100, 5, (30, 30))
    assert "no particle pixels" in particle_features(img, np.zeros((30, 30), bool))
    tiny = np.zeros((30, 30), bool)
    tiny[10:12, 10:12] = True
    assert "fewer than 10" in particle_features(img, tiny)
    assert "all four image borders" in particle_features(img, np.ones((30, 30), bool))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="hist_bins"):
        FeatureConfig(hist_bins=1)
    with pytest.raises(ValueError, match="edge_range"):
        FeatureConfig(edge_range=(0.3, -0.1))
    with pytest.raises(ValueError, match="edge_units"):
        FeatureConfig(edge_units="px")  # type: ignore[arg-type]
    assert len(feature_names(FeatureConfig(hist_bins=8, profile_bins=4))) == len(NAMES) - 24 - 12


def test_compute_features_dataset(tiny_dataset, tmp_path: Path) -> None:
    ds = load_dataset(tiny_dataset(counts=(6, 4, 3), empty_masks=2))
    table = compute_features(ds, cache=False)
    assert table.values.shape == (len(ds) - 2, len(NAMES))
    assert np.isfinite(table.values).all()
    assert table.names == NAMES and len(table) == len(ds) - 2
    assert [pid for pid, _ in table.failed] == ["p0000", "p0001"]
    assert all("no particle pixels" in reason for _, reason in table.failed)
    assert [ds.particles[i].id for i in table.index] == table.ids
    assert table.auto_masked == 0
    # the drawn particles are ellipses with a 20% margin: near-circular shapes
    mean_circ = table.column("circularity").mean()
    assert 0.8 < mean_circ <= 1.1


def test_auto_mask_counted(tiny_dataset) -> None:
    ds = load_dataset(tiny_dataset(counts=(3, 3, 2), masks=False))
    table = compute_features(ds, cache=False)
    assert table.auto_masked + len(table.failed) == len(ds)
    assert table.auto_masked >= 6
    assert all(reason.startswith("automatic mask") for _, reason in table.failed)


def test_cache_hit_and_key(tiny_dataset, tmp_path: Path) -> None:
    ds = load_dataset(tiny_dataset(counts=(3, 2, 2)))
    first = compute_features(ds, cache_dir=tmp_path / "c")
    again = compute_features(ds, cache_dir=tmp_path / "c")
    assert not first.from_cache and again.from_cache
    np.testing.assert_array_equal(first.values, again.values)
    assert again.ids == first.ids and again.names == first.names
    other = compute_features(ds, FeatureConfig(hist_bins=16), cache_dir=tmp_path / "c")
    assert not other.from_cache and other.values.shape[1] == len(NAMES) - 16


def test_csv_round_trip(tiny_dataset, tmp_path: Path) -> None:
    ds = load_dataset(tiny_dataset(counts=(4, 3, 2), empty_masks=1))
    table = compute_features(ds, cache=False)
    out = table.to_csv(tmp_path / "f.csv")
    back = FeatureTable.from_csv(out, ds)
    np.testing.assert_array_equal(back.values, table.values)
    assert back.ids == table.ids and back.names == table.names
    np.testing.assert_array_equal(back.index, table.index)
    assert [pid for pid, _ in back.failed] == ["p0000"]
    assert not list(tmp_path.glob(".*tmp*"))


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_from_csv_mismatch_errors(tiny_dataset, tmp_path: Path) -> None:
    ds = load_dataset(tiny_dataset(counts=(2, 2, 1)))
    ids = ds.ids
    good = [[pid, "1.0", "2.0"] for pid in ids]
    ok = FeatureTable.from_csv(_write(tmp_path / "ok.csv", ["id", "a", "b"], good), ds)
    assert ok.values.shape == (5, 2)
    bad = [*good, ["zzz", "1", "2"]]
    with pytest.raises(LipoclassError, match=r"row 6: id 'zzz' is not a particle"):
        FeatureTable.from_csv(_write(tmp_path / "u.csv", ["id", "a", "b"], bad), ds)
    with pytest.raises(LipoclassError, match=rf"no row for particle\(s\) {ids[-1]}"):
        FeatureTable.from_csv(_write(tmp_path / "m.csv", ["id", "a", "b"], good[:-1]), ds)
    nan = [r[:] for r in good]
    nan[2][2] = "nan"
    with pytest.raises(LipoclassError, match=r"row 3 .*column 'b': 'nan' is not a finite"):
        FeatureTable.from_csv(_write(tmp_path / "n.csv", ["id", "a", "b"], nan), ds)
    text = [r[:] for r in good]
    text[1][1] = "big"
    with pytest.raises(LipoclassError, match=r"row 2 .*column 'a': 'big'"):
        FeatureTable.from_csv(_write(tmp_path / "t.csv", ["id", "a", "b"], text), ds)
    with pytest.raises(LipoclassError, match="first column must be 'id'"):
        FeatureTable.from_csv(_write(tmp_path / "h.csv", ["name", "a"], []), ds)
    with pytest.raises(LipoclassError, match="not found"):
        FeatureTable.from_csv(tmp_path / "absent.csv", ds)


def test_select_feature_sets(tiny_dataset) -> None:
    ds = load_dataset(tiny_dataset(counts=(2, 2, 2)))
    table = compute_features(ds, cache=False)
    assert FEATURE_SETS == ("vironova", "all")
    vir = table.select("vironova")
    assert vir.names[:6] == ["area", "circularity", "mu20", "mu02", "mu30", "mu03"]
    assert sum(n.startswith("edge_") for n in vir.names) == 16
    assert sum(n.startswith("hist_") for n in vir.names) == 32
    assert vir.names[-1] == "internal_variance" and "radial_00" not in vir.names
    np.testing.assert_array_equal(vir.values[:, 0], table.column("area"))
    assert table.select("all").names == table.names
    with pytest.raises(LipoclassError, match="unknown feature set 'shape'"):
        table.select("shape")
    partial = FeatureTable(["x"], np.array([0]), ["area"], np.ones((1, 1)))
    with pytest.raises(LipoclassError, match="missing from this table: circularity"):
        partial.select("vironova")


def test_precomputed_table(tiny_dataset) -> None:
    ds = load_dataset(tiny_dataset(counts=(2, 2, 2), features=True))
    table = precomputed_table(ds)
    assert table.names == ["area_px", "noise"] and len(table) == len(ds)
    np.testing.assert_array_equal(table.values, ds.feature_matrix())
    with pytest.raises(LipoclassError, match="no numeric feature columns"):
        precomputed_table(load_dataset(tiny_dataset(counts=(2, 2, 2))))


def test_cli_features(tiny_dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds_dir = tiny_dataset(counts=(3, 2, 2), empty_masks=1)
    out = tmp_path / "feat.csv"
    assert main(["features", str(ds_dir), "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert f"6 particles x {len(NAMES)} features" in cap.out
    assert "lipoclass: warning: particle p0000: mask has no particle pixels" in cap.err
    back = FeatureTable.from_csv(out, load_dataset(ds_dir))
    assert len(back) == 6 and len(back.failed) == 1
    assert main(["features", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "dataset folder not found" in capsys.readouterr().err


def _square_warn(x: int) -> int:
    if x % 50 == 0:
        warnings.warn(f"item {x} is a multiple of 50", stacklevel=2)
    return x * x


@pytest.mark.parametrize("workers", [1, 2])
def test_parallel_map_order_and_warnings(workers: int) -> None:
    items = list(range(230))
    res, msgs = parallel_map(_square_warn, items, workers, min_items=100, min_chunk=16)
    assert res == [x * x for x in items]
    assert msgs == [f"item {x} is a multiple of 50" for x in range(0, 230, 50)]
    with pytest.warns(UserWarning, match=r"item 0 is a multiple of 50 \(and 4 more warning"):
        warn_collected(msgs)
    with pytest.raises(ValueError, match="workers"):
        parallel_map(_square_warn, items, 0)


def test_compute_features_workers_agree(tiny_dataset) -> None:
    """The process pool (used from 400 particles) gives the serial values in order."""
    ds = load_dataset(tiny_dataset(counts=(150, 140, 120), size=(24, 32), samples=0))
    one = compute_features(ds, cache=False, workers=1)
    two = compute_features(ds, cache=False, workers=2)
    assert two.ids == one.ids and len(one) == len(ds) == 410
    np.testing.assert_array_equal(two.values, one.values)


@pytest.mark.shared
def test_real_vesicles(vesicle_dir: Path) -> None:
    ds = load_dataset(vesicle_dir)
    with pytest.warns(UserWarning, match="centred disk"):
        table = compute_features(ds, cache=False, workers=1)
    assert len(table) + len(table.failed) == len(ds) == 254
    assert table.auto_masked == 207  # particles without a mask
    assert len(table) >= 240 and np.isfinite(table.values).all()
