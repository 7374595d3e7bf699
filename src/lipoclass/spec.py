"""What a cross-validation run evaluates: the estimator protocol, ``ModelSpec`` and
``build_spec`` (the CLI's model options turned into a validated spec)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from lipoclass.choices import BALANCES_CNN, BALANCES_SVM, PRECISIONS
from lipoclass.data import ParticleDataset, PrepConfig
from lipoclass.errors import LipoclassError

if TYPE_CHECKING:
    from lipoclass.models.svm import SVMConfig
    from lipoclass.train import TrainConfig

__all__ = ["BALANCES_CNN", "BALANCES_SVM", "Estimator", "ModelSpec", "build_spec"]


@runtime_checkable
class Estimator(Protocol):
    """A model used through particle indices (positions into ``dataset.particles``).

    Optional extras the runner uses when present: ``unusable_reasons(dataset) -> {id:
    reason}``, ``fit_info() -> dict`` (stored in config.json) and ``importance(dataset, idx)
    -> (names, (F,) values)`` (permutation importance on a held-out fold).
    """

    classes: tuple[str, ...]

    def usable(self, dataset: Any) -> np.ndarray: ...  # (N,) bool

    def fit(self, dataset: Any, train_idx: np.ndarray) -> Estimator: ...

    def predict_proba(self, dataset: Any, idx: np.ndarray) -> np.ndarray: ...  # (len(idx), C)


@dataclass(frozen=True)
class ModelSpec:
    """One model configuration: ``model`` is "svm" or a CNN registry name; ``train`` is set
    for CNNs and ``svm`` for the SVM. ``classes`` is filled by the runner when needed."""

    model: str
    prep: PrepConfig
    train: TrainConfig | None = None
    svm: SVMConfig | None = None

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model must be a non-empty name")
        if self.model == "svm" and self.svm is None:
            raise ValueError("model 'svm' needs an SVMConfig (svm=...)")
        if self.model != "svm" and self.train is None:
            raise ValueError(f"CNN model {self.model!r} needs a TrainConfig (train=...)")

    @property
    def kind(self) -> str:
        return "svm" if self.model == "svm" else "cnn"

    def for_dataset(self, dataset: ParticleDataset) -> ModelSpec:
        """This spec with input mode ``auto`` resolved for ``dataset`` (``PrepConfig.resolve``),
        so run folders and model folders record the mode that was actually used."""
        prep = self.prep.resolve(dataset)
        if prep is self.prep:
            return self
        from dataclasses import replace

        return replace(self, prep=prep)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (inverse: ``from_dict``)."""
        from dataclasses import asdict

        return {
            "model": self.model,
            "prep": asdict(self.prep),
            "train": self.train.to_dict() if self.train is not None else None,
            "svm": self.svm.to_dict() if self.svm is not None else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        train = svm = None
        if d.get("train") is not None:
            from lipoclass.train import TrainConfig

            train = TrainConfig.from_dict(d["train"])
        if d.get("svm") is not None:
            from lipoclass.models.svm import SVMConfig

            svm = SVMConfig.from_dict(d["svm"])
        return cls(d["model"], PrepConfig(**d["prep"]), train, svm)

    def make_estimator(self, seed: int, classes: tuple[str, ...] = ()) -> Estimator:
        """A fresh, unfitted estimator (SVMEstimator or CNNEstimator)."""
        if self.model == "svm":
            from lipoclass.models.svm import SVMEstimator

            assert self.svm is not None
            return SVMEstimator(self.svm, seed, classes)
        from lipoclass.train import CNNEstimator

        assert self.train is not None
        est: Estimator = CNNEstimator(self.model, self.prep, self.train, seed)
        return est


def _cnn_names() -> list[str]:
    from lipoclass.models import list_models

    return list(list_models())


def build_spec(
    model: str,
    *,
    mode: str = "auto",
    size: int | None = None,
    epochs: int = 30,
    batch_size: int = 32,
    optimizer: str = "adam",
    lr: float | None = None,
    balance: str | None = None,
    augment: tuple[str, ...] | None = None,
    device: str = "auto",
    features: str = "vironova",
    precision: str = "auto",
) -> ModelSpec:
    """Validated ``ModelSpec`` from CLI-style options (bad names -> ``LipoclassError``).

    ``size=None`` uses the model's designed input size; ``balance=None`` the default of the
    model kind (oversample for CNNs as in thesis 8.1, class weights for the SVM as in 8.4).
    ``precision`` (CNN): auto (default: bf16 where the CPU computes it natively), fp32 or
    bf16 (``TrainConfig.precision``); the SVM ignores it.
    """
    model = model.strip()
    if model == "svm":
        from lipoclass.models.svm import SVMConfig

        bal = "weights" if balance is None else balance
        if bal not in BALANCES_SVM:
            raise LipoclassError(
                f"--balance {bal!r} is not valid for the SVM; choose from {', '.join(BALANCES_SVM)}"
            )
        try:
            svm = SVMConfig(features=features, balance=bal)  # type: ignore[arg-type]
            prep = PrepConfig(mode=mode, size=28 if size is None else size)  # type: ignore[arg-type]
        except ValueError as exc:
            raise LipoclassError(f"SVM options: {exc}") from None
        return ModelSpec("svm", prep, None, svm)

    names = _cnn_names()
    if model not in names:
        raise LipoclassError(
            f"--model {model!r} is unknown; choose from svm, {', '.join(sorted(names))}"
        )
    if precision not in PRECISIONS:
        raise LipoclassError(
            f"--precision {precision!r} is unknown; choose from {', '.join(PRECISIONS)}"
        )
    bal = "oversample" if balance is None else balance
    if bal not in BALANCES_CNN:
        raise LipoclassError(
            f"--balance {bal!r} is not valid for a CNN; choose from {', '.join(BALANCES_CNN)}"
        )
    from lipoclass.models import default_input_size
    from lipoclass.train import TrainConfig

    kw: dict[str, Any] = {}
    if augment is not None:
        kw["augment"] = tuple(augment)
    try:
        prep = PrepConfig(
            mode=mode,  # type: ignore[arg-type]
            size=int(default_input_size(model)) if size is None else size,
        )
        train = TrainConfig(
            epochs=epochs, batch_size=batch_size, optimizer=optimizer,  # type: ignore[arg-type]
            lr=lr, balance=bal, device=device, precision=precision,  # type: ignore[arg-type]
            **kw,
        )  # fmt: skip
    except ValueError as exc:
        raise LipoclassError(f"model options: {exc}") from None
    return ModelSpec(model, prep, train, None)
