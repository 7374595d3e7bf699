"""The posterior "classifier" QuaPy's quantifiers are fitted around (imported lazily: it
needs scikit-learn). Module level, so fitted quantifiers pickle (``quantifiers.pkl``)."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

__all__ = ["Posteriors"]


class Posteriors(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """An already "fitted" classifier whose input *is* its posteriors (n, C)."""

    def __init__(self, n_classes: int = 2) -> None:
        self.n_classes = n_classes
        self.classes_ = np.arange(n_classes)

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def fit(self, X: np.ndarray, y: np.ndarray) -> Posteriors:
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return X

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.argmax(X, axis=1)
