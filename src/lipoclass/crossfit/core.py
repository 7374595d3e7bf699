"""``fit_model``: a trained model is the k fold models of one cross-validation (cross-fitting).

One computation serves ``lipoclass cv`` and ``lipoclass train``: the k-fold CV of
``lipoclass.evaluate.cross_validate`` (same folds, seed and spec), keeping every fold model.
Its out-of-fold predictions of all labelled particles are then the only data that fit the
temperature (CNN), the review threshold, ECE, the reliability plot and the confusion matrix,
so the deployed ensemble is exactly the model whose errors were measured. The run folder is
the model folder (format version 2, read by ``lipoclass.ensemble.load_model``)::

    MODEL/model.json            what predict needs: classes, prep, input, members, calibration,
                                review (the input record: crop surroundings, pixel size)
    MODEL/members/fold<k>.<suffix>   one per fold, written by the model kind
                                (``lipoclass.kinds``: CNN fold<k>.pt, SVM fold<k>.joblib)
    MODEL/quantifiers.pkl    class-share quantifiers fitted on the out-of-fold posteriors
    MODEL/metrics.json, oof.csv, config.json, confusion*.png   the cross-validation results
    MODEL/reliability.png, training_curves.png                 out-of-fold calibration, curves

Small sets: the folds are min(k, members of the smallest class); a class with fewer than 2
labelled members cannot be cross-fitted and is refused (docs/cnn.md, Small datasets)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from lipoclass.data import ParticleDataset, publish_folder
from lipoclass.ensemble import FORMAT_VERSION, input_record, member_file
from lipoclass.errors import LipoclassError
from lipoclass.evaluate import CVConfig, CVResult, ExecutorConfig, cross_validate
from lipoclass.evaluate.resume import FoldStore, run_fingerprint
from lipoclass.kinds import Kind
from lipoclass.outputs import check_output_folder
from lipoclass.spec import ModelSpec

__all__ = [
    "REVIEW_TARGET",
    "check_model_out",
    "fit_folder_quantifiers",
    "fit_model",
    "resolve_folds",
    "staging_folders",
]

#: default out-of-fold accuracy the unflagged particles must reach (review threshold)
REVIEW_TARGET = 0.95
_STAGING = ".staging-"
_RESUME = "resume"  # the finished folds inside a staging folder (lipoclass.evaluate.resume)


def resolve_folds(dataset: ParticleDataset, folds: int) -> int:
    """The small-set rule: ``folds``, or fewer when the smallest labelled class has fewer
    members (with a warning); LipoclassError when a class has fewer than 2."""
    counts = np.bincount(dataset.labels[dataset.labels >= 0], minlength=len(dataset.classes))
    present = {c: int(n) for c, n in zip(dataset.classes, counts) if n > 0}
    if not present:
        raise LipoclassError(f"{dataset.root}: no labelled particles")
    small = min(present, key=lambda c: present[c])
    if present[small] < 2:
        raise LipoclassError(
            f"{dataset.root}: class {small!r} has {present[small]} labelled particle; "
            "cross-fitting needs at least 2 per class (label more, or drop the class)"
        )
    if present[small] < folds:
        warnings.warn(
            f"class {small!r} has only {present[small]} labelled particles: using "
            f"{present[small]} folds instead of {folds} (every fold needs one of each class)",
            stacklevel=2,
        )
        return present[small]
    return folds


def staging_folders(out: Path) -> list[Path]:
    """Leftover staging folders of earlier killed runs beside ``out``."""
    if not out.parent.is_dir():
        return []
    return sorted(out.parent.glob(f".{out.name}{_STAGING}*"))


def _stale(st: Path) -> bool:
    """Whether the process that made staging folder ``st`` no longer exists."""
    pid = st.name.rsplit("-", 2)[-2] if st.name.count("-") >= 2 else ""
    if not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except OSError:
        return True
    return int(pid) == os.getpid()


def _take_over_staging(out: Path, staging: Path, store: FoldStore, progress: bool) -> None:
    """Create ``staging``; the finished folds of a killed run into ``out`` with the same
    fingerprint move into it (the rest of that run's files, and every other stale staging
    folder, are removed). Staging folders of live processes are left alone."""
    adopted = False
    for st in staging_folders(out):
        if not _stale(st):
            continue
        old = FoldStore(st / _RESUME, store.fingerprint)
        done = old.finished()
        if done and not adopted:
            staging.mkdir()
            os.replace(st / _RESUME, staging / _RESUME)
            adopted = True
            _say(progress, f"{len(done)} finished fold(s) of an interrupted run into {out} "
                 "found: resuming")  # fmt: skip
        elif (st / _RESUME).is_dir() and not adopted:
            _say(progress, f"an interrupted run into {out} used other data or settings: "
                 "starting fresh")  # fmt: skip
        shutil.rmtree(st, ignore_errors=True)
    if not adopted:
        staging.mkdir()


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"[fit] {msg}", file=sys.stderr, flush=True)


def check_model_out(out: Path) -> None:
    """Refuse an ``out`` that exists and is not a model folder (foreign files are never
    mixed with results) or that cannot be written."""
    if out.exists() and not out.is_dir():
        raise LipoclassError(f"{out}: exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / "model.json").is_file():
        raise LipoclassError(
            f"{out}: folder exists, is not empty and is not a model folder; choose another --out"
        )
    check_output_folder(out, allow_existing_kind="model", marker="model.json")


def _save_members(staging: Path, res: CVResult, kind: Kind) -> list[str]:
    (staging / "members").mkdir()
    rels = []
    for k in sorted(res.models):
        rel = member_file(kind, k)
        kind.save_member(res.models[k], staging / rel)
        rels.append(rel)
    return rels


def _with_tta(spec: ModelSpec, tta: bool) -> ModelSpec:
    """``spec`` with ``TrainConfig.tta`` set when ``tta``: the fold models' out-of-fold
    predictions then average the 8 views, as the folder's predictions will (a spec with
    ``tta`` already set makes a folder that predicts with TTA). LipoclassError for a kind
    without TTA."""
    if not (tta or getattr(spec.config, "tta", False)):
        return spec
    if not spec.kind.supports_tta:
        raise LipoclassError(
            f"test-time augmentation (--tta) does not apply to {spec.kind.name} models (CNNs only)"
        )
    return spec.with_config(tta=True)


def fit_model(
    dataset: ParticleDataset,
    spec: ModelSpec,
    cv: CVConfig,
    out: str | os.PathLike[str],
    *,
    features_csv: str | os.PathLike[str] | None = None,
    executor: ExecutorConfig | None = None,
    review_target: float = REVIEW_TARGET,
    tta: bool = False,
    progress: bool = True,
    quantify: bool = True,
) -> tuple[Path, CVResult]:
    """Cross-fit ``spec`` on ``dataset`` (``cv`` folds), calibrate on the out-of-fold
    predictions and write the model folder ``out`` atomically. Returns (out, CV result).

    ``review_target``: out-of-fold accuracy the unflagged particles must reach; ``tta``:
    whether predictions average the 8 flips/quarter turns of each particle (CNN): the
    out-of-fold predictions (figures, calibration, review threshold) as well as the folder's
    later ones, so the figures describe what the folder predicts;
    ``quantify=False``: no class-share quantifiers (``--recipe auto`` candidates)."""
    from lipoclass.train.calibration import expected_calibration_error as ece
    from lipoclass.train.calibration import plot_reliability, review_threshold

    outp = Path(out)
    check_model_out(outp)
    dataset.require_labels()
    if not 0 < review_target <= 1:
        raise LipoclassError(f"review target must be in (0, 1], got {review_target}")
    cv = replace(cv, folds=resolve_folds(dataset, cv.folds))
    spec = _with_tta(spec, tta)
    kind, tta = spec.kind, bool(getattr(spec.config, "tta", False))
    outp.parent.mkdir(parents=True, exist_ok=True)
    staging = outp.with_name(f".{outp.name}{_STAGING}{os.getpid()}-{uuid.uuid4().hex[:6]}")
    store = FoldStore(staging / _RESUME, run_fingerprint(dataset, spec, cv, features_csv))
    _take_over_staging(outp, staging, store, progress)
    t0 = time.perf_counter()
    try:
        res = cross_validate(dataset, spec, cv, out=staging, features_csv=features_csv,
                             progress=progress, keep_models=True, executor=executor,
                             fold_store=store)  # fmt: skip
        config = json.loads((staging / "config.json").read_text())
        used = ModelSpec.from_dict(config["spec"])  # input mode resolved, features_csv set
        y, raw = res.y_true, res.proba  # (n,), (n, C) out-of-fold
        cal, calibration = kind.calibrate(raw, y)  # out-of-fold predictions only
        calibration = {**calibration, "fitted_on": "out-of-fold predictions", "n": len(y)}
        review = review_threshold(cal, y, review_target)
        members = _save_members(staging, res, kind)
        groups = dataset.micrographs_of(res.ids)  # None: calibration replicates redraw particles
        cls = list(res.classes)
        quant = _fit_quantifiers(cal, y, staging, progress, groups, cls) if quantify else None
        info: dict[str, Any] = {
            "format_version": FORMAT_VERSION, "kind": kind.name, "model": used.model,
            "classes": list(res.classes), "prep": asdict(used.prep),
            "input": input_record(dataset, used.prep),
            "spec": used.to_dict(), "cv": asdict(cv), "seed": int(cv.seed),
            "members": members, "calibration": calibration, "review": review,
            "tta": bool(tta), "confusion": res.metrics["confusion"],
            "ece_before": ece(raw, y),
            "ece_after": ece(cal, y),
            "dataset": {**config["dataset"], "path": str(dataset.root.resolve())},
            "versions": config["versions"], "quantifiers": quant,
        }  # fmt: skip
        info.update(kind.folder_info(res.models, staging))
        plot_reliability(raw, cal, y, staging / "reliability.png")
        (staging / "model.json").write_text(json.dumps(info, indent=2, default=_json_default))
        shutil.rmtree(staging / _RESUME, ignore_errors=True)  # the model needs no fold cache
        publish_folder(staging, outp)
    except Exception:
        # a failed run leaves nothing half-written; a kill (SIGKILL, Ctrl-C) keeps the
        # staging folder's finished folds for the rerun to resume from
        shutil.rmtree(staging, ignore_errors=True)
        raise
    res.run_dir = outp
    if progress:
        print(f"[fit] {len(members)} fold models kept, calibrated on {len(y)} out-of-fold "
              f"predictions ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)  # fmt: skip
    return outp, res


def _fit_quantifiers(
    cal: np.ndarray,
    y: np.ndarray,
    staging: Path,
    progress: bool,
    groups: list[str] | None,
    classes: tuple[str, ...] | list[str] = (),
) -> dict[str, Any] | None:
    """Fit the class-share quantifiers (``lipoclass.quantify``) once, on the calibrated
    out-of-fold posteriors cal (n, C) and labels y (n,), and store them in the model folder
    (``quantifiers.pkl``); the model.json entry, or None (with a warning) when they cannot
    be fitted (predict then reports CC and PCC only)."""
    from lipoclass.quantify import (
        QuantifierConfig,
        fit_quantifiers,
        plot_selection,
        save_quantifiers,
        select_method,
    )

    t0 = time.perf_counter()
    cfg = QuantifierConfig()
    try:
        q = fit_quantifiers(cal, y, cfg, groups=groups)
    except LipoclassError as exc:
        warnings.warn(f"class-share quantifiers not fitted: {exc}", stacklevel=3)
        return None
    # the method the shares are reported with: chosen for this model by simulating prior
    # shift on its own out-of-fold data (docs/deployment.md, Method chosen per model)
    sel = select_method(cal, y, groups, cfg.methods)
    q.with_selection(sel)
    cfg = q.config
    save_quantifiers(q, staging / "quantifiers.pkl")
    if sel.table:
        plot_selection(sel, classes, staging / "method_selection.png")
    import quapy

    secs = time.perf_counter() - t0
    if progress:
        print(f"[fit] quantifiers {', '.join(cfg.methods)} fitted on {len(y)} out-of-fold "
              f"posteriors with {cfg.n_cal_boot} calibration replicates ({secs:.0f} s); "
              f"recommended for this model: {sel.chosen.upper()} ({sel.reason})",
              file=sys.stderr)  # fmt: skip
    return {"file": "quantifiers.pkl", "methods": list(cfg.methods),
            "recommended": cfg.recommended, "n_cal_boot": cfg.n_cal_boot,
            "emq_calibration": cfg.emq_calibration, "n": len(y),
            "calibration_resampling": q.cal_resampling, "selection": sel.to_dict(),
            "selection_figure": "method_selection.png" if sel.table else None,
            "quapy": str(quapy.__version__)}  # fmt: skip


def fit_folder_quantifiers(
    cal: np.ndarray,
    y: np.ndarray,
    folder: Path,
    progress: bool,
    groups: list[str] | None,
    classes: tuple[str, ...] | list[str] = (),
) -> dict[str, Any] | None:
    """The class-share quantifiers of a model folder written by other code than
    ``fit_model`` (the stack of ``--recipe auto``): fitted on the calibrated out-of-fold
    posteriors ``cal`` (n, C) only, saved in ``folder``; the model.json entry or None."""
    return _fit_quantifiers(cal, y, folder, progress, groups, classes)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
