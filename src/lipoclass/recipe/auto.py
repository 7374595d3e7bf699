"""``fit_auto``: ``lipoclass cv|train DATASET --recipe auto``. The dataset's fingerprint ->
the plan (``plan_recipe``) -> every model candidate cross-fitted on the same folds
(``crossfit.fit_model``, one model folder each) -> the stack candidates cross-fitted on their
out-of-fold predictions -> the best by out-of-fold macro-F1 becomes the model folder, which
reports every candidate's figures (``recipe.json``; ``model.json`` "recipe").

``nested_optimism``: the whole choice repeated inside the training part of each outer fold,
to measure how much the chosen candidate's out-of-fold score flatters it."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from lipoclass import metrics as M
from lipoclass.crossfit import REVIEW_TARGET, check_model_out, fit_model, resolve_folds
from lipoclass.crossfit.core import fit_folder_quantifiers
from lipoclass.data import ParticleDataset, fingerprint, publish_folder
from lipoclass.ensemble import FORMAT_VERSION, input_record, load_model
from lipoclass.errors import LipoclassError
from lipoclass.evaluate import CVConfig, ExecutorConfig, make_folds
from lipoclass.evaluate.cv import score_folds
from lipoclass.evaluate.executors import run_tasks
from lipoclass.provenance import versions
from lipoclass.recipe.plan import Candidate, Plan, RecipeConfig, plan_recipe
from lipoclass.recipe.stack import cross_fit, fit_combiner

__all__ = ["AutoResult", "NestedResult", "fit_auto", "nested_optimism", "score_table"]

RECIPE_FILE = "recipe.json"


@dataclass
class AutoResult:
    """What ``fit_auto`` did: the model folder ``out``, the ``plan``, the ``chosen``
    candidate and ``table`` (one row per candidate: name, macro_f1 (pooled out-of-fold),
    macro_f1_fold_mean / _std, balanced_accuracy, n, seconds)."""

    out: Path
    plan: Plan
    chosen: str
    table: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def text(self) -> str:
        """The candidate table as printed."""
        head = f"{'candidate':<22}{'macro-F1':>9}{'fold mean ± std':>18}{'bal.acc':>9}{'s':>7}"
        lines = ["recipe auto: out-of-fold figures on the same folds and particles", head]
        for r in self.table:
            mark = "  <- chosen" if r["name"] == self.chosen else ""
            if r.get("kind") == "member":
                mark = "  (seed member: not chosen alone)"
            lines.append(
                f"{r['name']:<22}{r['macro_f1']:>9.3f}{r['macro_f1_fold_mean']:>11.3f} ± "
                f"{r['macro_f1_fold_std']:.3f}{r['balanced_accuracy']:>9.3f}"
                f"{r['seconds']:>7.0f}{mark}"
            )
        return "\n".join(lines)


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"[recipe] {msg}", file=sys.stderr, flush=True)


def score_table(y: np.ndarray, p: np.ndarray, fold: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Pooled and per-fold macro-F1 and pooled balanced accuracy of out-of-fold
    probabilities ``p`` (n, C) for labels ``y`` (n,) in folds ``fold`` (n,)."""
    pred = p.argmax(axis=1)
    cm = M.confusion_matrix(y, pred, n_classes)
    per_fold = [
        float(M.macro_f1(M.confusion_matrix(y[fold == k], pred[fold == k], n_classes)))
        for k in np.unique(fold)
    ]
    return {
        "macro_f1": round(float(M.macro_f1(cm)), 4),
        "macro_f1_fold_mean": round(float(np.mean(per_fold)), 4),
        "macro_f1_fold_std": round(float(np.std(per_fold, ddof=1 if len(per_fold) > 1 else 0)), 4),
        "balanced_accuracy": round(float(M.balanced_accuracy(cm)), 4),
        "n": len(y),
    }


