"""Studies: TOML loading and presets, grid expansion, resume, failure isolation, executors
and the ``study`` CLI. Runs use an injected fake run function (fast) except the Ray test."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lipoclass.cli import main
from lipoclass.data import DatasetWriter
from lipoclass.errors import LipoclassError
from lipoclass.study import list_presets, load_study, quick_subset, run_study

CLASSES = ("unilamellar", "multilamellar", "uncertain")


def make_dataset(root: Path, counts: tuple[int, ...] = (24, 12, 8), seed: int = 0) -> Path:
    """A tiny synthetic particle dataset (test data): bright disc on noise, ring for class 1."""
    rng = np.random.default_rng(seed)
    out = root / "ds"
    with DatasetWriter(out, name="tiny", classes=CLASSES, pixel_size_nm=1.0) as w:
        k = 0
        for c, n in enumerate(counts):
            for _ in range(n):
                size = int(rng.integers(20, 32))
                yy, xx = np.mgrid[:size, :size]
                r = np.hypot(yy - size / 2, xx - size / 2)
                mask = r < size / 3
                img = rng.normal(100, 10, (size, size))
                img[mask] += 60 if c == 0 else 20
                if c == 1:
                    img[np.abs(r - size / 4) < 1] -= 50
                w.add(f"p{k:03d}", image=np.clip(img, 0, 255).astype(np.uint8),
                      mask=mask, label=CLASSES[c], sample=f"s{k % 4}")  # fmt: skip
                k += 1
    return out


def fake_metrics(classes: list[str], n: int, score: float) -> dict[str, Any]:
    """metrics.json shaped like cross_validate's (test data, not a real result)."""
    pc = {
        c: {"support": n, **{m: score for m in ("tpr", "tnr", "ppv", "npv", "f1", "f1_tpr_tnr")},
            **{f"{m}_std": 0.05 for m in ("tpr", "tnr", "ppv", "npv", "f1")},
            **{f"{m}_ci": [score - 0.1, min(1.0, score + 0.1)] for m in ("tpr", "f1")}}
        for c in classes
    }  # fmt: skip
    k = len(classes)
    return {
        "model": "fake", "classes": classes, "folds": 3, "seed": 0, "n_particles": n * k,
        "confusion": (np.eye(k, dtype=int) * n).tolist(),
        "confusion_normalized": np.eye(k).tolist(), "per_class": pc,
        "accuracy": score, "balanced_accuracy": score, "macro_f1": score, "mcc": score,
        "log_loss": 0.5, "excluded": [],
        "baselines": {"majority": {"per_class": pc, "balanced_accuracy": 1 / k}},
        "wall_time_s": 0.01,
    }  # fmt: skip


class FakeRun:
    """Injected run function: records calls, writes metrics.json + oof.csv, can fail."""

    def __init__(self, fail_label_model: str | None = None) -> None:
        self.calls: list[str] = []
        self.fail = fail_label_model

    def __call__(self, dataset: Any, spec: Any, cv: Any, out: Path) -> None:
        self.calls.append(spec.model)
        if spec.model == self.fail:
            raise RuntimeError(f"boom in {spec.model}")
        classes = list(dataset.classes)
        rows = ["id,fold,label,pred," + ",".join(f"p_{c}" for c in classes)]
        for i, p in enumerate(dataset.particles):
            pred = p.label if i % 5 else classes[(classes.index(p.label) + 1) % len(classes)]
            probs = [0.8 if c == pred else 0.1 for c in classes]
            rows.append(f"{p.id},{i % cv.folds},{p.label},{pred}," + ",".join(map(str, probs)))
        (out / "oof.csv").write_text("\n".join(rows) + "\n")
        (out / "metrics.json").write_text(json.dumps(fake_metrics(classes, 5, 0.7)))


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


GRID = """
[study]
name = "g"
folds = 3
seed = 1
[base]
epochs = 2
[grid]
model = ["tiny", "svm"]
mode = ["crop", "masked"]
"""


def test_grid_expands_as_written(tmp_path: Path) -> None:
    s = load_study(write_toml(tmp_path / "g.toml", GRID))
    got = [(r.as_dict()["model"], r.as_dict()["mode"]) for r in s.runs]
    assert got == [("tiny", "crop"), ("tiny", "masked"), ("svm", "crop"), ("svm", "masked")]
    assert all(r.as_dict()["epochs"] == 2 for r in s.runs)
    assert s.folds == 3 and s.seed == 1 and s.varying == ("model", "mode")
    assert len({r.label for r in s.runs}) == 4


def test_runs_crossed_with_grid(tmp_path: Path) -> None:
    text = """
[grid]
mode = ["crop", "masked"]
[[runs]]
label = "A"
model = "tiny"
[[runs]]
label = "B"
model = "svm"
"""
    s = load_study(write_toml(tmp_path / "x.toml", text))
    assert [r.label for r in s.runs] == ["A / crop", "A / masked", "B / crop", "B / masked"]


