"""The learned candidate finder (``DetectConfig(finder="ring+learned")``, twenty-second
round): the packaged network finds liposomes on its own, adds only detections the ring
filter's accepted ones do not cover, marks them in detections.csv, and bad settings or files
get clear errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import imagecodecs
import numpy as np
import pytest

from lipoclass.choices import CANDIDATE_FINDERS
from lipoclass.cli import main
from lipoclass.errors import LipoclassError
from lipoclass.micrograph import match_instances
from lipoclass.micrograph.detect import (
    FEATURES,
    DetectConfig,
    detect_candidates,
    overlay_png,
    ring_detections,
)
from lipoclass.micrograph.finder import (
    LearnedFinder,
    OnnxFinder,
    fused_network,
    load_finder,
    octave_maps,
    solid_particles,
    suppress_circles,
)
from lipoclass.micrograph.io import Micrograph
from lipoclass.synth import MicrographConfig, render_micrograph

PX = 1.2


@pytest.fixture(scope="module")
def mic():
    """A small micrograph with distractors (a seed no finder or verifier was trained on)."""
    cfg = MicrographConfig(size=384, density=0.2, seed=4343, pixel_size_nm=PX, ice=8.0,
                           debris=10.0, touching=0.4)  # fmt: skip
    return render_micrograph(cfg, 0)


def test_config_validates_the_finder() -> None:
    assert DetectConfig().finder == "ring" == CANDIDATE_FINDERS[0]
    with pytest.raises(ValueError, match="finder must be one of"):
        DetectConfig(finder="yolo")
    for bad in (0.0, 1.0, -0.2):
        with pytest.raises(ValueError, match="finder_threshold"):
            DetectConfig(finder="ring+learned", finder_threshold=bad)


def test_packaged_finder_loads_and_bad_files_are_named(tmp_path: Path) -> None:
    f = load_finder()
    assert 0 < f.info["threshold"] < 1 and "1000-1159" in f.info["training_micrographs"]
    bad = tmp_path / "finder.npz"
    bad.write_bytes(b"not a finder")
    with pytest.raises(LipoclassError, match=r"finder\.npz: not a candidate finder"):
        load_finder(bad)
    with pytest.raises(LipoclassError, match="not found"):
        load_finder(tmp_path / "missing.npz")


def test_inference_path_computes_what_the_trained_network_does(mic) -> None:
    import torch

    f = load_finder()
    assert isinstance(f.fast, OnnxFinder)  # the packaged finder runs through onnxruntime
    fused = fused_network(f.net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x = octave_maps(np.asarray(mic.image, np.float32), 40.0)[0]
    with torch.no_grad():
        a = f.net(torch.from_numpy(x)[None, None])[0].numpy()
        b = fused(torch.from_numpy(x)[None, None])[0].numpy()
    c = f.fast(x)
    assert c.shape == a.shape == (2, *x.shape)
    for other in (b, c):  # the same function within float rounding
        assert float(np.abs(other - a).max()) < 1e-4 * float(np.abs(a).max())
    assert isinstance(f.net[1], torch.nn.BatchNorm2d) and not f.net[1].training  # net untouched
    np.testing.assert_allclose(  # without its inference path the finder finds the same
        LearnedFinder(f.net, f.info).find(x, 40.0), f.find(x, 40.0), rtol=1e-4, atol=1e-4
    )


def test_suppression_keeps_the_better_of_overlapping_circles() -> None:
    c = np.array([[0.5, 10, 10, 8], [0.9, 11, 10, 9], [0.7, 40, 40, 8], [0.6, 12, 10, 30]])
    kept = suppress_circles(c)
    # the weaker circle at nearly the same place and size goes; another size stays
    np.testing.assert_array_equal(kept[:, 0], [0.9, 0.7, 0.6])


def test_finder_alone_finds_the_liposomes(mic) -> None:
    f = load_finder()
    cfg = DetectConfig()
    _dmin, dmax = cfg.diameters_px(PX)
    c = f.find(mic.image.astype(np.float32), dmax / 2, 0.45)  # working factor 1 at 1.2 nm/px
    truth = mic.labels.astype(np.int64)
    n = int(truth.max())
    hit = {int(truth[round(y), round(x)]) for _h, y, x, _r in c if truth[round(y), round(x)]}
    assert n >= 8 and len(hit) >= 0.8 * n  # most liposomes have a confident centre inside
    assert len(c) <= 1.5 * n  # and the confident ones are mostly liposomes


def test_learned_detections_are_added_and_marked(mic) -> None:
    ring = detect_candidates(mic.image, DetectConfig(), PX)
    both = detect_candidates(mic.image, DetectConfig(finder="ring+learned"), PX)
    n = len(ring)
    np.testing.assert_array_equal(both.cy[:n], ring.cy)  # the ring path is unchanged
    np.testing.assert_array_equal(both.accepted[:n], ring.accepted)
    assert both.found_by == ["ring"] * n + ["learned"] * (len(both) - n)
    extra = slice(n, None)
    assert np.isnan(both.significance[extra]).all()
    np.testing.assert_array_equal(both.accepted[extra], [r == "" for r in both.reason[n:]])
    assert np.isfinite(both.features[extra, FEATURES.index("inner_rim_ratio")]).all()
    assert (both.score[extra] >= load_finder().info["threshold"]).all()
    acc = ring.accepted
    r_ring = ring.radii[acc].mean(axis=1)
    for y, x, rr in zip(both.cy[extra], both.cx[extra], both.radii[extra]):
        d = np.hypot(ring.cy[acc] - y, ring.cx[acc] - x)  # none covered by an accepted one
        ratio = rr.mean() / r_ring
        assert not np.any((d < 0.5 * r_ring) & (ratio > 1 / 1.6) & (ratio < 1.6))
    # the overlay draws the learned finder's detections in their own colour (orange)
    rgb = imagecodecs.png_decode(overlay_png(Micrograph(Path("m.tif"), mic.image, PX), both))
    assert np.all(rgb.reshape(-1, 3) == (230, 159, 0), axis=1).any()
    ring_rgb = imagecodecs.png_decode(overlay_png(Micrograph(Path("m.tif"), mic.image, PX), ring))
    assert not np.all(ring_rgb.reshape(-1, 3) == (230, 159, 0), axis=1).any()
    # the ring filter's own detections recovered from the combined run (detect --truth)
    alone = ring_detections(both)
    assert len(both) > n and alone.found_by == ["ring"] * n
    np.testing.assert_array_equal(alone.labels, ring.labels)
    np.testing.assert_array_equal(alone.instance, ring.instance)
    np.testing.assert_array_equal(alone.score, ring.score)
    assert alone.reason == ring.reason
    # with a ring threshold nothing passes, the finder alone still finds the liposomes
    only = detect_candidates(mic.image, DetectConfig(threshold=100.0, finder="ring+learned"), PX)
    assert set(only.found_by) == {"learned"}
    m = match_instances(mic.labels.astype(np.int64), only.labels)
    assert m.recall >= 0.7 and m.precision >= 0.7


def test_solid_gate_names_the_feature_over_its_limit() -> None:
    gate = {"inner_rim_ratio": 3.0, "rim_side_balance": 6.0}
    f = LearnedFinder(None, {"solid_gate": gate})
    feats = np.zeros((4, len(FEATURES)))
    feats[1, FEATURES.index("inner_rim_ratio")] = 3.5
    feats[2, FEATURES.index("rim_side_balance")] = 9.0
    feats[3, FEATURES.index("inner_rim_ratio")] = np.nan  # not measurable: not rejected
    why = solid_particles(f, feats, FEATURES)
    assert why[0] == "" and why[3] == ""
    assert "solid particle" in why[1] and "inner_rim_ratio 3.50 > 3.00" in why[1]
    assert "rim_side_balance 9.00 > 6.00" in why[2] and "inner_rim_ratio" not in why[2]
    assert solid_particles(LearnedFinder(None, {}), feats, FEATURES) == [""] * 4  # no gate
    assert solid_particles(f, np.zeros((0, len(FEATURES))), FEATURES) == []
    assert set(load_finder().info["solid_gate"]) <= set(FEATURES)  # the packaged one has one


def test_solid_particles_found_by_the_finder_are_listed_as_rejected(mic) -> None:
    """Dark solid particles without a membrane (peaked blobs, as ice or aggregates) that the
    finder marks are kept in the detections as rejected, with the gate's reason."""
    img = mic.image.astype(np.float64).copy()
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    blobs = [(60, 60, 14), (320, 320, 18)]  # where the micrograph holds no liposome
    for cy, cx, r in blobs:
        assert not mic.labels[cy - r : cy + r, cx - r : cx + r].any()
        img -= 80.0 * np.exp(-2.0 * ((yy - cy) ** 2 + (xx - cx) ** 2) / r**2)
    det = detect_candidates(img, DetectConfig(finder="ring+learned", finder_threshold=0.3), PX)
    on_blob = [
        i
        for i, f in enumerate(det.found_by)
        if f == "learned" and any(np.hypot(det.cy[i] - y, det.cx[i] - x) < r for y, x, r in blobs)
    ]
    assert on_blob and not det.accepted[on_blob].any()
    assert all(det.reason[i].startswith("solid particle") for i in on_blob)


