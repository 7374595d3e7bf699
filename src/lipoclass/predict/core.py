"""``predict``: classify the particles of a dataset or image folder with a model folder (CNN or
SVM) or an exported ONNX file, flag uncertain predictions for review and estimate class shares
per sample (``lipoclass.quantify``: CC, PCC, ACC, PACC, EMQ with intervals; the particles the
model cannot predict are counted beside the shares)."""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lipoclass.data import ParticleDataset, PrepConfig
from lipoclass.errors import LipoclassError
from lipoclass.predict.inputs import load_input
from lipoclass.predict.shares import (
    ShareConfig,
    ShareRow,
    audit_positions,
    class_shares,
    ensure_selection,
    method_line,
    plot_shares,
    shares_table,
    write_audit_sheet,
    write_shares,
)

__all__ = [
    "PredictConfig",
    "PredictResult",
    "model_quantifiers",
    "predict",
    "shares_path_for",
    "shares_table",
]


@dataclass(frozen=True)
class PredictConfig:
    """Batching, device (PyTorch only; onnxruntime runs on the CPU), test-time augmentation
    (``tta``: None follows the model folder; the ONNX graph holds what was exported) and the
    bootstrap of the class shares."""

    batch_size: int = 512
    device: str = "auto"
    tta: bool | None = None
    n_boot: int = 200
    level: float = 0.95
    seed: int = 0
    precision: str = "fp32"  # CPU PyTorch inference: fp32 (what was evaluated) or bf16 (opt-in)

    def __post_init__(self) -> None:
        from lipoclass.ensemble.predictor import PredictorConfig

        # the one check of each setting: the configs they are handed to
        PredictorConfig(self.device, self.batch_size, self.precision, tta=self.tta)
        ShareConfig(self.n_boot, self.level, self.seed)  # validates the bootstrap settings


@dataclass
class PredictResult:
    """What ``predict`` wrote and computed. ``probs`` (N, C) calibrated; ``pred`` (N,) class
    index; ``review`` (N,) bool; ``labels`` (N,) true index or -1; ``skipped`` lists
    (id, reason) for particles that could not be predicted (not in the shares);
    ``fallback`` lists (id, what was done and why) for those predicted by the documented
    fallback (in ``ids`` and the shares)."""

    predictions: Path
    shares: Path
    classes: tuple[str, ...]
    ids: list[str]
    probs: np.ndarray
    pred: np.ndarray
    review: np.ndarray
    labels: np.ndarray
    share_rows: list[ShareRow]
    review_threshold: float | None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    metrics: dict[str, Any] | None = None
    quantifier_note: str = ""
    fallback: list[tuple[str, str]] = field(default_factory=list)


