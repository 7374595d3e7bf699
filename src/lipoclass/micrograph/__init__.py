"""Micrographs in, particle datasets out: reading MRC/TIFF/PNG/JPEG micrographs with their pixel
size, annotations (instance label images, COCO JSON, coordinate CSV, RELION/cryoSPARC STAR),
cropping each particle with its surroundings (``lipoclass crop``) and a classical liposome
detector (``lipoclass detect``), and prediction on whole micrographs (``lipoclass predict
MODEL MICROGRAPH...``; ``predict_micrographs``, imported lazily as it loads torch). See
docs/micrographs.md."""

from typing import Any

from lipoclass.micrograph.annotations import (
    ANNOTATION_KINDS,
    AnnotationSource,
    CocoSource,
    CoordinateSource,
    DetectSource,
    LabelImageSource,
    ParticleAnnotation,
    box_mask,
    decode_rle,
    encode_rle_string,
    instances_from_labels,
    read_class_table,
    read_sample_table,
)
from lipoclass.micrograph.crop import CropConfig, CropResult, crop_micrographs, crop_particle
from lipoclass.micrograph.detect import (
    DIAMETER_UNITS,
    DetectConfig,
    detect_micrograph,
    detect_particles,
)
from lipoclass.micrograph.io import (
    LABEL_SUFFIXES,
    MICROGRAPH_SUFFIXES,
    Micrograph,
    MicrographWarning,
    fill_nonfinite,
    read_label_image,
    read_micrograph,
    read_pixel_size,
    write_label_image,
)
from lipoclass.micrograph.match import InstanceMatch, match_instances, transfer_labels

__all__ = [
    "ANNOTATION_KINDS",
    "DIAMETER_UNITS",
    "LABEL_SUFFIXES",
    "MICROGRAPH_SUFFIXES",
    "AnnotationSource",
    "CocoSource",
    "CoordinateSource",
    "CropConfig",
    "CropResult",
    "DetectConfig",
    "DetectSource",
    "InstanceMatch",
    "LabelImageSource",
    "Micrograph",
    "MicrographPredictConfig",
    "MicrographPredictResult",
    "MicrographWarning",
    "ParticleAnnotation",
    "box_mask",
    "crop_micrographs",
    "crop_particle",
    "decode_rle",
    "detect_micrograph",
    "detect_particles",
    "encode_rle_string",
    "fill_nonfinite",
    "instances_from_labels",
    "match_instances",
    "predict_micrographs",
    "prepare_particles",
    "read_class_table",
    "read_label_image",
    "read_micrograph",
    "read_pixel_size",
    "read_sample_table",
    "transfer_labels",
    "write_label_image",
]

_LAZY = ("MicrographPredictConfig", "MicrographPredictResult", "predict_micrographs",
         "prepare_particles")  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from lipoclass.micrograph import predict

        return getattr(predict, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