def test_cli_finder_option(mic, tmp_path: Path, capsys) -> None:
    import tifffile

    path = tmp_path / "m.tif"
    tifffile.imwrite(path, mic.image.astype(np.float32))
    out = tmp_path / "det"
    rc = main(["detect", str(path), "--pixel-size", str(PX), "--finder", "ring+learned",
               "--out", str(out)])  # fmt: skip
    assert rc == 0
    with (out / "detections.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    kinds = {r["found_by"] for r in rows}
    assert kinds <= {"ring", "learned"} and "ring" in kinds
    assert all(r["significance"] == "" for r in rows if r["found_by"] == "learned")
    run = json.loads((out / "detect.json").read_text())
    assert run["config"]["finder"] == "ring+learned" and "torch" in run["versions"]
    assert "onnxruntime" in run["versions"]  # the finder's inference path
    assert run["finder"]["threshold"] == load_finder().info["threshold"]
    with pytest.raises(SystemExit) as exc:
        main(["detect", str(path), "--finder", "magic", "--out", str(tmp_path / "x")])
    assert exc.value.code != 0
    assert "--finder" in capsys.readouterr().err


def test_detect_shows_progress_over_the_micrographs(mic, tmp_path: Path, capsys) -> None:
    import tifffile

    from lipoclass.micrograph.detect import detect_to_folder

    paths = []
    for k in range(2):
        paths.append(tmp_path / f"m{k}.tif")
        tifffile.imwrite(paths[-1], mic.image.astype(np.float32))
    res = detect_to_folder(paths, tmp_path / "det", DetectConfig(), pixel_size_nm=PX,
                           progress=True)  # fmt: skip
    err = capsys.readouterr().err
    assert "detect" in err and "2/2" in err and sorted(res.accepted) == ["m0", "m1"]
    from lipoclass.micrograph import LabelImageSource, crop_micrographs

    crop_micrographs(paths, tmp_path / "crops", LabelImageSource(tmp_path / "det", paths),
                     pixel_size_nm=PX, progress=True)  # fmt: skip
    err = capsys.readouterr().err
    assert "crop" in err and "2/2" in err
