"""Predicting on whole micrographs: synth (micrographs) -> detect -> crop -> train -> predict
on new micrographs (another seed), checked against the known truth; in-memory preparation
equals crop + prepare; bad input through the CLI; the Ray executor (slow)."""

from __future__ import annotations

import csv
import dataclasses
import math
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from lipoclass.cli import main
from lipoclass.data import PrepConfig, load_dataset, prepare, write_image
from lipoclass.errors import LipoclassError
from lipoclass.micrograph import (
    DetectConfig,
    LabelImageSource,
    MicrographWarning,
    detect_particles,
    match_instances,
    read_label_image,
    read_micrograph,
    transfer_labels,
    write_label_image,
)
from lipoclass.micrograph.predict import prepare_particles
from lipoclass.synth import synthesize_micrographs

SIZE = 384
PX = 2.0  # nm/px: liposomes of ~20-50 px, ~50 per micrograph
TRAIN_RATIOS = {"unilamellar": 0.5, "multilamellar": 0.4, "uncertain": 0.1}
TEST_RATIOS = {"unilamellar": 0.7, "multilamellar": 0.3}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def _mics(root: Path) -> list[Path]:
    return sorted((root / "micrographs").glob("*.tif"))


def _synth(out: Path, seed: int, count: int, ratios: dict[str, float]) -> Path:
    return synthesize_micrographs("lamellarity", out, count=count, size=SIZE, density=0.35,
                                  pixel_size_nm=PX, carbon=0.0, seed=seed,
                                  ratios=ratios)  # fmt: skip


