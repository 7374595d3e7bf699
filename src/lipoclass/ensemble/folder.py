"""Reading a model folder (format version 2): the k fold models of one cross-validation
(cross-fitting), their out-of-fold calibration and the CV results, as written by
``lipoclass.crossfit.fit_model``.

A model's calibrated probability for a particle is the mean over its fold models of their
calibrated probabilities (CNN: ``softmax(logits / T)`` with one temperature T fitted on all
out-of-fold logits; SVM: the fold SVMs' Platt-scaled probabilities), optionally averaged
over the 8 flips/quarter turns of the input as well (test-time augmentation, ``tta``). The
members are read by the folder's model kind (``lipoclass.kinds``) and run by the one
ensemble predictor (``lipoclass.ensemble.EnsemblePredictor``). Loading needs no training
code.

``model.json`` also holds the *input record* (``input``): everything that prepares an input
from a micrograph or crop (input mode, size, aspect, normalisation, the crop surroundings
``surround_px`` of the training crops, the training pixel size and whether inputs are
rescaled to it), so a model folder predicts the same without its training data."""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lipoclass.data import ParticleDataset, PrepConfig
from lipoclass.errors import LipoclassError
from lipoclass.kinds import Kind, get_kind, kind_names

if TYPE_CHECKING:
    from lipoclass.ensemble.predictor import EnsemblePredictor, PredictorConfig

__all__ = [
    "DEFAULT_SURROUND_PX",
    "FORMAT_VERSION",
    "LoadedModel",
    "input_record",
    "load_model",
    "member_file",
]

FORMAT_VERSION = 2
#: crop surroundings (px) assumed for a model whose training crops recorded none
DEFAULT_SURROUND_PX = 50


def member_file(kind: Kind, fold: int) -> str:
    """Path (relative to the model folder) of fold model ``fold`` of a ``kind`` model."""
    return f"members/fold{int(fold)}{kind.member_suffix}"


def input_record(dataset: ParticleDataset, prep: PrepConfig) -> dict[str, Any]:
    """model.json ``input``: how an input is prepared from a micrograph or crop. The
    preparation (``prep``), the crop surroundings of the training crops (``surround_px``,
    from the dataset.toml ``lipoclass crop`` writes; None when the crops came from
    elsewhere), the training pixel size (median over the particles, nm; None when unknown)
    with its range, and ``rescaled``: whether inputs are resampled to the common scale
    ``nm_per_px`` (part of ``prep``; the recipe's rescale rule) before they are cut to
    ``size`` px, so new data is put on the model's scale from its own pixel size; False:
    each particle is resized to ``size`` px from its own box, whatever the pixel size."""
    surround = (dataset.meta or {}).get("surround_px")
    px = np.array([p.pixel_size_nm for p in dataset.particles if p.pixel_size_nm is not None],
                  dtype=np.float64)  # fmt: skip
    return {
        **asdict(prep),
        "surround_px": None if surround is None else int(surround),
        "pixel_size_nm": float(np.median(px)) if len(px) else None,
        "pixel_size_range_nm": [float(px.min()), float(px.max())] if len(px) else None,
        "rescaled": prep.nm_per_px is not None,
    }


