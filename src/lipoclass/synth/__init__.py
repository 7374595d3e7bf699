"""Synthetic liposome cryo-TEM crops (``lipoclass synth``): lamellarity and encapsulation
data sets with the thesis' class shares, masks, pixel sizes and micrograph ids; and whole
micrographs with instance label images (``synthesize_micrographs``)."""

from lipoclass.synth.generate import (
    DEFAULT_N,
    GENERATOR_VERSION,
    SynthConfig,
    class_counts,
    contact_sheet,
    parse_ratios,
    render_one,
    synthesize,
)
from lipoclass.synth.micrograph import (
    MICROGRAPH_FORMATS,
    MicrographConfig,
    render_micrograph,
    synthesize_micrographs,
)
from lipoclass.synth.render import SampleParams, draw_sample, render_particle
from lipoclass.synth.scenes import PROBLEMS, plan_particle

__all__ = [
    "DEFAULT_N",
    "GENERATOR_VERSION",
    "MICROGRAPH_FORMATS",
    "PROBLEMS",
    "MicrographConfig",
    "SampleParams",
    "SynthConfig",
    "class_counts",
    "contact_sheet",
    "draw_sample",
    "parse_ratios",
    "plan_particle",
    "render_micrograph",
    "render_one",
    "render_particle",
    "synthesize",
    "synthesize_micrographs",
]
