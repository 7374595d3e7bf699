"""Evaluation: stratified k-fold
cross-validation (``make_folds``, ``cross_validate`` -> ``CVResult``) and metrics.
``ModelSpec``/``build_spec``/``Estimator`` live in the neutral ``lipoclass.spec`` and are
re-exported here."""

from lipoclass import metrics
from lipoclass.evaluate.cv import CVConfig, CVResult, cross_validate, make_folds, score_folds
from lipoclass.evaluate.executors import EXECUTORS, ExecutorConfig, run_tasks
from lipoclass.spec import (
    BALANCES_CNN,
    BALANCES_SVM,
    Estimator,
    ModelSpec,
    build_spec,
)

__all__ = [
    "BALANCES_CNN",
    "BALANCES_SVM",
    "EXECUTORS",
    "CVConfig",
    "CVResult",
    "Estimator",
    "ExecutorConfig",
    "ModelSpec",
    "build_spec",
    "cross_validate",
    "make_folds",
    "metrics",
    "run_tasks",
    "score_folds",
]
