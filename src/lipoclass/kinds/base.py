"""The model-kind protocol and its registry.

A *kind* (CNN, SVM, ...) is the one place that knows how models of that kind are configured,
built, saved, loaded, calibrated, timed and predicted, and what happens to particles they
cannot handle. Everything else (``spec``, ``evaluate``, ``crossfit``, ``ensemble``,
``predict``, ``study``) goes through a ``Kind`` object and never tests a kind's name.

Kinds are registered by name; the built-in ones (``cnn``, ``svm``) are imported lazily on
first use, so loading a model folder imports only the kind it needs (and never training
code). A new kind subclasses ``Kind`` and calls ``register_kind(MyKind())``."""

from __future__ import annotations

import importlib
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lipoclass.errors import LipoclassError

if TYPE_CHECKING:
    from lipoclass.data import ParticleDataset, Prepared, PrepConfig
    from lipoclass.spec import Estimator, ModelSpec

__all__ = [
    "Backend",
    "Fallback",
    "Kind",
    "MemberRunner",
    "auto_mask_fallback",
    "get_kind",
    "kind_for_model",
    "kind_names",
    "model_names",
    "models_help",
    "predict_prepared",
    "register_kind",
    "unregister_kind",
]

#: a fold member ready to run on prepared arrays: (x (n,1,S,S) float32, aux (n,K) | None)
#: -> calibrated probabilities (n, C)
MemberRunner = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]


@dataclass(frozen=True)
class Backend:
    """Where prepared arrays are run: ``device`` ("cpu" or a torch device name such as
    "cuda"), ``batch_size``, CPU ``precision`` ("fp32" / "bf16") and CPU ``threads`` (None:
    the one rule of ``lipoclass.threads.pick_threads``)."""

    device: str = "cpu"
    batch_size: int = 1024
    precision: str = "fp32"
    threads: int | None = None


@dataclass
class Fallback:
    """What a kind's fallback did for particles it cannot handle as given: ``probs`` (m, C),
    ``index`` (m,) positions in the dataset, ``how`` (m,) what was used per row and
    ``failed`` [(id, reason)] of the particles still without a prediction."""

    probs: np.ndarray
    index: np.ndarray
    how: list[str]
    failed: list[tuple[str, str]]

    @classmethod
    def none(cls, n_classes: int) -> Fallback:
        return cls(np.zeros((0, n_classes)), np.zeros(0, dtype=np.int64), [], [])