class _Runner:
    """The model behind one predict call: classes, prep, review rule, quantifiers and the
    ensemble predictor (``lipoclass.ensemble.EnsemblePredictor``)."""

    def __init__(self, model_dir: Path | None, onnx_path: Path | None, cfg: PredictConfig):
        from lipoclass.ensemble import EnsemblePredictor, PredictorConfig

        self.cfg = cfg
        self.loaded: Any = None
        self.onnx: Any = None
        info: dict[str, Any] = {}
        if model_dir is not None:
            from lipoclass.ensemble import load_model

            self.loaded = load_model(model_dir)
            info = self.loaded.info
        if onnx_path is not None:
            from lipoclass.export import load_onnx

            self.onnx = load_onnx(onnx_path)
            if self.loaded is not None and tuple(self.loaded.classes) != self.onnx.classes:
                raise LipoclassError(
                    f"{onnx_path}: classes {', '.join(self.onnx.classes)} differ from "
                    f"{model_dir}'s {', '.join(self.loaded.classes)}"
                )
            src = self.onnx.meta.get("exported_from")
            if self.loaded is not None and src and not self.loaded.modules:
                raise LipoclassError(
                    f"{onnx_path} holds {src.get('used')} of the stack folder {model_dir}, not "
                    f"the stack: give {Path(str(model_dir)) / str(src.get('used'))} as the model "
                    "folder (its out-of-fold data match the file)"
                )
            if cfg.tta is not None and cfg.tta != self.onnx.tta:
                raise LipoclassError(
                    f"{onnx_path}: test-time augmentation is {'on' if self.onnx.tta else 'off'} "
                    "inside the exported graph; --tta/--no-tta cannot change it"
                )
            if self.loaded is None:
                info = {"review": self.onnx.meta.get("review"), "confusion": self.onnx.confusion}
        self.predictor = EnsemblePredictor(
            self.loaded, onnx=self.onnx,
            config=PredictorConfig(device=cfg.device, batch_size=cfg.batch_size,
                                   precision=cfg.precision, tta=cfg.tta),
        )  # fmt: skip
        self.classes: tuple[str, ...] = self.predictor.classes
        self.prep: PrepConfig = self.predictor.prep
        self.review: dict[str, Any] = dict(info.get("review") or {})
        thr = self.review.get("threshold")
        self.review_threshold = None if thr is None else float(thr)
        conf = info.get("confusion")
        self.confusion = None if conf is None else np.asarray(conf, dtype=np.float64)
        self.name = str(onnx_path if self.onnx is not None else model_dir)
        self.tta = self.predictor.tta
        if self.loaded is not None:
            self.quantifiers, self.quant_note = model_quantifiers(self.loaded)
        else:
            self.quantifiers, self.quant_note = (
                None,
                (
                    "ONNX file without a model folder: no out-of-fold data, so only CC and PCC "
                    "(biased towards the training shares; intervals from the sample's particles "
                    "only); give the model folder too for the adjusted methods"
                ),
            )

    def run(self, ds: ParticleDataset) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
        return self.predictor.predict_dataset(ds)

    def fallback(
        self, ds: ParticleDataset, skipped: list[tuple[str, str]]
    ) -> tuple[np.ndarray, np.ndarray, list[str], list[tuple[str, str]]]:
        """The model kind's documented fallback (docs/deployment.md, *Every particle
        counted*) for the particles ``run`` skipped (SVM: features without their own mask;
        CNN: prepared on the automatic mask). Returns (probs (m, C), positions (m,), per row
        what was done and why, [(id, reason)] of those still excluded)."""
        c = len(self.classes)
        if not skipped:
            return np.zeros((0, c)), np.zeros(0, dtype=np.int64), [], []
        pos_of = {p.id: i for i, p in enumerate(ds.particles)}
        why = dict(skipped)
        idx = np.array([pos_of[pid] for pid, _ in skipped], dtype=np.int64)
        fb = self.predictor.fallback(ds, idx)
        fails = dict(fb.failed)
        done = {ds.particles[int(i)].id for i in fb.index}
        left = [(pid, f"{r}; {fails[pid]}" if pid in fails else r)
                for pid, r in skipped if pid not in done]  # fmt: skip
        what = [f"{h} ({why[ds.particles[int(i)].id]})" for h, i in zip(fb.how, fb.index)]
        probs = np.asarray(fb.probs, dtype=np.float64).reshape(len(fb.index), c)
        return probs, np.asarray(fb.index, dtype=np.int64), what, left


def _labels_for(ds: ParticleDataset, classes: tuple[str, ...], model: str) -> np.ndarray:
    """True class index per particle in the *model's* class order (-1 unlabelled); the class
    sets must agree."""
    declared = ds.meta.get("classes") if ds.meta else None
    if declared is not None and len(declared) != len(classes):
        raise LipoclassError(
            f"{ds.root / 'dataset.toml'}: declares {len(declared)} classes "
            f"({', '.join(declared)}) but model {model} has {len(classes)} "
            f"({', '.join(classes)})"
        )
    lookup = {c: i for i, c in enumerate(classes)}
    out = np.full(len(ds), -1, dtype=np.int64)
    for i, p in enumerate(ds.particles):
        if p.label is None:
            continue
        if p.label not in lookup:
            raise LipoclassError(
                f"{ds.root / 'particles.csv'} row {p.row} (id {p.id}): label {p.label!r} is "
                f"not a class of model {model} ({', '.join(classes)})"
            )
        out[i] = lookup[p.label]
    return out


