"""predict: reloaded model folders, class shares per sample (tests/test_shares.py has the
methods), input forms and one-line errors for bad input."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from lipoclass.cli import main
from lipoclass.data import PrepConfig, load_dataset, prepare
from lipoclass.predict import PredictConfig, predict

CPU = PredictConfig(device="cpu", n_boot=50)

CLASSES = ("unilamellar", "multilamellar", "uncertain")
TEMPERATURE = 1.7
CONFUSION = [[8, 1, 1], [1, 6, 1], [1, 1, 4]]


def write_model_folder(
    path: Path,
    classes: Sequence[str] = CLASSES,
    *,
    size: int = 16,
    seed: int = 0,
    temperature: float = TEMPERATURE,
    confusion: list[list[int]] | None = CONFUSION,
    review_threshold: float = 0.5,
    extra: dict | None = None,
    n_members: int = 1,
    oof: tuple[np.ndarray, np.ndarray] | None = None,
) -> torch.nn.Module:
    """A CNN model folder of ``n_members`` freshly initialised ``tiny`` fold models in the
    documented layout (model.json + members/); returns the first member's module (eval).
    ``oof``: (labels (n,), calibrated probabilities (n, C)) written as oof.csv (stored
    uncalibrated, as ``train`` does), so predict fits the quantifiers on them."""
    from lipoclass import __version__
    from lipoclass.models import create_model

    (path / "members").mkdir(parents=True, exist_ok=True)
    module: torch.nn.Module | None = None
    for k in range(n_members):  # members differ by their initialisation
        with torch.random.fork_rng():
            torch.manual_seed(seed + k)
            m = create_model("tiny", len(classes), size).eval()
        kwargs = dict(m.lipo_config)
        torch.save({"state_dict": m.state_dict(), "model_kwargs": kwargs},
                   path / "members" / f"fold{k}.pt")  # fmt: skip
        module = m if module is None else module
    info = {
        "format_version": 2,
        "members": [f"members/fold{k}.pt" for k in range(n_members)],
        "kind": "cnn",
        "model": "tiny",
        "classes": list(classes),
        "prep": {"mode": "masked", "size": size, "aspect": "pad", "normalize": "zscore"},
        "model_kwargs": kwargs,
        "versions": {"lipoclass": __version__},
        "calibration": {"method": "temperature", "temperature": temperature},
        "review": {
            "threshold": review_threshold,
            "target_accuracy": 0.95,
            "expected_accuracy": 0.96,
            "flagged_share": 0.2,
        },
        "confusion": confusion,
        **(extra or {}),
    }
    (path / "model.json").write_text(json.dumps(info))
    if oof is not None:
        y, p = oof
        raw = torch.softmax(torch.log(torch.from_numpy(p)) * temperature, dim=1).numpy()
        with (path / "oof.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "fold", "label", *(f"p_{c}" for c in classes)])
            for i, (yi, pi) in enumerate(zip(y, raw)):
                w.writerow([f"o{i}", i % max(n_members, 1), classes[int(yi)], *pi])
    assert module is not None
    return module


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_reloaded_model_predicts_like_the_original(tmp_path, tiny_dataset):
    ds_dir = tiny_dataset(counts=(6, 5, 4))
    module = write_model_folder(tmp_path / "m")
    res = predict(tmp_path / "m", ds_dir, tmp_path / "pred.csv", config=CPU, verbose=False)

    prep = prepare(load_dataset(ds_dir), PrepConfig(size=16), cache=False)
    with torch.no_grad():
        want = torch.softmax(module(torch.from_numpy(prep.x)) / TEMPERATURE, dim=1).numpy()
    assert res.ids == prep.ids
    np.testing.assert_allclose(res.probs, want, atol=1e-6)
    rows = read_csv(tmp_path / "pred.csv")
    assert [r["id"] for r in rows] == prep.ids
    assert list(rows[0]) == ["id", "pred", *(f"p_{c}" for c in CLASSES), "review", "sample",
                             "label"]  # fmt: skip
    got = np.array([[float(r[f"p_{c}"]) for c in CLASSES] for r in rows])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert [r["pred"] for r in rows] == [CLASSES[k] for k in want.argmax(1)]
    assert [r["review"] == "1" for r in rows] == list(want.max(1) < 0.5)
    # labels present: per-class metrics computed on these (not training) particles
    assert res.metrics is not None and res.metrics["n"] == len(prep.ids)


def test_shares_per_sample_and_cli_table(tmp_path, tiny_dataset, capsys):
    ds_dir = tiny_dataset(counts=(6, 5, 4), samples=2)
    write_model_folder(tmp_path / "m")
    rc = main(["predict", str(tmp_path / "m"), str(ds_dir), "--out", str(tmp_path / "p.csv"),
               "--device", "cpu"])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert "share [95% CI]" in out and "recall" in out and "no out-of-fold data" in out
    rows = read_csv(tmp_path / "p_shares.csv")
    assert {r["sample"] for r in rows} == {"s0", "s1"}
    assert {r["class"] for r in rows} == set(CLASSES)
    for s in ("s0", "s1"):
        sub = [r for r in rows if r["sample"] == s]
        # 7-8 particles per sample: intervals wider than 25 points are not a result
        for r in sub:
            wide = r["determinable"] == "no"
            assert (r["share"] == "" and r["cc"] == "") if wide else float(r["share"]) >= 0
            assert ("more particles in the sample" in r["reason"]) == wide
        if all(r["determinable"] == "yes" for r in sub):
            assert sum(float(r["share"]) for r in sub) == pytest.approx(1.0, abs=1e-3)
        assert sum(float(r["true_share"]) for r in sub) == pytest.approx(1.0, abs=1e-3)
        assert all(r["acc"] == "" for r in sub)  # no oof.csv: CC and PCC only
    assert (tmp_path / "p_shares.png").is_file()  # several samples: the comparison plot


def test_predict_plain_image_folder_with_masks(tmp_path, tiny_dataset):
    ds = load_dataset(tiny_dataset(counts=(3, 2, 2)))
    folder = tmp_path / "imgs"
    (folder / "masks").mkdir(parents=True)
    for i, p in enumerate(ds.particles):
        (folder / p.image.name).write_bytes(p.image.read_bytes())
        assert p.mask is not None
        target = folder / "masks" / p.mask.name if i % 2 else folder / f"{p.id}_mask.png"
        target.write_bytes(p.mask.read_bytes())
    write_model_folder(tmp_path / "m")
    res = predict(tmp_path / "m", folder, tmp_path / "p.csv", config=CPU, verbose=False)
    ref = predict(tmp_path / "m", ds.root, tmp_path / "q.csv", shares_path=tmp_path / "qs.csv",
                  config=CPU, verbose=False)  # fmt: skip
    assert res.ids == ref.ids  # masks found under both names, ids = file stems
    np.testing.assert_allclose(res.probs, ref.probs, atol=1e-6)
    shares = read_csv(tmp_path / "p_shares.csv")
    assert {r["sample"] for r in shares} == {"all"} and "true_share" not in shares[0]


def test_real_vesicle_data(tmp_path, vesicle_dir):
    write_model_folder(tmp_path / "m", ("CV", "DV", "DVH"))
    res = predict(tmp_path / "m", vesicle_dir, tmp_path / "p.csv", config=CPU, verbose=False)
    assert len(res.ids) + len(res.skipped) == 254
    assert res.probs.shape == (len(res.ids), 3)
    np.testing.assert_allclose(res.probs.sum(1), 1.0, atol=1e-5)


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("lipoclass: error: ") and "\n" not in err
    return err


def test_cli_bad_model_folders(tmp_path, tiny_dataset, capsys):
    ds_dir = str(tiny_dataset(counts=(3, 2, 2)))
    write_model_folder(tmp_path / "m")
    (tmp_path / "m" / "members" / "fold0.pt").unlink()
    assert main(["predict", str(tmp_path / "m"), ds_dir, "--out", str(tmp_path / "p.csv")]) == 2
    assert "fold0.pt is missing" in _err(capsys)
    write_model_folder(tmp_path / "v", extra={"format_version": 99})
    assert main(["predict", str(tmp_path / "v"), ds_dir, "--out", str(tmp_path / "p.csv")]) == 2
    assert "format_version 99" in _err(capsys)
    assert not (tmp_path / "p.csv").exists()


def test_cli_bad_inputs(tmp_path, tiny_dataset, capsys):
    write_model_folder(tmp_path / "m")
    m, out = str(tmp_path / "m"), str(tmp_path / "p.csv")
    # labels of other classes
    other = tiny_dataset(counts=(3, 2), classes=("full", "empty"))
    assert main(["predict", m, str(other), "--out", out]) == 2
    assert "declares 2 classes" in _err(capsys)
    # an empty folder, and a file that claims to be an image
    (tmp_path / "empty").mkdir()
    assert main(["predict", m, str(tmp_path / "empty"), "--out", out]) == 2
    assert "no image files" in _err(capsys)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_text("not an image")
    assert main(["predict", m, str(tmp_path / "bad"), "--out", out]) == 2
    assert "x.png: unreadable image" in _err(capsys)
    assert main(["predict", m, str(tmp_path / "nowhere"), "--out", out]) == 2
    assert "input not found" in _err(capsys)
    assert not Path(out).exists()


def test_label_outside_model_classes(tmp_path, tiny_dataset, capsys):
    ds_dir = tiny_dataset(counts=(3, 2, 2))
    (ds_dir / "dataset.toml").unlink()  # classes now come from the labels only
    text = (ds_dir / "particles.csv").read_text().replace(",uncertain,", ",vesicle,")
    (ds_dir / "particles.csv").write_text(text)
    write_model_folder(tmp_path / "m")
    rc = main(["predict", str(tmp_path / "m"), str(ds_dir), "--out", str(tmp_path / "p.csv")])
    assert rc == 2
    assert "label 'vesicle' is not a class of model" in _err(capsys)
