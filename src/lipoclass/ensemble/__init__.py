"""Model folders, read side: ``load_model`` -> ``LoadedModel`` (the cross-fitted fold models
of one cross-validation with their out-of-fold calibration, read by the folder's model kind)
and ``EnsemblePredictor``, the one ensemble inference (CPU, device or ONNX backend) that
predict, micrograph predict and explain use (docs/architecture.md). No training code."""

from lipoclass.ensemble.folder import (
    DEFAULT_SURROUND_PX,
    FORMAT_VERSION,
    LoadedModel,
    input_record,
    load_model,
    member_file,
)
from lipoclass.ensemble.predictor import EnsemblePredictor, PredictorConfig

__all__ = [
    "DEFAULT_SURROUND_PX",
    "FORMAT_VERSION",
    "EnsemblePredictor",
    "LoadedModel",
    "PredictorConfig",
    "input_record",
    "load_model",
    "member_file",
]
