"""Particle datasets: the folder layout, validation, image I/O and model-input preparation."""

from lipoclass.data.dataset import (
    KNOWN_COLUMNS,
    DatasetWriter,
    Particle,
    ParticleDataset,
    check_folds,
    empty_class_messages,
    load_dataset,
    publish_folder,
    warn_empty_classes,
)
from lipoclass.data.io import IMAGE_SUFFIXES, image_size, read_image, write_image
from lipoclass.data.prepare import (
    META_COLUMNS,
    MODES,
    Prepared,
    PrepConfig,
    auto_mask,
    dataset_fingerprint,
    default_cache_dir,
    prepare,
)
from lipoclass.data.survey import Fingerprint, fingerprint

__all__ = [
    "IMAGE_SUFFIXES",
    "KNOWN_COLUMNS",
    "META_COLUMNS",
    "MODES",
    "DatasetWriter",
    "Fingerprint",
    "Particle",
    "ParticleDataset",
    "PrepConfig",
    "Prepared",
    "auto_mask",
    "check_folds",
    "dataset_fingerprint",
    "default_cache_dir",
    "empty_class_messages",
    "fingerprint",
    "image_size",
    "load_dataset",
    "prepare",
    "publish_folder",
    "read_image",
    "warn_empty_classes",
    "write_image",
]
