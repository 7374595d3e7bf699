"""Reading a model folder (format version 2): the k fold models of one cross-validation
(cross-fitting), their out-of-fold calibration and the CV results, as written by
``lipoclass.crossfit.fit_model``.

A model's calibrated probability for a particle is the mean over its fold models of
``softmax(logits / T)`` (CNN, one temperature T fitted on all out-of-fold logits) or of the
fold SVMs' Platt-scaled probabilities, optionally averaged over the 8 flips/quarter turns of
the input as well (test-time augmentation, ``tta``). Loading needs no training code."""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lipoclass.data import ParticleDataset, PrepConfig, prepare
from lipoclass.errors import LipoclassError
from lipoclass.models import create_model, size_features
from lipoclass.models.inference import (
    DIHEDRAL,
    cpu_eval_copy,
    cpu_logits,
    dihedral,
    predict_logits,
    softmax,
)

__all__ = ["FORMAT_VERSION", "KINDS", "LoadedModel", "load_model", "member_file"]

FORMAT_VERSION = 2
KINDS = ("cnn", "svm")
_SUFFIX = {"cnn": ".pt", "svm": ".joblib"}


def member_file(kind: str, fold: int) -> str:
    """Path (relative to the model folder) of fold model ``fold``."""
    return f"members/fold{int(fold)}{_SUFFIX[kind]}"


def _tta_views(x: np.ndarray) -> list[np.ndarray]:
    """The 8 dihedral views of x (N,1,S,S) as contiguous float32 arrays."""
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return [dihedral(xt, k, f).contiguous().numpy() for k, f in DIHEDRAL]


