"""Model folders (docs/architecture.md): ``train_model`` trains one model on a whole dataset
(holding out a stratified validation split for early stopping, calibration, the confusion
estimate and the review threshold) and writes the folder atomically; ``load_model`` reads it
back for predict / export / explain."""

from __future__ import annotations

import copy
import json
import os
import platform
import shutil
import sys
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lipoclass.data import ParticleDataset, PrepConfig, prepare, publish_folder
from lipoclass.data.prepare import dataset_fingerprint
from lipoclass.errors import LipoclassError
from lipoclass.models import create_model, size_features
from lipoclass.train.calibration import (
    expected_calibration_error,
    fit_temperature,
    plot_history,
    plot_reliability,
    review_threshold,
    softmax,
)
from lipoclass.train.config import TrainConfig
from lipoclass.train.estimator import CNNEstimator, prepared_for
from lipoclass.train.trainer import predict_logits, stratified_split

__all__ = ["FORMAT_VERSION", "LoadedModel", "load_model", "train_model"]

FORMAT_VERSION = 1
# CPU inference runs in chunks of about this many input pixels (128 particles at 28 px) so a
# chunk's activations stay in cache: on the 2-core reference machine LipNet-4 runs ~1.8x
# faster than in chunks of 512 (docs/deployment.md, Speed).
CPU_CHUNK_PIXELS = 128 * 28 * 28
_REQUIRED = {"cnn": ("model.json", "weights.pt"), "svm": ("model.json", "svm.joblib")}


def _versions() -> dict[str, str]:
    import sklearn

    from lipoclass import __version__

    return {"python": platform.python_version(), "torch": torch.__version__,
            "sklearn": sklearn.__version__, "lipoclass": __version__}  # fmt: skip


def _confusion(y: np.ndarray, pred: np.ndarray, c: int) -> list[list[int]]:
    m = np.zeros((c, c), dtype=np.int64)
    np.add.at(m, (y, pred), 1)
    return m.tolist()


