"""Prediction for new particles: calibrated probabilities, review flags and class shares per
sample (``lipoclass.quantify``: CC, PCC, ACC, PACC, EMQ with intervals)."""

from lipoclass.models.engine import CPUEngine, EngineConfig, usable_cores
from lipoclass.predict.core import (
    PredictConfig,
    PredictResult,
    model_quantifiers,
    predict,
    shares_table,
)
from lipoclass.predict.inputs import MASK_SUFFIX, image_folder_dataset, load_input
from lipoclass.predict.shares import (
    RECOMMENDED_WITHOUT_OOF,
    ShareConfig,
    ShareRow,
    class_shares,
    plot_shares,
    share_columns,
    write_shares,
)

__all__ = [
    "MASK_SUFFIX",
    "RECOMMENDED_WITHOUT_OOF",
    "CPUEngine",
    "EngineConfig",
    "PredictConfig",
    "PredictResult",
    "ShareConfig",
    "ShareRow",
    "class_shares",
    "image_folder_dataset",
    "load_input",
    "model_quantifiers",
    "plot_shares",
    "predict",
    "share_columns",
    "shares_table",
    "usable_cores",
    "write_shares",
]
