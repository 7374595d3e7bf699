"""Class shares of a sample (quantification) with intervals, on top of QuaPy.

``fit_quantifiers(oof_proba, oof_labels, config)`` fits CC, PCC, ACC, PACC and EMQ on a
cross-fitted model's out-of-fold posteriors (no training); ``Quantifiers.estimate(test_proba)``
returns a :class:`ShareEstimate` with per-method shares and bootstrap intervals that account for
both the test sample and the finite calibration set.
"""

from lipoclass.quantify.audit import (
    NOT_A_PARTICLE,
    REVIEW_COLUMNS,
    REVIEW_SPECIAL,
    UNSURE,
    draw_audit,
)
from lipoclass.quantify.core import (
    EMQ_CALIBRATIONS,
    METHODS,
    MIN_GROUPS,
    RESAMPLING_UNITS,
    SAMPLING_METHODS,
    QuantifierConfig,
    Quantifiers,
    ShareEstimate,
    fit_quantifiers,
    load_quantifiers,
    replicate_weights,
    sampling_estimate,
    save_quantifiers,
)

__all__ = [
    "EMQ_CALIBRATIONS",
    "METHODS",
    "MIN_GROUPS",
    "NOT_A_PARTICLE",
    "RESAMPLING_UNITS",
    "REVIEW_COLUMNS",
    "REVIEW_SPECIAL",
    "SAMPLING_METHODS",
    "UNSURE",
    "QuantifierConfig",
    "Quantifiers",
    "ShareEstimate",
    "draw_audit",
    "fit_quantifiers",
    "load_quantifiers",
    "replicate_weights",
    "sampling_estimate",
    "save_quantifiers",
]
