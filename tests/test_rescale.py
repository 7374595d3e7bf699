"""Rescaling to a common nm per pixel (the recipe's rescale rule, issue 20): the rule fires
only when pixel sizes differ, a disc of D nm becomes the same number of input pixels at
any pixel size, the scale is stored in the model folder so predictions do not change when
the training data moves, and missing / bad pixel sizes are one-line errors."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import draw_particle
from lipoclass.crossfit import fit_model
from lipoclass.data import DatasetWriter, Fingerprint, PrepConfig, load_dataset
from lipoclass.data.prepare import prepare, prepare_arrays
from lipoclass.data.survey import Quantiles
from lipoclass.ensemble import load_model
from lipoclass.errors import LipoclassError
from lipoclass.evaluate import CVConfig, ModelSpec
from lipoclass.recipe import RecipeConfig, fit_auto, plan_recipe
from lipoclass.recipe import auto as auto_mod

FAST = RecipeConfig(
    base_model="tiny", hybrid_model=None, max_epochs=1, min_epochs=1, device="cpu",
    precision="fp32", svm=False, max_cnn_seeds=1,
)  # fmt: skip
COUNTS = [np.array([160, 160, 160])] * 5


def _fp(**kw: Any) -> Fingerprint:
    base: dict[str, Any] = dict(
        n_particles=600, n_labelled=600, classes=("a", "b", "c"), class_counts=(200, 200, 200),
        imbalance=1.0, masks=600, size_source="mask", particle_px=Quantiles(24, 20, 30),
        particle_nm=Quantiles(19.2, 16, 24), crop_px=Quantiles(40, 35, 50),
        class_particle_px=(24, 24, 24), pixel_size_nm=(0.8, 0.8, 0.8), pixel_sizes_differ=False,
        grey={}, measured=600, pixel_size_known=600,
    )  # fmt: skip
    base.update(kw)
    return Fingerprint(**base)


def test_rescale_rule_fires_only_when_pixel_sizes_differ() -> None:
    same = plan_recipe(_fp(), COUNTS)
    assert same.rule("rescale").value == "no"
    assert all(c.spec is not None and c.spec.prep.nm_per_px is None for c in same.models)
    close = plan_recipe(_fp(pixel_size_nm=(0.8, 0.76, 0.82), pixel_sizes_differ=True), COUNTS)
    assert close.rule("rescale").value == "no" and "within 1.1x" in close.rule("rescale").reason
    unknown = plan_recipe(_fp(pixel_size_nm=None, particle_nm=None, pixel_size_known=0), COUNTS)
    assert (
        unknown.rule("rescale").value == "no" and "no pixel size" in unknown.rule("rescale").reason
    )
    mixed_kw = dict(pixel_size_nm=(1.2, 0.8, 1.6), pixel_sizes_differ=True)
    partial = plan_recipe(_fp(**mixed_kw, pixel_size_known=500), COUNTS)
    assert partial.rule("rescale").value == "no"
    assert "100 particle(s) without a pixel size" in partial.rule("rescale").reason
    mixed = plan_recipe(_fp(**mixed_kw), COUNTS)
    rule = mixed.rule("rescale")
    # the coarsest pixel size (1.6 nm/px): the 24 nm particle (95th pct.) fits 28 px
    assert rule.value == "1.6 nm/px" and "resamples every crop to 1.6 nm/px" in rule.reason
    assert "pixel sizes differ 2.00x" in rule.reason and "first stays box-resized" in rule.reason
    # the rescaled CNN is a second candidate beside the box-resized one: CV decides
    assert [(c.name, c.spec.prep.nm_per_px) for c in mixed.models if c.spec is not None] == [
        ("lipnet_hybrid_28", None), ("lipnet_hybrid_28_nm", 1.6), ("svm", None)
    ]  # fmt: skip
    one = plan_recipe(_fp(**mixed_kw), COUNTS, replace(RecipeConfig(), two_sizes=False))
    assert one.rule("rescale").value == "no" and "two_sizes off" in one.rule("rescale").reason
    # larger particles: coarser than the coarsest pixel size so that they fit the field
    fit = plan_recipe(
        _fp(pixel_size_nm=(1.0, 0.8, 1.2), pixel_sizes_differ=True,
            particle_nm=Quantiles(36, 30, 44)), COUNTS,
    )  # fmt: skip
    assert fit.rule("input size").value == 28 and fit.rule("rescale").value == "1.571 nm/px"
    assert "95th-percentile particle fits" in fit.rule("rescale").reason
    # ... but never more than MAX_SHRINK x the finest pixel size: box resizing instead
    wide = plan_recipe(_fp(pixel_size_nm=(0.8, 0.4, 1.6), pixel_sizes_differ=True), COUNTS)
    assert wide.rule("rescale").value == "no"
    assert "show the smallest 2.8x coarser than box resizing" in wide.rule("rescale").reason
    assert all(c.spec is not None and c.spec.prep.nm_per_px is None for c in wide.models)
    big = plan_recipe(_fp(**mixed_kw, particle_nm=Quantiles(150, 40, 256)), COUNTS)
    assert big.rule("rescale").value == "no" and big.rule("input size").value == 28


def _disc(diameter_px: float, side: int) -> np.ndarray:
    yy, xx = np.mgrid[:side, :side]
    c = (side - 1) / 2
    return (np.hypot(yy - c, xx - c) <= diameter_px / 2).astype(np.float32) * 100.0


def _diameter(arr: np.ndarray) -> float:
    """Equivalent diameter (px) of the pixels above half the maximum."""
    return float(2 * np.sqrt(np.count_nonzero(arr > arr.max() / 2) / np.pi))


def test_a_disc_of_d_nm_gets_the_same_pixel_diameter_at_two_pixel_sizes() -> None:
    d_nm = 24.0
    cfg = PrepConfig(mode="surround", size=48, normalize="none", nm_per_px=1.2)
    got = []
    for px in (0.4, 1.0):  # 60 px and 24 px across in the images
        res = prepare_arrays(_disc(d_nm / px, int(80 / px)), None, cfg, px)
        assert not isinstance(res, str) and res[0].shape == (48, 48)
        got.append(_diameter(res[0]))
    assert got == pytest.approx([d_nm / 1.2] * 2, abs=1.0)  # 20 px each
    # without the common scale, crops of one size in px are box-resized: 2.5x apart
    box = PrepConfig(mode="surround", size=48, normalize="none")
    plain = [prepare_arrays(_disc(d_nm / px, 80), None, box) for px in (0.4, 1.0)]
    sizes = [_diameter(r[0]) for r in plain if not isinstance(r, str)]
    assert sizes[0] / sizes[1] == pytest.approx(2.5, abs=0.2)
    with pytest.raises(ValueError, match="pixel size is needed"):
        prepare_arrays(_disc(10, 20), None, cfg)
    with pytest.raises(ValueError, match="nm_per_px must be a positive number"):
        PrepConfig(nm_per_px=float("nan"))


def _mixed(root: Path, n: int = 12, pixel_sizes: bool = True) -> Path:
    """Two classes that differ in physical size (12 vs 20 nm), each rendered half at 0.5
    and half at 1.0 nm/px."""
    rng = np.random.default_rng(0)
    with DatasetWriter(root, name="mixed", classes=["small", "large"]) as w:
        for i in range(2 * n):
            px = 0.5 if (i // 2) % 2 == 0 else 1.0
            nm = 12.0 if i % 2 == 0 else 20.0
            side = round(nm / 0.64 / px)  # draw_particle's ring spans 0.64 of the side
            img, mask = draw_particle(0, side, side, rng)
            w.add(f"p{i:03d}", image=img, mask=mask, label=("small", "large")[i % 2],
                  pixel_size_nm=px if pixel_sizes else None)  # fmt: skip
    return root


def test_common_scale_model_predicts_the_same_after_the_training_data_moves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--recipe auto on mixed pixel sizes cross-validates a common-scale candidate beside the
    box-resized one; that candidate's folder stores the scale in model.json and predicts new
    crops identically once the training data is gone (library predictor: the CLI's share
    estimation is tested elsewhere and would refit quantifiers here)."""
    monkeypatch.setattr(auto_mod, "fit_folder_quantifiers", lambda *a, **k: None)
    ds_dir = _mixed(tmp_path / "ds")
    ds = load_dataset(ds_dir)
    cv = CVConfig(folds=2, seed=0)
    fit_auto(ds, cv, tmp_path / "auto", config=FAST, progress=False)
    recipe = json.loads((tmp_path / "auto" / "recipe.json").read_text())
    rule = next(r for r in recipe["plan"]["rules"] if r["name"] == "rescale")
    cand = {c["name"]: c for c in recipe["plan"]["candidates"]}
    nm = cand["tiny_28_nm"]["spec"]["prep"]["nm_per_px"]
    assert rule["value"] == f"{nm:g} nm/px" and nm >= 1.0  # never finer than the coarsest
    assert "nm_per_px" not in cand["tiny_28"]["spec"]["prep"]  # box-resized
    assert {r["name"] for r in recipe["table"]} == {"tiny_28", "tiny_28_nm"}
    # that candidate's model folder (what auto writes when it wins)
    spec = ModelSpec.from_dict(cand["tiny_28_nm"]["spec"])
    model = tmp_path / "m"
    fit_model(ds, spec, cv, model, progress=False, quantify=False)
    info = json.loads((model / "model.json").read_text())
    assert info["prep"]["nm_per_px"] == nm
    assert info["input"]["rescaled"] is True and info["input"]["nm_per_px"] == nm
    crops = tmp_path / "new"
    shutil.copytree(ds_dir, crops)

    def predict() -> np.ndarray:
        loaded = load_model(model)  # fresh: nothing cached from the training data
        assert loaded.prep.nm_per_px == nm
        probs, index, skipped = loaded.predictor().predict_dataset(load_dataset(crops))
        assert len(index) == 24 and not skipped
        return probs

    before = predict()
    ds_dir.rename(tmp_path / "moved")
    after = predict()
    np.testing.assert_array_equal(before, after)
    assert np.ptp(before[:, 0]) > 0  # the inputs differ, so do the probabilities
    # the record drives preparation: box-resized inputs would give other probabilities
    loaded = load_model(model)
    boxed = prepare(load_dataset(crops), replace(loaded.prep, nm_per_px=None), cache=False)
    assert not np.allclose(loaded.predictor().proba_prepared(boxed), before)
    # new data without a pixel size: one line naming the row, before any pixel is read
    bare = _mixed(tmp_path / "bare", n=2, pixel_sizes=False)
    with pytest.raises(LipoclassError) as exc:
        loaded.predictor().predict_dataset(load_dataset(bare))
    msg = str(exc.value)
    assert "\n" not in msg and "row 1 (id p000)" in msg and f"{nm:g} nm per pixel" in msg


@pytest.mark.parametrize("bad", ["0", "-0.5", "nan", "inf"])
def test_bad_pixel_size_is_one_line_naming_the_row(tmp_path: Path, bad: str) -> None:
    ds = _mixed(tmp_path / "ds", n=2)
    table = ds / "particles.csv"
    good = table.read_text()
    lines = good.splitlines()
    head = lines[0].split(",")
    col = head.index("pixel_size_nm")
    cells = lines[2].split(",")
    cells[col] = bad
    lines[2] = ",".join(cells)
    table.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        LipoclassError, match=r"row 2 \(id p001\): pixel_size_nm (must be positive|is .*finite)"
    ):
        load_dataset(ds)
    table.write_text(good)
    toml = ds / "dataset.toml"
    toml.write_text(f"pixel_size_nm = {bad}\n" + toml.read_text())
    with pytest.raises(LipoclassError, match="pixel_size_nm' must be a positive number"):
        load_dataset(ds)
