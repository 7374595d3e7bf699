"""Prediction for new particles: calibrated probabilities, review flags and class shares per
sample (raw and adjusted classify-and-count with bootstrap intervals)."""

from lipoclass.predict.core import PredictConfig, PredictResult, predict, shares_table
from lipoclass.predict.engine import CPUEngine, EngineConfig, usable_cores
from lipoclass.predict.inputs import MASK_SUFFIX, image_folder_dataset, load_input
from lipoclass.predict.shares import (
    ShareConfig,
    ShareRow,
    adjusted_shares,
    class_shares,
    write_shares,
)

__all__ = [
    "MASK_SUFFIX",
    "CPUEngine",
    "EngineConfig",
    "PredictConfig",
    "PredictResult",
    "ShareConfig",
    "ShareRow",
    "adjusted_shares",
    "class_shares",
    "image_folder_dataset",
    "load_input",
    "predict",
    "shares_table",
    "usable_cores",
    "write_shares",
]
