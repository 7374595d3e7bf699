"""Run a study: validate everything, then one ``cross_validate`` per (run, dataset) into
``DIR/runs/<key>/``, reusing finished runs, on a local or a Ray executor; then the report.

A run works in ``runs/.<key>.tmp`` and is renamed to ``runs/<key>`` when it ends (finished:
``metrics.json`` + ``status`` "done"; crashed: ``error.txt`` + ``status`` "failed"), so an
interrupted study leaves only whole runs behind and resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from lipoclass.choices import EXECUTORS
from lipoclass.data import ParticleDataset, check_folds, dataset_fingerprint, load_dataset
from lipoclass.errors import LipoclassError
from lipoclass.outputs import check_output_folder
from lipoclass.provenance import versions
from lipoclass.spec import ModelSpec
from lipoclass.study.config import RunSettings, Study, load_study, resolve_spec

__all__ = [
    "EXECUTORS",
    "RunJob",
    "check_study_folder",
    "dataset_fingerprint",
    "execute_job",
    "failed_runs",
    "quick_subset",
    "run_key",
    "run_study",
    "write_json",
]

QUICK_N = 1500  # at most this many labelled particles with --quick
QUICK_EPOCHS = 3  # CNN epochs with --quick
RunFn = Callable[..., Any]  # run_fn(dataset, spec, cv, out=folder) writes metrics.json


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary name, then ``os.replace``)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def quick_subset(ds: ParticleDataset, n_max: int, folds: int, seed: int) -> np.ndarray | None:
    """Seeded stratified subset of the labelled particles with at most ~``n_max`` members,
    keeping every class (at least ``2 * folds`` members or all it has). ``None`` when the
    labelled set is already small enough."""
    labels = ds.labels  # (N,)
    labelled = np.flatnonzero(labels >= 0)
    if len(labelled) <= n_max:
        return None
    rng = np.random.default_rng(seed)
    share = n_max / len(labelled)
    keep: list[np.ndarray] = []
    for c in range(len(ds.classes)):
        members = np.flatnonzero(labels == c)
        if len(members) == 0:
            continue
        take = min(len(members), max(2 * folds, round(len(members) * share)))
        keep.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(keep))


def run_key(
    spec: Any, fingerprint: str, subset: np.ndarray | None, study: Study, extra: str = ""
) -> str:
    """Short hash of everything that determines a run's result."""
    sub = None if subset is None else hashlib.sha256(subset.tobytes()).hexdigest()[:16]
    blob = json.dumps(
        {
            "spec": spec.to_dict(),
            "dataset": fingerprint,
            "subset": sub,
            "folds": study.folds,
            "seed": study.seed,
            "group_by": study.group_by,
            "extra": extra,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RunJob:
    """Everything a worker needs to perform one run (picklable for processes and Ray)."""

    key: str
    label: str
    dataset: str  # dataset folder
    subset: tuple[int, ...] | None  # positions into the loaded dataset (quick mode)
    spec: Any  # ModelSpec
    folds: int
    seed: int
    group_by: str | None
    runs_dir: str


def _default_run_fn(dataset: ParticleDataset, spec: Any, cv: Any, out: Path) -> Any:
    from lipoclass.evaluate import cross_validate

    return cross_validate(dataset, spec, cv, out=out, progress=False)


def execute_job(job: RunJob, run_fn: RunFn | None = None) -> dict[str, Any]:
    """Perform one run in ``runs/.<key>.tmp`` and rename it to ``runs/<key>``.

    Returns {key, label, status ("done"|"failed"|"reused"), wall_time_s, error}. Exceptions
    of the run are caught and stored in ``error.txt``; KeyboardInterrupt is not."""
    runs = Path(job.runs_dir)
    final = runs / job.key
    if (final / "metrics.json").is_file():
        return {"key": job.key, "label": job.label, "status": "reused", "wall_time_s": 0.0}
    tmp = runs / f".{job.key}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    info: dict[str, Any] = {
        "key": job.key,
        "label": job.label,
        "dataset": job.dataset,
        "spec": job.spec.to_dict(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
    }
    write_json(tmp / "run.json", info)
    t0 = time.perf_counter()
    error = ""
    try:
        from lipoclass.evaluate import CVConfig

        ds = load_dataset(job.dataset)
        if job.subset is not None:
            ds = ds.subset(list(job.subset))
        cv = CVConfig(folds=job.folds, seed=job.seed, group_by=job.group_by)
        (run_fn or _default_run_fn)(ds, job.spec, cv, out=tmp)
        if not (tmp / "metrics.json").is_file():
            raise RuntimeError("the run finished without writing metrics.json")
        status = "done"
    except Exception as exc:  # a crashed run must not stop the study
        status = "failed"
        error = f"{type(exc).__name__}: {exc}"
        (tmp / "error.txt").write_text(traceback.format_exc(), encoding="utf-8")
        (tmp / "metrics.json").unlink(missing_ok=True)
    info.update(
        status=status,
        wall_time_s=round(time.perf_counter() - t0, 3),
        finished=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    write_json(tmp / "run.json", info)
    (tmp / "status").write_text(status + "\n")
    if final.exists():  # an earlier failed attempt
        shutil.rmtree(final)
    os.replace(tmp, final)
    return {
        "key": job.key,
        "label": job.label,
        "status": status,
        "wall_time_s": info["wall_time_s"],
        "error": error,
    }


# --------------------------------------------------------------------------- executors


# --------------------------------------------------------------------------- study


def _image_sizes(ds: ParticleDataset, seed: int, limit: int = 3000) -> dict[str, list[list[int]]]:
    """(width, height) of up to ``limit`` labelled images per class, for the report."""
    from PIL import Image

    from lipoclass.data import read_image

    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(ds.labels >= 0)
    if len(idx) > limit:
        idx = np.sort(rng.choice(idx, size=limit, replace=False))
    out: dict[str, list[list[int]]] = {c: [] for c in ds.classes}
    for i in idx:
        p = ds.particles[int(i)]
        try:
            with Image.open(p.image) as im:
                w, h = im.size
        except Exception:
            try:
                h, w = read_image(p.image).shape
            except LipoclassError:
                continue
        out[str(p.label)].append([int(w), int(h)])
    return out


def _check_groups(ds: ParticleDataset, folds: int) -> None:
    lab = [p for p in ds.particles if p.label is not None]
    missing = [p for p in lab if not p.sample]
    if missing:
        raise LipoclassError(
            f"{ds.root / 'particles.csv'} row {missing[0].row}: group_by = 'sample' needs a "
            f"sample for every labelled particle"
        )
    n = len({p.sample for p in lab})
    if n < folds:
        raise LipoclassError(f"{ds.root}: {n} samples, fewer than the {folds} folds (group_by)")


def _synthetic_for(ds: ParticleDataset, out: Path, seed: int, n: int) -> str:
    """Folder of a balanced synthetic set with the dataset's classes (made once, reused)."""
    from lipoclass.synth import PROBLEMS

    classes = set(ds.classes)
    problem = next((p for p, (c, _) in PROBLEMS.items() if set(c) == classes), None)
    if problem is None:
        raise LipoclassError(
            f"{ds.root}: synthetic = 'auto' needs the lamellarity or encapsulation classes, "
            f"the dataset has {', '.join(ds.classes)}"
        )
    folder = out / "synthetic" / f"{problem}-n{n}-seed{seed}"
    if not (folder / "particles.csv").is_file():
        from lipoclass.synth import parse_ratios, synthesize

        print(f"synthesising {n} {problem} particles for synthetic training data -> {folder}")
        synthesize(problem, folder, n=n, seed=seed, ratios=parse_ratios("balanced"))
    return str(folder.resolve())


def _runs_folder(out: Path) -> Path:
    """``out/runs``, created, without the temp folders of an interrupted study."""
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    for stale in runs_dir.glob(".*.tmp"):  # left by an interrupted study
        shutil.rmtree(stale, ignore_errors=True)
    return runs_dir


def _load_datasets(
    paths: Sequence[Path], study: Study, quick_n: int | None
) -> list[tuple[ParticleDataset, np.ndarray | None]]:
    """Each dataset with its quick subset (None: all; ``quick_n`` None: not quick), checked
    for the study's folds and grouping."""
    loaded: list[tuple[ParticleDataset, np.ndarray | None]] = []
    for p in paths:
        ds = load_dataset(p)
        subset = quick_subset(ds, quick_n, study.folds, study.seed) if quick_n is not None else None
        used = ds.subset(subset) if subset is not None else ds
        check_folds(used, study.folds)
        if study.group_by == "sample":
            _check_groups(used, study.folds)
        loaded.append((ds, subset))
    return loaded


def _plan_jobs(
    study: Study,
    loaded: list[tuple[ParticleDataset, np.ndarray | None]],
    specs: list[ModelSpec],
    out: Path,
    runs_dir: Path,
    n_synthetic: int,
) -> tuple[list[dict[str, Any]], dict[str, RunJob], dict[str, np.ndarray], list[dict[str, Any]]]:
    """(study.json run entries, the jobs by key (one per distinct run), labelled class counts
    per job key (time plan), study.json dataset entries) of every (run, dataset) pair."""
    entries: list[dict[str, Any]] = []
    jobs: dict[str, RunJob] = {}
    n_labelled: dict[str, np.ndarray] = {}
    ds_info: list[dict[str, Any]] = []
    for d, (ds, subset) in enumerate(loaded):
        used = ds.subset(subset) if subset is not None else ds
        fp = dataset_fingerprint(ds)
        ds_info.append(
            {
                "path": str(ds.root.resolve()),
                "name": ds.name,
                "fingerprint": fp,
                "classes": list(ds.classes),
                "n_particles": len(ds),
                "n_used": len(used),
                "subset": subset is not None,
                "class_counts": used.class_counts(),
                "image_sizes": _image_sizes(used, study.seed),
            }
        )
        for run, spec in zip(study.runs, specs):
            spec = spec.for_dataset(used)  # input mode "auto" -> masked or surround
            extra = ""
            if getattr(spec.config, "synthetic", None) == "auto":  # configs with synthetic data
                folder = _synthetic_for(ds, out, study.seed, min(len(used), n_synthetic))
                extra = dataset_fingerprint(load_dataset(folder))
                spec = spec.with_config(synthetic=folder)
            key = run_key(spec, fp, subset, study, extra)
            entries.append({"key": key, "label": run.label, "dataset": d,
                            "settings": _settings_json(run), "spec": spec.to_dict()})  # fmt: skip
            lab = used.labels[used.labels >= 0]
            n_labelled[key] = np.bincount(lab, minlength=len(used.classes))  # class counts
            if key not in jobs:
                jobs[key] = RunJob(
                    key,
                    run.label if len(loaded) == 1 else f"{run.label} [{ds.name}]",
                    str(ds.root.resolve()),
                    None if subset is None else tuple(int(i) for i in subset),
                    spec,
                    study.folds,
                    study.seed,
                    study.group_by,
                    str(runs_dir),
                )
    return entries, jobs, n_labelled, ds_info


def _run_jobs(
    todo: list[RunJob], run_fn: RunFn | None, executor: str, workers: int, address: str | None
) -> None:
    """Run the jobs on the executor, printing one line per finished run."""
    from lipoclass.evaluate import ExecutorConfig, run_tasks

    count = [0]

    def progress(res: dict[str, Any]) -> None:
        count[0] += 1
        msg = (
            f"[{count[0]}/{len(todo)}] {res['label']}: {res['status']} ({res['wall_time_s']:.1f} s)"
        )
        if res.get("error"):
            msg += f" - {res['error'].splitlines()[0] if res['error'] else ''}"
        print(msg, flush=True)

    exe = ExecutorConfig(executor, workers, address if executor == "ray" else None, gpu=True)
    run_tasks(execute_job, [(job, run_fn) for job in todo], exe,
              on_done=lambda _, res: progress(res))  # fmt: skip


def run_study(
    study: Study | str | os.PathLike[str],
    datasets: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    quick: bool = False,
    executor: str = "local",
    address: str | None = None,
    workers: int = 1,
    *,
    run_fn: RunFn | None = None,
    quick_n: int = QUICK_N,
    quick_epochs: int = QUICK_EPOCHS,
    report: bool = True,
) -> Path:
    """Run every (run, dataset) pair of ``study`` into ``out/runs/<key>/`` and build
    ``out/report.html``; returns the report path (or ``out`` when ``report=False``).

    The study, datasets, folds and every run's settings are validated before the first run.
    ``run_fn(dataset, spec, cv, out=folder)`` defaults to ``lipoclass.evaluate.cross_validate``
    (injectable for tests). ``quick``: CNN epochs capped at ``quick_epochs`` and a seeded
    stratified subset of at most ~``quick_n`` labelled particles."""
    if executor not in EXECUTORS:
        raise LipoclassError(f"--executor {executor!r} is unknown; choose from local, ray")
    if int(workers) < 1:
        raise LipoclassError(f"--workers must be at least 1, got {workers}")
    if not isinstance(study, Study):
        study = load_study(study)
    paths = [Path(d) for d in datasets] or [Path(d) for d in study.datasets]
    if not paths:
        raise LipoclassError(
            f"{study.source}: no dataset given (name one on the command line or in "
            f"[study] datasets)"
        )
    out = check_study_folder(out)

    # ---- validate everything before the first run
    loaded = _load_datasets(paths, study, quick_n if quick else None)
    specs = [
        resolve_spec(r, where=study.source, quick_epochs=quick_epochs if quick else None)
        for r in study.runs
    ]

    runs_dir = _runs_folder(out)
    # a synthetic training set ("auto") has the size of the data, at most 3000 (quick_n)
    entries, jobs, n_labelled, ds_info = _plan_jobs(study, loaded, specs, out, runs_dir,
                                                    quick_n if quick else 3000)  # fmt: skip

    meta = {
        "format_version": 1,
        "study": study.to_dict(),
        "quick": bool(quick),
        "quick_n": quick_n if quick else None,
        "quick_epochs": quick_epochs if quick else None,
        "executor": executor,
        "workers": int(workers),
        "datasets": ds_info,
        "runs": entries,
        "versions": versions(),
        "command": " ".join(sys.argv),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json(out / "study.json", meta)

    todo = [j for j in jobs.values() if not (runs_dir / j.key / "metrics.json").is_file()]
    reused = len(jobs) - len(todo)
    print(
        f"study {study.name}: {len(jobs)} run(s), {reused} reused, {len(todo)} to do "
        f"({executor}{f', {workers} workers' if executor == 'local' and workers > 1 else ''})"
    )
    if todo:
        print(_plan(todo, n_labelled, study.folds, workers if executor == "local" else 1))
        _run_jobs(todo, run_fn, executor, int(workers), address)
    if not report:
        return out
    from lipoclass.report import build_report

    return build_report(out)


def _plan(
    jobs: Sequence[RunJob], n_labelled: dict[str, np.ndarray], folds: int, workers: int
) -> str:
    """One line: what the study will do (runs x folds x epochs) and a rough CPU time, from
    each model kind's time plan (the one ``cross_validate`` prints) with each fold's
    training part taken as (folds - 1) / folds of every class."""
    secs = 0.0
    epochs: set[int] = set()
    n_epochs_runs = 0
    for j in jobs:
        counts = n_labelled.get(j.key, np.zeros(0, dtype=np.int64))
        train = np.floor(counts * (folds - 1) / folds).astype(np.int64)
        secs += j.spec.kind.plan(j.spec, [train] * folds)[1]
        ep = getattr(j.spec.config, "epochs", None)  # configs trained for epochs
        if ep is not None:
            epochs.add(int(ep))
            n_epochs_runs += 1
    secs /= max(1, min(workers, len(jobs)))
    what = f"{len(jobs)} run(s) x {folds} folds"
    if epochs:
        lo, hi = min(epochs), max(epochs)
        ep_text = str(lo) if lo == hi else f"{lo}-{hi}"
        what += f"; {n_epochs_runs} of them train up to {ep_text} epochs per fold"
    if secs < 90:
        rough = f"{max(1, round(secs / 10) * 10)} s"
    elif secs < 5400:
        rough = f"{round(secs / 60)} min"
    else:
        rough = f"{secs / 3600:.1f} h"
    return (
        f"plan: {what}; rough time on a 2-core CPU: ~{rough} (less on a GPU or when early "
        "stopping ends a run sooner; interrupt with Ctrl-C and rerun to resume)"
    )


# what a study (or the demo: data/) writes into its folder
_STUDY_ENTRIES = {"study.json", "runs", "synthetic", "report.html", "data"}


def check_study_folder(out: str | os.PathLike[str]) -> Path:
    """``out`` as a Path when a study may write there: a new or empty folder, or an earlier
    study folder (``study.json``, or only entries a study writes). A non-empty folder of other
    files is refused, so a mistyped --out never mixes a study into unrelated files."""
    p = Path(out)
    if p.is_dir():
        names = {e.name for e in p.iterdir()}
        if names and "study.json" not in names and not names <= _STUDY_ENTRIES:
            shown = ", ".join(sorted(names - _STUDY_ENTRIES)[:3])
            raise LipoclassError(
                f"--out {p}: folder is not empty and is not a study folder (it holds {shown}"
                f"{' ...' if len(names - _STUDY_ENTRIES) > 3 else ''}); give a new folder"
            )
    return check_output_folder(p, allow_existing_kind="study")


def failed_runs(out: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """(label, key) of every run of the study in ``out`` whose status is "failed" (its
    traceback is in ``runs/<key>/error.txt``)."""
    folder = Path(out)
    try:
        meta = json.loads((folder / "study.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    failed: list[tuple[str, str]] = []
    seen: set[str] = set()
    for entry in meta.get("runs", []):
        key = str(entry.get("key", ""))
        if not key or key in seen:
            continue
        seen.add(key)
        status = folder / "runs" / key / "status"
        if status.is_file() and status.read_text().strip() == "failed":
            failed.append((str(entry.get("label", key)), key))
    return failed


def _settings_json(run: RunSettings) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in run.as_dict().items()}