def train_model(
    dataset: ParticleDataset,
    spec: Any,
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    *,
    confusion_folds: int = 5,
    confusion_from: str | os.PathLike[str] | None = None,
) -> Path:
    """Train ``spec`` (a ``lipoclass.evaluate.ModelSpec``) on all labelled usable particles of
    ``dataset`` minus a stratified validation split, calibrate on that split and write the
    model folder ``out_dir`` (see docs/architecture.md). Returns ``out_dir``.

    The confusion matrix behind the adjusted class shares of ``predict`` is cross-validated:
    taken from a finished ``lipoclass cv`` run of the same spec on the same dataset
    (``confusion_from``), else computed here with ``confusion_folds``-fold cross-validation
    (the folds ``lipoclass cv --seed`` uses). ``confusion_folds=0`` (or a class with fewer
    members than folds) falls back to the validation split, which is thin for rare classes."""
    out = Path(out_dir)
    if out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / "model.json").is_file())
    ):
        raise LipoclassError(f"{out}: exists and is not a model folder; choose another --out")
    dataset.require_labels()
    spec = spec.for_dataset(dataset)  # input mode "auto" -> the concrete mode, stored below
    kind = "svm" if spec.model == "svm" else "cnn"
    classes = tuple(dataset.classes)
    c = len(classes)
    rng = np.random.default_rng(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.staging-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        info: dict[str, Any] = {
            "format_version": FORMAT_VERSION, "kind": kind, "model": spec.model,
            "classes": list(classes), "prep": asdict(spec.prep), "seed": int(seed),
            "versions": _versions(),
        }  # fmt: skip
        # the training set, so export can check onnxruntime on real particles (docs/deployment.md)
        info["dataset"] = {"path": str(dataset.root.resolve()),
                           "fingerprint": dataset_fingerprint(dataset)}  # fmt: skip
        if kind == "cnn":
            tcfg: TrainConfig = spec.train or TrainConfig()
            est = CNNEstimator(spec.model, spec.prep, tcfg, seed=seed)
            usable = np.flatnonzero(est.usable(dataset) & (dataset.labels >= 0))
            if len(usable) == 0:
                raise LipoclassError(
                    f"{dataset.root}: no labelled particles usable in mode '{spec.prep.mode}'"
                )
            # the estimator carves its validation split when early stopping; otherwise do it here
            if tcfg.early_stopping:
                est.fit(dataset, usable)
                prep = prepared_for(dataset, spec.prep)
                val_idx = prep.index[est.val_rows]
            else:
                tr, va = stratified_split(dataset.labels[usable], tcfg.val_fraction, rng)
                est.fit(dataset, usable[tr])
                val_idx = usable[va]
            assert est.model is not None and est.history is not None
            logits = est.decision_logits(dataset, val_idx) if len(val_idx) else np.zeros((0, c))
            yv = dataset.labels[val_idx]
            temp = fit_temperature(logits, yv)
            before, after = softmax(logits), softmax(logits, temp)
            info["train"] = tcfg.to_dict()
            info["model_kwargs"] = dict(est.model.lipo_config)  # type: ignore[arg-type]
            info["calibration"] = {"method": "temperature", "temperature": temp}
            info["history"] = est.history.to_dict()
            torch.save({"state_dict": est.model.state_dict(),
                        "model_kwargs": info["model_kwargs"]}, staging / "weights.pt")  # fmt: skip
            plot_history(est.history.epochs, est.history.best_epoch, staging / "training_curve.png")
        else:
            import joblib

            svm = spec.make_estimator(seed)
            usable = np.flatnonzero(svm.usable(dataset) & (dataset.labels >= 0))
            tr, va = stratified_split(dataset.labels[usable], 0.1 if spec.train is None
                                      else spec.train.val_fraction, rng)  # fmt: skip
            svm.fit(dataset, usable[tr])
            val_idx = usable[va]
            yv = dataset.labels[val_idx]
            before = after = (
                svm.predict_proba(dataset, val_idx) if len(val_idx) else np.zeros((0, c))
            )
            info["svm"] = spec.svm.to_dict() if hasattr(spec.svm, "to_dict") else (
                asdict(spec.svm) if spec.svm is not None else None)  # fmt: skip
            info["calibration"] = {"method": "sigmoid"}  # Platt scaling inside SVC
            joblib.dump(svm, staging / "svm.joblib")
        pred = after.argmax(1) if len(yv) else np.zeros(0, dtype=np.int64)
        info["review_threshold"] = review_threshold(after, yv)
        info["confusion"], info["confusion_source"] = _shares_confusion(
            dataset, spec, seed, confusion_folds, confusion_from, _confusion(yv, pred, c),
            info["dataset"]["fingerprint"],
        )  # fmt: skip
        info["held_out"] = {
            "n": len(yv),
            "ids": [dataset.particles[int(i)].id for i in val_idx],
        }
        info["ece_before"] = expected_calibration_error(before, yv)
        info["ece_after"] = expected_calibration_error(after, yv)
        if len(yv):
            plot_reliability(before, after, yv, staging / "reliability.png")
        (staging / "model.json").write_text(json.dumps(info, indent=2, default=_json_default))
        publish_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _shares_confusion(
    dataset: ParticleDataset,
    spec: Any,
    seed: int,
    folds: int,
    run: str | os.PathLike[str] | None,
    val_confusion: list[list[int]],
    fingerprint: str,
) -> tuple[list[list[int]], dict[str, Any]]:
    """Confusion matrix (C, C) of counts, rows = true, for adjusted class shares, and where
    it came from (see ``train_model``). ``fingerprint``: ``dataset_fingerprint(dataset)``."""
    if run is not None:
        return _confusion_from_run(Path(run), dataset, spec, fingerprint)
    n_val = int(np.sum(val_confusion))
    fallback = {"source": "validation split", "n": n_val}
    if folds < 2:
        return val_confusion, fallback
    from lipoclass.evaluate import CVConfig, cross_validate

    print(
        f"[train] {folds}-fold cross-validation for the confusion matrix behind adjusted "
        "class shares (--confusion-from RUN reuses a 'lipoclass cv' run)",
        file=sys.stderr,
    )
    try:  # cross_validate's fold check refuses a class with fewer members than folds
        res = cross_validate(dataset, spec, CVConfig(folds=folds, seed=seed), progress=True)
    except LipoclassError as exc:
        print(f"[train] cross-validation not possible ({exc}): adjusted shares use the "
              f"validation split ({n_val} particles)", file=sys.stderr)  # fmt: skip
        return val_confusion, fallback
    cm = [[int(v) for v in row] for row in res.metrics["confusion"]]
    return cm, {"source": "cross-validation", "folds": folds, "seed": seed,
                "n": int(np.sum(cm))}  # fmt: skip


def _confusion_from_run(
    run: Path, dataset: ParticleDataset, spec: Any, fingerprint: str
) -> tuple[list[list[int]], dict[str, Any]]:
    """The summed out-of-fold confusion of a finished ``lipoclass cv`` run, after checking
    that it evaluated the same spec on the same dataset."""
    try:
        metrics = json.loads((run / "metrics.json").read_text())
        config = json.loads((run / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise LipoclassError(f"--confusion-from {run}: not a finished 'lipoclass cv' run "
                             f"({exc})") from None  # fmt: skip
    if list(metrics.get("classes", [])) != list(dataset.classes):
        raise LipoclassError(f"--confusion-from {run}: classes {metrics.get('classes')} differ "
                             f"from the dataset's {list(dataset.classes)}")  # fmt: skip
    fp = config.get("dataset", {}).get("fingerprint")
    if fp != fingerprint:
        raise LipoclassError(
            f"--confusion-from {run}: was run on another dataset (or one that "
            f"changed since): {config.get('dataset', {}).get('root')}"
        )
    mine = spec.to_dict()
    theirs = config.get("spec", {})
    for key in ("model", "prep", "train", "svm"):
        a, b = (
            json.dumps(mine.get(key), sort_keys=True),
            json.dumps(theirs.get(key), sort_keys=True),
        )
        if a != b:
            raise LipoclassError(f"--confusion-from {run}: its '{key}' settings differ from "
                                 f"this training's ({b} vs {a})")  # fmt: skip
    cm = [[int(v) for v in row] for row in metrics["confusion"]]
    return cm, {
        "source": "cross-validation",
        "run": str(run.resolve()),
        "folds": metrics.get("folds"),
        "seed": metrics.get("seed"),
        "n": int(np.sum(cm)),
    }


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    if isinstance(o, float) and not np.isfinite(o):
        return None
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@dataclass
class LoadedModel:
    """A model folder in memory. ``predict_proba`` applies the stored calibration."""

    path: Path
    info: dict[str, Any]
    classes: tuple[str, ...]
    prep: PrepConfig
    kind: str
    module: nn.Module | None = None
    estimator: Any = None
    # channels_last eval copy of ``module`` for CPU inference, with the key it was built for
    _cpu_module: tuple[tuple[int, int], nn.Module] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def temperature(self) -> float:
        cal = self.info.get("calibration") or {}
        return float(cal.get("temperature", 1.0)) if cal.get("method") == "temperature" else 1.0

    @property
    def needs_aux(self) -> bool:
        return bool(getattr(self.module, "needs_aux", False))

    def predict_proba_arrays(
        self, x: np.ndarray, aux: np.ndarray | None = None, batch_size: int = 1024,
        device: str | torch.device = "cpu",
    ) -> np.ndarray:  # fmt: skip
        """Calibrated probabilities (N, C) for prepared inputs x (N,1,S,S) float32 (and size
        features aux (N,K) for the hybrid model, from ``lipoclass.models.size_features``)."""
        if self.module is None:
            raise LipoclassError(f"{self.path}: predict_proba_arrays needs a CNN model folder")
        if self.needs_aux and aux is None:
            raise LipoclassError(
                f"{self.path}: model {self.info['model']} needs size features (aux)"
            )
        if len(x) == 0:
            return np.zeros((0, len(self.classes)))
        dev = torch.device(device)
        aux = aux if self.needs_aux else None
        if dev.type == "cpu":
            logits = cpu_logits(self._cpu_copy(), x, aux, batch_size)
        else:
            self.module.to(dev)
            logits = predict_logits(self.module, x, aux, dev, batch_size)
            self.module.cpu()
        return softmax(logits, self.temperature)

    def _cpu_copy(self) -> nn.Module:
        """The module in eval mode with channels_last weights (oneDNN then keeps activations
        in its blocked layout: ~1.7x faster on CPU), rebuilt when ``module`` or its weights
        change (in-place updates bump the parameters' version counters)."""
        assert self.module is not None
        params = list(self.module.parameters()) + list(self.module.buffers())
        key = (id(self.module), sum(int(t._version) for t in params))
        if self._cpu_module is None or self._cpu_module[0] != key:
            self._cpu_module = (key, cpu_eval_copy(self.module))
        return self._cpu_module[1]

    def predict_proba(
        self, dataset: ParticleDataset, idx: np.ndarray | None = None, batch_size: int = 1024,
        device: str | torch.device = "cpu",
    ) -> tuple[np.ndarray, list[str]]:  # fmt: skip
        """(probs (n, C), ids) for the particles of ``dataset`` (or positions ``idx``) that the
        input mode can use; particles ``prepare`` skips are left out of ``ids``."""
        if self.kind == "svm":
            ok = self.estimator.usable(dataset)
            pos = np.flatnonzero(ok) if idx is None else np.asarray(idx)[ok[np.asarray(idx)]]
            probs = (
                self.estimator.predict_proba(dataset, pos)
                if len(pos)
                else np.zeros((0, len(self.classes)))
            )
            return np.asarray(probs), [dataset.particles[int(i)].id for i in pos]
        prep = prepare(dataset, self.prep)
        rows = np.arange(len(prep.index)) if idx is None else _rows_keep(prep.index, idx)
        aux = size_features(prep.meta[rows]) if self.needs_aux else None
        probs = self.predict_proba_arrays(prep.x[rows], aux, batch_size, device)
        return probs, [prep.ids[int(r)] for r in rows]


def cpu_eval_copy(module: nn.Module) -> nn.Module:
    """An eval-mode CPU copy of ``module`` with channels_last weights (oneDNN then keeps
    activations in its blocked layout: ~1.7x faster on CPU); ``module`` is not changed."""
    m = copy.deepcopy(module).cpu().eval()
    return m.to(memory_format=torch.channels_last)  # type: ignore[call-overload,no-any-return]


def cpu_chunk(shape: tuple[int, ...], batch_size: int, chunk_pixels: int = CPU_CHUNK_PIXELS) -> int:
    """Particles per CPU inference chunk for inputs of ``shape`` (N,1,S,S): about
    ``chunk_pixels`` input pixels, so a chunk's activations stay in cache, at most
    ``batch_size``."""
    pixels = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return max(1, min(int(batch_size), int(chunk_pixels) // max(pixels, 1)))


def cpu_logits(
    model: nn.Module,
    x: np.ndarray,
    aux: np.ndarray | None,
    batch_size: int,
    chunk_pixels: int = CPU_CHUNK_PIXELS,
) -> np.ndarray:
    """Logits (N, C) float32 on CPU: x (N,1,S,S) is viewed (not copied) as a float32 tensor,
    fed in cache-sized chunks (``cpu_chunk``) as channels_last, and each chunk's logits are
    written into one preallocated output."""
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    at = None if aux is None else torch.from_numpy(np.ascontiguousarray(aux, dtype=np.float32))
    n = len(xt)
    chunk = cpu_chunk(tuple(xt.shape), batch_size, chunk_pixels)
    out: torch.Tensor | None = None
    with torch.inference_mode():
        for b0 in range(0, n, chunk):
            xb = xt[b0 : b0 + chunk]
            if xb.ndim == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)  # a view when 1 channel
            yb = model(xb) if at is None else model(xb, at[b0 : b0 + chunk])
            if out is None:
                out = torch.empty((n, *yb.shape[1:]), dtype=torch.float32)
            out[b0 : b0 + len(yb)] = yb
    if out is None:
        return np.zeros((0, 0), dtype=np.float32)
    return out.numpy()


def _rows_keep(index: np.ndarray, idx: np.ndarray) -> np.ndarray:
    lookup = {int(p): r for r, p in enumerate(index)}
    return np.array([lookup[int(i)] for i in np.asarray(idx) if int(i) in lookup], dtype=np.int64)


def load_model(path: str | os.PathLike[str]) -> LoadedModel:
    """Read a model folder written by ``train_model``; LipoclassError when it is incomplete or
    of another format version."""
    root = Path(path)
    mj = root / "model.json"
    if not mj.is_file():
        raise LipoclassError(f"{root}: not a model folder (no model.json)")
    try:
        info = json.loads(mj.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LipoclassError(f"{mj}: unreadable model.json ({exc})") from None
    if not isinstance(info, dict) or info.get("format_version") != FORMAT_VERSION:
        got = info.get("format_version") if isinstance(info, dict) else None
        raise LipoclassError(
            f"{mj}: format_version {got!r} is not supported (expected {FORMAT_VERSION})"
        )
    kind = info.get("kind")
    if kind not in _REQUIRED:
        raise LipoclassError(f"{mj}: kind {kind!r} is not 'cnn' or 'svm'")
    for name in _REQUIRED[kind]:
        if not (root / name).is_file():
            raise LipoclassError(f"{root}: incomplete model folder ({name} is missing)")
    for key in ("classes", "prep", "model"):
        if key not in info:
            raise LipoclassError(f"{mj}: '{key}' is missing")
    try:
        prep = PrepConfig(**info["prep"])
    except (TypeError, ValueError) as exc:
        raise LipoclassError(f"{mj}: bad 'prep' ({exc})") from None
    classes = tuple(info["classes"])
    if kind == "svm":
        import joblib

        est = joblib.load(root / "svm.joblib")
        return LoadedModel(root, info, classes, prep, kind, estimator=est)
    try:
        blob = torch.load(root / "weights.pt", map_location="cpu", weights_only=True)
        kw = dict(blob["model_kwargs"])
        module = create_model(kw.pop("name"), kw.pop("num_classes"), kw.pop("in_size"), **kw)
        module.load_state_dict(blob["state_dict"])
    except LipoclassError:
        raise
    except Exception as exc:
        raise LipoclassError(f"{root / 'weights.pt'}: cannot load weights ({exc})") from None
    module.eval()
    return LoadedModel(root, info, classes, prep, kind, module=module)