@dataclass
class LoadedModel:
    """A model folder in memory: its ``kind`` (``lipoclass.kinds.Kind``), ``members`` (the
    fold models as the kind loaded them) and ``info`` (model.json). ``predictor()`` runs the
    ensemble; ``predict_proba*`` are shortcuts on the CPU."""

    path: Path
    info: dict[str, Any]
    classes: tuple[str, ...]
    prep: PrepConfig
    kind: Kind
    members: list[Any] = field(default_factory=list)
    _predictors: dict[Any, Any] = field(default_factory=dict, init=False, repr=False,
                                        compare=False)  # fmt: skip

    @property
    def n_members(self) -> int:
        return len(self.members)

    @property
    def modules(self) -> list[Any]:
        """The members as torch modules ([] when the kind's members are not networks)."""
        return self.kind.networks(self.members)

    @property
    def module(self) -> Any:
        """The first fold network (explain shows one; they share one architecture) or None."""
        nets = self.modules
        return nets[0] if nets else None

    def networks(self, purpose: str, hint: str = "") -> list[Any]:
        """The member networks, or LipoclassError saying that ``purpose`` needs them."""
        nets = self.modules
        if not nets:
            raise LipoclassError(
                f"{self.path}: {purpose} supports CNN model folders only (this one is "
                f"'{self.kind.name}'){'; ' + hint if hint else ''}"
            )
        return nets

    def network_model(
        self, purpose: str, left_out: str, hint: str = ""
    ) -> tuple[LoadedModel, dict[str, Any] | None]:
        """The model folder whose networks ``purpose`` (explain, ONNX export) uses: this
        one when its members are networks (record None); for a folder that combines others
        (the ``stack`` of ``--recipe auto``), its best base with networks by out-of-fold
        macro-F1, and a record saying so (``note``: one line naming the base, both
        out-of-fold macro-F1 and, in ``left_out`` words, what the other bases lose; also
        ``folder``, ``folder_macro_f1``, ``used``, ``used_macro_f1``, ``without_networks``).
        LipoclassError when no base has networks."""
        if self.modules:
            return self, None
        bases = self.kind.bases(self.members)
        cnns = [b for b in bases if b.modules]
        if not cnns:
            self.networks(purpose, hint)  # raises: one line naming the folder's kind
        f1 = {str(r.get("name")): r.get("macro_f1")
              for r in (self.info.get("recipe") or {}).get("table", [])}  # fmt: skip
        for m in [self, *cnns]:
            if f1.get(_name(m)) is None:
                f1[_name(m)] = _oof_macro_f1(m)
        best = max(cnns, key=lambda b: float(f1[_name(b)]))
        others = [_name(b) for b in bases if not b.modules]
        rec: dict[str, Any] = {
            "folder": str(self.path),
            "folder_kind": self.kind.name,
            "folder_model": _name(self),
            "folder_macro_f1": round(float(f1[_name(self)]), 4),
            "used": best.path.relative_to(self.path).as_posix(),
            "used_macro_f1": round(float(f1[_name(best)]), 4),
            "without_networks": others,
        }
        rec["note"] = (
            f"{self.path} is a {self.kind.name} folder ({_name(self)} of "
            f"{', '.join(_name(b) for b in bases)}; out-of-fold macro-F1 "
            f"{rec['folder_macro_f1']:.3f}): {purpose} uses its best CNN base {rec['used']} "
            f"(out-of-fold macro-F1 {rec['used_macro_f1']:.3f})"
            + (f"; {', '.join(others)} {left_out}" if others else "")
        )
        return best, rec

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
        return self.kind.needs_aux(self.members)

    def surround_px(self) -> int:
        """Crop surroundings (px) the training crops had, from the input record. Fallbacks,
        each with a warning (docs/deployment.md, Model folders): a folder from before the
        input record reads the training dataset's dataset.toml if it is still there; else,
        and when the training crops recorded none, ``DEFAULT_SURROUND_PX``."""
        rec = self.info.get("input")
        if isinstance(rec, dict) and "surround_px" in rec:
            if rec["surround_px"] is not None:
                return int(rec["surround_px"])
            if self.prep.mode == "surround":
                warnings.warn(
                    f"{self.path}: the training crops recorded no surroundings (not made by "
                    f"'lipoclass crop'); cutting {DEFAULT_SURROUND_PX} px around each "
                    "particle box (set --surround to match the training crops)",
                    stacklevel=2,
                )
            return DEFAULT_SURROUND_PX
        path = (self.info.get("dataset") or {}).get("path")
        try:
            import tomllib

            meta = tomllib.loads((Path(str(path)) / "dataset.toml").read_text())
            got, where = int(meta["surround_px"]), f"the training dataset {path}"
        except Exception:
            got, where = DEFAULT_SURROUND_PX, f"the default (training dataset {path} unreadable)"
        if self.prep.mode == "surround":
            warnings.warn(
                f"{self.path}: model folder without an input record (made before lipoclass "
                f"recorded the crop surroundings); using {got} px from {where}. Retrain, or "
                "give --surround, so the model folder holds all it needs",
                stacklevel=2,
            )
        return got

    def predictor(self, config: PredictorConfig | None = None) -> EnsemblePredictor:
        """The ensemble predictor of this model (built once per config)."""
        from lipoclass.ensemble.predictor import EnsemblePredictor, PredictorConfig

        cfg = config or PredictorConfig(device="cpu")
        if cfg not in self._predictors:
            self._predictors[cfg] = EnsemblePredictor(self, config=cfg)
        return self._predictors[cfg]

    def _cpu(self, batch_size: int, device: Any, tta: bool | None) -> EnsemblePredictor:
        from lipoclass.ensemble.predictor import PredictorConfig

        dev = str(getattr(device, "type", device))  # a torch.device or its name
        return self.predictor(PredictorConfig(device=dev, batch_size=batch_size, tta=tta))

    def member_proba_arrays(
        self, x: np.ndarray, aux: np.ndarray | None = None, batch_size: int = 1024,
        device: Any = "cpu", tta: bool | None = None,
    ) -> np.ndarray:  # fmt: skip
        """Calibrated probabilities per member (K, N, C) for prepared x (N,1,S,S) float32
        (and size features aux (N,K') for the hybrid model)."""
        return self._cpu(batch_size, device, tta).member_proba_arrays(x, aux)

    def predict_proba_arrays(
        self, x: np.ndarray, aux: np.ndarray | None = None, batch_size: int = 1024,
        device: Any = "cpu", tta: bool | None = None,
    ) -> np.ndarray:  # fmt: skip
        """Ensemble probabilities (N, C): the mean over members (and views with TTA)."""
        return self._cpu(batch_size, device, tta).proba_arrays(x, aux)

    def member_proba(self, dataset: ParticleDataset, idx: np.ndarray) -> np.ndarray | None:
        """(K, len(idx), C): each fold member's calibrated probabilities for the particles at
        positions ``idx`` (CPU); None when one of them cannot be handled as given."""
        return self.predictor().member_proba_dataset(dataset, idx)

    def usable(self, dataset: ParticleDataset) -> np.ndarray:
        """(N,) bool: the particles this model can predict as given."""
        return self.kind.usable(self.members, dataset, self.prep)

    def predict_proba(
        self, dataset: ParticleDataset, idx: np.ndarray | None = None, batch_size: int = 1024,
        device: Any = "cpu", tta: bool | None = None,
    ) -> tuple[np.ndarray, list[str]]:  # fmt: skip
        """(probs (n, C), ids) for the particles of ``dataset`` (or positions ``idx``) that the
        model can use as given; the others are left out of ``ids``."""
        probs, index, _skipped = self._cpu(batch_size, device, tta).predict_dataset(dataset)
        if idx is not None:
            keep = np.isin(index, np.asarray(idx, dtype=np.int64))
            probs, index = probs[keep], index[keep]
        return probs, [dataset.particles[int(i)].id for i in index]

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
        return ids, fold, y, self.kind.calibrate_oof(p, self.info)