def _fit_candidate(
    dataset: ParticleDataset,
    cand: Candidate,
    cv: CVConfig,
    out: Path,
    review_target: float,
    progress: bool,
) -> tuple[float, float]:
    """One model candidate's model folder (a task of the executor); its wall seconds and its
    process's CPU seconds (the steadier figure on shared cores)."""
    t0, c0 = time.perf_counter(), time.process_time()
    assert cand.spec is not None
    fit_model(
        dataset, cand.spec, cv, out, review_target=review_target, progress=progress, quantify=False
    )
    return time.perf_counter() - t0, time.process_time() - c0


def _fold_counts(dataset: ParticleDataset, cv: CVConfig) -> list[np.ndarray]:
    fold_of = make_folds(dataset, cv)
    y = dataset.labels
    c = len(dataset.classes)
    return [np.bincount(y[(fold_of >= 0) & (fold_of != k)], minlength=c) for k in range(cv.folds)]


def _common_oof(
    dataset: ParticleDataset, folders: dict[str, Path]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The rows every candidate predicted out of fold: (positions (n,), y (n,), fold (n,),
    {name: calibrated probabilities (n, C)}); LipoclassError when the folds disagree."""
    oofs = {name: load_model(path).oof() for name, path in folders.items()}
    pos_of = {p.id: i for i, p in enumerate(dataset.particles)}
    common = set.intersection(*(set(o[0]) for o in oofs.values()))
    index = np.array(sorted(pos_of[i] for i in common), dtype=np.int64)
    ids = [dataset.particles[int(i)].id for i in index]
    probs: dict[str, np.ndarray] = {}
    y = fold = np.zeros(0, dtype=np.int64)
    for name, (oid, ofold, oy, p) in oofs.items():
        row = {i: r for r, i in enumerate(oid)}
        rows = np.array([row[i] for i in ids], dtype=np.int64)
        if len(fold) and not np.array_equal(fold, ofold[rows]):
            raise LipoclassError(f"candidate {name}: its folds differ from the others'")
        y, fold = oy[rows], ofold[rows]
        probs[name] = p[rows]
    return index, y, fold, probs


def fit_auto(
    dataset: ParticleDataset,
    cv: CVConfig,
    out: str | os.PathLike[str],
    *,
    config: RecipeConfig | None = None,
    executor: ExecutorConfig | None = None,
    review_target: float = REVIEW_TARGET,
    progress: bool = True,
) -> AutoResult:
    """Plan, cross-fit every candidate on the same folds, keep the best by out-of-fold
    macro-F1 and write the model folder ``out`` atomically (docs/cnn.md, Self-configuring
    recipe). Model candidates run as tasks on ``executor`` (local workers or Ray; on a Ray
    cluster the workers must see ``out``'s folder)."""
    t0 = time.perf_counter()
    cfg = config or RecipeConfig()
    outp = Path(out)
    check_model_out(outp)
    dataset.require_labels()
    cv = replace(cv, folds=resolve_folds(dataset, cv.folds))
    fp = fingerprint(dataset, max_images=cfg.max_images, seed=cv.seed)
    plan = plan_recipe(fp, _fold_counts(dataset, cv), cfg)
    _say(progress, "fingerprint: " + fp.text().replace("\n", "\n[recipe]   "))
    _say(progress, plan.text().replace("\n", "\n[recipe] "))
    outp.parent.mkdir(parents=True, exist_ok=True)
    work = outp.with_name(f".{outp.name}.recipe-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    work.mkdir()
    try:
        table, chosen = _run(dataset, cv, plan, work, executor, review_target, progress)
        final = work / "final"
        _finish(
            dataset, cv, plan, fp.to_dict(), table, chosen, work, final, review_target, progress
        )
        publish_folder(final, outp)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    shutil.rmtree(work, ignore_errors=True)
    res = AutoResult(outp, plan, chosen, table, time.perf_counter() - t0)
    _say(progress, f"chose {chosen} ({res.seconds:.0f} s in all; plan: about {plan.seconds:.0f} s)")
    return res


def _run(
    dataset: ParticleDataset,
    cv: CVConfig,
    plan: Plan,
    work: Path,
    executor: ExecutorConfig | None,
    review_target: float,
    progress: bool,
) -> tuple[list[dict[str, Any]], str]:
    """Cross-fit the model candidates into ``work/candidates``, then the stacks; returns the
    candidate table and the chosen candidate's name."""
    exe = executor or ExecutorConfig()
    folders = {c.name: work / "candidates" / c.name for c in plan.models}
    (work / "candidates").mkdir()
    models = list(plan.models)
    tasks = [
        (dataset, c, cv, folders[c.name], review_target, progress and not exe.parallel)
        for c in models
    ]
    if exe.parallel:
        _say(progress, f"{len(tasks)} model candidates in parallel ({exe.executor})")

        def done(i: int, s: tuple[float, float]) -> None:
            _say(progress, f"candidate {models[i].name} done ({s[0]:.0f} s)")

        secs = run_tasks(_fit_candidate, tasks, exe, done)
    else:
        secs = []
        for i, t in enumerate(tasks):
            _say(progress, f"candidate {i + 1}/{len(tasks)}: {models[i].name} ({models[i].reason})")
            secs.append(_fit_candidate(*t))
    index, y, fold, probs = _common_oof(dataset, folders)
    n_classes = len(dataset.classes)
    table = [
        {
            "name": c.name,
            "kind": "model" if c.member_of is None else "member",
            **score_table(y, probs[c.name], fold, n_classes),
            "seconds": round(s[0], 1),
            "cpu_s": round(s[1], 1),
            "estimate_s": round(c.seconds, 1),
        }
        for c, s in zip(models, secs)
    ]
    if plan.stacks:
        size = _size_features(dataset, plan, index)
        balanced = plan.rule("balance").value != "none"
        for c in plan.stacks:
            t1 = time.perf_counter()
            bp = [probs[b] for b in c.bases]
            p = cross_fit(
                str(c.combiner),
                bp,
                size if c.combiner == "logistic" else None,
                y,
                fold,
                n_classes,
                balanced=balanced,
                seed=cv.seed,
                groups=_group_index(c),
            )
            table.append(
                {
                    "name": c.name,
                    "kind": "stack",
                    **score_table(y, p, fold, n_classes),
                    "seconds": round(time.perf_counter() - t1, 1),
                    "estimate_s": 0.0,
                }
            )
    return table, _choose(table)


def _group_index(stack: Candidate) -> list[list[int]] | None:
    """The stack's groups as indices into its bases (None: every base alone)."""
    if not stack.groups:
        return None
    return [[stack.bases.index(b) for b in g] for g in stack.groups]


def _choose(table: list[dict[str, Any]]) -> str:
    """The candidate with the highest pooled out-of-fold macro-F1; on a tie the one listed
    first (models before stacks: the simpler). Seed members (kind "member") are never
    chosen alone: picking the luckiest seed would flatter the out-of-fold figure."""
    ok = [i for i, r in enumerate(table) if r.get("kind") != "member"]
    best = max(ok, key=lambda i: (table[i]["macro_f1"], -i))
    return str(table[best]["name"])


def _size_features(dataset: ParticleDataset, plan: Plan, index: np.ndarray) -> np.ndarray:
    """Size features (n, K) of the particles at ``index``, measured as the stack's input
    preparation (the first model candidate's) measures them at prediction."""
    from lipoclass.kinds.stack import _size_rows

    spec = plan.models[0].spec
    assert spec is not None
    return _size_rows(dataset, spec.for_dataset(dataset).prep, index)


def _finish(
    dataset: ParticleDataset,
    cv: CVConfig,
    plan: Plan,
    fp: dict[str, Any],
    table: list[dict[str, Any]],
    chosen: str,
    work: Path,
    final: Path,
    review_target: float,
    progress: bool,
) -> None:
    """The model folder ``final``: the chosen model candidate's folder, or the stack folder;
    both with recipe.json and model.json "recipe"."""
    stack = next((c for c in plan.stacks if c.name == chosen), None)
    quant = None
    if stack is None:
        os.replace(work / "candidates" / chosen, final)
        ids, _, y, cal = load_model(final).oof()  # the chosen candidate's, calibrated
        quant = fit_folder_quantifiers(
            cal, y, final, progress, dataset.micrographs_of(ids), list(dataset.classes)
        )
    else:
        _write_stack(dataset, cv, plan, stack, work, final, review_target, progress)
    recipe = {
        "recipe": "auto",
        "chosen": chosen,
        "selected_by": "pooled out-of-fold macro-F1",
        "table": table,
        "plan": plan.to_dict(),
        "fingerprint": fp,
        "versions": versions(),
    }
    (final / RECIPE_FILE).write_text(json.dumps(recipe, indent=2, default=_jsonable))
    mj = final / "model.json"
    info = json.loads(mj.read_text())
    info["recipe"] = {"file": RECIPE_FILE, "chosen": chosen, "table": table}
    if stack is None:
        info["quantifiers"] = quant
    mj.write_text(json.dumps(info, indent=2, default=_jsonable))


def _write_stack(
    dataset: ParticleDataset,
    cv: CVConfig,
    plan: Plan,
    stack: Candidate,
    work: Path,
    final: Path,
    review_target: float,
    progress: bool,
) -> None:
    """The stack folder (``lipoclass.kinds.stack``): its bases' model folders under
    candidates/, the combiner fitted on all out-of-fold rows, the cross-fitted out-of-fold
    table and what fit_model fits on it (review threshold, quantifiers)."""
    from lipoclass.kinds import get_kind
    from lipoclass.train.calibration import expected_calibration_error, review_threshold

    final.mkdir()
    (final / "candidates").mkdir()
    folders = {b: work / "candidates" / b for b in stack.bases}
    index, y, fold, probs = _common_oof(dataset, folders)
    n_classes = len(dataset.classes)
    logistic = stack.combiner == "logistic"
    size = _size_features(dataset, plan, index) if logistic else None
    balanced = plan.rule("balance").value != "none"
    bp = [probs[b] for b in stack.bases]
    gidx = _group_index(stack)
    oof = cross_fit(
        str(stack.combiner), bp, size, y, fold, n_classes, balanced=balanced, seed=cv.seed,
        groups=gidx,
    )  # fmt: skip
    rec = fit_combiner(
        str(stack.combiner), bp, size, y, n_classes, balanced=balanced, seed=cv.seed,
        groups=gidx,
    )  # fmt: skip
    for b in stack.bases:
        os.replace(folders[b], final / "candidates" / b)
    kind = get_kind("stack")
    (final / "members").mkdir()
    kind.save_member(rec, final / "members" / f"fold0{kind.member_suffix}")
    ids = [dataset.particles[int(i)].id for i in index]
    classes = list(dataset.classes)
    _write_oof(final / "oof.csv", ids, fold, y, oof, classes)
    scores = _write_metrics(final, stack.name, cv, y, oof, fold, classes)
    first = plan.models[0].spec
    assert first is not None
    prep = first.for_dataset(dataset).prep
    groups = dataset.micrographs_of(ids)
    quant = fit_folder_quantifiers(oof, y, final, progress, groups, classes)
    info = {
        "format_version": FORMAT_VERSION,
        "kind": kind.name,
        "model": stack.name,
        "classes": classes,
        "prep": asdict(prep),
        "input": input_record(dataset, prep),
        "stack": {
            "combiner": stack.combiner,
            "bases": [f"candidates/{b}" for b in stack.bases],
            "size_features": bool(logistic),
            **({"groups": [list(g) for g in stack.groups]} if stack.groups else {}),
        },
        "cv": asdict(cv),
        "seed": int(cv.seed),
        "members": [f"members/fold0{kind.member_suffix}"],
        "calibration": {
            "method": "none",
            "fitted_on": "cross-fitted out-of-fold combiner",
            "n": len(y),
        },
        "review": review_threshold(oof, y, review_target),
        "tta": False,
        "confusion": scores["confusion"],
        "ece_after": expected_calibration_error(oof, y),
        "dataset": {"path": str(dataset.root.resolve()), "name": dataset.name},
        "versions": versions(),
        "quantifiers": quant,
    }
    (final / "model.json").write_text(json.dumps(info, indent=2, default=_jsonable))


def _write_metrics(
    folder: Path, name: str, cv: CVConfig, y: np.ndarray, p: np.ndarray, fold: np.ndarray,
    classes: list[str],
) -> dict[str, Any]:  # fmt: skip
    """metrics.json of out-of-fold probabilities ``p`` (as cross_validate writes it)."""
    scores = score_folds(y, p.argmax(axis=1), p, fold, len(classes), classes, seed=cv.seed)
    metrics = {"model": name, "classes": classes, "folds": int(cv.folds), "seed": int(cv.seed),
               "group_by": cv.group_by, "n_particles": len(y), **scores}  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_jsonable))
    return scores


def _write_oof(
    path: Path, ids: list[str], fold: np.ndarray, y: np.ndarray, p: np.ndarray, classes: list[str]
) -> None:
    import csv

    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "fold", "label", "pred", *[f"p_{c}" for c in classes]])
        for i, k, t, row in zip(ids, fold, y, p):
            w.writerow(
                [i, int(k), classes[int(t)], classes[int(row.argmax())], *[f"{v:.6g}" for v in row]]
            )


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ---------------------------------------------------------------------- nested optimism


