"""ONNX export of CNN model folders (``export_onnx``) and an onnxruntime runner
(``load_onnx``) used by ``lipoclass predict --onnx``. The public names are those of
``lipoclass.export.onnx`` (listed once, in its ``__all__``)."""

from lipoclass.export.onnx import *  # noqa: F403
from lipoclass.export.onnx import __all__ as __all__