def test_presets_load() -> None:
    assert set(list_presets()) >= {
        "augmentation", "architectures", "input-modes", "imbalance", "benchmark"
    }  # fmt: skip
    aug = load_study("augmentation")
    assert [r.label for r in aug.runs] == ["None", "+Rotation", "+Shift", "+Flip", "+Shear",
                                           "+Zoom"]  # fmt: skip
    assert aug.runs[2].as_dict()["augment"] == ("rotate", "shift")
    assert all(r.as_dict()["mode"] == "crop" for r in aug.runs)
    bench = load_study("benchmark")
    assert {r.model for r in bench.runs} == {"lipnet4", "svm"}
    arch = load_study("architectures")
    assert "lipnet_hybrid" in {r.model for r in arch.runs}
    assert {r.as_dict()["mode"] for r in load_study("input-modes").runs} == {
        "surround", "crop", "masked"
    }  # fmt: skip


def test_unknown_preset_and_setting(tmp_path: Path) -> None:
    with pytest.raises(LipoclassError, match="unknown study preset 'nope'"):
        load_study("nope")
    bad = write_toml(tmp_path / "b.toml", "[base]\nmodel = 'tiny'\nlearning_rate = 3\n")
    with pytest.raises(LipoclassError, match="unknown setting 'learning_rate'"):
        load_study(bad)
    bad2 = write_toml(tmp_path / "c.toml", "[grid]\nmodel = ['tiny', 'resnet']\n")
    with pytest.raises(LipoclassError, match="resnet"):
        load_study(bad2)
    bad3 = write_toml(tmp_path / "d.toml", "[base]\nmodel = 'tiny'\nbalance = 'magic'\n")
    with pytest.raises(LipoclassError, match="magic"):
        load_study(bad3)


def test_toml_error_names_line(tmp_path: Path) -> None:
    bad = write_toml(tmp_path / "s.toml", "[study]\nname = 'x'\nfolds = = 3\n")
    with pytest.raises(LipoclassError, match=r"s\.toml: invalid TOML.*line 3"):
        load_study(bad)


def test_quick_subset_keeps_every_class(tmp_path: Path) -> None:
    ds_path = make_dataset(tmp_path, counts=(60, 20, 6))
    from lipoclass.data import load_dataset

    ds = load_dataset(ds_path)
    idx = quick_subset(ds, 40, folds=3, seed=0)
    assert idx is not None and len(idx) <= 50
    assert (
        set(ds.subset(idx).class_counts().values())
        and min(ds.subset(idx).class_counts().values()) >= 6
    )
    assert np.array_equal(idx, quick_subset(ds, 40, folds=3, seed=0))
    assert quick_subset(ds, 1000, folds=3, seed=0) is None


def test_resume_skips_finished_runs(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path)
    study = write_toml(tmp_path / "g.toml", GRID)
    fake = FakeRun()
    report = run_study(study, [ds], tmp_path / "out", run_fn=fake)
    assert len(fake.calls) == 4 and report.is_file()
    meta = json.loads((tmp_path / "out" / "study.json").read_text())
    keys = {e["key"] for e in meta["runs"]}
    assert len(keys) == 4
    assert all((tmp_path / "out" / "runs" / k / "status").read_text().strip() == "done"
               for k in keys)  # fmt: skip
    again = FakeRun()
    run_study(study, [ds], tmp_path / "out", run_fn=again, report=False)
    assert again.calls == []
    # a different seed is a different run
    third = FakeRun()
    study2 = write_toml(tmp_path / "g2.toml", GRID.replace("seed = 1", "seed = 2"))
    run_study(study2, [ds], tmp_path / "out", run_fn=third, report=False)
    assert len(third.calls) == 4


def test_failing_run_does_not_stop_others(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path)
    study = write_toml(tmp_path / "g.toml", GRID)
    fake = FakeRun(fail_label_model="svm")
    report = run_study(study, [ds], tmp_path / "out", run_fn=fake)
    assert len(fake.calls) == 4
    runs = tmp_path / "out" / "runs"
    status = sorted((d / "status").read_text().strip() for d in runs.iterdir())
    assert status == ["done", "done", "failed", "failed"]
    failed = [d for d in runs.iterdir() if (d / "status").read_text().strip() == "failed"]
    assert "boom in svm" in (failed[0] / "error.txt").read_text()
    assert not (failed[0] / "metrics.json").exists()
    page = report.read_text()
    assert "boom in svm" in page and "failed" in page
    # the failed runs are retried on resume, finished ones are not
    retry = FakeRun()
    run_study(study, [ds], tmp_path / "out", run_fn=retry, report=False)
    assert retry.calls == ["svm", "svm"]


def test_interrupt_leaves_finished_runs(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path)
    study = write_toml(tmp_path / "g.toml", GRID)

    class Interrupt(FakeRun):
        def __call__(self, dataset: Any, spec: Any, cv: Any, out: Path) -> None:
            if len(self.calls) == 2:
                self.calls.append("x")
                raise KeyboardInterrupt
            super().__call__(dataset, spec, cv, out)

    with pytest.raises(KeyboardInterrupt):
        run_study(study, [ds], tmp_path / "out", run_fn=Interrupt(), report=False)
    runs = tmp_path / "out" / "runs"
    done = [d for d in runs.iterdir() if not d.name.startswith(".")]
    assert len(done) == 2 and all((d / "metrics.json").is_file() for d in done)
    rest = FakeRun()
    run_study(study, [ds], tmp_path / "out", run_fn=rest, report=False)
    assert len(rest.calls) == 2
    assert not list(runs.glob(".*.tmp"))


