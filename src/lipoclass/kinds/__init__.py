"""Model kinds behind one registry (docs/architecture.md, Model kinds): a ``Kind`` owns its
config class, making the estimator, saving and loading a fold member, calibration, the time
plan and the fallback for particles it cannot handle. Built-in kinds: ``cnn``, ``svm``
(imported lazily on first use)."""

from lipoclass.kinds.base import (
    Backend,
    Fallback,
    Kind,
    MemberRunner,
    get_kind,
    kind_for_model,
    kind_names,
    model_names,
    models_help,
    register_kind,
    unregister_kind,
)

__all__ = [
    "Backend",
    "Fallback",
    "Kind",
    "MemberRunner",
    "get_kind",
    "kind_for_model",
    "kind_names",
    "model_names",
    "models_help",
    "register_kind",
    "unregister_kind",
]
