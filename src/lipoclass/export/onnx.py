"""ONNX export of a CNN model folder and an onnxruntime runner that reads it back.

The exported graph maps prepared particles to *calibrated probabilities*: input ``input``
(B,1,S,S) float32 [+ ``aux`` (B,K) size features for ``lipnet_hybrid``] -> output
``probabilities`` (B,C) = the mean over the fold models (and the dihedral views when the model
folder has test-time augmentation on) of softmax(logits / T), with the model folder's
temperature T baked in: the whole cross-fitted ensemble is one graph.
Everything another runtime needs to reproduce the pipeline travels in ``metadata_props``
(JSON strings; see docs/deployment.md)."""

from __future__ import annotations

import json
import os
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lipoclass.data import PrepConfig
from lipoclass.errors import LipoclassError
from lipoclass.models.inference import DIHEDRAL, dihedral
from lipoclass.outputs import check_output_file

__all__ = [
    "META_KEYS",
    "OPSET",
    "ExportConfig",
    "OnnxModel",
    "ProbabilityModel",
    "export_onnx",
    "load_onnx",
]

OPSET = 17
#: metadata_props keys written by ``export_onnx`` (values are JSON)
META_KEYS = ("classes", "prep", "lipoclass_version", "model", "temperature",
             "review_threshold", "review", "members", "tta", "confusion", "inputs",
             "exported_from")  # fmt: skip


@dataclass(frozen=True)
class ExportConfig:
    """``tolerance``: max abs probability difference allowed between onnxruntime and PyTorch;
    ``n_check``: particles compared; ``seed`` picks them (or draws random inputs)."""

    tolerance: float = 1e-4
    n_check: int = 256
    seed: int = 0
    opset: int = OPSET

    def __post_init__(self) -> None:
        if not self.tolerance > 0:
            raise ValueError(f"tolerance must be positive, got {self.tolerance}")
        if int(self.n_check) < 1:
            raise ValueError(f"n_check must be at least 1, got {self.n_check}")
        if int(self.opset) < 17:
            raise ValueError(f"opset must be at least 17, got {self.opset}")


class ProbabilityModel(nn.Module):
    """A cross-fitted ensemble plus its calibration, as one graph: the mean over members m
    (and, with ``tta``, over the 8 flips/quarter turns g) of ``softmax(m(g(x)[, aux]) / T)``
    (B,C)."""

    def __init__(
        self, members: list[nn.Module] | nn.Module, temperature: float = 1.0, tta: bool = False
    ) -> None:
        super().__init__()
        mods = [members] if isinstance(members, nn.Module) else list(members)
        self.members = nn.ModuleList(mods)
        self.needs_aux = bool(getattr(mods[0], "needs_aux", False))
        self.tta = bool(tta)
        self.register_buffer("inv_t", torch.tensor(1.0 / float(temperature)))

    def forward(self, x: torch.Tensor, aux: torch.Tensor | None = None) -> torch.Tensor:
        views = [dihedral(x, k, f) for k, f in DIHEDRAL] if self.tta else [x]  # V x (B,1,S,S)
        total = torch.zeros(())
        for m in self.members:
            for v in views:
                logits = m(v) if not self.needs_aux else m(v, aux)  # (B,C)
                total = total + torch.softmax(logits * self.inv_t, dim=1)
        return total / (len(self.members) * len(views))  # (B,C)


def _recorded_dataset(info: dict[str, Any]) -> tuple[str | None, str | None]:
    """(path, fingerprint) of the training dataset that model.json records under ``dataset``
    (a dict written by ``lipoclass.crossfit.fit_model``, or a plain path string)."""
    rec = info.get("dataset") or info.get("train_dataset")
    if isinstance(rec, dict):
        path, fp = rec.get("path") or rec.get("root"), rec.get("fingerprint")
        return (str(path) if path else None), (str(fp) if fp else None)
    return (str(rec) if isinstance(rec, str | os.PathLike) else None), None


