"""Evaluation: the estimator protocol, ``ModelSpec``/``build_spec``, stratified k-fold
cross-validation (``make_folds``, ``cross_validate`` -> ``CVResult``) and metrics."""

from lipoclass.evaluate import metrics
from lipoclass.evaluate.cv import CVConfig, CVResult, cross_validate, make_folds, score_folds
from lipoclass.evaluate.spec import (
    BALANCES_CNN,
    BALANCES_SVM,
    Estimator,
    ModelSpec,
    build_spec,
)

__all__ = [
    "BALANCES_CNN",
    "BALANCES_SVM",
    "CVConfig",
    "CVResult",
    "Estimator",
    "ModelSpec",
    "build_spec",
    "cross_validate",
    "make_folds",
    "metrics",
    "score_folds",
]