@pytest.mark.slow
def test_local_workers(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path)
    study = write_toml(tmp_path / "g.toml", GRID.replace('"svm"', '"lipnet1"'))
    run_study(study, [ds], tmp_path / "out", workers=2, run_fn=write_fake_metrics, report=False)
    runs = tmp_path / "out" / "runs"
    assert sorted((d / "status").read_text().strip() for d in runs.iterdir()) == ["done"] * 4
    pids = {(d / "pid").read_text() for d in runs.iterdir()}
    assert str(os.getpid()) not in pids  # ran in worker processes


def write_fake_metrics(dataset: Any, spec: Any, cv: Any, out: Path) -> None:
    """Module-level (picklable) fake run for the process executor: records the worker pid."""
    (out / "metrics.json").write_text(json.dumps(fake_metrics(list(dataset.classes), 3, 0.6)))
    (out / "pid").write_text(str(os.getpid()))


def test_validation_before_any_run(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path, counts=(10, 10, 2))
    study = write_toml(tmp_path / "g.toml", GRID)
    fake = FakeRun()
    with pytest.raises(LipoclassError, match=r"uncertain.*fewer than the 3 folds"):
        run_study(study, [ds], tmp_path / "out", run_fn=fake)
    assert fake.calls == [] and not (tmp_path / "out" / "runs").exists()
    with pytest.raises(LipoclassError, match="no dataset given"):
        run_study(study, [], tmp_path / "out", run_fn=fake)


def test_study_toml_names_dataset_relative(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    text = GRID.replace("seed = 1", 'seed = 1\ndatasets = ["ds"]')
    study = write_toml(tmp_path / "g.toml", text)
    fake = FakeRun()
    run_study(study, [], tmp_path / "out", run_fn=fake, report=False)
    assert len(fake.calls) == 4


def test_cli_study_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = make_dataset(tmp_path)
    assert main(["study", "nope", str(ds), "--out", str(tmp_path / "o")]) == 2
    assert "unknown study preset 'nope'" in capsys.readouterr().err
    bad = write_toml(tmp_path / "b.toml", "[study]\nfolds = [\n")
    assert main(["study", str(bad), str(ds), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "invalid TOML" in err and "line" in err and len(err.strip().splitlines()) == 1
    assert (
        main(["study", "benchmark", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    )
    assert "dataset folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["study", "benchmark", str(ds), "--out", str(tmp_path / "o"), "--workers", "0"])
    assert exc.value.code == 2
    assert not (tmp_path / "o" / "runs").exists()


@pytest.mark.slow
def test_cli_study_real_cv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """End to end with the real cross_validate: tiny CNN, 1 epoch, 3 folds."""
    ds = make_dataset(tmp_path)
    text = """
[study]
name = "real"
folds = 3
[base]
model = "tiny"
epochs = 1
size = 16
threads = 1
progress = false
"""
    study = write_toml(tmp_path / "r.toml", text)
    assert main(["study", str(study), str(ds), "--out", str(tmp_path / "o")]) == 0
    assert "report:" in capsys.readouterr().out
    (run,) = (tmp_path / "o" / "runs").iterdir()
    m = json.loads((run / "metrics.json").read_text())
    assert m["model"] == "tiny" and len(m["per_class"]) == 3
    assert (run / "oof.csv").is_file() and (tmp_path / "o" / "report.html").is_file()


@pytest.mark.slow
def test_ray_executor(tmp_path: Path) -> None:
    """A tiny study on a local Ray instance (2 CPUs): results land in the same folder."""
    pytest.importorskip("ray")
    ds = make_dataset(tmp_path)
    text = """
[study]
name = "ray"
folds = 3
[base]
epochs = 1
size = 16
threads = 1
progress = false
[grid]
model = ["tiny"]
mode = ["crop", "masked"]
"""
    study = write_toml(tmp_path / "r.toml", text)
    report = run_study(study, [ds], tmp_path / "o", executor="ray")
    runs = sorted((tmp_path / "o" / "runs").iterdir())
    assert len(runs) == 2
    assert all((d / "status").read_text().strip() == "done" for d in runs)
    assert all((d / "metrics.json").is_file() for d in runs)
    assert report.is_file()


def test_synthetic_auto_made_once(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path)
    text = '[study]\nfolds = 3\n[base]\nmodel = "tiny"\nsynthetic = "auto"\n'
    study = write_toml(tmp_path / "s.toml", text)
    seen: list[str] = []

    def run(dataset: Any, spec: Any, cv: Any, out: Path) -> None:
        seen.append(spec.config.synthetic)
        write_fake_metrics(dataset, spec, cv, out)

    run_study(study, [ds], tmp_path / "out", run_fn=run, report=False)
    (folder,) = seen
    assert (Path(folder) / "particles.csv").is_file()
    assert Path(folder).parent == (tmp_path / "out" / "synthetic").resolve()