@dataclass
class NestedResult:
    """Per outer fold: the ``chosen`` candidate, its ``inner`` out-of-fold macro-F1 (what
    ``--recipe auto`` reports) and its ``outer`` macro-F1 on the outer test part (particles
    it never saw, chosen or trained on); ``optimism`` = mean(inner - outer)."""

    rows: list[dict[str, Any]]

    @property
    def optimism(self) -> float:
        return float(np.mean([r["inner"] - r["outer"] for r in self.rows]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "optimism": round(self.optimism, 4),
            "inner_mean": round(float(np.mean([r["inner"] for r in self.rows])), 4),
            "outer_mean": round(float(np.mean([r["outer"] for r in self.rows])), 4),
        }


def nested_optimism(
    dataset: ParticleDataset,
    outer_folds: int = 3,
    *,
    inner_folds: int = 3,
    seed: int = 0,
    config: RecipeConfig | None = None,
    executor: ExecutorConfig | None = None,
    progress: bool = True,
    work: str | os.PathLike[str] | None = None,
) -> NestedResult:
    """Nested CV of the auto choice: for each of ``outer_folds`` stratified outer folds,
    ``fit_auto`` on the outer training part (``inner_folds`` folds, same ``seed``), then the
    chosen model folder predicts the outer test part. Model folders go to a temporary folder
    (or ``work``) and are removed."""
    outer = make_folds(dataset, CVConfig(folds=outer_folds, seed=seed))
    n_classes = len(dataset.classes)
    rows: list[dict[str, Any]] = []
    base = Path(tempfile.mkdtemp(prefix="lipoclass-nested-", dir=work))
    try:
        for k in range(outer_folds):
            train = dataset.subset(np.flatnonzero((outer >= 0) & (outer != k)))
            test = dataset.subset(np.flatnonzero(outer == k))
            _say(
                progress,
                f"outer fold {k + 1}/{outer_folds}: {len(train)} training, "
                f"{len(test)} test particles",
            )
            res = fit_auto(
                train,
                CVConfig(folds=inner_folds, seed=seed),
                base / f"outer{k}",
                config=config,
                executor=executor,
                progress=progress,
            )
            model = load_model(res.out)
            p, ids = model.predict_proba(test)
            pos = {pid: i for i, pid in enumerate(test.ids)}
            yt = test.labels[[pos[i] for i in ids]]
            cm = M.confusion_matrix(yt, p.argmax(axis=1), n_classes)
            inner = next(r["macro_f1"] for r in res.table if r["name"] == res.chosen)
            rows.append(
                {
                    "fold": k,
                    "chosen": res.chosen,
                    "inner": float(inner),
                    "outer": round(float(M.macro_f1(cm)), 4),
                    "n_test": len(yt),
                    "n_test_unpredicted": int(len(test) - len(ids)),
                    "table": res.table,
                }
            )
            shutil.rmtree(res.out, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return NestedResult(rows)