def _truth_classes(root: Path, name: str) -> dict[int, str]:
    return {int(r["instance"]): r["label"] for r in _rows(root / "annotations.csv")
            if r["micrograph"] == name}  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Training micrographs, detections matched to the truth, crops, a tiny model."""
    root = tmp_path_factory.mktemp("mp")
    syn = _synth(root / "syn", 0, 4, TRAIN_RATIOS)
    det = root / "det"
    det.mkdir()
    recalls = []
    table = [("micrograph", "instance", "label")]
    for path in _mics(syn):
        mic = read_micrograph(path)
        found = detect_particles(mic.image, DetectConfig(), mic.pixel_size_nm)
        truth = read_label_image(syn / "labels" / path.name)
        recalls.append(match_instances(truth, found).recall)
        kept, classes = transfer_labels(truth, _truth_classes(syn, path.stem), found)
        write_label_image(det / path.name, kept, mic.pixel_size_nm)
        table += [(path.stem, str(i), lab) for i, lab in sorted(classes.items())]
    with (root / "classes.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(table)
    ds = root / "ds"
    args = ["crop", *map(str, _mics(syn)), "--labels", str(det), "--classes",
            str(root / "classes.csv"), "--surround", "12", "--out", str(ds)]  # fmt: skip
    assert main(args) == 0
    model = root / "model"
    args = ["train", str(ds), "--model", "tiny", "--size", "24", "--epochs", "3", "--folds",
            "2", "--review-target", "0.9", "--out", str(model)]  # fmt: skip
    assert main(args) == 0
    return {"root": root, "syn": syn, "det": det, "ds": ds, "model": model, "recall": recalls}


def test_detection_recall_on_training_micrographs(trained: dict[str, object]) -> None:
    recalls = trained["recall"]
    assert isinstance(recalls, list)
    assert min(recalls) >= 0.45 and np.mean(recalls) >= 0.6, recalls  # mask IoU >= 0.5


def test_in_memory_preparation_equals_crop_dataset(trained: dict[str, object]) -> None:
    """prepare_particles gives the pixels prepare() gives on the crops written by crop, with
    box resizing and at a common scale (``nm_per_px``, the recipe's rescale rule)."""
    syn, det, ds = Path(str(trained["syn"])), Path(str(trained["det"])), Path(str(trained["ds"]))
    dataset = load_dataset(ds)
    px = dataset.particles[0].pixel_size_nm
    assert px is not None
    mics = _mics(syn)
    source = LabelImageSource(det, mics)
    for cfg in (PrepConfig(mode="masked", size=20), PrepConfig(mode="masked", size=20,
                                                               nm_per_px=1.7 * px)):  # fmt: skip
        ref = prepare(dataset, cfg, cache=False)
        xs, ids = [], []
        for path in mics:
            mic = read_micrograph(path)
            anns = source.particles(mic)
            x, _meta, keep, _ = prepare_particles(mic, anns, cfg, surround=12)
            xs.append(x)
            ids += [f"{mic.name}_{anns[i].key}" for i in keep]
        got = dict(zip(ids, np.concatenate(xs)))
        common = [i for i in ref.ids if i in got]
        assert len(common) == len(ref.ids) > 10  # every crop is also prepared in memory
        pos = {i: k for k, i in enumerate(ref.ids)}
        for i in common:
            np.testing.assert_allclose(got[i], ref.x[pos[i]], atol=1e-5)
    # a common-scale model needs the micrograph's pixel size: one line naming the file
    with pytest.raises(LipoclassError, match=r"no pixel size, but this model reads"):
        prepare_particles(dataclasses.replace(mic, pixel_size_nm=None), anns, cfg, surround=12)


def test_end_to_end_predict_new_micrographs(
    trained: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """New micrographs (seed 7, other class shares): detection recall and share error
    against the synthetic truth, and the report files."""
    new = _synth(tmp_path / "new", 7, 2, TEST_RATIOS)
    out = tmp_path / "pred"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rc = main(["predict", str(trained["model"]), *map(str, _mics(new)), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    for name in ("particles.csv", "shares.csv", "micrograph_shares.csv", "index.html",
                 "diameters.png", "summary.json"):  # fmt: skip
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["mic0001.png", "mic0002.png"]
    parts = _rows(out / "particles.csv")
    truth = _rows(new / "annotations.csv")
    # detection recall: a predicted particle matches a true one when its centroid lies
    # within a quarter of the true diameter of the true centre (edge-cut truth excluded:
    # cut particles are not classified)
    inner = [t for t in truth if t["edge"] == "0"]
    found = 0
    for t in inner:
        tx, ty, td = float(t["x"]), float(t["y"]), float(t["diameter_px"])
        found += any(p["micrograph"] == t["micrograph"]
                     and math.hypot(float(p["x"]) - tx, float(p["y"]) - ty) < td / 4
                     for p in parts)  # fmt: skip
    recall = found / len(inner)
    assert recall >= 0.5, recall
    diam = [float(p["diameter_nm"]) for p in parts]
    assert 10 < np.median(diam) < 200
    probs = np.array([[float(p[k]) for k in p if k.startswith("p_")] for p in parts])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # shares: each sample's raw shares sum to 1; overall error vs the true shares
    shares = _rows(out / "shares.csv")
    classes = sorted({r["class"] for r in shares})
    for s in {r["sample"] for r in shares}:
        # (the CC column: the recommended share may be "not determinable", i.e. empty)
        assert abs(sum(float(r["cc"]) for r in shares if r["sample"] == s) - 1) < 1e-3
    n = {c: 0 for c in classes}
    for p in parts:
        n[p["pred"]] += 1
    est = np.array([n[c] / len(parts) for c in classes])
    true = np.array([sum(t["label"] == c for t in inner) / len(inner) for c in classes])
    err = float(np.abs(est - true).sum())
    uniform = float(np.abs(1 / len(classes) - true).sum())
    print(f"recall {recall:.2f}; shares est {est.round(3)} true {true.round(3)}; "
          f"total abs error {err:.3f} (uniform guess {uniform:.3f})")  # fmt: skip
    # a 3-epoch tiny model is near chance: only a sanity bound on the error
    assert 0 <= err <= 2
    page = (out / "index.html").read_text()
    assert "overlays/mic0001.png" in page and "data:image/png;base64," in page
    assert "Class shares per sample" in page


def test_predict_with_truth_labels(
    trained: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--labels + --classes: every true instance not cut by the edge is classified, and
    the true shares reported in shares.csv are those of the synthetic truth."""
    syn = Path(str(trained["syn"]))
    mics = _mics(syn)[:2]
    out = tmp_path / "pred"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rc = main(["predict", str(trained["model"]), *map(str, mics), "--labels",
                   str(syn / "labels"), "--classes", str(syn / "annotations.csv"), "--out",
                   str(out)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    parts = _rows(out / "particles.csv")
    truth = [t for t in _rows(syn / "annotations.csv") if t["micrograph"] in {"mic0001", "mic0002"}]
    inner = {(t["micrograph"], int(t["instance"])): t["label"] for t in truth if t["edge"] == "0"}
    got = {(p["micrograph"], int(p["particle"])): p["label"] for p in parts}
    assert got == inner
    for r in _rows(out / "shares.csv"):
        labs = [lab for (m, _), lab in inner.items() if m == r["sample"]]
        assert float(r["true_share"]) == pytest.approx(labs.count(r["class"]) / len(labs), abs=1e-4)


def _write_csv(path: Path, header: list[str] | tuple[str, ...], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_predict_micrographs_with_audit_from_the_review_page(
    trained: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """predict MICROGRAPHS --audit REPORT/reviews.csv: ids <micrograph>_<particle> as the
    review page writes them; shares.csv, the console, index.html and shares.png show the
    audit-corrected shares and the chosen method with its reason; bad audit files give one
    clear line before anything is written; an audit too small for an interval says so."""
    from lipoclass.quantify import AUDIT_QUEUE, REVIEW_COLUMNS, UNSURE

    syn = Path(str(trained["syn"]))
    base = ["predict", str(trained["model"]), *map(str, _mics(syn)[:2]), "--labels",
            str(syn / "labels"), "--classes", str(syn / "annotations.csv")]  # fmt: skip
    first = tmp_path / "first"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert main([*base, "--out", str(first)]) == 0
    text = capsys.readouterr().out
    assert "method: " in text and "chosen for this model" in text
    assert "method: " in (first / "index.html").read_text() and (first / "shares.png").is_file()
    parts = _rows(first / "particles.csv")
    ids = [f"{p['micrograph']}_{p['particle']}" for p in parts]
    rng = np.random.default_rng(0)
    pick = rng.choice(len(parts), size=min(24, len(parts)), replace=False)
    rows = [[ids[i], parts[i]["micrograph"], AUDIT_QUEUE, parts[i]["pred"], parts[i]["label"],
             "ann", "t"] for i in pick]  # fmt: skip
    rows.append([ids[pick[0]], parts[pick[0]]["micrograph"], "uncertain", "", UNSURE, "a", "t"])
    reviews = _write_csv(first / "reviews.csv", REVIEW_COLUMNS, rows)
    out = tmp_path / "audited"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert main([*base, "--out", str(out), "--audit", str(reviews)]) == 0
    text = capsys.readouterr().out
    assert f"{len(pick)} labels used" in text and "1 decision(s) from other review queues" in text
    assert "audit-corrected" in text and "chosen for this model" in text
    samples = {p["sample"] for p in parts}
    per_sample = {m: sum(parts[i]["sample"] == m for i in pick) for m in samples}
    for r in _rows(out / "shares.csv"):  # each micrograph is its own sample here
        assert r["audit_n"] == str(per_sample[r["sample"]])
        if per_sample[r["sample"]] >= 10:
            assert float(r["audit_lo"]) <= float(r["audit"]) <= float(r["audit_hi"])
        else:
            assert r["audit"] == "" and "audit too small" in r["audit_note"]
    page = (out / "index.html").read_text()
    assert "audit-corrected % [CI]" in page and "shares.png" in page and "method: " in page
    assert (out / "shares.png").stat().st_size > 1000
    assert any(n >= 10 for n in per_sample.values())  # at least one sample gets an interval
    assert all(r["audit_n"] != "" for r in _rows(out / "micrograph_shares.csv"))
    # bad audit files: one line naming the file (and row), nothing written
    bad = tmp_path / "bad"
    unknown = _write_csv(
        tmp_path / "u.csv", ["id", "label"], [[ids[0], "unilamellar"], ["mic0009_1", "unilamellar"]]
    )
    msg = _bad([*base, "--out", str(bad), "--audit", str(unknown)], capsys, "u.csv", bad)
    assert "row 3: id 'mic0009_1' is not a particle" in msg
    cls = _write_csv(tmp_path / "c.csv", ["id", "label"], [[ids[0], "vesicle"]])
    msg = _bad([*base, "--out", str(bad), "--audit", str(cls)], capsys, "c.csv", bad)
    assert "label 'vesicle' is not a class" in msg
    dup = _write_csv(
        tmp_path / "d.csv", ["id", "label"], [[ids[0], "unilamellar"], [ids[0], "uncertain"]]
    )
    msg = _bad([*base, "--out", str(bad), "--audit", str(dup)], capsys, "d.csv", bad)
    assert "appears twice" in msg
    cols = _write_csv(tmp_path / "x.csv", ["particle", "class"], [["1", "unilamellar"]])
    msg = _bad([*base, "--out", str(bad), "--audit", str(cols)], capsys, "x.csv", bad)
    assert "needs the columns id,label" in msg
    _bad([*base, "--out", str(bad), "--audit", str(tmp_path / "none.csv")], capsys,
         "none.csv", bad)  # fmt: skip
    _bad([*base, "--out", str(bad), "--audit-draw", "5"], capsys, "--audit-draw", bad)
    small = _write_csv(tmp_path / "s.csv", ["id", "label"],
                       [[ids[i], parts[i]["label"]] for i in pick[:3]])  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert main([*base, "--out", str(bad), "--audit", str(small)]) == 0
    text = capsys.readouterr().out
    assert "audit too small for an interval: 3 labelled particle(s)" in text
    assert all(r["audit"] == "" for r in _rows(bad / "shares.csv"))


def _bad(args: list[str], capsys: pytest.CaptureFixture[str], name: str, out: Path) -> str:
    """Exit 2 with one 'lipoclass: error:' line naming ``name``; nothing left behind."""
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("lipoclass: warning")]
    assert len(lines) == 1 and lines[0].startswith("lipoclass: error:"), err
    assert name in lines[0] and "Traceback" not in err
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
    return lines[0]


def test_unreadable_micrograph(
    trained: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"not a tiff at all")
    good = _mics(Path(str(trained["syn"])))[0]
    out = tmp_path / "out"
    _bad(["predict", str(trained["model"]), str(good), str(bad), "--out", str(out)],
         capsys, "broken.tif", out)  # fmt: skip
    missing = tmp_path / "missing.mrc"
    _bad(["predict", str(trained["model"]), str(missing), "--out", str(out)],
         capsys, "missing.mrc", out)  # fmt: skip


def test_micrograph_without_particles(
    trained: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(3)
    blank = tmp_path / "blank.png"
    write_image(blank, np.clip(rng.normal(150, 4, (256, 256)), 0, 255).astype(np.uint8))
    good = _mics(Path(str(trained["syn"])))[0]
    out = tmp_path / "out"
    with pytest.warns(MicrographWarning, match="blank.png: no particle found"):
        rc = main(["predict", str(trained["model"]), str(good), str(blank), "--out", str(out),
                   "--pixel-size", str(PX)])  # fmt: skip
    assert rc == 0
    page = (out / "index.html").read_text()
    assert "blank" in page and "No particle on: blank" in page
    assert (out / "overlays" / "blank.png").is_file()
    assert not [p for p in _rows(out / "particles.csv") if p["micrograph"] == "blank"]
    only = tmp_path / "only"
    msg = _bad(["predict", str(trained["model"]), str(blank), "--out", str(only),
                "--pixel-size", str(PX)], capsys, "no particle", only)  # fmt: skip
    assert "any micrograph" in msg


def test_micrograph_options_need_micrographs(
    trained: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.csv"
    _bad(["predict", str(trained["model"]), str(trained["ds"]), "--labels", "x", "--out",
          str(out)], capsys, "--labels", out)  # fmt: skip
    _bad(["predict", str(trained["model"]), str(_mics(Path(str(trained["syn"])))[0]),
          "--out", str(out), "--labels", "a", "--coco", "b.json"], capsys, "one annotation",
         out)  # fmt: skip


@pytest.mark.slow
def test_ray_executor_same_results(trained: dict[str, object], tmp_path: Path) -> None:
    """Micrographs spread over a local Ray instance give the serial run's predictions."""
    from lipoclass.evaluate.executors import ExecutorConfig, run_tasks
    from lipoclass.micrograph import DetectSource
    from lipoclass.micrograph.predict import predict_micrographs
    from lipoclass.predict import PredictConfig

    mics = _mics(Path(str(trained["syn"])))[:2]
    cfg = PredictConfig(n_boot=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        serial = predict_micrographs(trained["model"], mics, tmp_path / "a", DetectSource(),  # type: ignore[arg-type]
                                     config=cfg, verbose=False)  # fmt: skip
        runner = partial(run_tasks, config=ExecutorConfig("ray", workers=2, threads=1))
        spread = predict_micrographs(trained["model"], mics, tmp_path / "b", DetectSource(),  # type: ignore[arg-type]
                                     config=cfg, runner=runner, verbose=False)  # fmt: skip
    assert serial.per_micrograph == spread.per_micrograph
    np.testing.assert_allclose(serial.probs, spread.probs, atol=1e-6)
    assert (tmp_path / "b" / "index.html").is_file()