class Kind(ABC):
    """One kind of model. Subclasses set ``name`` and ``member_suffix`` and implement the
    abstract methods; the defaults suit kinds whose members read prepared arrays
    (``lipoclass.data.prepare`` with the model's ``PrepConfig``)."""

    #: the kind's name, stored as ``kind`` in model.json
    name: str = ""
    #: file suffix of a saved fold member (members/fold<k><suffix>)
    member_suffix: str = ""
    #: key of the kind's config in ``ModelSpec.to_dict()`` (and in run folders' config.json)
    config_key: str = "config"
    #: whether test-time augmentation (the 8 dihedral views of the inputs) applies
    supports_tta: bool = False
    #: whether the members run on prepared arrays (``runners``); micrograph predict then
    #: prepares particles in memory. False (SVM, stack): the members measure a dataset, so
    #: micrograph predict writes each micrograph's crops as a temporary crop dataset (as
    #: ``lipoclass crop`` does) and predicts that
    reads_prepared: bool = True

    # ------------------------------------------------------------------ spec side

    @abstractmethod
    def model_names(self) -> tuple[str, ...]:
        """The ``--model`` names this kind builds."""

    def help_text(self) -> str:
        """This kind's part of the ``--model`` help: what its models are, and their names."""
        return f"a {self.name} model: {', '.join(self.model_names())}"

    def owns(self, model: str) -> bool:
        """Whether ``--model model`` is of this kind."""
        return model in self.model_names()

    @abstractmethod
    def config_class(self) -> type:
        """The kind's frozen config dataclass (validated with ValueError)."""

    def config_fields(self) -> set[str]:
        """Names a study may set on top of ``build`` (the config class's fields)."""
        return {f.name for f in fields(self.config_class())}

    def config_from_dict(self, d: dict[str, Any]) -> Any:
        cls: Any = self.config_class()
        return cls.from_dict(d) if hasattr(cls, "from_dict") else cls(**d)

    def config_to_dict(self, config: Any) -> dict[str, Any]:
        if hasattr(config, "to_dict"):
            return dict(config.to_dict())
        from dataclasses import asdict

        return asdict(config)

    @abstractmethod
    def build(self, model: str, options: dict[str, Any]) -> tuple[PrepConfig, Any]:
        """(PrepConfig, config) from CLI-style options (``lipoclass.spec.build_spec``); bad
        values -> LipoclassError. Options a kind does not use are ignored."""

    @abstractmethod
    def make_estimator(self, spec: ModelSpec, seed: int, classes: tuple[str, ...]) -> Estimator:
        """A fresh, unfitted estimator (``lipoclass.spec.Estimator``)."""

    def with_features_csv(self, config: Any, path: str) -> Any:
        """The config reading precomputed features from ``path`` (``--features-csv``)."""
        raise LipoclassError(f"--features-csv does not apply to {self.name} models")

    def wants_importance(self, config: Any) -> bool:
        """Whether cross-validation computes permutation importance for this config."""
        return False

    def describe_input(self, spec: ModelSpec) -> str | None:
        """One log line about the model input (None: nothing to say)."""
        return f"input mode: {spec.prep.mode}, {spec.prep.size} px"

    def plan(self, spec: ModelSpec, train_counts: Sequence[np.ndarray]) -> tuple[str, float]:
        """(what one fold does, e.g. " x 30 epochs", rough CPU seconds of all folds) for
        ``train_counts``: each fold's training part as class counts (C,)."""
        return "", 1e-4 * float(sum(int(c.sum()) for c in train_counts))

    # ------------------------------------------------------------------ model folder: write

    @abstractmethod
    def save_member(self, estimator: Any, path: Path) -> None:
        """Write one fitted fold estimator to ``path``."""

    def calibrate(self, raw: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Calibrated out-of-fold probabilities (n, C) and the model.json ``calibration``
        entry, fitted on out-of-fold probabilities ``raw`` (n, C) and labels ``y`` only."""
        return raw, {"method": "none"}

    def folder_info(self, models: dict[int, Any], staging: Path) -> dict[str, Any]:
        """Extra model.json entries (and extra files written into ``staging``)."""
        return {}

    # ------------------------------------------------------------------ model folder: read

    @abstractmethod
    def load_member(
        self, path: Path, info: dict[str, Any], prep: PrepConfig, classes: tuple[str, ...]
    ) -> Any:
        """One fold member from ``path``, checked against model.json (LipoclassError naming
        the file otherwise). Must not import training code."""

    def calibrate_oof(self, p: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """The stored (uncalibrated) out-of-fold probabilities with the model's calibration."""
        return p

    def needs_aux(self, members: Sequence[Any]) -> bool:
        """Whether the members take size features beside the prepared arrays."""
        return False

    def networks(self, members: Sequence[Any]) -> list[Any]:
        """The members as torch modules (export, explain); [] when they are not networks."""
        return []

    def bases(self, members: Sequence[Any]) -> list[Any]:
        """The model folders (``LoadedModel``) a combining kind (the stack) predicts
        through; [] for kinds whose members predict themselves."""
        return []

    def runners(
        self, members: Sequence[Any], info: dict[str, Any], backend: Backend
    ) -> list[MemberRunner]:
        """One calibrated-probability function per member for prepared arrays on
        ``backend``; LipoclassError when the kind does not read prepared arrays."""
        raise LipoclassError(f"a {self.name} model does not predict from prepared images")

    def usable(
        self, members: Sequence[Any], dataset: ParticleDataset, prep: PrepConfig
    ) -> np.ndarray:
        """(N,) bool: the particles the members can predict as given."""
        from lipoclass.data import prepare

        ok = np.zeros(len(dataset), dtype=bool)
        ok[prepare(dataset, prep).index] = True
        return ok

    def predict_dataset(
        self,
        members: Sequence[Any],
        dataset: ParticleDataset,
        prep: PrepConfig,
        proba_prepared: Callable[[Prepared], np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
        """(probs (n, C), positions (n,), [(id, reason)] skipped) for every particle of
        ``dataset``; the default prepares the images and runs ``proba_prepared``."""
        return predict_prepared(dataset, prep, proba_prepared)

    def member_proba_dataset(
        self,
        members: Sequence[Any],
        dataset: ParticleDataset,
        idx: np.ndarray,
        prep: PrepConfig,
        member_proba: Callable[[np.ndarray, np.ndarray], np.ndarray],
    ) -> np.ndarray | None:
        """(K, len(idx), C): each member's calibrated probabilities for the particles at
        ``idx``, or None when one of them cannot be handled as given. The default prepares
        the images and runs ``member_proba(x, meta)``."""
        from lipoclass.data import prepare

        prepared = prepare(dataset, prep)
        row_of = {int(p): r for r, p in enumerate(prepared.index)}
        if any(int(i) not in row_of for i in idx):
            return None
        rows = np.array([row_of[int(i)] for i in idx], dtype=np.int64)
        return member_proba(prepared.x[rows], prepared.meta[rows])

    def fallback(
        self,
        members: Sequence[Any],
        dataset: ParticleDataset,
        idx: np.ndarray,
        prep: PrepConfig,
        proba_prepared: Callable[[Prepared], np.ndarray],
        n_classes: int,
    ) -> Fallback:
        """The documented fallback (docs/deployment.md, *Every particle counted*) for the
        particles at ``idx`` that ``predict_dataset`` skipped. Default: prepare them on the
        automatic mask, as a particle without a mask file."""
        return auto_mask_fallback(dataset, idx, prep, proba_prepared)

    def __repr__(self) -> str:
        return f"<kind {self.name}>"


def predict_prepared(
    dataset: ParticleDataset, prep: PrepConfig, proba_prepared: Callable[[Prepared], np.ndarray]
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """Prepare every particle of ``dataset`` (no disk cache) and run ``proba_prepared``:
    (probs (n, C), positions (n,), [(id, reason)] skipped)."""
    from lipoclass.data import prepare

    with warnings.catch_warnings():  # predict names them itself, with the fallback used
        warnings.filterwarnings("ignore", r".*particle\(s\) skipped for mode")
        prepared = prepare(dataset, prep, cache=False)
    return proba_prepared(prepared), prepared.index, list(prepared.skipped)


def auto_mask_fallback(
    dataset: ParticleDataset,
    idx: np.ndarray,
    prep: PrepConfig,
    proba_prepared: Callable[[Prepared], np.ndarray],
) -> Fallback:
    """The particles at ``idx`` prepared on the automatic mask (as without a mask file)."""
    from lipoclass.data.prepare import prepare_without_masks

    prepared = prepare_without_masks(dataset, idx, prep)
    probs = proba_prepared(prepared)
    return Fallback(probs, prepared.index, ["automatic mask"] * len(prepared),
                    list(prepared.skipped))  # fmt: skip


# ---------------------------------------------------------------------- registry

#: built-in kinds, imported on first use: name -> "module:attribute"
_BUILTIN = {"cnn": "lipoclass.kinds.cnn:KIND", "svm": "lipoclass.kinds.svm:KIND",
            "stack": "lipoclass.kinds.stack:KIND"}  # fmt: skip
_KINDS: dict[str, Kind] = {}


def register_kind(kind: Kind, *, replace_existing: bool = False) -> Kind:
    """Add ``kind`` to the registry (ValueError when the name is taken)."""
    if not kind.name or not kind.member_suffix:
        raise ValueError("a kind needs a name and a member_suffix")
    if kind.name in _KINDS and not replace_existing:
        raise ValueError(f"kind {kind.name!r} is already registered")
    _KINDS[kind.name] = kind
    return kind


def unregister_kind(name: str) -> None:
    """Remove a registered kind (tests)."""
    _KINDS.pop(name, None)


def _load_builtin(name: str) -> None:
    if name in _KINDS or name not in _BUILTIN:
        return
    module, attr = _BUILTIN[name].split(":")
    kind = getattr(importlib.import_module(module), attr)
    _KINDS.setdefault(name, kind)


def kind_names() -> tuple[str, ...]:
    """Names of every kind (built-in first)."""
    return tuple(dict.fromkeys([*_BUILTIN, *_KINDS]))


def get_kind(name: str) -> Kind:
    """The kind called ``name`` (LipoclassError when unknown)."""
    _load_builtin(name)
    if name not in _KINDS:
        raise LipoclassError(
            f"model kind {name!r} is unknown; known kinds: {', '.join(kind_names())}"
        )
    return _KINDS[name]


def _all_kinds() -> list[Kind]:
    for name in _BUILTIN:
        _load_builtin(name)
    return [_KINDS[n] for n in kind_names() if n in _KINDS]


def kind_for_model(model: str) -> Kind:
    """The kind that builds ``--model model`` (LipoclassError naming the choices)."""
    for kind in _all_kinds():
        if kind.owns(model):
            return kind
    raise LipoclassError(f"--model {model!r} is unknown; choose from {', '.join(model_names())}")


def _kinds_by_size() -> list[Kind]:
    """Every kind, those with fewest model names first (the SVM before the CNNs)."""
    return sorted(_all_kinds(), key=lambda k: len(k.model_names()))


def model_names() -> tuple[str, ...]:
    """Every ``--model`` name of every kind (SVM first, then the CNNs sorted)."""
    return tuple(n for kind in _kinds_by_size() for n in sorted(kind.model_names()))


def models_help() -> str:
    """The ``--model`` help: each registered kind's ``help_text``, SVM first (kinds without
    ``--model`` names, such as ``stack``, are left out)."""
    return "; or ".join(kind.help_text() for kind in _kinds_by_size() if kind.model_names())
