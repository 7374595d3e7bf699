"""Tests for the liposome simulator (``lipoclass synth``): ratios, class counts,
determinism, layout (masks, samples, pixel sizes, contact sheets), 16-bit TIFF, CLI."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from lipoclass.cli import main
from lipoclass.data import load_dataset, read_image
from lipoclass.errors import LipoclassError
from lipoclass.synth import (
    PROBLEMS,
    SynthConfig,
    class_counts,
    draw_sample,
    parse_ratios,
    render_one,
    synthesize,
)


def _digest(root: Path) -> str:
    """Hash of particles.csv and every image/mask file, in name order."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and (p.parent.name in ("images", "masks") or p.name == "particles.csv"):
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def lam120(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "lam120"
    synthesize("lamellarity", out, n=120, seed=0, workers=1)
    return out


# --------------------------------------------------------------------------- ratios / counts


def test_parse_ratios_renormalises_and_balanced():
    assert parse_ratios("balanced") == "balanced"
    r = parse_ratios("unilamellar=2, multilamellar=1,uncertain=1")
    assert r == {"unilamellar": 0.5, "multilamellar": 0.25, "uncertain": 0.25}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("unilamellar=0.5,bogus=0.5", "unknown class 'bogus'"),
        ("unilamellar=abc", "not a number"),
        ("unilamellar=-1,uncertain=2", ">= 0"),
        ("unilamellar", "name=share"),
        ("full=1,full=2", "given twice"),
        ("full=0,empty=0", "sum to 0"),
        ("", "empty"),
    ],
)
def test_parse_ratios_errors(text: str, fragment: str):
    with pytest.raises(LipoclassError, match="--ratios") as err:
        parse_ratios(text)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_class_counts_thesis_shares_and_minimum():
    classes, thesis = PROBLEMS["lamellarity"]
    assert classes == ("unilamellar", "multilamellar", "uncertain")
    assert class_counts(thesis, 14169, 25).tolist() == [12368, 1717, 84]
    enc = class_counts(PROBLEMS["encapsulation"][1], 24918, 25)
    assert enc.tolist() == [24255, 502, 161]
    small = class_counts(thesis, 300, 25)
    assert small.sum() == 300 and small.min() >= 25
    assert small[0] > small[1] >= 25  # proportions kept where the minimum allows
    tiny = class_counts(thesis, 60, 25)  # 3 x 25 > 60: the floor is n // classes
    assert tiny.sum() == 60 and tiny.min() == 20


def test_synth_config_validation():
    with pytest.raises(ValueError, match="problem"):
        SynthConfig(problem="virus")
    with pytest.raises(ValueError, match="shares"):
        SynthConfig(problem="lamellarity", shares=(1.0, 1.0))
    with pytest.raises(ValueError, match="n must be"):
        SynthConfig(problem="encapsulation", n=2)
    assert SynthConfig(problem="encapsulation").size == 24918


def test_ratios_with_class_of_other_problem_rejected(tmp_path: Path):
    with pytest.raises(LipoclassError, match="not a lamellarity class"):
        synthesize("lamellarity", tmp_path / "x", n=30, ratios={"full": 1.0})
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- determinism


def test_render_one_deterministic_per_particle():
    s = draw_sample(np.random.default_rng(5))
    a_img, a_mask = render_one("encapsulation", "full", s, 7, 3)
    b_img, b_mask = render_one("encapsulation", "full", s, 7, 3)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_mask, b_mask)
    c_img, _ = render_one("encapsulation", "full", s, 8, 3)  # other seed
    d_img, _ = render_one("encapsulation", "full", s, 7, 4)  # other particle
    assert c_img.shape != a_img.shape or not np.array_equal(c_img, a_img)
    assert d_img.shape != a_img.shape or not np.array_equal(d_img, a_img)


def test_dataset_identical_for_same_seed_any_workers(lam120: Path, tmp_path: Path):
    again = tmp_path / "again"
    synthesize("lamellarity", again, n=120, seed=0, workers=2)  # 2 processes
    assert _digest(again) == _digest(lam120)
    other = tmp_path / "other"
    synthesize("lamellarity", other, n=120, seed=1, workers=1)
    assert _digest(other) != _digest(lam120)


# --------------------------------------------------------------------------- layout


def test_dataset_layout_counts_masks_samples(lam120: Path):
    ds = load_dataset(lam120)
    assert ds.classes == ("unilamellar", "multilamellar", "uncertain")
    counts = ds.class_counts()
    assert sum(counts.values()) == 120
    assert counts == dict(zip(ds.classes, class_counts(PROBLEMS["lamellarity"][1], 120, 25)))
    assert min(counts.values()) >= 25
    px_by_sample: dict[str | None, set[float | None]] = defaultdict(set)
    sizes: dict[str, list[int]] = defaultdict(list)
    for p in ds.particles:
        img = read_image(p.image)
        assert p.mask is not None
        mask = read_image(p.mask) > 0
        assert mask.shape == img.shape
        h, w = img.shape
        assert 40 <= min(h, w) and max(h, w) <= 300
        assert mask.any() and mask[h // 2, w // 2]  # one particle, centred
        assert not mask[0, :].any() and not mask[:, 0].any()  # surroundings kept
        assert img.std() > 1.0  # noisy, not blank
        px_by_sample[p.sample].add(p.pixel_size_nm)
        assert p.micrograph == p.sample  # each synthetic sample is one micrograph
        assert p.label is not None
        sizes[p.label].append(h * w)
    assert all(s is not None for s in px_by_sample)
    for values in px_by_sample.values():  # one pixel size per micrograph
        assert len(values) == 1 and 0.4 <= next(iter(values)) <= 1.2  # type: ignore[operator]
    # multilamellar liposomes are larger on average (different size distributions)
    assert np.median(sizes["multilamellar"]) > np.median(sizes["unilamellar"])
    for cls in ds.classes:
        assert (lam120 / f"contact_{cls}.png").is_file()
    assert ds.meta.get("synthetic") is True


def test_samples_group_50_to_200(tmp_path: Path):
    out = tmp_path / "enc"
    ds = synthesize("encapsulation", out, n=300, seed=2, ratios="balanced", workers=1)
    assert ds.class_counts() == {"full": 100, "uncertain": 100, "empty": 100}
    per_sample: dict[str | None, int] = defaultdict(int)
    for p in ds.particles:
        per_sample[p.sample] += 1
    assert len(per_sample) >= 2
    assert all(50 <= n <= 250 for n in per_sample.values())
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging left


def test_tiff16(tmp_path: Path):
    ds = synthesize("lamellarity", tmp_path / "t16", n=30, seed=0, tiff16=True, workers=1)
    img_path = ds.particles[0].image
    assert img_path.suffix == ".tif"
    import tifffile

    arr = tifffile.imread(img_path)
    assert arr.dtype == np.uint16 and arr.max() > 255


# --------------------------------------------------------------------------- CLI


def test_cli_synth_and_existing_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "cli"
    assert main(["synth", "lamellarity", str(out), "--n", "60", "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "unilamellar" in printed
    assert len(load_dataset(out)) == 60
    assert main(["synth", "lamellarity", str(out), "--n", "60"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and err.count("\n") == 1


def test_cli_bad_ratios(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    code = main(["synth", "encapsulation", str(tmp_path / "b"), "--n", "30", "--ratios", "x=1"])
    assert code == 2
    assert "unknown class 'x'" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
