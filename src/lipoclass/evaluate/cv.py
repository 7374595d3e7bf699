"""Stratified k-fold cross-validation over any estimator (thesis section 8.1), with per-class
metrics, fold spread, bootstrap CIs and trivial baselines (thesis 4.6, accuracy paradox)."""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lipoclass import metrics as M
from lipoclass.data import ParticleDataset, check_folds, dataset_fingerprint
from lipoclass.errors import LipoclassError
from lipoclass.evaluate.executors import ExecutorConfig, run_tasks
from lipoclass.evaluate.resume import FoldStore
from lipoclass.provenance import versions
from lipoclass.spec import ModelSpec

__all__ = ["CVConfig", "CVResult", "FoldOutcome", "cross_validate", "make_folds", "score_folds"]

N_BOOTSTRAP = 1000


@dataclass(frozen=True)
class CVConfig:
    """k-fold settings. ``group_by="sample"`` keeps each sample's particles in one fold."""

    folds: int = 5
    seed: int = 0
    group_by: str | None = None

    def __post_init__(self) -> None:
        if int(self.folds) < 2:
            raise ValueError(f"folds must be at least 2, got {self.folds}")
        if self.group_by not in (None, "sample"):
            raise ValueError(f"group_by must be None or 'sample', got {self.group_by!r}")


def _cv_error(exc: ValueError) -> LipoclassError:
    return LipoclassError(f"cross-validation settings: {exc}")


