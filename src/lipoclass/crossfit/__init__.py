"""Model folders, write side: ``fit_model`` cross-fits a spec (the k fold models of one
cross-validation), calibrates on the out-of-fold predictions and writes the folder that
``lipoclass.ensemble.load_model`` reads. Used by ``lipoclass cv`` and ``lipoclass train``."""

from lipoclass.crossfit.core import (
    REVIEW_TARGET,
    check_model_out,
    fit_model,
    resolve_folds,
    staging_folders,
)

__all__ = ["REVIEW_TARGET", "check_model_out", "fit_model", "resolve_folds", "staging_folders"]