def _real_particles(
    ds: Any, prep: PrepConfig, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` prepared particles of ``ds`` drawn at random (particles ``prepare`` skips,
    e.g. empty masks, are replaced by others). Returns (x (n',1,S,S), meta (n',6))."""
    from lipoclass.data import prepare

    order = rng.permutation(len(ds))  # (N,)
    xs: list[np.ndarray] = []
    metas: list[np.ndarray] = []
    got = 0
    for b0 in range(0, len(order), n):
        if got >= n:
            break
        with warnings.catch_warnings():  # skipped particles are replaced, not reported
            warnings.simplefilter("ignore")
            p = prepare(ds.subset(np.sort(order[b0 : b0 + n])), prep, cache=False, workers=1)
        xs.append(p.x[: n - got])
        metas.append(p.meta[: n - got])
        got += len(xs[-1])
    if not got:
        return np.zeros((0, 1, prep.size, prep.size), np.float32), np.zeros((0, 6), np.float32)
    return np.concatenate(xs), np.concatenate(metas)


def _check_inputs(
    loaded: Any, cfg: ExportConfig, dataset: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Inputs for the onnxruntime-vs-PyTorch check: up to ``cfg.n_check`` real prepared
    particles of ``dataset`` (``--dataset``; LipoclassError when unusable) or else of the
    training dataset model.json records, when it still exists; otherwise seeded random inputs
    with a printed note. Returns (x (N,1,S,S), aux (N,K) | None, description)."""
    from lipoclass.data import load_dataset
    from lipoclass.data.prepare import dataset_fingerprint
    from lipoclass.models import AUX_FEATURES, size_features

    prep: PrepConfig = loaded.prep
    rng = np.random.default_rng(cfg.seed)
    if dataset is not None:
        try:
            ds = load_dataset(dataset)
        except LipoclassError as exc:  # "<folder>: what is wrong" -> name the option too
            raise LipoclassError(f"--dataset {exc}") from None
        x, meta = _real_particles(ds, prep, cfg.n_check, rng)
        if not len(x):
            raise LipoclassError(
                f"--dataset {dataset}: no particle can be prepared in mode '{prep.mode}'"
            )
        aux = size_features(meta) if loaded.needs_aux else None
        return x, aux, f"{len(x)} prepared particles of --dataset {ds.root}"
    path, fingerprint = _recorded_dataset(loaded.info)
    if path is None:
        note = "model.json records no training dataset"
    elif not (Path(path) / "particles.csv").is_file():
        note = f"training dataset {path} not found"
    else:
        try:
            ds = load_dataset(path)
            x, meta = _real_particles(ds, prep, cfg.n_check, rng)
            changed = fingerprint is not None and dataset_fingerprint(ds) != fingerprint
        except LipoclassError as exc:
            note = f"training dataset {path} unreadable ({exc})"
        else:
            if len(x):
                aux = size_features(meta) if loaded.needs_aux else None
                what = f"{len(x)} prepared particles of training dataset {path}"
                return x, aux, what + (" (changed since training)" if changed else "")
            note = f"no particle of training dataset {path} can be prepared"
    print(f"note: {note}; checking on random inputs instead (--dataset DATASET names real ones)")
    x = rng.standard_normal((cfg.n_check, 1, prep.size, prep.size)).astype(np.float32)
    aux = None
    if loaded.needs_aux:
        aux = rng.standard_normal((cfg.n_check, len(AUX_FEATURES))).astype(np.float32)
    return x, aux, f"{cfg.n_check} seeded random inputs"


def _metadata(loaded: Any, names: list[str], used: dict[str, Any] | None) -> dict[str, Any]:
    """The ``metadata_props`` of an exported model folder (values JSON-able)."""
    from lipoclass import __version__

    meta = {
        "classes": list(loaded.classes),
        "prep": {
            k: getattr(loaded.prep, k) for k in ("mode", "size", "aspect", "normalize", "nm_per_px")
        },
        "lipoclass_version": __version__,
        "model": loaded.info.get("model"),
        "temperature": loaded.temperature,
        "review_threshold": loaded.review_threshold,
        "review": loaded.info.get("review"),
        "members": loaded.n_members,
        "tta": loaded.tta,
        "confusion": loaded.info.get("confusion"),
        "inputs": names,
    }
    if used is not None:  # the file is one candidate of a stack folder: say which
        meta["exported_from"] = used
    return meta


def export_onnx(
    model_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: ExportConfig | None = None,
    dataset: str | os.PathLike[str] | None = None,
) -> Path:
    """Export a CNN model folder to ONNX (opset >= 17, dynamic batch axis, calibrated softmax
    output, metadata), check it with ``onnx.checker`` and against PyTorch with onnxruntime on
    real prepared particles (of ``dataset``, else of the training dataset model.json records,
    else random inputs with a printed note).

    Prints which inputs were used and the max abs difference; raises ``LipoclassError`` (and
    leaves no file) when it exceeds ``tolerance``. A stack folder (``--recipe auto``) exports
    its best CNN candidate, with a printed line and ``exported_from`` in the metadata (both
    out-of-fold macro-F1). SVM folders are not supported."""
    import onnx

    from lipoclass import __version__
    from lipoclass.ensemble import load_model

    cfg = config or ExportConfig()
    hint = "use 'lipoclass predict' with the model folder instead"
    # a stack folder (--recipe auto): its best CNN base, said and recorded (docs/deployment.md)
    loaded, used = load_model(model_dir).network_model(
        "ONNX export", "not in the file (its features are computed in Python)", hint
    )
    if used is not None:
        print(f"note: {used['note']}; the exported file is that candidate, not the folder")
    nets = loaded.networks("ONNX export", hint)
    dest = Path(out)
    if dest.is_dir():
        raise LipoclassError(f"{dest}: is a folder; give a file name such as model.onnx")
    check_output_file(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ProbabilityModel(nets, loaded.temperature, loaded.tta).eval()
    x, aux, what = _check_inputs(loaded, cfg, dataset)
    size = loaded.prep.size
    dummy: tuple[torch.Tensor, ...] = (torch.zeros(2, 1, size, size),)
    names = ["input"]
    if wrapper.needs_aux:
        dummy += (torch.zeros(2, aux.shape[1] if aux is not None else 5),)
        names.append("aux")
    tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with torch.no_grad():
            torch.onnx.export(
                wrapper, dummy, str(tmp), input_names=names, output_names=["probabilities"],
                dynamic_axes={**{n: {0: "batch"} for n in names}, "probabilities": {0: "batch"}},
                opset_version=cfg.opset, dynamo=False, do_constant_folding=True,
            )  # fmt: skip
        proto = onnx.load(str(tmp))
        meta = _metadata(loaded, names, used)
        onnx.helper.set_model_props(proto, {k: json.dumps(v) for k, v in meta.items()})
        proto.doc_string = (
            f"lipoclass {__version__}: {loaded.n_members} x "
            f"{loaded.info.get('model')} -> mean probabilities"
        )
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        with torch.no_grad():
            ref = wrapper(
                torch.from_numpy(x), None if aux is None else torch.from_numpy(aux)
            ).numpy()
        got = load_onnx(tmp).predict_proba_arrays(x, aux)
        diff = float(np.abs(got - ref).max())
        print(f"onnxruntime vs PyTorch on {what}: max abs diff {diff:.2e}")
        if not diff <= cfg.tolerance:
            raise LipoclassError(
                f"{dest}: onnxruntime differs from PyTorch by {diff:.2e} > --tolerance "
                f"{cfg.tolerance:g}; nothing written"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"ONNX model: {dest}")
    return dest


@dataclass
class OnnxModel:
    """An exported model under onnxruntime: classes, prep and the rest of the metadata."""

    path: Path
    session: Any
    classes: tuple[str, ...]
    prep: PrepConfig
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def needs_aux(self) -> bool:
        return "aux" in self.meta.get("inputs", ["input"])

    @property
    def tta(self) -> bool:
        return bool(self.meta.get("tta", False))

    @property
    def review_threshold(self) -> float | None:
        v = self.meta.get("review_threshold")
        return None if v is None else float(v)

    @property
    def confusion(self) -> list[list[float]] | None:
        return self.meta.get("confusion")

    def predict_proba_arrays(
        self, x: np.ndarray, aux: np.ndarray | None = None, batch_size: int = 1024
    ) -> np.ndarray:
        """Calibrated probabilities (N, C) for prepared x (N,1,S,S) [+ aux (N,K)]."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        outs = []
        for b0 in range(0, len(x), batch_size):
            feed = {"input": x[b0 : b0 + batch_size]}
            if self.needs_aux:
                if aux is None:
                    raise LipoclassError(f"{self.path}: this model needs size features (aux)")
                feed["aux"] = np.ascontiguousarray(aux[b0 : b0 + batch_size], dtype=np.float32)
            outs.append(self.session.run(["probabilities"], feed)[0])
        if not outs:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return np.concatenate(outs)


def load_onnx(path: str | os.PathLike[str], threads: int | None = None) -> OnnxModel:
    """Open an ONNX file written by ``export_onnx``; LipoclassError when it is unreadable or
    lacks the lipoclass metadata."""
    import onnxruntime as ort

    p = Path(path)
    if not p.is_file():
        raise LipoclassError(f"{p}: ONNX file not found")
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
    try:
        sess = ort.InferenceSession(str(p), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise LipoclassError(f"{p}: not a readable ONNX model ({type(exc).__name__})") from None
    props = sess.get_modelmeta().custom_metadata_map
    missing = [k for k in ("classes", "prep") if k not in props]
    if missing:
        raise LipoclassError(
            f"{p}: ONNX metadata lacks '{missing[0]}' (not exported by 'lipoclass export')"
        )
    try:
        meta = {k: json.loads(v) for k, v in props.items() if k in META_KEYS}
        prep = PrepConfig(**meta["prep"])
    except (ValueError, TypeError) as exc:
        raise LipoclassError(f"{p}: bad lipoclass metadata ({exc})") from None
    return OnnxModel(p, sess, tuple(meta["classes"]), prep, meta)
