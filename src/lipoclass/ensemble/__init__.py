"""Model folders, read side: ``load_model`` -> ``LoadedModel``, the cross-fitted fold models
of one cross-validation with their out-of-fold calibration (docs/architecture.md). predict,
export and explain load models through here, with no training code."""

from lipoclass.ensemble.folder import FORMAT_VERSION, KINDS, LoadedModel, load_model, member_file

__all__ = ["FORMAT_VERSION", "KINDS", "LoadedModel", "load_model", "member_file"]