def _name(m: LoadedModel) -> str:
    """A model folder's name in its recipe table (a base: its folder name)."""
    return str(m.info.get("model")) if m.kind.bases(m.members) else m.path.name


def _oof_macro_f1(m: LoadedModel) -> float:
    """Pooled out-of-fold macro-F1 of a model folder (when no recipe table holds it)."""
    from lipoclass import metrics as M

    _ids, _fold, y, p = m.oof()
    return float(M.macro_f1(M.confusion_matrix(y, p.argmax(axis=1), len(m.classes))))


def _bad(mj: Path, msg: str) -> LipoclassError:
    return LipoclassError(f"{mj}: {msg}")


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
    if info.get("kind") not in kind_names():
        raise _bad(mj, f"kind {info.get('kind')!r} is not one of {', '.join(kind_names())}")
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
    kind = get_kind(str(info["kind"]))
    try:
        prep = PrepConfig(**info["prep"])
    except (TypeError, ValueError) as exc:
        raise _bad(mj, f"bad 'prep' ({exc})") from None
    classes = tuple(str(c) for c in info["classes"])
    for rel in info["members"]:
        if not (root / str(rel)).is_file():
            raise LipoclassError(f"{root}: incomplete model folder ({rel} is missing)")
    members = [kind.load_member(root / str(rel), info, prep, classes) for rel in info["members"]]
    return LoadedModel(root, info, classes, prep, kind, members)
