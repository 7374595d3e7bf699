"""The one ensemble inference of lipoclass: ``EnsemblePredictor``, used by ``predict``
(datasets and image folders), micrograph predict and explain.

A prediction is the mean over the model's fold members (and over the 8 dihedral views of
the input with test-time augmentation) of their calibrated probabilities. Backends:

- ``cpu``: each member's kind runs it on the CPU (CNN: the fast ``CPUEngine`` of
  ``lipoclass.models.engine``; threads from ``lipoclass.threads.pick_threads``);
- ``device``: a torch device (``cuda``) for kinds with networks;
- ``onnx``: an exported ONNX graph (``lipoclass.export.load_onnx``), which holds the whole
  ensemble and its TTA.

Which particles a kind predicts as given, and its fallback for the others, belong to the
kind (``lipoclass.kinds``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lipoclass.choices import DEVICES, INFERENCE_PRECISIONS
from lipoclass.errors import LipoclassError
from lipoclass.kinds.base import Backend, Fallback, MemberRunner, get_kind, kind_names

if TYPE_CHECKING:
    from lipoclass.data import ParticleDataset, Prepared, PrepConfig
    from lipoclass.ensemble.folder import LoadedModel

__all__ = ["EnsemblePredictor", "PredictorConfig"]


@dataclass(frozen=True)
class PredictorConfig:
    """``device``: auto (CUDA when available, else the CPU), cpu or cuda; ``batch_size``;
    ``precision`` of CPU inference ("fp32": what was evaluated, or "bf16"); ``threads``:
    CPU threads (None: ``pick_threads``, the cores other processes leave free); ``tta``:
    test-time augmentation (None: as the model folder says)."""

    device: str = "auto"
    batch_size: int = 1024
    precision: str = "fp32"
    threads: int | None = None
    tta: bool | None = None

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.precision not in INFERENCE_PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(INFERENCE_PRECISIONS)}, "
                f"got {self.precision!r}"
            )
        if self.threads is not None and int(self.threads) < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")


def _views(x: np.ndarray) -> list[np.ndarray]:
    """The 8 dihedral views of x (N,1,S,S) as contiguous float32 arrays."""
    import torch

    from lipoclass.models.inference import DIHEDRAL, dihedral

    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return [dihedral(xt, k, f).contiguous().numpy() for k, f in DIHEDRAL]


class EnsemblePredictor:
    """Calibrated ensemble probabilities of a model folder (``model``) or an exported ONNX
    graph (``onnx``; the model folder, when given too, supplies review rule and
    out-of-fold data). ``backend`` says what runs: "cpu", "device" or "onnx"."""

    def __init__(
        self,
        model: LoadedModel | None = None,
        *,
        onnx: Any = None,
        config: PredictorConfig | None = None,
    ) -> None:
        if model is None and onnx is None:
            raise ValueError("give a loaded model folder or an ONNX model")
        self.cfg = config or PredictorConfig()
        self.model = model
        self.onnx = onnx
        src: Any = onnx if onnx is not None else model
        self.classes: tuple[str, ...] = tuple(src.classes)
        self.prep: PrepConfig = src.prep
        self.needs_aux = bool(src.needs_aux)
        if onnx is not None:
            if self.cfg.tta is not None and bool(self.cfg.tta) != bool(onnx.tta):
                raise LipoclassError(
                    f"test-time augmentation is {'on' if onnx.tta else 'off'} inside the "
                    "exported graph; --tta/--no-tta cannot change it"
                )
            self.tta = bool(onnx.tta)
            self.backend = "onnx"
        else:
            assert model is not None
            self.tta = bool(model.tta) if self.cfg.tta is None else bool(self.cfg.tta)
            if self.tta and not model.kind.supports_tta:
                with_tta = [k for k in kind_names() if get_kind(k).supports_tta]
                raise LipoclassError(
                    f"--tta does not apply to {model.kind.name} models (only to "
                    f"{', '.join(with_tta)} models)"
                )
            self.backend = "cpu" if self.cfg.device == "cpu" else "device"
        self._runners: list[MemberRunner] | None = None

    # ------------------------------------------------------------------ prepared arrays

    def _backend(self) -> Backend:
        device = self.cfg.device
        if device != "cpu":
            from lipoclass.models.inference import resolve_device

            device = str(resolve_device(device))  # auto -> cuda or cpu
            self.backend = "cpu" if device == "cpu" else "device"
        return Backend(device, int(self.cfg.batch_size), self.cfg.precision, self.cfg.threads)

    def runners(self) -> list[MemberRunner]:
        """One calibrated-probability function per member (built once); the ONNX graph is
        one runner holding the whole ensemble. LipoclassError when the model's kind does
        not predict from prepared images (the SVM)."""
        if self._runners is None:
            if self.onnx is not None:
                onnx, bs = self.onnx, int(self.cfg.batch_size)
                self._runners = [lambda x, aux: onnx.predict_proba_arrays(x, aux, bs)]
            else:
                assert self.model is not None
                m = self.model
                self._runners = m.kind.runners(m.members, m.info, self._backend())
        return self._runners

    def _inputs(
        self, x: np.ndarray, aux: np.ndarray | None
    ) -> tuple[list[np.ndarray], np.ndarray | None]:
        if self.needs_aux and aux is None:
            raise LipoclassError("this model needs size features (aux) beside the images")
        views = _views(x) if self.tta and self.onnx is None else [x]
        return views, aux if self.needs_aux else None

    def member_proba_arrays(self, x: np.ndarray, aux: np.ndarray | None = None) -> np.ndarray:
        """(K, N, C) float64: each member's calibrated probabilities (mean over the views)
        for prepared x (N,1,S,S) float32 [+ size features aux (N,K')]."""
        runners = self.runners()
        out = np.zeros((len(runners), len(x), len(self.classes)), dtype=np.float64)
        if len(x) == 0:
            return out
        views, aux = self._inputs(x, aux)
        for k, run in enumerate(runners):
            for v in views:
                out[k] += run(v, aux)
        return out / len(views)

    def proba_arrays(self, x: np.ndarray, aux: np.ndarray | None = None) -> np.ndarray:
        """(N, C) float64: the mean over members and views of the calibrated probabilities."""
        runners = self.runners()
        total = np.zeros((len(x), len(self.classes)), dtype=np.float64)
        if len(x) == 0:
            return total
        views, aux = self._inputs(x, aux)
        for run in runners:
            for v in views:
                total += run(v, aux)
        return total / (len(runners) * len(views))

    def proba_prepared(self, prepared: Prepared | Any) -> np.ndarray:
        """(n, C) float64 for a ``Prepared`` (its size features computed when needed)."""
        if len(prepared.x) == 0:
            return np.zeros((0, len(self.classes)))
        aux = None
        if self.needs_aux:
            from lipoclass.models import size_features

            aux = size_features(prepared.meta)
        return self.proba_arrays(prepared.x, aux)

    def proba_meta(self, x: np.ndarray, meta: np.ndarray) -> np.ndarray:
        """(n, C) float64 for prepared x with ``META_COLUMNS`` rows ``meta`` (micrographs)."""
        if len(x) == 0:
            return np.zeros((0, len(self.classes)))
        aux = None
        if self.needs_aux:
            from lipoclass.models import size_features

            aux = size_features(meta)
        return self.proba_arrays(x, aux)

    def member_proba_meta(self, x: np.ndarray, meta: np.ndarray) -> np.ndarray:
        """(K, n, C) per member for prepared x with ``META_COLUMNS`` rows ``meta``."""
        aux = None
        if self.needs_aux and len(x):
            from lipoclass.models import size_features

            aux = size_features(meta)
        return self.member_proba_arrays(x, aux)

    # ------------------------------------------------------------------ datasets

    def member_proba_dataset(self, dataset: ParticleDataset, idx: np.ndarray) -> np.ndarray | None:
        """(K, len(idx), C) per fold member for the particles at ``idx`` of ``dataset`` (None
        when one cannot be handled as given, or for an ONNX graph: one member)."""
        if self.onnx is not None:
            return None
        assert self.model is not None
        m = self.model
        idx = np.asarray(idx, dtype=np.int64)
        return m.kind.member_proba_dataset(m.members, dataset, idx, self.prep,
                                           self.member_proba_meta)  # fmt: skip

    def predict_dataset(
        self, dataset: ParticleDataset
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
        """(probs (n, C) float64, positions (n,) in ``dataset.particles``, [(id, reason)] of
        the particles the model cannot handle as given)."""
        from lipoclass.kinds.base import predict_prepared

        if self.onnx is not None:
            probs, index, skipped = predict_prepared(dataset, self.prep, self.proba_prepared)
        else:
            assert self.model is not None
            m = self.model
            probs, index, skipped = m.kind.predict_dataset(
                m.members, dataset, self.prep, self.proba_prepared
            )
        return np.asarray(probs, dtype=np.float64), np.asarray(index, dtype=np.int64), skipped

    def fallback(self, dataset: ParticleDataset, idx: np.ndarray) -> Fallback:
        """The kind's documented fallback for the particles at ``idx`` (those
        ``predict_dataset`` skipped); ONNX: the automatic mask."""
        from lipoclass.kinds.base import auto_mask_fallback

        c = len(self.classes)
        if len(idx) == 0:
            return Fallback.none(c)
        if self.onnx is not None:
            return auto_mask_fallback(dataset, idx, self.prep, self.proba_prepared)
        assert self.model is not None
        m = self.model
        try:
            return m.kind.fallback(m.members, dataset, idx, self.prep, self.proba_prepared, c)
        except LipoclassError as exc:
            raise LipoclassError(f"{m.path}: {exc}") from None