def _write_predictions(
    path: Path, ds: ParticleDataset, index: np.ndarray, classes: tuple[str, ...],
    probs: np.ndarray, review: np.ndarray, labels: np.ndarray, fallback: list[str],
) -> None:  # fmt: skip
    parts = [ds.particles[int(i)] for i in index]
    with_sample = any(p.sample for p in ds.particles)
    with_label = bool((labels >= 0).any())
    with_fb = any(fallback)  # what the documented fallback did, when it did anything
    header = ["id", "pred", *(f"p_{c}" for c in classes), "review"]
    header += ["sample"] * with_sample + ["label"] * with_label + ["fallback"] * with_fb
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with tmp.open("w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(header)
            for p, pr, rv, fb in zip(parts, probs, review, fallback):
                row = [p.id, classes[int(pr.argmax())], *(f"{v:.6f}" for v in pr), int(rv)]
                row += [p.sample or ""] * with_sample + [p.label or ""] * with_label
                row += [fb] * with_fb
                w.writerow(row)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _metrics(labels: np.ndarray, pred: np.ndarray, classes: tuple[str, ...]) -> dict[str, Any]:
    from lipoclass.metrics import (
        balanced_accuracy,
        class_metrics,
        confusion_matrix,
        macro_f1,
    )

    keep = labels >= 0
    cm = confusion_matrix(labels[keep], pred[keep], len(classes))
    per = class_metrics(cm)
    return {
        "n": int(keep.sum()),
        "confusion": cm.tolist(),
        "balanced_accuracy": float(balanced_accuracy(cm)),
        "macro_f1": float(macro_f1(cm)),
        "per_class": {c: {k: float(v[i]) for k, v in per.items()} for i, c in enumerate(classes)},
    }


def _metrics_table(m: dict[str, Any]) -> str:
    lines = [f"labelled particles: {m['n']}  balanced accuracy {m['balanced_accuracy']:.3f}  "
             f"macro F1 {m['macro_f1']:.3f}",
             f"{'class':<16} {'recall':>7} {'precision':>9} {'F1':>6} {'support':>8}"]  # fmt: skip
    cm = np.asarray(m["confusion"])
    for i, (c, v) in enumerate(m["per_class"].items()):
        lines.append(
            f"{c:<16} {v['tpr']:7.3f} {v['ppv']:9.3f} {v['f1']:6.3f} {int(cm[i].sum()):8d}"
        )
    return "\n".join(lines)


def model_quantifiers(loaded: Any) -> tuple[Any, str]:
    """(quantifiers, note) of a loaded model folder: those stored by ``lipoclass train``
    (``quantifiers.pkl``, listed in model.json), else fitted now on its ``oof.csv`` (older
    folders; slower), else None (CC and PCC only). The note says which ("" when stored)."""
    import time

    from lipoclass.quantify import fit_quantifiers, load_quantifiers

    entry = loaded.info.get("quantifiers") or {}
    rel = entry.get("file") if isinstance(entry, dict) else None
    if rel:
        q = load_quantifiers(loaded.path / str(rel), len(loaded.classes))
        return q, ensure_selection(q, loaded)
    if not (loaded.path / "oof.csv").is_file():
        return None, (
            f"{loaded.path}: no out-of-fold data (oof.csv): only CC and PCC (biased towards "
            "the training shares; intervals from the sample's particles only)"
        )
    t0 = time.perf_counter()
    _ids, _fold, y, p = loaded.oof()
    try:
        q = fit_quantifiers(p, y)
    except LipoclassError as exc:
        return None, f"{loaded.path}: quantifiers not fitted ({exc}): only CC and PCC"
    sel_note = ensure_selection(q, loaded)
    return q, (
        f"quantifiers fitted now on {loaded.path / 'oof.csv'} ({time.perf_counter() - t0:.1f} s; "
        "retrain with 'lipoclass train' to store them in the model folder)"
        + (f"; {sel_note}" if sel_note else "")
    )


def shares_path_for(out: Path) -> Path:
    """Default shares CSV of a predictions file: ``<stem>_shares.csv`` beside it, so two
    predictions into one folder never share (or overwrite) one shares file."""
    return out.with_name(f"{out.stem}_shares.csv")


def _check_finite(probs: np.ndarray, ds: ParticleDataset, index: np.ndarray, name: str) -> None:
    """A non-finite probability never reaches an output: refuse, naming the particle."""
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():
        p = ds.particles[int(index[np.flatnonzero(bad)[0]])]
        raise LipoclassError(
            f"{ds.root / 'particles.csv'} row {p.row} (id {p.id}): model {name} gave a "
            f"non-finite probability ({int(bad.sum())} particle(s)); nothing written"
        )


def _review_line(n_flag: int, n: int, review: dict[str, Any]) -> str:
    thr = review.get("threshold")
    if thr is None:
        return f"{n} particles predicted; no review rule in the model"
    line = (f"{n} particles predicted; {n_flag} ({100 * n_flag / max(n, 1):.1f}%) flagged for "
            f"review (top probability < {thr:.3f})")  # fmt: skip
    acc, target = review.get("expected_accuracy"), review.get("target_accuracy")
    if acc is not None and target is not None:
        line += (f"; out-of-fold accuracy expected on the unflagged: {100 * acc:.1f}% "
                 f"(target {100 * target:.0f}%, {100 * review['flagged_share']:.1f}% flagged "
                 "out of fold)")  # fmt: skip
    elif target is not None:
        line += f"; no cut reached the {100 * target:.0f}% target out of fold: review them all"
    return line


def _output_paths(
    out: str | os.PathLike[str],
    shares_path: str | os.PathLike[str] | None,
    audit: str | os.PathLike[str] | None,
    audit_draw: int | None,
) -> tuple[Path, Path, Path]:
    """(predictions CSV, shares CSV, audit sheet) paths, checked writable before any work."""
    from lipoclass.outputs import check_output_file

    out_path = Path(out)
    if out_path.is_dir():
        out_path = out_path / "predictions.csv"
    shares_out = Path(shares_path) if shares_path is not None else shares_path_for(out_path)
    if shares_out.resolve() == out_path.resolve():
        raise LipoclassError(f"--shares {shares_out}: same file as --out")
    audit_out = out_path.with_name(f"{out_path.stem}_audit.csv")
    for p in (out_path, shares_out) + ((audit_out,) if audit_draw else ()):
        check_output_file(p)
    if audit is not None and not Path(audit).is_file():
        raise LipoclassError(f"--audit {audit}: no such file")
    if audit_draw is not None and audit_draw < 1:
        raise LipoclassError(f"--audit-draw must be at least 1, got {audit_draw}")
    return out_path, shares_out, audit_out


def _run_with_fallback(
    runner: _Runner, ds: ParticleDataset
) -> tuple[np.ndarray, np.ndarray, list[str], list[tuple[str, str]]]:
    """(probs (n, C), positions (n,) in dataset order, per row the fallback used ("" for
    none), [(id, reason)] of the particles still without a prediction): the model on every
    particle, then the documented fallback for those it cannot handle as given."""
    probs, index, skipped = runner.run(ds)
    c = len(runner.classes)
    if probs.ndim != 2 or (len(probs) and probs.shape[1] != c):
        raise LipoclassError(
            f"{runner.name}: model gives {probs.shape[-1]} outputs for {c} classes"
        )
    fb_probs, fb_index, fb_how, skipped = runner.fallback(ds, skipped)
    if not len(fb_index):
        return probs, index, [""] * len(index), skipped
    order = np.argsort(np.concatenate([index, fb_index]), kind="stable")  # dataset order
    probs = np.concatenate([probs.reshape(len(index), c), fb_probs])[order]
    index = np.concatenate([index, fb_index])[order]
    how_of = dict(zip(fb_index.tolist(), fb_how))
    return probs, index, [how_of.get(int(i), "") for i in index], skipped


def predict(
    model_dir: str | os.PathLike[str] | None,
    input: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    onnx_path: str | os.PathLike[str] | None = None,
    shares_path: str | os.PathLike[str] | None = None,
    config: PredictConfig | None = None,
    verbose: bool = True,
    audit: str | os.PathLike[str] | None = None,
    audit_draw: int | None = None,
) -> PredictResult:
    """Predict every particle of ``input`` (dataset folder or image folder) and write
    ``predictions.csv`` (``out``) and the class shares (``shares_path``, default
    ``<out stem>_shares.csv`` beside ``out``).

    Uses the model folder (the mean of its fold models' calibrated probabilities) or, with
    ``onnx_path``, onnxruntime with the classes and preparation stored in the ONNX metadata
    (review rule and confusion matrix come from the metadata too, or from ``model_dir`` when
    both are given). With labels in the input, per-class metrics are printed (not training
    data unless you pass it). ``audit``: a person's labels of an audit sample (reviews.csv or
    id,label CSV) for audit-corrected shares; ``audit_draw`` K: also write
    ``<out stem>_audit.csv``, K particles per sample to label (docs/deployment.md, Audit)."""
    cfg = config or PredictConfig()
    if model_dir is None and onnx_path is None:
        raise LipoclassError("give a MODEL_DIR or --onnx model.onnx")
    out_path, shares_out, audit_out = _output_paths(out, shares_path, audit, audit_draw)
    runner = _Runner(
        Path(model_dir) if model_dir is not None else None,
        Path(onnx_path) if onnx_path is not None else None,
        cfg,
    )
    ds = load_input(input)
    all_labels = _labels_for(ds, runner.classes, runner.name)

    probs, index, fallback, skipped = _run_with_fallback(runner, ds)
    if len(index) == 0:
        raise LipoclassError(
            f"{input}: no particle could be prepared for mode '{runner.prep.mode}'"
        )
    _check_finite(probs, ds, index, runner.name)
    pred = probs.argmax(axis=1)
    thr = runner.review_threshold
    review = probs.max(axis=1) < thr if thr is not None else np.zeros(len(pred), dtype=bool)
    labels = all_labels[index]
    groups = [ds.particles[int(i)].sample or "all" for i in index]
    by_id = {p.id: p for p in ds.particles}
    excluded = Counter(by_id[pid].sample or "all" if pid in by_id else "all"
                       for pid, _why in skipped)  # fmt: skip
    n_fallback = Counter(g for g, how in zip(groups, fallback) if how)
    share_cfg = ShareConfig(cfg.n_boot, cfg.level, cfg.seed)
    # the micrograph of each particle (only from a micrograph column: the sample may be a lot)
    mics = [ds.particles[int(i)].micrograph or "" for i in index]
    ids = [ds.particles[int(i)].id for i in index]
    audit_pos, audit_note = (audit_positions(audit, ids, runner.classes) if audit is not None
                             else (None, ""))  # fmt: skip
    rows = class_shares(probs, groups, runner.classes, runner.quantifiers, share_cfg,
                        labels=labels if (labels >= 0).any() else None,
                        excluded=dict(excluded), fallback=dict(n_fallback),
                        micrographs=mics if any(mics) else None, audit=audit_pos)  # fmt: skip
    if audit_draw:
        write_audit_sheet(audit_out, ids, groups, mics if any(mics) else None, audit_draw,
                          seed=cfg.seed)  # fmt: skip
    _write_predictions(out_path, ds, index, runner.classes, probs, review, labels, fallback)
    write_shares(rows, shares_out)
    excluded_out = shares_out.with_name(f"{out_path.stem}_excluded.csv")
    _write_excluded(excluded_out, skipped, by_id)
    plot_out = shares_out.with_suffix(".png")
    if len({r.sample for r in rows}) > 1:
        plot_shares(rows, plot_out, cfg.level)
    metrics = _metrics(labels, pred, runner.classes) if (labels >= 0).any() else None
    if verbose:
        fb = [(ds.particles[int(i)].id, how) for i, how in zip(index, fallback) if how]
        _print_summary(runner, rows, cfg, review, fb, skipped, metrics, audit_note, audit_draw,
                       out_path, shares_out, excluded_out, audit_out, plot_out)  # fmt: skip
    return PredictResult(out_path, shares_out, runner.classes, ids, probs, pred, review, labels,
                         rows, thr, skipped, metrics, runner.quant_note,
                         [(pid, how) for pid, how in zip(ids, fallback) if how])  # fmt: skip


def _print_summary(
    runner: _Runner,
    rows: list[ShareRow],
    cfg: PredictConfig,
    review: np.ndarray,
    fb: list[tuple[str, str]],
    skipped: list[tuple[str, str]],
    metrics: dict[str, Any] | None,
    audit_note: str,
    audit_draw: int | None,
    out_path: Path,
    shares_out: Path,
    excluded_out: Path,
    audit_out: Path,
    plot_out: Path,
) -> None:
    """The console report of ``predict``: review rule, fallbacks ``fb`` [(id, how)],
    exclusions, the shares table, notes, metrics and where the files went."""
    line = _review_line(int(review.sum()), len(review), runner.review)
    print(line + (" [test-time augmentation on]" if runner.tta else ""))
    if fb:
        shown = ", ".join(f"{pid}: {how}" for pid, how in fb[:5])
        more = f" and {len(fb) - 5} more" if len(fb) > 5 else ""
        print(f"{len(fb)} particle(s) the model cannot handle as given were predicted by "
              f"the documented fallback and are counted IN the shares (column 'fallback' "
              f"of {out_path.name} and of the shares; docs/deployment.md): "
              f"{shown}{more}")  # fmt: skip
    if skipped:
        shown = ", ".join(f"{pid} ({why})" for pid, why in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        print(f"{len(skipped)} particle(s) the model cannot predict are EXCLUDED from the "
              f"shares (column 'excluded'): {shown}{more}; list: {excluded_out}")  # fmt: skip
    print(shares_table(rows, cfg.level))
    print(f"{method_line(runner.quantifiers)} (docs/deployment.md; every method with its "
          f"interval is in {shares_out.name})")  # fmt: skip
    if audit_note:
        print(audit_note)
    if audit_draw:
        print(f"audit sample to label ({audit_draw} per sample, drawn at random by "
              f"micrograph): {audit_out}; label it, then add --audit {audit_out}")  # fmt: skip
    if runner.quant_note:
        print(f"note: {runner.quant_note}")
    if rows and all(r.resampling == "particles" for r in rows if r.n):
        print(
            "note: the intervals redraw particles one by one (particles.csv names no "
            "micrograph, or fewer than 5 per sample and the model's training particles "
            "named none), so the micrograph-to-micrograph variation of the error rates "
            "is left out; add a 'micrograph' column (docs/deployment.md, Intervals)"
        )
    if metrics is not None:
        print(_metrics_table(metrics))
    print(f"predictions: {out_path}\nshares: {shares_out}")
    if plot_out.is_file() and len({r.sample for r in rows}) > 1:
        print(f"shares plot: {plot_out}")


def _write_excluded(path: Path, skipped: list[tuple[str, str]], by_id: dict[str, Any]) -> None:
    """``<out stem>_excluded.csv``: id, sample, reason of each particle not predicted (none
    skipped: no file, and an earlier run's list beside these outputs is removed)."""
    if not skipped:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with tmp.open("w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["id", "sample", "reason"])
            for pid, why in skipped:
                p = by_id.get(pid)
                w.writerow([pid, (p.sample if p is not None else "") or "all", why])
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
