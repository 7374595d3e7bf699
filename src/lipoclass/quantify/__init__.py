"""Class shares of a sample (quantification) with intervals, on top of QuaPy.

``fit_quantifiers(oof_proba, oof_labels, config)`` fits CC, PCC, ACC, PACC and EMQ on a
cross-fitted model's out-of-fold posteriors (no training); ``Quantifiers.estimate(test_proba)``
returns a :class:`ShareEstimate` with per-method shares and bootstrap intervals that account for
both the test sample and the finite calibration set.
"""

from lipoclass.quantify.audit import (
    AUDIT_QUEUE,
    NOT_A_PARTICLE,
    REVIEW_COLUMNS,
    REVIEW_SPECIAL,
    UNSURE,
    check_audit_file,
    draw_audit,
    read_audit,
)
from lipoclass.quantify.core import (
    DATASET_SHIFT_MICROGRAPHS,
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
from lipoclass.quantify.ppi import (
    MIN_AUDIT,
    PPIResult,
    labels_only_interval,
    ppi_mean,
    ppi_shares,
)
from lipoclass.quantify.select import (
    BOUND_METHOD,
    FALLBACK_METHOD,
    MAX_WIDTH,
    MethodSelection,
    SelectConfig,
    bounded_interval,
    class_rate_uncertainty,
    plot_selection,
    select_method,
)

__all__ = [
    "AUDIT_QUEUE",
    "BOUND_METHOD",
    "DATASET_SHIFT_MICROGRAPHS",
    "EMQ_CALIBRATIONS",
    "FALLBACK_METHOD",
    "MAX_WIDTH",
    "METHODS",
    "MIN_AUDIT",
    "MIN_GROUPS",
    "NOT_A_PARTICLE",
    "RESAMPLING_UNITS",
    "REVIEW_COLUMNS",
    "REVIEW_SPECIAL",
    "SAMPLING_METHODS",
    "UNSURE",
    "MethodSelection",
    "PPIResult",
    "QuantifierConfig",
    "Quantifiers",
    "SelectConfig",
    "ShareEstimate",
    "bounded_interval",
    "check_audit_file",
    "class_rate_uncertainty",
    "draw_audit",
    "fit_quantifiers",
    "labels_only_interval",
    "load_quantifiers",
    "plot_selection",
    "ppi_mean",
    "ppi_shares",
    "read_audit",
    "replicate_weights",
    "sampling_estimate",
    "save_quantifiers",
    "select_method",
]
