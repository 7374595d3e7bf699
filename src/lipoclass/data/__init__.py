"""Particle datasets: the folder layout, validation, image I/O and model-input preparation."""

from lipoclass.data.dataset import (
    KNOWN_COLUMNS,
    DatasetWriter,
    Particle,
    ParticleDataset,
    check_folds,
    load_dataset,
    publish_folder,
)
from lipoclass.data.io import IMAGE_SUFFIXES, image_size, read_image, write_image
from lipoclass.data.prepare import (
    META_COLUMNS,
    MODES,
    Prepared,
    PrepConfig,
    auto_mask,
    default_cache_dir,
    prepare,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "KNOWN_COLUMNS",
    "META_COLUMNS",
    "MODES",
    "DatasetWriter",
    "Particle",
    "ParticleDataset",
    "PrepConfig",
    "Prepared",
    "auto_mask",
    "check_folds",
    "default_cache_dir",
    "image_size",
    "load_dataset",
    "prepare",
    "publish_folder",
    "read_image",
    "write_image",
]
