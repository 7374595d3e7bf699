"""lipoclass: classify particles in TEM / cryo-TEM images with CNNs and an SVM baseline.

Stages live in subpackages: ``data`` (particle datasets), ``synth`` (synthetic liposomes),
``features`` (handcrafted features), ``models`` (CNN registry and the SVM), ``train``,
``evaluate`` (cross-validation and metrics), ``study`` and ``report``, ``predict``,
``export`` (ONNX) and ``explain``.
"""

from __future__ import annotations

from lipoclass.errors import LipoclassError

__version__ = "0.1.0"

__all__ = ["LipoclassError", "__version__"]
