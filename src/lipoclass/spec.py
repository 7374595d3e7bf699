"""What a cross-validation run evaluates: the estimator protocol, ``ModelSpec`` and
``build_spec`` (the CLI's model options turned into a validated spec). What differs between
model kinds (CNN, SVM, ...) lives in ``lipoclass.kinds``; nothing here tests a kind."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from lipoclass.choices import BALANCES_CNN, BALANCES_SVM
from lipoclass.data import ParticleDataset, PrepConfig

if TYPE_CHECKING:
    from lipoclass.kinds import Kind

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
    """One model configuration: ``model`` is a ``--model`` name of some kind
    (``lipoclass.kinds``: "svm" or a CNN registry name), ``config`` that kind's config
    (``TrainConfig`` for CNNs, ``SVMConfig`` for the SVM)."""

    model: str
    prep: PrepConfig
    config: Any

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model must be a non-empty name")
        want = self.kind.config_class()
        if not isinstance(self.config, want):
            raise ValueError(
                f"model {self.model!r} needs a {want.__name__}, got {type(self.config).__name__}"
            )

    @property
    def kind(self) -> Kind:
        """The model kind (``lipoclass.kinds``) that builds, saves and loads this model."""
        from lipoclass.kinds import kind_for_model

        return kind_for_model(self.model)

    def for_dataset(self, dataset: ParticleDataset) -> ModelSpec:
        """This spec with input mode ``auto`` resolved for ``dataset`` (``PrepConfig.resolve``),
        so run folders and model folders record the mode that was actually used."""
        prep = self.prep.resolve(dataset)
        if prep is self.prep:
            return self
        return replace(self, prep=prep)

    def with_config(self, **changes: Any) -> ModelSpec:
        """This spec with fields of its kind's config replaced (ValueError/TypeError when
        a field is unknown or a value invalid)."""
        return replace(self, config=replace(self.config, **changes))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (inverse: ``from_dict``); the config under its kind's key."""
        kind = self.kind
        prep = asdict(self.prep)
        if prep["nm_per_px"] is None:  # box resizing: the keys of earlier runs stay valid
            del prep["nm_per_px"]
        return {"model": self.model, "prep": prep,
                kind.config_key: kind.config_to_dict(self.config)}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        from lipoclass.kinds import kind_for_model

        kind = kind_for_model(str(d["model"]))
        return cls(d["model"], PrepConfig(**d["prep"]), kind.config_from_dict(d[kind.config_key]))

    def make_estimator(self, seed: int, classes: tuple[str, ...] = ()) -> Estimator:
        """A fresh, unfitted estimator of the model's kind."""
        return self.kind.make_estimator(self, seed, tuple(classes))


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
    """Validated ``ModelSpec`` from CLI-style options (bad names -> ``LipoclassError``);
    the model's kind (``lipoclass.kinds``) takes the options it uses.

    ``size=None`` uses the model's designed input size; ``balance=None`` the default of the
    model kind (oversample for CNNs as in thesis 8.1, class weights for the SVM as in 8.4).
    ``precision`` (CNN): auto (default: bf16 where the CPU computes it natively), fp32 or
    bf16 (``TrainConfig.precision``); the SVM ignores it.
    """
    from lipoclass.kinds import kind_for_model

    model = model.strip()
    kind = kind_for_model(model)
    options = {"mode": mode, "size": size, "epochs": epochs, "batch_size": batch_size,
               "optimizer": optimizer, "lr": lr, "balance": balance, "augment": augment,
               "device": device, "features": features, "precision": precision}  # fmt: skip
    prep, config = kind.build(model, options)
    return ModelSpec(model, prep, config)
