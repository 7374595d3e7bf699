"""A killed ``train`` resumes (issue 19): each finished fold is kept in the staging folder
with the run's fingerprint; a rerun with the same data and settings fits only the missing
folds and gives the model of an uninterrupted run; other settings start fresh."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import lipoclass.evaluate.cv as cvmod
from lipoclass.crossfit import fit_model, staging_folders
from lipoclass.data import PrepConfig, load_dataset
from lipoclass.evaluate import CVConfig
from lipoclass.spec import ModelSpec
from lipoclass.train import TrainConfig

_REAL_FIT_FOLD = cvmod._fit_fold
FAST = {"epochs": 2, "progress": False, "batch_size": 16, "threads": 1, "device": "cpu"}


class _Killed(BaseException):
    """Stands in for SIGKILL / Ctrl-C: not an Exception, so no cleanup handler catches it."""


def _spec() -> ModelSpec:
    return ModelSpec("tiny", PrepConfig(size=16), TrainConfig(**FAST))


def _counting(monkeypatch: pytest.MonkeyPatch, kill_at: int | None = None) -> list[int]:
    """Record the folds actually fitted; raise ``_Killed`` when fold ``kill_at`` starts."""
    real = _REAL_FIT_FOLD
    fitted: list[int] = []

    def fit_fold(*args):  # (dataset, spec, classes, k, ...)
        k = args[3]
        if k == kill_at:
            raise _Killed
        fitted.append(k)
        return real(*args)

    monkeypatch.setattr(cvmod, "_fit_fold", fit_fold)
    return fitted


def _members(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    info = json.loads((out / "model.json").read_text())
    return {m: torch.load(out / m, weights_only=True)["state_dict"] for m in info["members"]}


@pytest.fixture
def ds_dir(tiny_dataset) -> Path:
    return tiny_dataset((10, 8, 6), size=(20, 30))


def test_killed_run_resumes_and_equals_an_uninterrupted_run(
    ds_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    ds, cv = load_dataset(ds_dir), CVConfig(folds=3, seed=5)
    ref, _ = fit_model(ds, _spec(), cv, tmp_path / "ref", progress=False)

    out = tmp_path / "m"
    _counting(monkeypatch, kill_at=2)
    with pytest.raises(_Killed):
        fit_model(load_dataset(ds_dir), _spec(), cv, out, progress=False)
    assert not out.exists()
    (stage,) = staging_folders(out)
    assert sorted(p.name for p in (stage / "resume").glob("fold*.pkl")) == [
        "fold0.pkl", "fold1.pkl",
    ]  # fmt: skip

    fitted = _counting(monkeypatch)
    capsys.readouterr()
    fit_model(load_dataset(ds_dir), _spec(), cv, out, progress=True)
    err = capsys.readouterr().err
    assert fitted == [2], "only the fold in progress is fitted again"
    assert "resuming" in err and "resumed fold(s) 1, 2 of 3" in err
    assert not staging_folders(out) and not (out / "resume").exists()

    # the resumed model is the uninterrupted one: same fold weights, same out-of-fold table
    a, b = _members(ref), _members(out)
    assert a.keys() == b.keys()
    for m in a:
        for name, t in a[m].items():
            assert torch.equal(t, b[m][name]), (m, name)
    assert (ref / "oof.csv").read_text() == (out / "oof.csv").read_text()
    ja, jb = (json.loads((d / "model.json").read_text()) for d in (ref, out))
    assert ja["calibration"] == jb["calibration"] and ja["review"] == jb["review"]


def test_other_settings_start_fresh(
    ds_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out = tmp_path / "m"
    _counting(monkeypatch, kill_at=1)
    with pytest.raises(_Killed):
        fit_model(load_dataset(ds_dir), _spec(), CVConfig(folds=3, seed=5), out, progress=False)
    fitted = _counting(monkeypatch)
    capsys.readouterr()
    fit_model(load_dataset(ds_dir), _spec(), CVConfig(folds=3, seed=6), out, progress=True)
    err = capsys.readouterr().err
    assert fitted == [0, 1, 2]
    assert "other data or settings: starting fresh" in err and "resumed" not in err


def test_changed_data_starts_fresh(
    ds_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "m"
    _counting(monkeypatch, kill_at=2)
    with pytest.raises(_Killed):
        fit_model(load_dataset(ds_dir), _spec(), CVConfig(folds=3, seed=5), out, progress=False)
    csv = ds_dir / "particles.csv"
    csv.write_text(csv.read_text() + "\n")  # any edit of the table changes the fingerprint
    fitted = _counting(monkeypatch)
    fit_model(load_dataset(ds_dir), _spec(), CVConfig(folds=3, seed=5), out, progress=False)
    assert fitted == [0, 1, 2]


def test_an_error_leaves_no_staging(ds_dir: Path, tmp_path: Path, monkeypatch) -> None:
    real = _REAL_FIT_FOLD

    def failing(*args):
        if args[3] == 1:
            raise RuntimeError("boom")
        return real(*args)

    monkeypatch.setattr(cvmod, "_fit_fold", failing)
    out = tmp_path / "m"
    with pytest.raises(RuntimeError):
        fit_model(load_dataset(ds_dir), _spec(), CVConfig(folds=3), out, progress=False)
    assert not staging_folders(out) and not out.exists()
