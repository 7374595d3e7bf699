"""Explanations of a CNN model folder: filters, activations, deconvolution / guided backprop /
Grad-CAM saliency and class-average maps, gathered in an HTML page."""

from lipoclass.explain.core import ExplainConfig, explain

__all__ = ["ExplainConfig", "explain"]
