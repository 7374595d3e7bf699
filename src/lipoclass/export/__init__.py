"""ONNX export of CNN model folders (``export_onnx``) and an onnxruntime runner
(``load_onnx``) used by ``lipoclass predict --onnx``."""

from lipoclass.export.onnx import (
    META_KEYS,
    OPSET,
    ExportConfig,
    OnnxModel,
    ProbabilityModel,
    export_onnx,
    load_onnx,
)

__all__ = [
    "META_KEYS",
    "OPSET",
    "ExportConfig",
    "OnnxModel",
    "ProbabilityModel",
    "export_onnx",
    "load_onnx",
]