def make_folds(dataset: ParticleDataset, cv: CVConfig) -> np.ndarray:
    """(N,) int64 fold number per particle, -1 for unlabelled ones.

    StratifiedKFold(shuffle=True, random_state=seed) over the labelled particles, or
    StratifiedGroupKFold with samples as groups; depends only on labels, samples, folds and
    seed, so every model evaluated with the same CVConfig sees identical folds.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    check_folds(dataset, cv.folds)
    y = dataset.labels  # (N,)
    lab = np.flatnonzero(y >= 0)
    folds = np.full(len(y), -1, dtype=np.int64)
    if cv.group_by == "sample":
        samples = [dataset.particles[i].sample for i in lab]
        missing = [dataset.particles[i] for i, s in zip(lab, samples) if s is None]
        if missing:
            raise LipoclassError(
                f"{dataset.root / 'particles.csv'} row {missing[0].row} (id {missing[0].id}): "
                "--group-by sample needs a 'sample' value for every labelled particle"
            )
        _, groups = np.unique(np.array(samples, dtype=object).astype(str), return_inverse=True)
        n_groups = int(groups.max()) + 1
        if n_groups < cv.folds:
            raise LipoclassError(
                f"{dataset.root}: --group-by sample needs at least {cv.folds} samples for "
                f"{cv.folds} folds, found {n_groups}"
            )
        splitter: Any = StratifiedGroupKFold(cv.folds, shuffle=True, random_state=cv.seed)
        splits = splitter.split(np.zeros(len(lab)), y[lab], groups)
    else:
        splitter = StratifiedKFold(cv.folds, shuffle=True, random_state=cv.seed)
        splits = splitter.split(np.zeros(len(lab)), y[lab])
    for k, (_, test) in enumerate(splits):
        folds[lab[test]] = k
    return folds


# --------------------------------------------------------------------------- scoring


@dataclass
class FoldOutcome:
    """What one fold task hands back: test-part probabilities (n_test, C) in test order."""

    fold: int
    proba: np.ndarray
    info: dict[str, Any]
    balanced_accuracy: float
    seconds: float
    importance: tuple[tuple[str, ...], np.ndarray] | None = None
    model: Any = None


def _fit_fold(
    dataset: ParticleDataset, spec: ModelSpec, classes: tuple[str, ...], k: int, seed: int,
    train: np.ndarray, test: np.ndarray, want_importance: bool, keep_model: bool,
) -> FoldOutcome:  # fmt: skip
    """One fold: a fresh estimator fitted on ``train`` only, probabilities for ``test``."""
    tk = time.perf_counter()
    n_classes = len(classes)
    est = spec.make_estimator(seed=seed, classes=classes)
    est.fit(dataset, train)
    p = np.asarray(est.predict_proba(dataset, test), dtype=np.float64)
    if p.shape != (len(test), n_classes):
        raise RuntimeError(f"predict_proba returned {p.shape}, expected {(len(test), n_classes)}")
    info: dict[str, Any] = {"fold": k, "n_train": len(train), "n_test": len(test)}
    fit_info = getattr(est, "fit_info", None)
    if fit_info is not None:
        info.update(fit_info())
    importance = None
    imp_fn = getattr(est, "importance", None)
    if want_importance and imp_fn is not None:
        names, values = imp_fn(dataset, test)
        importance = (tuple(names), np.asarray(values, dtype=np.float64))
    dt = time.perf_counter() - tk
    info["seconds"] = round(dt, 3)
    y = dataset.labels[test]
    bacc = float(M.balanced_accuracy(M.confusion_matrix(y, p.argmax(axis=1), n_classes)))
    return FoldOutcome(k, p, info, bacc, dt, importance, est if keep_model else None)


def _plan(spec: ModelSpec, tasks: list[tuple[Any, ...]], y: np.ndarray, n_classes: int) -> str:
    """What a run will do, with a rough duration (the model kind's time plan): "5 folds of
    lipnet4, each trained on about 800 particles x 30 epochs: about 4 min ..."."""
    n_train = [len(t[5]) for t in tasks]
    counts = [np.bincount(y[t[5]], minlength=n_classes) for t in tasks]  # per fold (C,)
    what, seconds = spec.kind.plan(spec, counts)
    return (
        f"{len(tasks)} folds of {spec.model}, each trained on about {int(np.mean(n_train))} "
        f"particles{what}: about {max(1, round(seconds / 60))} min on 2 CPU cores (much "
        "less on a GPU)"
    )


def _fold_seed(seed: int, fold: int) -> int:
    """Independent, reproducible seed for fold ``fold`` of a run with ``seed``."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, fold]).generate_state(1)[0])


def score_folds(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    proba: np.ndarray,
    fold: np.ndarray,
    n_classes: int,
    classes: Sequence[str],
    *,
    seed: int = 0,
    n_bootstrap: int = N_BOOTSTRAP,
) -> dict[str, Any]:
    """Metrics of pooled out-of-fold predictions: confusion (summed), confusion_normalized
    (mean over folds of row-normalised matrices), per-class and summary metrics as mean and
    std over folds, and 95% percentile bootstrap CIs over particles of the pooled predictions.
    """
    fold_ids = np.unique(fold)
    cms = np.stack(
        [M.confusion_matrix(y_true[fold == f], y_pred[fold == f], n_classes) for f in fold_ids]
    )  # (K, C, C)
    pooled = cms.sum(axis=0)  # (C, C)
    per_fold_cls = M.class_metrics(cms)  # metric -> (K, C)
    per_fold_sum = M.summary_metrics(cms)  # metric -> (K,)
    per_fold_sum["log_loss"] = np.array(
        [M.log_loss(y_true[fold == f], proba[fold == f]) for f in fold_ids]
    )
    ci = M.bootstrap_ci(pooled, n_resamples=n_bootstrap, seed=seed)
    ddof = 1 if len(fold_ids) > 1 else 0

    def _r(x: float) -> float:
        return float(round(float(x), 6))

    per_class: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(classes):
        entry: dict[str, Any] = {"support": int(pooled[c].sum())}
        for m in M.CLASS_METRICS:
            vals = per_fold_cls[m][:, c]
            entry[m] = _r(vals.mean())
            entry[f"{m}_std"] = _r(vals.std(ddof=ddof))
            entry[f"{m}_ci"] = [_r(ci[m][0, c]), _r(ci[m][1, c])]
        per_class[name] = entry
    out: dict[str, Any] = {
        "confusion": pooled.astype(int).tolist(),
        "confusion_normalized": [
            [_r(v) for v in row] for row in M.normalize_rows(cms).mean(axis=0)
        ],
        "per_class": per_class,
    }
    for m in M.SUMMARY_METRICS:
        vals = per_fold_sum[m]
        out[m] = _r(vals.mean())
        out[f"{m}_std"] = _r(vals.std(ddof=ddof))
        if m in ci:
            out[f"{m}_ci"] = [_r(ci[m][0]), _r(ci[m][1])]
    return out


def _baselines(
    y: np.ndarray, fold: np.ndarray, n_classes: int, classes: Sequence[str], seed: int
) -> dict[str, Any]:
    """Majority-class and stratified-random predictions on the same folds: each fold's
    training part gives the majority class / class frequencies; probabilities are the
    training-part class frequencies for both."""
    rng = np.random.default_rng(seed)
    maj_pred = np.empty_like(y)
    rnd_pred = np.empty_like(y)
    prior = np.empty((len(y), n_classes), dtype=np.float64)
    for f in np.unique(fold):
        test = fold == f
        freq = np.bincount(y[~test], minlength=n_classes).astype(np.float64)
        freq = freq / freq.sum() if freq.sum() else np.full(n_classes, 1.0 / n_classes)
        maj_pred[test] = int(np.argmax(freq))
        rnd_pred[test] = rng.choice(n_classes, size=int(test.sum()), p=freq)
        prior[test] = freq
    kw = {"seed": seed}
    return {
        "majority": score_folds(y, maj_pred, prior, fold, n_classes, classes, **kw),
        "stratified_random": score_folds(y, rnd_pred, prior, fold, n_classes, classes, **kw),
    }


# --------------------------------------------------------------------------- result


@dataclass
class CVResult:
    """Outcome of ``cross_validate``: ``metrics`` is exactly metrics.json; the out-of-fold
    arrays hold one entry per evaluated particle (``ids``, ``fold``, ``y_true``, ``y_pred``
    as class indices, ``proba`` (n, C))."""

    metrics: dict[str, Any]
    ids: list[str] = field(default_factory=list)
    fold: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    y_true: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    y_pred: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    proba: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    run_dir: Path | None = None
    # the fitted fold estimators by fold number (``keep_models=True`` only)
    models: dict[int, Any] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return str(self.metrics["model"])

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.metrics["classes"])

    @property
    def per_class(self) -> dict[str, dict[str, Any]]:
        return dict(self.metrics["per_class"])

    def __getitem__(self, key: str) -> Any:
        return self.metrics[key]

    def to_dict(self) -> dict[str, Any]:
        """The metrics.json content."""
        return json.loads(json.dumps(self.metrics))

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str]) -> CVResult:
        """Read a run folder written by ``cross_validate`` (metrics.json and oof.csv)."""
        run = Path(run_dir)
        mpath = run / "metrics.json"
        try:
            metrics = json.loads(mpath.read_text())
        except FileNotFoundError:
            raise LipoclassError(f"{run}: no metrics.json (not a finished cv run)") from None
        except json.JSONDecodeError as exc:
            raise LipoclassError(f"{mpath}: invalid JSON ({exc})") from None
        classes = list(metrics.get("classes", []))
        res = cls(metrics, run_dir=run)
        opath = run / "oof.csv"
        if opath.is_file():
            with opath.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
            lookup = {c: i for i, c in enumerate(classes)}
            try:
                res.ids = [r["id"] for r in rows]
                res.fold = np.array([int(r["fold"]) for r in rows], dtype=np.int64)
                res.y_true = np.array([lookup[r["label"]] for r in rows], dtype=np.int64)
                res.y_pred = np.array([lookup[r["pred"]] for r in rows], dtype=np.int64)
                res.proba = np.array(
                    [[float(r[f"p_{c}"]) for c in classes] for r in rows], dtype=np.float64
                ).reshape(len(rows), len(classes))
            except (KeyError, ValueError) as exc:
                raise LipoclassError(f"{opath}: malformed out-of-fold table ({exc})") from None
        return res

    def table(self) -> str:
        """Console table: per-class metrics (mean ± std over folds), summary, baselines."""
        m = self.metrics
        head = ["class", "n"] + [M.metric_label(h) for h in M.CLASS_METRICS]
        rows = [head]
        for name, e in m["per_class"].items():
            rows.append(
                [name, str(e.get("support", ""))]
                + [f"{e[k]:.3f}±{e[f'{k}_std']:.3f}" for k in M.CLASS_METRICS]
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = [f"{m['model']}: {m['folds']}-fold CV, {m['n_particles']} particles, "
                 f"seed {m['seed']}"]  # fmt: skip
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)))

        def summary(d: dict[str, Any]) -> str:
            return ", ".join(
                f"{k.replace('_', ' ')} {d[k]:.3f}±{d[f'{k}_std']:.3f}" for k in M.SUMMARY_METRICS
            )

        lines.append(f"{'model':<18}{summary(m)}")
        for b, d in m.get("baselines", {}).items():
            lines.append(f"{b:<18}{summary(d)}")
        if m.get("excluded"):
            lines.append(f"excluded: {len(m['excluded'])} particle(s) (see metrics.json)")
        return "\n".join(lines)


# --------------------------------------------------------------------------- runner


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")
    os.replace(tmp, path)


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    os.replace(tmp, path)


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[cv] {msg}", file=sys.stderr, flush=True)


def _with_features_csv(spec: ModelSpec, csv_path: Path) -> ModelSpec:
    """``spec`` reading precomputed features from ``csv_path`` (LipoclassError when the
    kind takes none or the file is missing)."""
    from dataclasses import replace

    config = spec.kind.with_features_csv(spec.config, str(csv_path))  # or LipoclassError
    if not csv_path.is_file():
        raise LipoclassError(f"{csv_path}: features CSV not found")
    return replace(spec, config=config)


def _usable_particles(
    dataset: ParticleDataset,
    spec: ModelSpec,
    cv: CVConfig,
    classes: tuple[str, ...],
    fold_of: np.ndarray,
    progress: bool,
) -> tuple[np.ndarray, list[dict[str, str]]]:
    """(positions of the labelled particles the estimator can use (n,), the labelled ones
    it cannot, each {id, reason})."""
    probe = spec.make_estimator(seed=_fold_seed(cv.seed, cv.folds), classes=classes)
    ok = np.asarray(probe.usable(dataset), dtype=bool)  # (N,)
    if ok.shape != (len(dataset),):
        raise RuntimeError(f"usable() returned shape {ok.shape}, expected ({len(dataset)},)")
    reasons_fn = getattr(probe, "unusable_reasons", None)
    reasons = reasons_fn(dataset) if reasons_fn is not None else {}
    excluded = [
        {"id": dataset.particles[i].id,
         "reason": reasons.get(dataset.particles[i].id, f"not usable by {spec.model}")}
        for i in np.flatnonzero((fold_of >= 0) & ~ok)
    ]  # fmt: skip
    evaluated = np.flatnonzero((fold_of >= 0) & ok)  # positions into dataset.particles
    if len(evaluated) == 0:
        raise LipoclassError(f"{dataset.root}: no labelled particle is usable by {spec.model}")
    if excluded:
        _log(progress, f"{len(excluded)} labelled particle(s) excluded (not usable)")
    return evaluated, excluded


def _fold_tasks(
    dataset: ParticleDataset,
    spec: ModelSpec,
    cv: CVConfig,
    classes: tuple[str, ...],
    evaluated: np.ndarray,
    fold: np.ndarray,
    progress: bool,
    keep_models: bool,
    fold_store: FoldStore | None,
) -> tuple[list[tuple[Any, ...]], list[FoldOutcome]]:
    """(the ``_fit_fold`` argument tuples of the folds still to fit, the folds resumed
    from ``fold_store``)."""
    y_all = dataset.labels
    want_importance = spec.kind.wants_importance(spec.config)
    tasks: list[tuple[Any, ...]] = []
    resumed: list[FoldOutcome] = []
    for k in range(cv.folds):
        train = evaluated[fold != k]
        test = evaluated[fold == k]
        if len(test) == 0 or len(train) == 0:
            _log(progress, f"fold {k + 1}/{cv.folds}: empty after exclusions, skipped")
            continue
        present = np.unique(y_all[train])
        if len(present) < 2:
            raise LipoclassError(
                f"{dataset.root}: fold {k + 1} training part has only class "
                f"{classes[int(present[0])]!r} after exclusions (use fewer folds)"
            )
        hit = None if fold_store is None else fold_store.load(k, train, test)
        if hit is not None and (hit.model is not None or not keep_models):
            resumed.append(hit)
            continue
        tasks.append((dataset, spec, classes, k, _fold_seed(cv.seed, k), train, test,
                      want_importance, keep_models))  # fmt: skip
    if resumed:
        _log(progress, f"resumed fold(s) {', '.join(str(r.fold + 1) for r in resumed)} of "
             f"{cv.folds} from an interrupted run with the same data and settings")  # fmt: skip
    return tasks, resumed


def _result(
    dataset: ParticleDataset,
    spec: ModelSpec,
    cv: CVConfig,
    evaluated: np.ndarray,
    fold: np.ndarray,
    proba: np.ndarray,
    excluded: list[dict[str, str]],
    wall: float,
) -> CVResult:
    """The ``CVResult`` (metrics, baselines) of the out-of-fold probabilities ``proba``
    (n, C) of the particles at ``evaluated`` (n,)."""
    classes = tuple(dataset.classes)
    n_classes = len(classes)
    y_true = dataset.labels[evaluated]
    y_pred = proba.argmax(axis=1)
    scores = score_folds(y_true, y_pred, proba, fold, n_classes, classes, seed=cv.seed)
    metrics: dict[str, Any] = {
        "model": spec.model,
        "classes": list(classes),
        "folds": int(cv.folds),
        "seed": int(cv.seed),
        "group_by": cv.group_by,
        "n_particles": len(evaluated),
        "excluded": excluded,
        **scores,
        "baselines": _baselines(y_true, fold, n_classes, classes, cv.seed),
        "wall_time_s": round(wall, 3),
    }
    ids = [dataset.particles[i].id for i in evaluated]
    return CVResult(metrics, ids, fold, y_true, y_pred, proba)


def cross_validate(
    dataset: ParticleDataset,
    spec: ModelSpec,
    cv: CVConfig,
    out: str | os.PathLike[str] | None = None,
    features_csv: str | os.PathLike[str] | None = None,
    progress: bool = True,
    *,
    keep_models: bool = False,
    executor: ExecutorConfig | None = None,
    fold_store: FoldStore | None = None,
) -> CVResult:
    """k-fold cross-validation of ``spec`` on the labelled particles of ``dataset``.

    Folds come from ``make_folds`` (identical for every model); particles the estimator
    cannot use (e.g. no features, empty mask) are dropped from training and testing and
    listed under ``excluded``. Each fold gets a fresh estimator fitted on its training part
    only. Folds are independent tasks run on ``executor`` (serial by default) with the
    same per-fold seeds, so the executor does not change the result. ``keep_models`` keeps
    the fitted fold estimators in ``CVResult.models`` (the members of a model folder).
    ``fold_store`` keeps each finished fold on disk and reuses the folds a killed run with
    the same fingerprint finished (``lipoclass.evaluate.resume``).
    Writes the run files into ``out`` when given (see docs/architecture.md).
    """
    t0 = time.perf_counter()
    if features_csv is not None:
        spec = _with_features_csv(spec, Path(features_csv))
    classes = tuple(dataset.classes)
    n_classes = len(classes)
    if n_classes < 2:
        raise LipoclassError(
            f"{dataset.root}: cross-validation needs at least 2 classes, found {n_classes}"
        )
    spec = spec.for_dataset(dataset)  # input mode "auto" -> the mode actually used
    described = spec.kind.describe_input(spec)
    if described:
        _log(progress, described)
    fold_of = make_folds(dataset, cv)  # validates labels and class sizes
    y_all = dataset.labels
    evaluated, excluded = _usable_particles(dataset, spec, cv, classes, fold_of, progress)
    fold = fold_of[evaluated]
    tasks, resumed = _fold_tasks(dataset, spec, cv, classes, evaluated, fold, progress,
                                 keep_models, fold_store)  # fmt: skip
    exe = executor or ExecutorConfig()
    where = f" on {exe.workers} local workers" if exe.executor == "local" and exe.parallel else (
        " on Ray" if exe.executor == "ray" else "")  # fmt: skip
    _log(progress, f"plan: {_plan(spec, tasks, y_all, n_classes)}{where}")

    def _done(i: int, r: FoldOutcome) -> None:
        if fold_store is not None:
            fold_store.save(r, tasks[i][5], tasks[i][6])
        _log(progress, f"fold {r.fold + 1}/{cv.folds}: balanced accuracy "
             f"{r.balanced_accuracy:.3f} ({r.seconds:.1f} s)")  # fmt: skip

    outcomes: list[FoldOutcome] = resumed + run_tasks(_fit_fold, tasks, exe, _done)
    outcomes.sort(key=lambda r: r.fold)
    proba = np.zeros((len(evaluated), n_classes), dtype=np.float64)  # (n, C)
    for r in outcomes:
        proba[np.flatnonzero(fold == r.fold)] = r.proba
    fold_info = [r.info for r in outcomes]
    with_imp = [r.importance for r in outcomes if r.importance is not None]
    imp_names: tuple[str, ...] = with_imp[-1][0] if with_imp else ()
    importances: list[np.ndarray] = [imp[1] for imp in with_imp]
    models: dict[int, Any] = {r.fold: r.model for r in outcomes if r.model is not None}

    wall = time.perf_counter() - t0
    result = _result(dataset, spec, cv, evaluated, fold, proba, excluded, wall)
    result.models = models
    if out is not None:
        run = Path(out)
        run.mkdir(parents=True, exist_ok=True)
        result.run_dir = run
        _write_outputs(run, result, dataset, spec, cv, fold_info, imp_names, importances, wall)
    return result


def _write_outputs(
    run: Path,
    result: CVResult,
    dataset: ParticleDataset,
    spec: ModelSpec,
    cv: CVConfig,
    fold_info: list[dict[str, Any]],
    imp_names: tuple[str, ...],
    importances: list[np.ndarray],
    wall: float,
) -> None:
    from lipoclass.evaluate.plots import save_confusion, save_importance

    classes = result.classes
    _write_csv(
        run / "oof.csv",
        ["id", "fold", "label", "pred"] + [f"p_{c}" for c in classes],
        [
            [pid, int(f), classes[int(t)], classes[int(p)]] + [f"{v:.6g}" for v in pr]
            for pid, f, t, p, pr in zip(
                result.ids, result.fold, result.y_true, result.y_pred, result.proba
            )
        ],
    )
    m = result.metrics
    save_confusion(
        np.array(m["confusion"]), classes, run / "confusion.png", normalized=False,
        title=f"{m['model']}: summed over {m['folds']} folds (n={m['n_particles']})",
    )  # fmt: skip
    save_confusion(
        np.array(m["confusion_normalized"]), classes, run / "confusion_normalized.png",
        normalized=True, title=f"{m['model']}: row-normalised, mean over {m['folds']} folds",
    )  # fmt: skip
    if importances:
        stack = np.stack(importances)  # (K, F)
        mean, std = stack.mean(axis=0), stack.std(axis=0)
        order = np.argsort(-mean)
        _write_csv(
            run / "importance.csv",
            ["feature", "importance_mean", "importance_std"],
            [[imp_names[i], f"{mean[i]:.6g}", f"{std[i]:.6g}"] for i in order],
        )
        save_importance(imp_names, mean, std, run / "importance.png")
    config = {
        "spec": spec.to_dict(),
        "cv": asdict(cv),
        "seed": int(cv.seed),
        "dataset": {"root": str(dataset.root), "name": dataset.name,
                    "fingerprint": dataset_fingerprint(dataset),
                    "n_particles": len(dataset), "n_labelled": int((dataset.labels >= 0).sum())},
        "versions": versions(),
        "fold_info": [{k: (None if isinstance(v, float) and math.isnan(v) else v)
                       for k, v in d.items()} for d in fold_info],
        "wall_time_s": round(wall, 3),
    }  # fmt: skip
    _write_json(run / "config.json", config)
    _write_json(run / "metrics.json", result.to_dict())  # last: marks the run as finished
