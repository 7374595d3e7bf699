"""Handcrafted particle features (area, shape, moments, histogram, radial / edge density
profiles, membrane thickness and SNR, internal variance) for the SVM baseline; see
docs/features.md."""

from lipoclass.features.compute import (
    FeatureConfig,
    compute_features,
    feature_names,
    features_without_mask,
    particle_features,
)
from lipoclass.features.table import (
    FEATURE_SETS,
    FeatureTable,
    precomputed_table,
    vironova_names,
)

__all__ = [
    "FEATURE_SETS",
    "FeatureConfig",
    "FeatureTable",
    "compute_features",
    "feature_names",
    "features_without_mask",
    "particle_features",
    "precomputed_table",
    "vironova_names",
]
