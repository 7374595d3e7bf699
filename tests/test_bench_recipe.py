"""Smoke test of benchmarks/bench_recipe.py: its folds are plain_cnn.py's folds (plain and
grouped), its scoring, and its argument checks. Seconds, offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import load_benchmark
from lipoclass.data import DatasetWriter


def _bench():
    return load_benchmark("bench_recipe")


def _toy(out: Path, samples: bool) -> Path:
    rng = np.random.default_rng(3)
    labels = ["b"] * 30 + ["a"] * 12 + ["c"] * 8  # first row not of the first class
    rng.shuffle(labels)
    with DatasetWriter(out, name="toy", classes=["a", "b", "c"]) as wr:
        for i, lab in enumerate(labels):
            img = rng.integers(0, 255, (12, 12), dtype=np.uint8)
            wr.add(f"{i:03d}", image=img, label=lab, sample=f"s{i % 7}" if samples else None)
    return out


@pytest.mark.parametrize("samples", [False, True])
def test_folds_are_plain_cnn_folds(tmp_path: Path, samples: bool) -> None:
    bench = _bench()
    root = _toy(tmp_path / "toy", samples)
    for seed in (0, 1):
        folds, ids, grouped = bench.folds_for(root, seed, group=True)
        assert grouped is samples
        assert len(ids) == 50 and set(folds.tolist()) == set(range(5))
        rows = bench.read_rows(root)
        assert np.array_equal(folds, bench.plain_splits(rows, seed))
    if samples:  # ungrouped = the script's splitter on the same rows without samples
        folds, _, grouped = bench.folds_for(root, 0, group=False)
        rows = [{**r, "sample": ""} for r in bench.read_rows(root)]
        assert not grouped and np.array_equal(folds, bench.plain_splits(rows, 0))
        folds, _, _ = bench.folds_for(root, 0, group=True)
    if samples:  # grouped: a sample never straddles two folds
        by_sample: dict[str, set[int]] = {}
        for r, f in zip(bench.read_rows(root), folds):
            by_sample.setdefault(r["sample"], set()).add(int(f))
        assert all(len(v) == 1 for v in by_sample.values())


def test_score_pooled_and_fold_spread() -> None:
    bench = _bench()
    y = np.array([0, 0, 1, 1, 0, 1])
    pred = np.array([0, 1, 1, 1, 0, 1])
    fold = np.array([0, 0, 0, 1, 1, 1])
    s = bench.score(y, pred, fold, 2)
    assert s["fold_f1"] == [pytest.approx(0.6667, abs=1e-4), 1.0]
    assert s["fold_mean"] == pytest.approx((2 / 3 + 1) / 2)
    assert s["macro_f1"] == pytest.approx(0.8286, abs=1e-4)  # pooled, not the fold mean


def test_rejects_unknown_dataset_and_method(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench()
    with pytest.raises(SystemExit):
        bench.main(["--datasets", "nanocrystals", "--work", "/nonexistent"])
    assert "unknown dataset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--methods", "resnet"])


def test_old_method_names_are_refused_and_read_as_fixed_lipnet4(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """'default' meant fixed LipNet-4 before --recipe auto became the default: refused as a
    method, read from old results files as lipnet4, and the table says what each column is."""
    import json

    bench = _bench()
    with pytest.raises(SystemExit):
        bench.main(["--methods", "default", "--work", str(tmp_path)])
    assert "renamed 'lipnet4'" in capsys.readouterr().err
    rec = {"dataset": "lam0", "cv_seed": 0, "n": 3, "counts": {"a": 1, "b": 2}, "macro_f1": 0.5,
           "fold_mean": 0.5, "fold_sd": 0.1, "wall_s": 1.0}  # fmt: skip
    lines = [{**rec, "method": "default"}, {**rec, "method": "auto", "macro_f1": 0.6}]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert bench.done_keys(tmp_path / "results.jsonl") == {("lam0", "lipnet4", 0),
                                                           ("lam0", "auto", 0)}  # fmt: skip
    table = bench.tables(tmp_path / "results.jsonl")
    assert "| auto (default) | fixed LipNet-4 (old default) |" in table
    assert "| default" not in table


def test_small_variant_is_vesicle_like(tmp_path: Path) -> None:
    """The ``<set>s`` variants: each particle cut to its mask's box (+ margin), resized to
    ``SMALL_PX`` px, no mask, no pixel size; ids and labels kept."""
    from lipoclass.data import load_dataset

    bench = _bench()
    rng = np.random.default_rng(0)
    with DatasetWriter(tmp_path / "m", name="m", classes=["a", "b"], pixel_size_nm=0.8) as wr:
        for i in range(6):
            img = rng.integers(0, 255, (90, 90), dtype=np.uint8)
            mask = np.zeros((90, 90), dtype=bool)
            mask[10 : 50 + i, 30:70] = True  # a box reaching near the crop's edge
            wr.add(f"p{i}", image=img, mask=mask, label="ab"[i % 2])
    small = bench.small_variant(tmp_path / "m")
    assert small == tmp_path / f"m-small{bench.SMALL_PX}"
    ds = load_dataset(small)
    assert ds.ids == [f"p{i}" for i in range(6)] and list(ds.labels) == [0, 1] * 3
    assert all(p.mask is None and p.pixel_size_nm is None for p in ds.particles)
    shapes = {bench.read_grey(str(p.image)).shape for p in ds.particles}
    assert shapes == {(bench.SMALL_PX, bench.SMALL_PX)}
    assert bench.small_variant(tmp_path / "m") == small  # made once