@dataclass
class LoadedModel:
    """A model folder in memory: ``modules`` (CNN fold models, eval mode) or ``estimators``
    (fold SVMs), ``info`` (model.json). ``predict_proba*`` average the members' calibrated
    probabilities (and the dihedral views when ``tta``)."""

    path: Path
    info: dict[str, Any]
    classes: tuple[str, ...]
    prep: PrepConfig
    kind: str
    modules: list[nn.Module] = field(default_factory=list)
    estimators: list[Any] = field(default_factory=list)
    _cpu: list[nn.Module] = field(default_factory=list, init=False, repr=False, compare=False)

    @property
    def n_members(self) -> int:
        return len(self.modules) if self.kind == "cnn" else len(self.estimators)

    @property
    def module(self) -> nn.Module | None:
        """The first fold model (explain shows one network; they share one architecture)."""
        return self.modules[0] if self.modules else None

    @property
    def temperature(self) -> float:
        cal = self.info.get("calibration") or {}
        return float(cal.get("temperature", 1.0)) if cal.get("method") == "temperature" else 1.0

    @property
    def tta(self) -> bool:
        return bool(self.info.get("tta", False))

    @property
    def review_threshold(self) -> float | None:
        rv = self.info.get("review") or {}
        t = rv.get("threshold")
        return None if t is None else float(t)

    @property
    def needs_aux(self) -> bool:
        return bool(getattr(self.module, "needs_aux", False))

    def member_proba_arrays(
        self, x: np.ndarray, aux: np.ndarray | None = None, batch_size: int = 1024,
        device: str | torch.device = "cpu", tta: bool | None = None,
    ) -> np.ndarray:  # fmt: skip
        """Calibrated probabilities per member (K, N, C) for prepared x (N,1,S,S) float32
        (and size features aux (N,K') for the hybrid model)."""
        if self.kind != "cnn":
            raise LipoclassError(f"{self.path}: prepared arrays need a CNN model folder")
        if self.needs_aux and aux is None:
            raise LipoclassError(f"{self.path}: model {self.info['model']} needs size features")
        c = len(self.classes)
        if len(x) == 0:
            return np.zeros((self.n_members, 0, c))
        use_tta = self.tta if tta is None else bool(tta)
        views = _tta_views(x) if use_tta else [np.ascontiguousarray(x, dtype=np.float32)]
        aux = aux if self.needs_aux else None
        dev = torch.device(device)
        if dev.type == "cpu" and len(self._cpu) != len(self.modules):
            self._cpu = [cpu_eval_copy(m) for m in self.modules]
        out = np.zeros((self.n_members, len(x), c), dtype=np.float64)
        for k, module in enumerate(self.modules):
            for v in views:
                if dev.type == "cpu":
                    logits = cpu_logits(self._cpu[k], v, aux, batch_size)
                else:
                    module.to(dev)
                    logits = predict_logits(module, v, aux, dev, batch_size)
                    module.cpu()
                out[k] += softmax(logits, self.temperature)
        return out / len(views)

    def predict_proba_arrays(
        self, x: np.ndarray, aux: np.ndarray | None = None, batch_size: int = 1024,
        device: str | torch.device = "cpu", tta: bool | None = None,
    ) -> np.ndarray:  # fmt: skip
        """Ensemble probabilities (N, C): the mean of ``member_proba_arrays`` over members."""
        return self.member_proba_arrays(x, aux, batch_size, device, tta).mean(axis=0)

    def usable(self, dataset: ParticleDataset) -> np.ndarray:
        """(N,) bool: the particles this model can predict."""
        if self.kind == "svm":
            return np.asarray(self.estimators[0].usable(dataset), dtype=bool)
        ok = np.zeros(len(dataset), dtype=bool)
        ok[prepare(dataset, self.prep).index] = True
        return ok

    def predict_proba(
        self, dataset: ParticleDataset, idx: np.ndarray | None = None, batch_size: int = 1024,
        device: str | torch.device = "cpu", tta: bool | None = None,
    ) -> tuple[np.ndarray, list[str]]:  # fmt: skip
        """(probs (n, C), ids) for the particles of ``dataset`` (or positions ``idx``) that the
        model can use; the others are left out of ``ids``."""
        if self.kind == "svm":
            ok = self.usable(dataset)
            pos = np.flatnonzero(ok) if idx is None else np.asarray(idx)[ok[np.asarray(idx)]]
            probs = np.zeros((len(pos), len(self.classes)))
            if len(pos):
                probs = np.mean(
                    [np.asarray(e.predict_proba(dataset, pos)) for e in self.estimators], axis=0
                )
            return probs, [dataset.particles[int(i)].id for i in pos]
        prep = prepare(dataset, self.prep)
        rows = np.arange(len(prep.index)) if idx is None else _rows_keep(prep.index, idx)
        aux = size_features(prep.meta[rows]) if self.needs_aux else None
        probs = self.predict_proba_arrays(prep.x[rows], aux, batch_size, device, tta)
        return probs, [prep.ids[int(r)] for r in rows]

    def fallback_proba(
        self, dataset: ParticleDataset, idx: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, list[str], list[tuple[str, str]]]:
        """SVM fallback for particles without a feature row (docs/deployment.md, *Every
        particle counted*): their features computed without their own mask
        (``lipoclass.features.features_without_mask``: automatic mask, else centred disk) and
        predicted by the fold SVMs. Returns (probs (m, C), positions (m,), what was used per
        row, [(id, reason)] of those still without features). Only for computed feature sets
        (``vironova``, ``all``); precomputed features cannot be recomputed, so none."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        c = len(self.classes)
        cfg = self.estimators[0].config if self.kind == "svm" else None
        if cfg is None or cfg.features_csv is not None or cfg.features == "precomputed":
            return np.zeros((0, c)), np.zeros(0, dtype=np.int64), [], []
        from lipoclass.features import features_without_mask

        table, how = features_without_mask(dataset, idx)
        table = table.select(cfg.features)
        want = tuple(getattr(self.estimators[0], "feature_names", ()) or table.names)
        if tuple(table.names) != want:
            raise LipoclassError(f"{self.path}: the SVM's features differ from the fallback's")
        ok = np.isfinite(table.values).all(axis=1)  # (m,)
        failed = list(table.failed) + [
            (table.ids[r], "without its mask: non-finite feature value")
            for r in np.flatnonzero(~ok)
        ]  # fmt: skip
        X = table.values[ok]
        probs = np.zeros((len(X), c))
        if len(X):
            probs = np.mean([np.asarray(e.predict_proba_values(X)) for e in self.estimators],
                            axis=0)  # fmt: skip
        return probs, table.index[ok], [h for h, k in zip(how, ok) if k], failed

    def oof(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """The out-of-fold predictions the model was evaluated and calibrated on:
        (ids, fold (n,), label index (n,), calibrated probabilities (n, C))."""
        path = self.path / "oof.csv"
        try:
            with path.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
            lookup = {c: i for i, c in enumerate(self.classes)}
            ids = [r["id"] for r in rows]
            fold = np.array([int(r["fold"]) for r in rows], dtype=np.int64)
            y = np.array([lookup[r["label"]] for r in rows], dtype=np.int64)
            p = np.array([[float(r[f"p_{c}"]) for c in self.classes] for r in rows])
        except (OSError, KeyError, ValueError) as exc:
            raise LipoclassError(f"{path}: unreadable out-of-fold table ({exc})") from None
        p = p.reshape(len(rows), len(self.classes))
        if self.kind == "cnn" and self.temperature != 1.0:
            p = softmax(np.log(np.clip(p, 1e-300, None)), self.temperature)
        return ids, fold, y, p


def _rows_keep(index: np.ndarray, idx: np.ndarray) -> np.ndarray:
    lookup = {int(p): r for r, p in enumerate(index)}
    return np.array([lookup[int(i)] for i in np.asarray(idx) if int(i) in lookup], dtype=np.int64)


def _bad(mj: Path, msg: str) -> LipoclassError:
    return LipoclassError(f"{mj}: {msg}")


def _load_cnn_member(
    root: Path, rel: str, info: dict[str, Any], prep: PrepConfig, n_classes: int
) -> nn.Module:
    """One fold network, checked against model.json (name, input size, class count)."""
    path = root / rel
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        kw = dict(blob["model_kwargs"])
        name, nc, size = kw.pop("name"), int(kw.pop("num_classes")), kw.pop("in_size")
    except Exception as exc:
        raise LipoclassError(f"{path}: cannot load weights ({exc})") from None
    mj = root / "model.json"
    if name != info["model"]:
        raise _bad(mj, f"'model' is {info['model']!r} but {rel} holds a {name!r} network")
    if nc != n_classes:
        raise _bad(mj, f"{n_classes} classes listed but {rel} has {nc} outputs")
    if size is not None and int(size) != int(prep.size):
        raise _bad(mj, f"prep size {prep.size} but {rel} was trained at {size} px")
    try:
        module = create_model(name, nc, size, **kw)
        module.load_state_dict(blob["state_dict"])
    except LipoclassError:
        raise
    except Exception as exc:
        raise LipoclassError(f"{path}: cannot load weights ({exc})") from None
    return module.eval()


def _check_info(mj: Path, info: Any) -> None:
    if not isinstance(info, dict):
        raise _bad(mj, "not a JSON object")
    version = info.get("format_version")
    if version == 1:
        raise _bad(mj, "a version-1 model folder (one model plus a validation split); this "
                   "lipoclass needs version 2 (cross-fitted fold models): retrain it with "
                   "'lipoclass train'")  # fmt: skip
    if version != FORMAT_VERSION:
        raise _bad(mj, f"format_version {version!r} is not supported (expected {FORMAT_VERSION})")
    if info.get("kind") not in KINDS:
        raise _bad(mj, f"kind {info.get('kind')!r} is not 'cnn' or 'svm'")
    for key in ("classes", "prep", "model", "members"):
        if key not in info:
            raise _bad(mj, f"'{key}' is missing")
    classes = info["classes"]
    if not isinstance(classes, list) or len(classes) < 2 or len(set(classes)) != len(classes):
        raise _bad(mj, f"'classes' must list 2 or more distinct names, got {classes!r}")
    members = info["members"]
    if not isinstance(members, list) or not members:
        raise _bad(mj, "'members' must list the fold model files")
    cal = info.get("calibration") or {}
    if cal.get("method") == "temperature":
        t = cal.get("temperature")
        if not isinstance(t, int | float) or not math.isfinite(t) or not t > 0:
            raise _bad(mj, f"calibration temperature must be a positive number, got {t!r}")
    thr = (info.get("review") or {}).get("threshold")
    if thr is not None and (not isinstance(thr, int | float) or not 0 <= thr <= 1):
        raise _bad(mj, f"review threshold must be in [0, 1], got {thr!r}")


def load_model(path: str | os.PathLike[str]) -> LoadedModel:
    """Read and check a model folder; LipoclassError (one line) when it is incomplete, of
    another format version, or when model.json disagrees with the stored weights."""
    root = Path(path)
    mj = root / "model.json"
    if not mj.is_file():
        raise LipoclassError(f"{root}: not a model folder (no model.json)")
    try:
        info = json.loads(mj.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LipoclassError(f"{mj}: unreadable model.json ({exc})") from None
    _check_info(mj, info)
    kind = str(info["kind"])
    try:
        prep = PrepConfig(**info["prep"])
    except (TypeError, ValueError) as exc:
        raise _bad(mj, f"bad 'prep' ({exc})") from None
    classes = tuple(str(c) for c in info["classes"])
    for rel in info["members"]:
        if not (root / str(rel)).is_file():
            raise LipoclassError(f"{root}: incomplete model folder ({rel} is missing)")
    if kind == "svm":
        import joblib

        ests = []
        for rel in info["members"]:
            try:
                est = joblib.load(root / str(rel))
            except Exception as exc:
                raise LipoclassError(f"{root / rel}: cannot load the SVM ({exc})") from None
            got = tuple(getattr(est, "classes", ()))
            if got != classes:
                raise _bad(mj, f"classes {list(classes)} differ from {rel}'s {list(got)}")
            ests.append(est)
        return LoadedModel(root, info, classes, prep, kind, estimators=ests)
    mods = [_load_cnn_member(root, str(rel), info, prep, len(classes)) for rel in info["members"]]
    return LoadedModel(root, info, classes, prep, kind, modules=mods)
