"""CNN model registry (LipNet family of thesis section 7) and, in ``models.svm``, the SVM.

``create_model(name, num_classes, in_size=None, **kw)`` builds a registered network;
``list_models()`` names them; ``default_input_size(name)`` gives the designed input side."""

from lipoclass.models import lipnet as _lipnet  # noqa: F401  (registers the models)
from lipoclass.models.lipnet import AUX_FEATURES, size_features
from lipoclass.models.registry import (
    create_model,
    default_input_size,
    list_models,
    model_note,
    register_model,
)

__all__ = [
    "AUX_FEATURES",
    "create_model",
    "default_input_size",
    "list_models",
    "model_note",
    "register_model",
    "size_features",
]
