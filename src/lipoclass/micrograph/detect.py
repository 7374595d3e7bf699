"""Finding liposomes on a micrograph when nobody has annotated it: a classical candidate
finder plus a liposome verifier (docs/micrographs.md), writing instance label images (0
background, 1..K) and a table of every candidate with its liposome score.

0. **Working scale.** The micrograph is block-averaged by ``floor(min diameter px / 10)``,
   so that the smallest liposome of the diameter range is 10-20 px across, but never below
   512 px a side (a small micrograph keeps its detail: at 0.5 nm/px a 1024 px micrograph is
   worked at 1 nm/px, not 2); all of steps 1-4 run there and the outlines are drawn at full
   resolution at the end.
1. **Band-pass.** Gaussian smoothing at ``smooth`` px (shot noise) minus a Gaussian at 4x
   that scale (ice-thickness gradients, carbon, the low-frequency background), divided by a
   robust noise level (1.4826 x median absolute deviation): a z-score of local darkness.
   Membranes, seen edge-on at the rim of a vesicle, are the darkest thin structures.
2. **Ring filter bank (a circular Hough transform by convolution).** The z-score map (where
   the working scale block-averages, mixed with a membrane texture map: the spread of the
   full-resolution pixels within each working pixel, band-passed, weighted by how much
   structure it holds; then clipped at +-4 robust z, so that gold, ice and film edges do
   not dominate the responses; ``_ring_map``) is correlated with thin rings of every radius in the
   diameter range (5 % steps), computed in Fourier space (the transform of a ring of radius
   r is J0(2 pi k r), times a Gaussian for its width), one octave of radii at a time on a
   block-averaged map (radius >= 8 px there). Each radius' response is turned into a
   significance by its own robust noise level, so radii and octaves compare; a circle
   integrates the evidence along its whole circumference, which makes noisy, faint or broken
   membranes detectable. With ``ring_profile="measured"`` (not the default; seventeenth
   round), a second pass uses rings whose cross-section is the ring map's mean profile across
   the membranes of the first pass's strong candidates (``_measured_rings``).
3. **Candidates.** Local maxima of the best significance over radii above ``threshold``;
   taken in order of significance, a candidate is dropped when it overlaps an accepted one by
   more than touching and overlapping vesicles do (centre distance < 0.6 x radii sum) or lies
   inside it (inner shells of multilamellar vesicles, vesicles inside vesicles); a nearly
   concentric ring around an accepted one with at least 0.7 of its significance replaces it
   (the outer membrane is the particle's outline, even where an inner lamella rings stronger).
   Then the conflicts are weighed by the membrane evidence along the arcs (``_arc_replace``):
   a dropped ring, dark enough on its circle, replaces the stronger rings that dropped it
   when each draws most of its evidence from the dropped ring's membrane while the dropped
   ring keeps its own (a ring formed from part of a liposome's membrane and a neighbour's,
   or a small ring on its membrane, no longer wins on whole-ring significance).
4. **Local segmentation.** Each candidate's radius is refined per direction: along 48 rays
   the darkest point (membrane) within +-15 % of the radius is taken, the 48 radii are median
   filtered around the circle and the outline is put half a bilayer (2.3 nm) outside the
   membrane's centre line. A pixel inside several outlines goes to the one whose outline it
   is relatively deepest in, which splits pairs along the line between them.
5. **Verification.** Every candidate gets features (ring contrast against its interior and
   surroundings, interior darkness in the low-pass image, how evenly the ring goes round,
   outline irregularity, how much of its outline it keeps against its neighbours, one-sided
   steps such as film edges, the ring's strength against the micrograph's other candidates;
   ``FEATURES``) and a liposome score from a verifier
   (``lipoclass.micrograph.verify``; by default the one shipped with the package, trained on
   synthetic micrographs with distractors; its scores are shifted to the micrograph's own
   share of liposomes among its candidates where its verifier.json says so:
   ``Verifier.micrograph_scores``). Candidates scoring below the verifier's threshold are
   rejected with a reason; the accepted ones are segmented again without them.

Vesicles whose centre lies outside the image are not found. Assumes dark particles on a
lighter background (TEM bright field); ``invert=True`` for the opposite.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lipoclass.choices import (
    CANDIDATE_FINDERS,
    RING_CLIP,
    RING_NOISE,
    RING_PROFILES,
    RING_THRESHOLD,
)
from lipoclass.errors import LipoclassError
from lipoclass.micrograph.io import Micrograph, MicrographWarning

__all__ = [
    "CLASS_SHARE_COLUMNS",
    "DETECTION_COLUMNS",
    "DIAMETER_UNITS",
    "FEATURES",
    "FINDER_COMPARISON_COLUMNS",
    "SCORE_COLUMNS",
    "DetectConfig",
    "DetectResult",
    "Detections",
    "detect_candidates",
    "detect_micrograph",
    "detect_particles",
    "detect_to_folder",
    "detection_rows",
    "micrograph_bar",
    "overlay_png",
    "paint_outlines",
    "ring_detections",
]

DIAMETER_UNITS = ("nm", "px")
_N_RAYS = 48
_WORK_MIN_D = 10.0  # px: smallest liposome diameter at the working scale
#: the ring responses' noise rule (``DetectConfig.noise``): (``RING_NOISE`` value, clip)
Noise = tuple[str, float | None]
#: twenty-first round (``ring_noise``): a position of the block-averaged ring map is
#: saturated at ``_SATURATED`` x the clip; a radius' noise sample keeps the positions whose
#: ring stays more than ``_CLEAR_PX`` px (averaged map) from those, when they are at least
#: ``_CLEAR_MIN`` of the map (else the whole map); "solid" opens the saturated positions by a
#: ``_SOLID_PX`` square first (chosen on thirdsim exploratory candidates; docs)
_SATURATED = 0.975
_CLEAR_PX = 2.0
_CLEAR_MIN = 0.2
_SOLID_PX = 5
_RING_MIN_R = 5.0  # px: smallest ring radius on an octave's block-averaged map
_WORK_MIN_SIDE = 512  # px: the working image keeps at least this many px a side (0: no limit)
#: features at the working scale without that floor (thirteenth round; False: at the floor's)
_NATURAL_FEATURES = True


def _work_factor(dmin: float, shape: tuple[int, int], floor: bool = True) -> int:
    """Block-averaging factor of the working scale for a smallest diameter ``dmin`` (px);
    ``floor`` False: without the ``_WORK_MIN_SIDE`` floor (the scale of the features)."""
    f = max(1, int(dmin // _WORK_MIN_D))
    if _WORK_MIN_SIDE and floor:
        f = min(f, max(1, min(shape) // _WORK_MIN_SIDE))
    return f


@dataclass(frozen=True)
class DetectConfig:
    """Detector settings. Diameters in ``unit`` (nm needs the micrograph's pixel size);
    ``smooth``: noise smoothing sigma in px (None: 1.5 px, or 1.2 nm when the pixel size is
    known, clipped to 1-4 px, at the working scale); ``threshold``: significance (robust z)
    of a ring to become a candidate; ``verifier``: folder or JSON file of a verifier
    (``lipoclass detect-train``), ``"default"`` for the packaged one or ``"none"`` to accept
    every candidate; ``min_score``: liposome score below which a candidate is rejected (None:
    the verifier's own threshold); ``ring_profile``: the ring filter's cross-section
    (``RING_PROFILES``; "measured": ``_measured_rings``); ``ring_clip``: robust z at which
    the ring map is clipped before the ring filter bank (None: no clip; nineteenth round);
    ``ring_noise``: where each radius' response gets its noise scale (``RING_NOISE``;
    other than "all" needs the clip; twenty-first round); ``finder``: "ring" (the ring
    filter's candidates and the verifier) or "ring+learned" (also the learned finder's
    detections with heat >= ``finder_threshold`` that no accepted ring detection covers and
    that its solid-particle gate passes; ``CANDIDATE_FINDERS``; None threshold: the finder's
    own; twenty-second and twenty-third rounds)."""

    min_diameter: float = 20.0
    max_diameter: float = 300.0
    unit: str = "nm"
    smooth: float | None = None
    threshold: float = RING_THRESHOLD
    invert: bool = False
    verifier: str = "default"
    min_score: float | None = None
    ring_profile: str = "gaussian"
    ring_clip: float | None = RING_CLIP
    ring_noise: str = "all"
    finder: str = "ring"
    finder_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.ring_profile not in RING_PROFILES:
            raise ValueError(
                f"ring_profile must be one of {', '.join(RING_PROFILES)}, got {self.ring_profile!r}"
            )
        if self.unit not in DIAMETER_UNITS:
            raise ValueError(f"unit must be one of {', '.join(DIAMETER_UNITS)}, got {self.unit!r}")
        if not 0 < self.min_diameter < self.max_diameter:
            raise ValueError(
                f"need 0 < min diameter < max diameter, got {self.min_diameter}, "
                f"{self.max_diameter}"
            )
        if self.smooth is not None and not 0.3 <= self.smooth <= 20:
            raise ValueError(f"smooth must be 0.3..20 px, got {self.smooth}")
        if not 1.0 <= self.threshold <= 100:
            raise ValueError(f"threshold must be 1..100, got {self.threshold}")
        if self.min_score is not None and not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must be 0..1, got {self.min_score}")
        if self.ring_clip is not None and not 1.0 <= self.ring_clip <= 100:
            raise ValueError(f"ring_clip must be 1..100 robust z or None, got {self.ring_clip}")
        if self.ring_noise not in RING_NOISE:
            raise ValueError(
                f"ring_noise must be one of {', '.join(RING_NOISE)}, got {self.ring_noise!r}"
            )
        if self.ring_noise != "all" and self.ring_clip is None:
            raise ValueError(f"ring_noise {self.ring_noise!r} needs ring_clip (saturation)")
        if self.finder not in CANDIDATE_FINDERS:
            raise ValueError(
                f"finder must be one of {', '.join(CANDIDATE_FINDERS)}, got {self.finder!r}"
            )
        if self.finder_threshold is not None and not 0.0 < self.finder_threshold < 1.0:
            raise ValueError(f"finder_threshold must be in (0, 1), got {self.finder_threshold}")

    @property
    def noise(self) -> Noise:
        """The ring responses' noise rule: (``ring_noise``, the clip) (``_noise_sample``)."""
        return (self.ring_noise, self.ring_clip)

    def diameters_px(self, pixel_size_nm: float | None, where: str = "") -> tuple[float, float]:
        """(min, max) diameter in px for a micrograph of ``pixel_size_nm``."""
        if self.unit == "px":
            return self.min_diameter, self.max_diameter
        if pixel_size_nm is None:
            raise LipoclassError(
                f"{where or 'micrograph'}: pixel size unknown, so diameters in nm cannot be "
                f"converted; give --pixel-size NM or diameters in px (e.g. 16px)"
            )
        return self.min_diameter / pixel_size_nm, self.max_diameter / pixel_size_nm


#: fractions of the outline radius where the low-pass darkness profile is sampled (relative
#: to the surroundings at 1.6-2 r, in units of the membrane's darkness)
_PROFILE = (0.0, 0.3, 0.55, 0.75, 0.9, 1.15, 1.3)

#: candidate features the verifier sees (all scale-free: z units, fractions, ratios)
FEATURES = (
    "log_significance",  # log of the ring filter's robust z
    "rim_z",  # mean band-pass darkness on the refined membrane
    "rim_minus_inner",  # membrane darker than the interior (0-0.6 r)
    "rim_minus_outer",  # membrane darker than the surroundings (1.25-1.5 r)
    "rim_coverage",  # share of rays whose membrane point is clearly dark (z > 1)
    "rim_asymmetry",  # first angular harmonic of the membrane darkness / its mean
    "inner_dark",  # low-pass interior darkness against the surroundings, noise units
    "inner_rim_ratio",  # interior darkness / membrane darkness (solid blob ~1)
    "outer_step",  # first harmonic of the surroundings' low-pass darkness (film edge)
    "radius_jitter",  # spread of the per-ray radii before smoothing / radius
    "ellipticity",  # second angular harmonic of the outline radii / radius
    "kept_fraction",  # share of its own outline area it keeps against its neighbours
    "inner_texture",  # interior band-pass standard deviation
    "outer_texture",  # band-pass standard deviation of the surroundings (carbon, ice halos)
    "rim_peak",  # membrane darker than just inside and outside it (+-20 %): a thin ring
    "inner_step",  # first harmonic of the interior's low-pass darkness / membrane's (film edge)
    "rim_weakest_quarter",  # rim darkness of the weakest quarter of the circle / of the whole
    "rim_side_balance",  # band-pass just inside minus just outside the membrane (solid blob > 0)
    "rim_line",  # membrane darker than 2.5 smoothing sigmas either side of it (a thin line)
    *(f"profile_{round(q * 100)}" for q in _PROFILE),  # low-pass darkness at q x radius
    "sig_vs_micrograph",  # log significance minus the median over the micrograph's candidates
    "strong_share",  # share of the micrograph's candidates with significance >= _STRONG_SIG
    "sig_vs_strong",  # log significance minus the median over the micrograph's strong candidates
)
#: ring significance of a "strong" candidate for ``strong_share`` (the fixed rule sig >= 7 of
#: the benchmark table: precise where liposomes are many, so the share tells sparse or empty
#: micrographs, where a ring has to stand out more)
_STRONG_SIG = 7.0

#: twelfth round (docs/micrographs.md; an experiment, not shipped): when True,
#: ``detect_candidates`` appends the ``FULLRES_FEATURES`` columns (``_fullres_features``) to
#: ``FEATURES``' (only ``scripts/tune_detect_verifier.py --fullres`` sets it; the packaged
#: verifier takes ``FEATURES`` alone and refuses other widths)
_FULLRES = False
FULLRES_FEATURES = (
    "fr_dip",  # full-resolution membrane dip against 8-12 nm outside, noise units (48-ray mean)
    "fr_inside",  # interior 6-10 nm inside the membrane against outside / the dip (blob ~1)
    "fr_halo",  # 3-6 nm outside the membrane against 8-12 nm outside / the dip (light halo < 0)
    "fr_width",  # nm of the -10 ... +7 nm profile at least half the dip dark (thin membrane)
    "fr_dip_vs_strong",  # log fr_dip minus the median over the micrograph's strong candidates
)
#: nm from the membrane (negative: inside) where ``_fullres_features`` samples
_FR_OFFSETS = np.arange(-10.0, 12.5, 1.0)


@dataclass
class Detections:
    """Every candidate of one micrograph, at full resolution: centre (``cy``, ``cx``) px,
    ``radii`` (N, 48) outline radius per ray (px, ray k at angle 2 pi k / 48 from +x
    towards +y), ring ``significance`` (N,), ``features`` (N, F) (``FEATURES``), liposome
    ``score`` (N,) (NaN without a verifier), ``accepted`` (N,) bool, ``reason`` (N,) why a
    candidate was rejected ("" when accepted), ``instance`` (N,) its id in ``labels`` (0 when
    rejected or when it lost all its pixels), ``labels`` (H, W) int32 of the accepted and
    ``found_by`` (N,) "ring" or "learned" (the learned finder's: significance NaN, score its
    heat, features measured on its outline as for a ring candidate, rejected by its
    solid-particle gate)."""

    cy: np.ndarray
    cx: np.ndarray
    radii: np.ndarray
    significance: np.ndarray
    features: np.ndarray
    score: np.ndarray
    accepted: np.ndarray
    reason: list[str]
    instance: np.ndarray
    labels: np.ndarray
    found_by: list[str]

    def __len__(self) -> int:
        return len(self.cy)


def _sigma(cfg: DetectConfig, pixel_size_nm: float | None, factor: int) -> float:
    if cfg.smooth is not None:
        return cfg.smooth
    if pixel_size_nm is not None:
        return float(np.clip(1.2 / (pixel_size_nm * factor), 1.0, 4.0))
    return 1.5


def _bandpass(img: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(band-passed darkness z (H, W), low-pass darkness in the same noise units (H, W)),
    float32."""
    from scipy import ndimage as ndi

    low = ndi.gaussian_filter(img, sigma)
    band = ndi.gaussian_filter(low, math.sqrt(15.0) * sigma) - low  # = G(4 sigma) - G(sigma)
    med = float(np.median(band[::2, ::2]))
    mad = float(np.median(np.abs(band[::2, ::2] - med))) * 1.4826
    if not mad > 0:
        return np.zeros_like(band), np.zeros_like(band)
    band -= med
    band /= mad
    low /= -mad
    return band, low


#: the membrane texture map in the ring filter's input (step 2; tenth round,
#: docs/micrographs.md): its weight is ``_TEXTURE_WEIGHT`` times a ramp from 0 to 1 as the
#: share of the map above 3 z goes from ``_TEXTURE_TAIL[0]`` to ``_TEXTURE_TAIL[1]`` (noise
#: alone: 0.0013; our simulator's micrographs 0.003-0.008, its low-noise ones up to 0.03;
#: altsim's 0.009-0.09). Chosen on the tuning (3000+) and altsim check (7000+) micrographs.
_TEXTURE_WEIGHT = 0.5
_TEXTURE_TAIL = (0.005, 0.02)


def _ring_map(
    image: np.ndarray,
    work: np.ndarray,
    z: np.ndarray,
    factor: int,
    clip: float | None = RING_CLIP,
) -> np.ndarray:
    """The map the ring filter bank correlates (step 2): the darkness z-score ``z`` (H, W) of
    the working scale (block means ``work``, sign as in ``_working``), mixed, where the
    working scale block-averages (``factor`` >= 2), with the membrane texture map: the
    standard deviation of the full-resolution pixels of ``image`` within each working pixel,
    band-passed at 1 px and robust-z scaled as in step 1. At <= 1 nm/px a phase-contrast
    membrane is thin dark and bright lines (two leaflets, a Fresnel fringe) that the block
    average and the band-pass cancel; their spread within a block survives. The texture
    map's weight grows with its share of pixels above 3 z (``_TEXTURE_TAIL``), so where it
    holds no structure (noise only, or a membrane drawn as one wide dark band) it adds no
    noise. Clipped to +-``clip`` robust z (``RING_CLIP``). float32 (H, W)."""
    return _mix_texture(z, _texture_map(image, work, factor), clip)


def _texture_map(
    image: np.ndarray, work: np.ndarray, factor: int
) -> tuple[float, np.ndarray] | None:
    """(weight, texture map (H, W) float32) of ``_ring_map``, or None where it adds nothing.
    It does not need step 1's band-pass, so ``detect_candidates`` runs it beside that."""
    if factor < 2 or _TEXTURE_WEIGHT <= 0:
        return None
    img = np.asarray(image, dtype=np.float32)
    hh, ww = work.shape
    b = img[: hh * factor, : ww * factor].reshape(hh * factor, ww, factor)
    var = np.einsum("ijk,ijk->ij", b, b).reshape(hh, factor, ww).sum(axis=1)
    var *= np.float32(1.0 / (factor * factor))
    var -= np.square(work)
    np.maximum(var, 0.0, out=var)
    tex, _ = _bandpass(-np.sqrt(var), 1.0)  # texture higher than around: positive
    lo, hi = _TEXTURE_TAIL
    tail = float(np.count_nonzero(tex[::2, ::2] > 3.0)) / tex[::2, ::2].size
    a = _TEXTURE_WEIGHT * min(max((tail - lo) / (hi - lo), 0.0), 1.0)
    return (a, tex) if a > 0 else None


def _mix_texture(
    z: np.ndarray, texture: tuple[float, np.ndarray] | None, clip: float | None = RING_CLIP
) -> np.ndarray:
    """The ring map: ``z`` mixed with ``_texture_map``'s weighted texture map, clipped to
    +-``clip`` robust z (``RING_CLIP``; a new array: ``z`` itself is left as it is)."""
    zr = z if texture is None else (1.0 - texture[0]) * z + texture[0] * texture[1]
    if clip is None:
        return zr
    return np.clip(zr, -clip, clip, dtype=np.float32)


def _threads() -> int:
    """Threads for the ring filter bank: the usable cores (at most 4), or OMP_NUM_THREADS
    when it is set lower."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        n = min(n, int(env))
    return max(1, min(4, n))


def _ring_kernel(kgrid: np.ndarray, f: int, profile: np.ndarray | None) -> Any:
    """Function of a radius ro (px of an octave's map, block-averaged by ``f``) giving the
    ring's radial Fourier transform on ``kgrid`` (cycles / px), float32: the thin ring
    (Gaussian cross-section of sigma 0.8 px), or with ``profile`` (values at
    ``_PROFILE_OFFSETS`` working px from the membrane) rings of that cross-section,
    box-averaged by ``f``, on a half-px grid of the octave, each weighted by its
    circumference and smoothed by a Gaussian of 0.5 px."""
    from scipy import ndimage as ndi
    from scipy import special

    if profile is None:
        width = np.exp(-2.0 * np.pi**2 * 0.8**2 * kgrid * kgrid)  # ring profile sigma 0.8 px
        return lambda ro: (special.j0(2.0 * np.pi * kgrid * ro) * width).astype(np.float32)
    u = _PROFILE_OFFSETS
    us = np.arange(u[0] / f, u[-1] / f + 1e-9, 0.5)
    box = ndi.uniform_filter1d(profile, max(1, round(2 * f)), mode="nearest") if f > 1 else profile
    ws = np.interp(us * f, u, box)
    gauss = np.exp(-2.0 * np.pi**2 * 0.5**2 * kgrid * kgrid)

    def kern(ro: float) -> np.ndarray:
        ok = ro + us > 0.5
        rho = ro + us[ok]
        k1 = special.j0(2.0 * np.pi * kgrid[None, :] * rho[:, None])
        return (((ws[ok] * rho / ro) @ k1) * gauss).astype(np.float32)

    return kern


def _clear_distance(zd: np.ndarray, noise: Noise) -> np.ndarray | None:
    """Distance (px of ``zd``, subsampled by 3 as the noise sample) of each position from the
    saturated positions of the block-averaged ring map ``zd`` by the rule ``noise``; None
    for "all" or where nothing is saturated."""
    mode, clip = noise
    if mode == "all" or clip is None:
        return None
    from scipy import ndimage as ndi

    sat = np.abs(zd) >= _SATURATED * clip
    if mode == "solid":
        sat = ndi.binary_opening(sat, structure=np.ones((_SOLID_PX, _SOLID_PX), bool))
    if not sat.any():
        return None
    return ndi.distance_transform_edt(~sat)[::3, ::3]


def _noise_sample(resp: np.ndarray, dist: np.ndarray | None, r: float) -> np.ndarray:
    """The positions of the response ``resp`` (radius ``r`` px of the averaged map) whose
    median / MAD is its noise scale: every third row and column, those clear of saturation
    (``_clear_distance``) when there are enough of them. A new float32 array."""
    sub = resp[::3, ::3]
    if dist is not None:
        clear = dist > r + _CLEAR_PX
        if clear.mean() >= _CLEAR_MIN:
            return sub[clear]
    return sub.copy()


def _ring_octave(
    z: np.ndarray,
    f: int,
    radii: list[float],
    threads: int,
    profile: np.ndarray | None = None,
    noise: Noise = ("all", None),
) -> tuple[np.ndarray, np.ndarray]:
    """Best significance over ``radii`` (px of ``z``) and the radius giving it, on ``z``
    block-averaged by ``f``: (hh, ww) float32 each (``profile``: ``_ring_kernel``; ``noise``:
    where each radius' noise scale is measured, ``DetectConfig.noise``)."""
    from scipy import fft as sfft

    h, w = z.shape
    hh, ww = h // f, w // f
    zd = z[: hh * f, : ww * f].reshape(hh, f, ww, f).mean(axis=(1, 3))  # (hh, ww)
    dist = _clear_distance(zd, noise)
    pad = int(max(radii) / f) + 4  # zero padding against wrap-around
    if profile is not None:
        pad += int(_PROFILE_OFFSETS[-1] / f) + 1
    fh = sfft.next_fast_len(hh + pad, real=True)
    fw = sfft.next_fast_len(ww + pad, real=True)
    spec = sfft.rfft2(zd, s=(fh, fw), workers=threads)  # (fh, nw) complex64
    # the kernel depends on |k| only: tabulate it on a fine 1-D grid of |k| and look it up
    # on the grid's non-negative quarter (n1, nw), whose rows mirror to negative frequencies
    n1, nw = fh // 2 + 1, fw // 2 + 1
    dk = 0.25 / max(fh, fw)  # phase error of the lookup < pi r dk: < 0.01 rad for r < 10^3
    ky, kx = np.arange(n1, dtype=np.float32) / fh, np.arange(nw, dtype=np.float32) / fw
    idx = np.rint(np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2) / dk).astype(np.int32)
    kgrid = np.arange(int(idx.max()) + 1) * dk
    kernel = _ring_kernel(kgrid, f, profile)

    def run(part: list[float]) -> tuple[np.ndarray, np.ndarray]:
        prod = np.empty_like(spec)
        best = np.full((hh, ww), -np.inf, dtype=np.float32)
        best_r = np.zeros((hh, ww), dtype=np.float32)
        for r in part:
            kern = kernel(r / f)[idx]
            np.multiply(spec[:n1], kern, out=prod[:n1])  # FT of a thin ring
            np.multiply(spec[n1:], kern[fh - n1 : 0 : -1], out=prod[n1:])
            resp = sfft.irfft2(prod, s=(fh, fw))[:hh, :ww]  # float32
            sub = _noise_sample(resp, dist, r / f)
            med = float(np.median(sub, overwrite_input=True))
            np.abs(np.subtract(sub, med, out=sub), out=sub)
            mad = float(np.median(sub, overwrite_input=True)) * 1.4826
            if mad > 0:
                resp -= med
                resp /= mad  # significance, in place
                _edge_correct(resp, r / f)
                np.copyto(best_r, r, where=resp > best)
                np.maximum(best, resp, out=best)
        return best, best_r

    parts = [radii[k::threads] for k in range(threads)]
    parts = [q for q in parts if q]
    if len(parts) == 1:
        return run(parts[0])
    with ThreadPoolExecutor(len(parts)) as ex:  # FFTs and ufuncs release the GIL
        res = list(ex.map(run, parts))
    best, best_r = res[0]
    for b, br in res[1:]:
        np.copyto(best_r, br, where=b > best)
        np.maximum(best, b, out=best)
    return best, best_r


def _edge_correct(sig: np.ndarray, r: float) -> None:
    """Divide the significance ``sig`` (h, w) of rings of radius ``r`` px, in place, by the
    square root of the share of each ring inside the image: outside the image the z map is
    zero (its median), so a ring cut by the edge sums fewer pixels, and its noise falls with
    the square root of their number (corners approximated by adding the two edges' losses;
    the share is floored at 1/4)."""
    h, w = sig.shape
    k = min(math.ceil(r) + 1, h // 2, w // 2)
    if k < 1:
        return

    def loss(n: int) -> np.ndarray:  # (n,) share of the ring beyond either end of the axis
        d = np.arange(n, dtype=np.float32) + 0.5
        d = np.minimum(d, d[::-1]) / np.float32(r)
        return np.arccos(np.minimum(d, 1.0)) / np.float32(np.pi)

    ly, lx = loss(h), loss(w)

    def factor(lyy: np.ndarray, lxx: np.ndarray) -> np.ndarray:
        return 1.0 / np.sqrt(np.clip(1.0 - lyy[:, None] - lxx[None, :], 0.25, 1.0))

    sig[:k] *= factor(ly[:k], lx)
    sig[h - k :] *= factor(ly[h - k :], lx)
    sig[k : h - k, :k] *= factor(ly[k : h - k], lx[:k])
    sig[k : h - k, w - k :] *= factor(ly[k : h - k], lx[w - k :])


def _ring_octaves(
    shape: tuple[int, ...], rmin: float, rmax: float
) -> Iterator[tuple[float, int, list[float]]]:
    """The ring filter's octaves for a map of ``shape``: (smallest radius, block-averaging
    factor f, radii in px of the map in 5 % steps), f such that the octave's smallest radius
    is >= ``_RING_MIN_R`` px on the averaged map; stops where that map would be under 4 px."""
    r_lo = rmin
    while r_lo < rmax:
        f = max(1, int(r_lo // _RING_MIN_R))
        r_hi = min(rmax * 1.0001, 2.0 * r_lo)
        if shape[0] // f < 4 or shape[1] // f < 4:
            return
        radii = []
        r = r_lo
        while r < r_hi:
            radii.append(r)
            r *= 1.05
        yield r_lo, f, radii
        r_lo = r_hi


Ring = tuple[float, float, float, float]


def _octave_maxima(
    z: np.ndarray,
    octave: tuple[float, int, list[float]],
    threshold: float,
    threads: int,
    profile: np.ndarray | None = None,
    noise: Noise = ("all", None),
) -> list[Ring]:
    """(significance, cy, cx, radius) of one octave's ring-filter maxima above ``threshold``
    (``_ring_octaves``' (smallest radius, factor, radii)), in px of ``z``."""
    from scipy import ndimage as ndi

    r_lo, f, radii = octave
    best, best_r = _ring_octave(z, f, radii, threads, profile, noise)
    peak = best == ndi.maximum_filter(best, size=max(3, int(0.5 * r_lo / f)))
    return [
        (float(best[y, x]), (y + 0.5) * f - 0.5, (x + 0.5) * f - 0.5, float(best_r[y, x]))
        for y, x in np.argwhere(peak & (best > threshold))
    ]


def _ring_candidates(
    z: np.ndarray,
    rmin: float,
    rmax: float,
    threshold: float,
    threads: int = 1,
    profile: np.ndarray | None = None,
    noise: Noise = ("all", None),
) -> list[Ring]:
    """(significance, cy, cx, radius) of ring-filter maxima, all in px of ``z``: radii from
    ``rmin`` to ``rmax`` in 5 % steps, one octave at a time on ``z`` block-averaged so that
    the octave's smallest radius is >= ``_RING_MIN_R`` px there (``profile``: the measured
    cross-section, ``_ring_kernel``)."""
    out: list[Ring] = []
    for octave in _ring_octaves(z.shape, rmin, rmax):
        out += _octave_maxima(z, octave, threshold, threads, profile, noise)
    return out


#: seventeenth round (docs/micrographs.md), ``ring_profile="measured"``: the first pass's
#: candidates of significance >= ``_PROFILE_STRONG`` (at least ``_PROFILE_MIN``, else the
#: first pass stands; it stops at ``_PROFILE_ENOUGH``) give the ring map's mean
#: cross-section across their membranes at ``_PROFILE_OFFSETS`` working px (negative:
#: inside); the second pass keeps the rings above
#: ``threshold - _PROFILE_SHIFT`` (the measured rings' significance runs lower; chosen at
#: the first pass's candidate count on the tuning and altsim check micrographs)
_PROFILE_STRONG = 7.0
_PROFILE_MIN = 3
_PROFILE_ENOUGH = 20
_PROFILE_OFFSETS = np.arange(-6.0, 6.01, 0.5)
_PROFILE_SHIFT = 0.75


def _strong_rings(z: np.ndarray, rings: list[Ring]) -> np.ndarray:
    """The candidates of significance >= ``_PROFILE_STRONG`` among ``rings`` after the greedy
    suppression, centres inside ``z``: (N, 4). Only rings that can change a strong ring's
    fate there (>= ``_CONCENTRIC_SIG`` x ``_PROFILE_STRONG``) enter it."""
    top = [r for r in rings if r[0] >= _CONCENTRIC_SIG * _PROFILE_STRONG]
    c = np.asarray([r for r in _suppress(top) if r[0] >= _PROFILE_STRONG], np.float64)
    c = c.reshape(-1, 4)
    ok = (c[:, 1] >= 0) & (c[:, 1] <= z.shape[0] - 1) & (c[:, 2] >= 0)
    return c[ok & (c[:, 2] <= z.shape[1] - 1)]


def _membrane_profile(z: np.ndarray, zr: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """Mean signed cross-section of the ring map ``zr`` across the membranes of the rings
    ``strong`` (N, 4; radii refined on ``z``) at ``_PROFILE_OFFSETS``, against its level at
    the offsets' ends, scaled to a peak of 1."""
    _raw, radii, _rim = _refine(z, strong[:, 1], strong[:, 2], strong[:, 3])
    rad = np.maximum(radii[:, :, None] + _PROFILE_OFFSETS[None, None, :], 0.0)
    p = _sample(zr, strong[:, 1], strong[:, 2], rad).mean(axis=(0, 1)).astype(np.float64)
    p -= 0.5 * (p[0] + p[-1])
    return p / max(float(np.abs(p).max()), 1e-9)


def _measured_rings(
    z: np.ndarray,
    zr: np.ndarray,
    rmin: float,
    rmax: float,
    threshold: float,
    threads: int,
    noise: Noise = ("all", None),
) -> tuple[list[Ring], np.ndarray | None]:
    """Step 2 with ``ring_profile="measured"``: (ring maxima, the measured profile or None).
    The first pass (the thin ring) runs octave by octave from the coarsest (the cheapest)
    until its strong candidates (``_strong_rings``) number ``_PROFILE_ENOUGH``, on the
    finest octave (the costliest) only while they are fewer than ``_PROFILE_MIN``; with at
    least ``_PROFILE_MIN`` of them, the second pass runs on every octave with their measured
    profile at ``threshold - _PROFILE_SHIFT``, else the first pass's maxima stand."""
    octaves = list(_ring_octaves(zr.shape, rmin, rmax))
    first: list[Ring] = []
    strong = np.zeros((0, 4))
    for k in range(len(octaves) - 1, -1, -1):
        if len(strong) >= (_PROFILE_ENOUGH if k else _PROFILE_MIN):
            break
        first += _octave_maxima(zr, octaves[k], threshold, threads, None, noise)
        strong = _strong_rings(z, first)
    if len(strong) < _PROFILE_MIN:
        return first, None
    profile = _membrane_profile(z, zr, strong)
    shifted = threshold - _PROFILE_SHIFT
    return _ring_candidates(zr, rmin, rmax, shifted, threads, profile, noise), profile


#: concentric rings in the suppression: a ring enclosing a kept one (radius ratio <=
#: ``_CONCENTRIC_RATIO``, centres within a quarter of its radius) replaces it when its
#: significance is at least ``_CONCENTRIC_SIG`` times the enclosed one's (0.7 chosen over 0.5
#: on the tuning, validation, blank and altsim check micrographs; docs/micrographs.md)
_CONCENTRIC_RATIO = 0.9
_CONCENTRIC_SIG = 0.7


#: sixteenth round (docs/micrographs.md): after the greedy pass, a dropped ring T whose mean
#: membrane darkness (ring map z on its 48 rays, clipped at 0) is at least ``_ARC_DARK``
#: replaces every kept ring B in conflict with it when at least ``_ARC_KEEP`` of T's evidence
#: lies off B's membrane and at most ``_ARC_BORROW`` of B's lies off T's (B borrows T's arc:
#: a ring formed from part of T's membrane and a neighbour's, or a small ring on T's
#: membrane) and T is at least as dark as B; chosen on the tuning, altsim check and
#: thirdsim exploratory micrographs
_ARC_DARK = 2.0
_ARC_KEEP = 0.6
_ARC_BORROW = 0.5


def _suppress(
    cands: list[tuple[float, float, float, float]], zmap: np.ndarray | None = None
) -> list[tuple[float, float, float, float]]:
    """Greedy non-maximum suppression of circles (see step 3 of the module docstring); with
    the ring map ``zmap``, then ``_arc_replace``."""
    from scipy.spatial import cKDTree

    if not cands:
        return []
    order = sorted(cands, reverse=True)
    rmax = max(c[3] for c in order)
    arr = np.array(order)
    # every candidate's neighbours in one query; only the already kept ones are checked
    near = cKDTree(arr[:, 1:3]).query_ball_point(arr[:, 1:3], arr[:, 3] + rmax)
    taken = [False] * len(order)
    hypot = math.hypot
    for i, c in enumerate(order):
        s, y, x, r = c
        ok = True
        inner: list[int] = []
        for j in near[i]:
            if not taken[j]:
                continue
            s2, y2, x2, r2 = order[j]
            d = hypot(y - y2, x - x2)
            if d < 0.6 * (r + r2) or d + r <= 1.1 * r2 or d + r2 <= 1.1 * r:
                # a ring around a kept one, nearly concentric: the outer membrane of a
                # multilamellar liposome (or of a vesicle in a vesicle) is the particle's outline
                if r2 <= _CONCENTRIC_RATIO * r and d <= 0.25 * r and s >= _CONCENTRIC_SIG * s2:
                    inner.append(j)
                    continue
                ok = False
                break
        if ok:
            for j in inner:
                taken[j] = False
            taken[i] = True
    if zmap is not None:
        _arc_replace(arr, near, taken, zmap)
    return [order[i] for i in range(len(order)) if taken[i]]


def _ring_evidence(zmap: np.ndarray, arr: np.ndarray) -> np.ndarray:
    """Membrane darkness of each ring (N, 4: significance, cy, cx, r) on its 48 rays: the
    best of ``zmap`` at 0.95, 1 and 1.05 r, clipped at 0; (N, 48)."""
    rad = arr[:, 3, None, None] * np.array([0.95, 1.0, 1.05])[None, None, :]
    v = _sample(zmap, arr[:, 1], arr[:, 2], rad * np.ones((1, _N_RAYS, 1)))
    return np.maximum(v.max(axis=2), 0.0)


def _off_share(arr: np.ndarray, ev: np.ndarray, i: int, j: int) -> float:
    """Share of ring ``i``'s evidence ``ev`` on the rays whose circle point is off ring
    ``j``'s membrane (farther than 0.1 r_j + 1 px from its circle)."""
    tot = float(ev[i].sum())
    if tot <= 0:
        return 0.0
    th = _theta()
    _s, y, x, r = arr[i]
    dist = np.hypot(y + r * np.sin(th) - arr[j, 1], x + r * np.cos(th) - arr[j, 2])
    off = np.abs(dist - arr[j, 3]) > 0.1 * arr[j, 3] + 1.0
    return float(ev[i][off].sum()) / tot


def _arc_replace(arr: np.ndarray, near: list[Any], taken: list[bool], zmap: np.ndarray) -> None:
    """The greedy pass's dropped rings (``arr`` (N, 4) by falling significance, ``near``
    their neighbours, ``taken`` the kept ones, updated in place), by falling significance:
    one dark enough replaces every kept ring in conflict with it (as in the greedy pass)
    when each borrows its arc and it keeps its own arc off theirs (``_ARC_DARK``,
    ``_ARC_KEEP``, ``_ARC_BORROW``)."""
    ev = _ring_evidence(zmap, arr)
    dark = ev.mean(axis=1)
    kept = np.asarray(taken, dtype=bool)
    for i in np.flatnonzero((dark >= _ARC_DARK) & ~kept).tolist():
        nb = np.asarray(near[i], dtype=np.int64)
        nb = nb[kept[nb]]
        d = np.hypot(arr[nb, 1] - arr[i, 1], arr[nb, 2] - arr[i, 2])
        r, r2 = arr[i, 3], arr[nb, 3]
        block = nb[(d < 0.6 * (r + r2)) | (d + r <= 1.1 * r2) | (d + r2 <= 1.1 * r)].tolist()
        if all(
            dark[i] >= dark[j]
            and _off_share(arr, ev, i, j) >= _ARC_KEEP
            and _off_share(arr, ev, j, i) <= _ARC_BORROW
            for j in block
        ):
            kept[block] = False
            kept[i] = True
    taken[:] = kept.tolist()


def _theta() -> np.ndarray:
    return np.linspace(0, 2 * np.pi, _N_RAYS, endpoint=False)


def _sample(img: np.ndarray, cy: np.ndarray, cx: np.ndarray, rad: np.ndarray) -> np.ndarray:
    """``img`` at centre + rad along the 48 rays: cy, cx (N,), rad (N, 48, S) -> (N, 48, S)."""
    from scipy import ndimage as ndi

    th = _theta()
    ys = cy[:, None, None] + rad * np.sin(th)[None, :, None]
    xs = cx[:, None, None] + rad * np.cos(th)[None, :, None]
    v = ndi.map_coordinates(img, [ys.ravel(), xs.ravel()], order=1, mode="nearest")
    return v.reshape(rad.shape).astype(np.float32)


def _sample_all(
    jobs: list[tuple[np.ndarray, np.ndarray]], cy: np.ndarray, cx: np.ndarray
) -> list[np.ndarray]:
    """``_sample`` of each (map, rad) in ``jobs``, on ``_threads()`` threads
    (map_coordinates frees the GIL)."""
    threads = min(_threads(), len(jobs))
    if threads < 2:
        return [_sample(img, cy, cx, rad) for img, rad in jobs]
    with ThreadPoolExecutor(threads) as ex:
        return list(ex.map(lambda job: _sample(job[0], cy, cx, job[1]), jobs))


def _refine(z: np.ndarray, cy: np.ndarray, cx: np.ndarray, r: np.ndarray) -> tuple[Any, Any, Any]:
    """(raw per-ray membrane radii (N, 48), median-filtered radii (N, 48), membrane darkness
    per ray (N, 48)): the darkest point within +-15 % of ``r`` along each ray."""
    from scipy import ndimage as ndi

    steps = np.linspace(0.85, 1.15, 13)
    rad = r[:, None, None] * steps[None, None, :] * np.ones((1, _N_RAYS, 1))
    vals = _sample(z, cy, cx, rad)  # (N, 48, 13)
    k = np.argmax(vals, axis=2)
    raw = np.take_along_axis(rad, k[..., None], axis=2)[..., 0]
    rim = np.take_along_axis(vals, k[..., None], axis=2)[..., 0]
    smooth = ndi.median_filter(raw, size=(1, 7), mode="wrap") if len(raw) else raw
    return raw, smooth, rim


def _outline_window(
    shape: tuple[int, int], c_y: float, c_x: float, fp: np.ndarray, th: np.ndarray
) -> tuple[slice, slice, np.ndarray] | None:
    """(rows, columns, relative radius (h', w')) of the window around one star-shaped outline
    (closed radii ``fp`` at angles ``th``): each pixel's distance from the centre over the
    outline radius at its angle (<= 1 inside); None where the window is off the image."""
    h, w = shape
    ext = float(fp.max()) + 2
    y0, y1 = max(0, int(c_y - ext)), min(h, math.ceil(c_y + ext) + 1)
    x0, x1 = max(0, int(c_x - ext)), min(w, math.ceil(c_x + ext) + 1)
    if y1 <= y0 or x1 <= x0:
        return None
    yy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(c_y)
    xx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(c_x)
    rho = np.sqrt(yy * yy + xx * xx)  # (h', w')
    ang = np.mod(np.arctan2(yy, xx), 2 * np.pi)
    return slice(y0, y1), slice(x0, x1), rho / np.interp(ang, th, fp)


def _closed_outlines(radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(angles (49,), closed outline radii (N, 49)) of star-shaped outlines ``radii`` (N, 48)."""
    th = np.concatenate((_theta(), [2 * np.pi]))
    return th, np.concatenate((radii, radii[:, :1]), axis=1)


def paint_outlines(
    shape: tuple[int, int], cy: np.ndarray, cx: np.ndarray, radii: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Instance labels (H, W) int32 from star-shaped outlines (candidate i -> label i + 1;
    a pixel inside several goes to the one it is relatively deepest in) and each outline's
    own area in px (N,) before that sharing."""
    labels = np.zeros(shape, dtype=np.int32)
    best = np.full(shape, np.inf, dtype=np.float32)
    own = np.zeros(len(cy), dtype=np.int64)
    if len(cy) == 0:
        return labels, own
    th, fp_all = _closed_outlines(radii)
    for i in range(len(cy)):
        win = _outline_window(shape, cy[i], cx[i], fp_all[i], th)
        if win is None:
            continue
        rows, cols, rel = win
        inside = rel <= 1.0
        own[i] = np.count_nonzero(inside)
        bv = best[rows, cols]  # views: assignments write through
        take = inside & (rel < bv)
        labels[rows, cols][take] = i + 1
        bv[take] = rel[take]
    return labels, own


def alone_overlaps(
    truth: np.ndarray, cy: np.ndarray, cx: np.ndarray, radii: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mask IoU of each star-shaped outline, painted alone, with the truth instances of
    ``truth`` (H, W) it overlaps: (K, 3) int rows (candidate index, truth label, intersection
    px) and the IoU (K,). Only candidates whose window holds truth pixels are measured."""
    t = truth.astype(np.int64, copy=False)
    area_t = np.bincount(t.ravel())
    if len(area_t) < 2:
        return np.zeros((0, 3), np.int64), np.zeros(0)
    rows_out: list[np.ndarray] = []
    th, fp_all = _closed_outlines(radii)
    own = np.zeros(len(cy), dtype=np.int64)
    for i in range(len(cy)):
        win = _outline_window(t.shape, cy[i], cx[i], fp_all[i], th)
        if win is None:
            continue
        rows, cols, rel = win
        tw = t[rows, cols]
        inside = rel <= 1.0
        own[i] = np.count_nonzero(inside)
        hit = tw[inside]
        hit = hit[hit > 0]
        if not hit.size:
            continue
        labs, inter = np.unique(hit, return_counts=True)
        rows_out.append(np.stack((np.full_like(labs, i), labs, inter), axis=1))
    if not rows_out:
        return np.zeros((0, 3), np.int64), np.zeros(0)
    arr = np.concatenate(rows_out)
    union = own[arr[:, 0]] + area_t[arr[:, 1]] - arr[:, 2]
    return arr, arr[:, 2] / np.maximum(union, 1)


def _membrane_line(
    z: np.ndarray,
    cy: np.ndarray,
    cx: np.ndarray,
    raw: np.ndarray,
    rim_z: np.ndarray,
    sigma: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rim peak (rim against 0.8/1.2 x its radius), side balance and thin-line contrast, each
    (N,). A membrane is a thin dark line (light on both sides after the band-pass); the edge
    of a solid blob is a step (dark inside, light halo outside)."""
    near = _sample(z, cy, cx, raw[:, :, None] * np.array([0.8, 1.2])[None, None, :])  # (N,48,2)
    rim_peak = rim_z - near.max(axis=2).mean(axis=1)
    d = max(2.5 * sigma, 2.0)
    side = _sample(z, cy, cx, raw[:, :, None] + np.array([-d, d])[None, None, :])  # (N, 48, 2)
    side_balance = (side[:, :, 0] - side[:, :, 1]).mean(axis=1)
    rim_line = rim_z - side.max(axis=2).mean(axis=1)
    return rim_peak, side_balance, rim_line


def _strong_reference(sig: np.ndarray, log_sig: np.ndarray) -> float:
    """Median log significance of the micrograph's strong candidates (significance >=
    ``_STRONG_SIG``; the 3 most significant when fewer are): the ring strength of its clear
    liposomes, against which a faint ring is judged (``sig_vs_strong``)."""
    strong = sig >= _STRONG_SIG
    if np.count_nonzero(strong) < 3:
        strong = np.zeros(len(log_sig), dtype=bool)
        strong[np.argsort(-log_sig)[:3]] = True
    return float(np.median(log_sig[strong]))


def _features(
    z: np.ndarray,
    low: np.ndarray,
    cand: np.ndarray,
    raw: np.ndarray,
    radii: np.ndarray,
    rim: np.ndarray,
    sigma: float = 1.5,
) -> np.ndarray:
    """Candidate features (N, F) in ``FEATURES`` order; ``cand`` (N, 4) significance, cy, cx,
    r at the working scale; ``raw``/``radii``/``rim`` from ``_refine``; ``sigma`` the
    band-pass smoothing (px of the working scale)."""
    n = len(cand)
    if n == 0:
        return np.zeros((0, len(FEATURES)), dtype=np.float64)
    sig, cy, cx, _r = cand.T
    rm = radii.mean(axis=1)  # (N,)
    th = _theta()
    inner_rad = rm[:, None, None] * np.linspace(0.0, 0.6, 5)[None, None, :] * np.ones((1, 48, 1))
    outer_rad = rm[:, None, None] * np.linspace(1.25, 1.5, 3)[None, None, :] * np.ones((1, 48, 1))
    # radial profiles along each ray's own outline radius: prof (N, 48, Q)
    prof_rad = radii[:, :, None] * np.asarray(_PROFILE)[None, None, :]
    far_rad = radii[:, :, None] * np.array([1.6, 1.8, 2.0])[None, None, :]
    zi, zo, li, lo_ray, lr, prof, far = _sample_all(
        [(z, inner_rad), (z, outer_rad), (low, inner_rad), (low, outer_rad),
         (low, radii[:, :, None]), (low, prof_rad), (low, far_rad)], cy, cx
    )  # fmt: skip
    li, lr, lo_ray = li.mean(axis=(1, 2)), lr.mean(axis=(1, 2)), lo_ray.mean(axis=2)
    lo = lo_ray.mean(axis=1)
    rim_z = rim.mean(axis=1)
    e1 = np.exp(1j * th)
    rim_asym = np.abs((rim * e1).mean(axis=1)) / np.maximum(np.abs(rim_z), 0.5)
    inner_dark = li - lo
    rim_dark = lr - lo
    outer_step = np.abs(((lo_ray - lo[:, None]) * e1).mean(axis=1))
    jitter = raw.std(axis=1) / rm
    ell = np.abs((radii * np.exp(2j * th)).mean(axis=1)) / rm
    far_m = far.mean(axis=(1, 2))
    unit = np.maximum(np.abs(lr - far_m), 0.5)
    profile = (prof.mean(axis=1) - far_m[:, None]) / unit[:, None]  # (N, Q)
    # film edges cross the interior: a one-sided step of the interior's low-pass darkness
    inner_ray = prof[:, :, 1:4].mean(axis=2)  # (N, 48) at 0.3-0.75 r
    inner_step = np.abs(((inner_ray - inner_ray.mean(axis=1)[:, None]) * e1).mean(axis=1)) / unit
    quarters = rim.reshape(n, 4, _N_RAYS // 4).mean(axis=2)  # (N, 4)
    weakest = quarters.min(axis=1) / np.maximum(np.abs(rim_z), 0.5)
    rim_peak, side_balance, rim_line = _membrane_line(z, cy, cx, raw, rim_z, sigma)
    labels, own = paint_outlines(z.shape, cy, cx, radii)
    kept = np.bincount(labels.ravel(), minlength=n + 1)[1:] / np.maximum(own, 1)
    log_sig = np.log(np.maximum(sig, 1e-3))
    feats = np.column_stack(
        [
            log_sig,
            rim_z,
            rim_z - zi.mean(axis=(1, 2)),
            rim_z - zo.mean(axis=(1, 2)),
            (rim > 1.0).mean(axis=1),
            rim_asym,
            inner_dark,
            inner_dark / np.maximum(np.abs(rim_dark), 0.5) * np.sign(rim_dark + 1e-9),
            outer_step,
            jitter,
            ell,
            kept,
            zi.std(axis=(1, 2)),
            zo.std(axis=(1, 2)),
            rim_peak,
            inner_step,
            weakest,
            side_balance,
            rim_line,
            profile,
            # micrograph context: a ring's strength against the other candidates' (where few
            # liposomes lie among noise rings and distractors, the prior share drops)
            log_sig - np.median(log_sig),
            np.full(n, float(np.mean(sig >= _STRONG_SIG))),
            log_sig - _strong_reference(sig, log_sig),
        ]
    )
    return np.nan_to_num(feats.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def _scaled_features(
    image: np.ndarray,
    cfg: DetectConfig,
    pixel_size_nm: float | None,
    dmin: float,
    factor: int,
    maps: tuple[np.ndarray, np.ndarray, float],
    found: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> np.ndarray:
    """``_features`` at the feature scale: the working scale without its 512 px floor
    (thirteenth round). Where the floor makes a small micrograph's working scale finer than
    its pixel size calls for (1024 px at 0.5 nm/px: 1 nm instead of 2), the candidates found
    there are refined and described again on the coarser map, so that a verifier sees a
    liposome as it would on a 4096 px micrograph of the same sample. ``maps``: (z, low,
    sigma) of the working scale ``factor``; ``found``: (cand, raw, radii, rim) there."""
    z, low, sigma = maps
    cand, raw, radii, rim = found
    natural = _work_factor(dmin, image.shape, floor=False) if _NATURAL_FEATURES else factor
    if natural == factor or len(cand) == 0:
        return _features(z, low, cand, raw, radii, rim, sigma)
    s = factor / natural
    fsigma = _sigma(cfg, pixel_size_nm, natural)
    fz, flow = _bandpass(_working(image, natural, cfg.invert), fsigma)
    fc = cand.copy()
    fc[:, 1:3] = (cand[:, 1:3] + 0.5) * s - 0.5
    fc[:, 3] = cand[:, 3] * s
    fraw, fradii, frim = _refine(fz, fc[:, 1], fc[:, 2], fc[:, 3])
    return _features(fz, flow, fc, fraw, fradii, frim, fsigma)


def _pixel_noise(image: np.ndarray) -> float:
    """Robust standard deviation of the full-resolution pixel noise (MAD of neighbour
    differences over sqrt 2, every 4th row)."""
    d = np.diff(np.asarray(image[::4], dtype=np.float32), axis=1).ravel()
    mad = float(np.median(np.abs(d - np.median(d)))) * 1.4826 / math.sqrt(2.0)
    return mad if mad > 0 else 1.0


def _fullres_features(
    image: np.ndarray,
    cy: np.ndarray,
    cx: np.ndarray,
    membrane: np.ndarray,
    sig: np.ndarray,
    pixel_size_nm: float | None,
    invert: bool,
) -> np.ndarray:
    """``FULLRES_FEATURES`` (N, 5): the raw micrograph ``image`` (not band-passed, not
    block-averaged) along the 48 rays at ``_FR_OFFSETS`` nm from each ray's membrane radius
    ``membrane`` (N, 48) full-resolution px around (``cy``, ``cx``), averaged over the rays;
    ``sig`` the ring significances. Shape features are in units of the dip, at least 3 noise
    units of a 48-ray mean (so that a noise ring's shape does not blow up)."""
    n = len(cy)
    if n == 0:
        return np.zeros((0, len(FULLRES_FEATURES)))
    px = pixel_size_nm if pixel_size_nm else 1.0
    off = _FR_OFFSETS
    rad = np.maximum(membrane[:, :, None] + (off / px)[None, None, :], 0.0)
    v = _sample(np.asarray(image, dtype=np.float32), cy, cx, rad)  # (N, 48, O)
    prof = (v if invert else -v).mean(axis=1).astype(np.float64)  # darkness (N, O)
    noise = _pixel_noise(image) / math.sqrt(_N_RAYS)
    base = prof[:, off >= 8].mean(axis=1)
    rel = prof - base[:, None]
    dip = rel[:, np.abs(off) <= 3].max(axis=1)
    unit = np.maximum(dip, 3.0 * noise)
    inside = rel[:, off <= -6].mean(axis=1) / unit
    halo = rel[:, (off >= 3) & (off <= 6)].mean(axis=1) / unit
    width = (rel[:, off <= 7] >= 0.5 * unit[:, None]).sum(axis=1).astype(np.float64)
    dip_z = dip / noise
    log_dip = np.log(np.maximum(dip_z, 0.1))
    ref = _strong_reference(sig, log_dip)
    feats = np.column_stack([dip_z, inside, halo, width, log_dip - ref])
    return np.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0)


def _working(image: np.ndarray, factor: int, invert: bool) -> np.ndarray:
    img = np.asarray(image, dtype=np.float32)
    if factor > 1:
        h, w = (img.shape[0] // factor) * factor, (img.shape[1] // factor) * factor
        img = img[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))
    return -img if invert else img


def detect_candidates(
    image: np.ndarray,
    cfg: DetectConfig,
    pixel_size_nm: float | None = None,
    where: str = "",
    verifier: Any = None,
) -> Detections:
    """Every candidate of ``image`` (H, W) with its features, liposome score and verdict.
    ``verifier``: an object with ``score(features) -> (N,)``, ``reasons(features)`` and
    ``threshold``; None uses ``cfg.verifier`` (loaded once and cached), False accepts every
    candidate (training)."""
    dmin, dmax = cfg.diameters_px(pixel_size_nm, where)
    h, w = image.shape
    factor = _work_factor(dmin, (h, w))
    work = _working(image, factor, cfg.invert)
    sigma = _sigma(cfg, pixel_size_nm, factor)
    rmin, rmax = max(dmin / 2 / factor, 4.0), max(dmax / 2 / factor, 5.0)
    with ThreadPoolExecutor(2) as ex:  # texture map and learned finder beside the ring filter
        peaks = _finder_peaks(ex, work, rmax, cfg) if verifier is not False else None
        texture = ex.submit(_texture_map, image, work, factor)
        z, low = _bandpass(work, sigma)
        zr = _mix_texture(z, texture.result(), cfg.ring_clip)
        cand, raw, radii, rim = _ring_stage(z, zr, rmin, rmax, cfg)
        learned = (peaks[0], peaks[1].result()) if peaks is not None else None
    feats = _scaled_features(image, cfg, pixel_size_nm, dmin, factor, (z, low, sigma),
                             (cand, raw, radii, rim))  # fmt: skip
    # to full resolution: centre of working pixel j is full-resolution (j + 0.5) f - 0.5
    offset = 2.3 / pixel_size_nm if pixel_size_nm is not None else 1.5  # half a bilayer
    cy = (cand[:, 1] + 0.5) * factor - 0.5
    cx = (cand[:, 2] + 0.5) * factor - 0.5
    full_radii = radii * factor + offset
    if _FULLRES:
        fr = _fullres_features(image, cy, cx, radii * factor, cand[:, 0], pixel_size_nm,
                               cfg.invert)  # fmt: skip
        feats = np.column_stack([feats, fr])
    if verifier is None:
        from lipoclass.micrograph.verify import load_verifier

        verifier = load_verifier(cfg.verifier)
    score, accepted, reason = _verdicts(verifier, cfg, feats)
    found_by = ["ring"] * len(cand)
    sig = cand[:, 0]
    if learned is not None:
        ly, lx, lr, heat, lfeats, lreason = _learned_detections(
            learned, (image, z, low), factor, (offset, pixel_size_nm, dmin, sigma), cfg,
            (cy, cx, full_radii, accepted),
        )  # fmt: skip
        n = len(heat)
        cy, cx = np.concatenate([cy, ly]), np.concatenate([cx, lx])
        full_radii = np.concatenate([full_radii, lr])
        sig = np.concatenate([sig, np.full(n, np.nan)])
        if lfeats.shape[1] < feats.shape[1]:  # the twelfth round's full-resolution columns
            pad = np.full((n, feats.shape[1] - lfeats.shape[1]), np.nan)
            lfeats = np.column_stack([lfeats, pad])
        feats = np.concatenate([feats, lfeats])
        score = np.concatenate([score, heat])
        accepted = np.concatenate([accepted, np.array([r == "" for r in lreason], bool)])
        reason, found_by = reason + lreason, found_by + ["learned"] * n
    instance, labels = _paint_accepted((h, w), cy, cx, full_radii, accepted)
    return Detections(
        cy, cx, full_radii, sig, feats, score, accepted, reason, instance, labels, found_by
    )


def _paint_accepted(
    shape: tuple[int, int], cy: np.ndarray, cx: np.ndarray, radii: np.ndarray, accepted: Any
) -> tuple[np.ndarray, np.ndarray]:
    """(instance (N,) of each candidate, 0 when rejected or left without pixels; label image
    (H, W) int32 of the accepted outlines, painted in candidate order, ids 1..K)."""
    idx = np.flatnonzero(accepted)
    lab, _own = paint_outlines(shape, cy[idx], cx[idx], radii[idx])
    present = np.zeros(len(idx) + 1, dtype=bool)
    present[lab.ravel()] = True
    present[0] = False
    lut = np.zeros(len(idx) + 1, dtype=np.int32)
    lut[present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
    instance = np.zeros(len(cy), dtype=np.int64)
    instance[idx] = lut[1:]
    return instance, lut[lab]


def ring_detections(det: Detections) -> Detections:
    """The ring filter's own detections (``finder="ring"``) out of a ``"ring+learned"``
    run: its ring candidates, verdicts and all, repainted without the learned finder's
    (which only add to them), so ``detect --truth`` scores both finders from one run."""
    keep = np.array([f == "ring" for f in det.found_by], dtype=bool)
    cy, cx, radii, acc = det.cy[keep], det.cx[keep], det.radii[keep], det.accepted[keep]
    instance, labels = _paint_accepted(det.labels.shape, cy, cx, radii, acc)
    return Detections(cy, cx, radii, det.significance[keep], det.features[keep],
                      det.score[keep], acc, [r for r, k in zip(det.reason, keep) if k],
                      instance, labels, ["ring"] * int(keep.sum()))  # fmt: skip


def _ring_stage(
    z: np.ndarray, zr: np.ndarray, rmin: float, rmax: float, cfg: DetectConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ring filter's candidates (N, 4: significance, cy, cx, r in working px) after the
    suppression, inside the map, with their refined outlines (raw, radii, rim)."""
    if not np.any(z):
        rings: list[Ring] = []
    elif cfg.ring_profile == "measured":
        rings = _measured_rings(z, zr, rmin, rmax, cfg.threshold, _threads(), cfg.noise)[0]
    else:
        rings = _ring_candidates(zr, rmin, rmax, cfg.threshold, _threads(), None, cfg.noise)
    seeds = _suppress(rings, zr)
    cand = np.asarray(seeds, dtype=np.float64).reshape(-1, 4)
    inside = (cand[:, 1] >= 0) & (cand[:, 1] <= z.shape[0] - 1)
    inside &= (cand[:, 2] >= 0) & (cand[:, 2] <= z.shape[1] - 1)
    cand = cand[inside]
    raw, radii, rim = _refine(z, cand[:, 1], cand[:, 2], cand[:, 3])
    return cand, raw, radii, rim


def _finder_peaks(ex: Any, work: np.ndarray, rmax: float, cfg: DetectConfig) -> Any:
    """The learned finder and its peaks with heat >= its threshold (a future on ``ex``, run
    beside the ring filter; torch frees the GIL), or None with ``finder="ring"``."""
    if cfg.finder == "ring":
        return None
    from lipoclass.micrograph.finder import load_finder

    finder = load_finder()
    t = cfg.finder_threshold if cfg.finder_threshold is not None else finder.info["threshold"]
    return finder, ex.submit(finder.find, work, rmax, float(t))


def _verdicts(verifier: Any, cfg: DetectConfig, feats: np.ndarray) -> tuple[Any, Any, list[str]]:
    """(liposome score, accepted, reason) of each candidate: every one accepted without a
    verifier (None or False), else the verifier's (per-micrograph) score at its threshold."""
    n = len(feats)
    if verifier is None or verifier is False or n == 0:
        return np.full(n, np.nan), np.ones(n, dtype=bool), [""] * n
    if hasattr(verifier, "micrograph_scores"):
        score, raw = (np.asarray(a, np.float64) for a in verifier.micrograph_scores(feats))
    else:
        score = raw = np.asarray(verifier.score(feats), dtype=np.float64)
    thr = cfg.min_score if cfg.min_score is not None else verifier.threshold
    accepted = score >= thr
    reason = [""] * n
    rejected = np.flatnonzero(~accepted)
    why = verifier.reasons(feats[rejected]) if len(rejected) else []
    for i, r in zip(rejected, why):
        reason[i] = r if raw[i] < thr else (
            f"low liposome score: lowered from {raw[i]:.2f} for the micrograph's low share "
            "of liposomes among its candidates"
        )  # fmt: skip
    return score, accepted, reason


def _learned_detections(
    learned: tuple[Any, np.ndarray],
    maps: tuple[np.ndarray, np.ndarray, np.ndarray],
    factor: int,
    scale: tuple[float, float | None, float, float],
    cfg: DetectConfig,
    ring: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """The learned finder's detections among its peaks ``learned`` ((finder, peaks (N, 4:
    heat, cy, cx, r in working px)); ``_finder_peaks``) that no accepted ring detection covers
    (``finder.covered``, on mean radii; twenty-second round): full-resolution cy, cx, outline
    radii (N, 48), heat, their ``FEATURES`` and a reason each ("" accepted; the finder's
    solid-particle gate, ``finder.solid_particles``, rejects the others; twenty-third round).
    ``maps``: (micrograph, band-pass map, low-pass map); ``scale``: (outline offset px, nm/px,
    smallest diameter px, band-pass sigma), as ``detect_candidates``; ``ring``: (cy, cx,
    radii, accepted) of the ring filter's candidates."""
    from lipoclass.micrograph.finder import covered, solid_particles

    finder, c = learned
    image, z, low = maps
    offset, px, dmin, sigma = scale
    h, w = image.shape
    c = c[(c[:, 1] >= 0) & (c[:, 1] <= h / factor - 1) & (c[:, 2] >= 0)
          & (c[:, 2] <= w / factor - 1)]  # fmt: skip
    raw, radii, rim = _refine(z, c[:, 1], c[:, 2], c[:, 3])
    cy = (c[:, 1] + 0.5) * factor - 0.5
    cx = (c[:, 2] + 0.5) * factor - 0.5
    full = radii * factor + offset
    rcy, rcx, rradii, acc = ring
    mine = np.column_stack([c[:, 0], cy, cx, full.mean(axis=1)])
    by = np.column_stack([np.zeros(int(acc.sum())), rcy[acc], rcx[acc], rradii[acc].mean(axis=1)])
    keep = np.flatnonzero(~covered(mine, by))
    if len(keep) == 0:
        feats = np.zeros((0, len(FEATURES)))
    else:  # only the detections it keeps are described (kept_fraction among them)
        found = (c[keep], raw[keep], radii[keep], rim[keep])
        feats = _scaled_features(image, cfg, px, dmin, factor, (z, low, sigma), found)
    reason = solid_particles(finder, feats, FEATURES)
    return cy[keep], cx[keep], full[keep], c[keep, 0], feats, reason


def detect_particles(
    image: np.ndarray, cfg: DetectConfig, pixel_size_nm: float | None = None, where: str = ""
) -> np.ndarray:
    """Instance labels (H, W) int32 (0 background, 1..K) of the accepted vesicles on
    ``image`` (H, W)."""
    return detect_candidates(image, cfg, pixel_size_nm, where).labels


def detect_micrograph(mic: Micrograph, cfg: DetectConfig) -> np.ndarray:
    """``detect_particles`` on a read micrograph (its pixel size, its file in messages)."""
    return detect_particles(mic.image, cfg, mic.pixel_size_nm, str(mic.path))


# --------------------------------------------------------------------------- folder output

DETECTION_COLUMNS = (
    "micrograph", "candidate", "instance", "status", "score", "reason", "x", "y",
    "diameter_px", "diameter_nm", "significance", "filled_px", "found_by",
)  # fmt: skip
#: the ``all`` row's ``*_low``/``*_high``: 95 % bootstrap interval over the micrographs
#: (``match.pooled_interval``; empty for a single micrograph and on the other rows)
SCORE_COLUMNS = ("micrograph", "truth", "detected", "matched", "precision", "recall", "f1",
                 "mean_iou", "precision_low", "precision_high", "recall_low",
                 "recall_high")  # fmt: skip
#: ``finder_comparison.csv`` (``detect --truth``): each candidate finder on the annotated
#: micrographs, pooled; ``used`` marks this run's; ``f1_difference`` is its F1 minus this
#: run's, with a 95 % bootstrap interval paired over the micrographs (2+ micrographs)
FINDER_COMPARISON_COLUMNS = ("finder", "used", "truth", "detected", "matched", "precision",
                             "recall", "f1", "mean_iou", "f1_difference", "f1_difference_low",
                             "f1_difference_high")  # fmt: skip
#: ``detection_by_class.csv`` (``detect --truth --classes``): per candidate finder and
#: annotated class, its annotated and found liposomes, its share (%) among the annotated
#: and among the found ones, and the change (found - annotated, percentage points) with a
#: 95 % bootstrap interval over the micrographs (2+ micrographs; ``match.class_shares``)
CLASS_SHARE_COLUMNS = ("finder", "used", "class", "truth", "matched", "recall", "true_share",
                       "found_share", "change", "change_low", "change_high")  # fmt: skip


def detection_rows(mic: Micrograph, det: Detections) -> list[dict[str, object]]:
    """One ``detections.csv`` row per candidate (accepted: centre and equivalent diameter of
    its mask; rejected: of its outline)."""
    from scipy import ndimage as ndi

    rows: list[dict[str, object]] = []
    objs = ndi.find_objects(det.labels)
    px = mic.pixel_size_nm
    for i in range(len(det)):
        inst = int(det.instance[i])
        if inst > 0 and objs[inst - 1] is not None:
            sl = objs[inst - 1]
            m = det.labels[sl] == inst
            area = float(m.sum())
            x = (sl[1].start + sl[1].stop - 1) / 2
            y = (sl[0].start + sl[0].stop - 1) / 2
            filled = int(mic.filled[sl][m].sum()) if mic.filled is not None else 0
        else:
            rr = det.radii[i]
            area = float(np.pi * np.mean(rr * rr))
            x, y, filled = float(det.cx[i]), float(det.cy[i]), 0
        d = 2.0 * math.sqrt(area / math.pi)
        rows.append(
            {"micrograph": mic.name, "candidate": i + 1, "instance": inst or "",
             "status": "accepted" if det.accepted[i] else "rejected",
             "score": "" if np.isnan(det.score[i]) else round(float(det.score[i]), 4),
             "reason": det.reason[i], "x": round(x, 1), "y": round(y, 1),
             "diameter_px": round(d, 1), "diameter_nm": round(d * px, 1) if px else "",
             "significance": "" if np.isnan(det.significance[i])
             else round(float(det.significance[i]), 2), "filled_px": filled,
             "found_by": det.found_by[i]}
        )  # fmt: skip
    return rows


def overlay_png(
    mic: Micrograph, det: Detections, max_px: int = 1024, missed: np.ndarray | None = None
) -> bytes:
    """The micrograph (block-averaged to at most ``max_px`` a side, contrast-stretched) with
    accepted outlines in blue (the learned finder's in orange) and rejected candidates in
    light grey, as PNG bytes; ``missed`` (H, W), the annotated particles that no detection
    matched (``detect --truth``), drawn in reddish purple so a lab sees what the detector
    misses."""
    import imagecodecs
    from skimage.draw import polygon_perimeter
    from skimage.segmentation import find_boundaries

    h, w = mic.shape
    f = max(1, math.ceil(max(h, w) / max_px))
    img = np.asarray(mic.image, dtype=np.float32)
    hh, ww = h // f, w // f
    img = img[: hh * f, : ww * f].reshape(hh, f, ww, f).mean(axis=(1, 3))
    lo, hi = np.percentile(img, [0.5, 99.5])
    grey = np.clip((img - lo) / max(float(hi - lo), 1e-6) * 255, 0, 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    th = np.r_[_theta(), 0.0]
    order = np.argsort(det.accepted, kind="stable")  # rejected first, accepted on top
    for i in order:
        rr = np.r_[det.radii[i], det.radii[i][0]]
        ys = ((det.cy[i] + rr * np.sin(th)) + 0.5) / f - 0.5
        xs = ((det.cx[i] + rr * np.cos(th)) + 0.5) / f - 0.5
        py, pxx = polygon_perimeter(ys, xs, shape=(hh, ww), clip=False)
        ok = (py >= 0) & (py < hh) & (pxx >= 0) & (pxx < ww)
        colour = (0, 114, 178) if det.accepted[i] else (200, 200, 200)
        if det.found_by[i] == "learned" and det.accepted[i]:
            colour = (230, 159, 0)
        if not det.accepted[i]:
            ok &= (np.arange(py.size) // 3) % 2 == 0  # dashed
        rgb[py[ok], pxx[ok]] = colour
    if missed is not None and missed.any():
        small = missed[: hh * f : f, : ww * f : f]
        rgb[find_boundaries(small, mode="inner")] = (204, 121, 167)
    return bytes(imagecodecs.png_encode(rgb))


def _truth_files(truth: Path, paths: Sequence[Path]) -> dict[Path, Path]:
    from lipoclass.micrograph.annotations import _find_label_file

    return {p: _find_label_file(truth, p, len(paths) == 1) for p in paths}


@dataclass
class DetectResult:
    """What ``detect_to_folder`` did: accepted and rejected candidates per micrograph, and
    the scores against the truth (``InstanceMatch`` per micrograph and pooled) when given."""

    out: Path
    accepted: dict[str, int]
    rejected: dict[str, int]
    scores: dict[str, Any]
    interval: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: each other candidate finder (``CANDIDATE_FINDERS``) on the annotated micrographs:
    #: (pooled ``InstanceMatch``, 95 % interval of its pooled F1 minus this run's, paired
    #: over the micrographs, or None for one micrograph), so a lab sees which suits its data
    other_finders: dict[str, tuple[Any, tuple[float, float] | None]] = field(default_factory=dict)
    #: with annotated classes: per candidate finder (this run's first), ``match.ClassShare``
    #: per class, so a lab sees whether detection alone changes its shares
    class_shares: dict[str, list[Any]] = field(default_factory=dict)

    def text(self) -> str:
        lines = [f"{name}: {n} particle(s), {self.rejected[name]} candidate(s) rejected"
                 for name, n in self.accepted.items()]  # fmt: skip
        if self.scores:
            lines.append("scores against the truth (mask IoU >= 0.5):")
            lines.append(f"{'micrograph':<24} {'truth':>6} {'found':>6} {'match':>6} "
                         f"{'prec':>6} {'recall':>6} {'F1':>6} {'mIoU':>6}")  # fmt: skip
            for name, m in self.scores.items():
                lines.append(f"{name:<24} {m.n_truth:>6} {m.n_found:>6} {len(m.pairs):>6} "
                             f"{m.precision:>6.3f} {m.recall:>6.3f} {m.f1:>6.3f} "
                             f"{m.mean_iou:>6.3f}")  # fmt: skip
            if self.interval:
                (pl, ph), (rl, rh) = self.interval["precision"], self.interval["recall"]
                lines.append(f"all: 95 % interval over the {len(self.scores) - 1} micrographs "
                             f"(bootstrap): precision {pl:.3f}-{ph:.3f}, recall "
                             f"{rl:.3f}-{rh:.3f}")  # fmt: skip
            lines += _finder_lines(self.scores["all"], self.other_finders, len(self.scores) - 1)
            lines += _class_lines(self.class_shares, len(self.scores) - 1)
        lines.append(f"label images, detections.csv and overlays/ -> {self.out}")
        return "\n".join(lines)


#: annotated micrographs below which ``detect --truth`` does not recommend a finder (a
#: bootstrap over fewer micrographs has too few distinct resamples to be trusted)
_MIN_TO_CHOOSE = 5


def _finder_lines(
    mine: Any, others: dict[str, tuple[Any, tuple[float, float] | None]], n_mics: int
) -> list[str]:
    """The other candidate finders' pooled scores beside this run's, and whether one has a
    clearly higher F1 (its paired interval over the micrographs above 0, with at least
    ``_MIN_TO_CHOOSE`` annotated micrographs)."""
    if not others:
        return []
    lines = ["the same annotated micrographs with the other candidate finder(s):"]
    for name, (m, ci) in others.items():
        lines.append(f"  --finder {name}: precision {m.precision:.3f}, recall {m.recall:.3f}, "
                     f"F1 {m.f1:.3f} (this run: {mine.precision:.3f}, {mine.recall:.3f}, "
                     f"{mine.f1:.3f})")  # fmt: skip
        if ci is None or n_mics < _MIN_TO_CHOOSE:
            lines.append(f"    {n_mics} annotated micrograph(s): too few to choose between "
                         f"finders (annotate {_MIN_TO_CHOOSE} or more)")  # fmt: skip
            continue
        gain = f"F1 {m.f1 - mine.f1:+.3f}, 95 % interval {ci[0]:+.3f} to {ci[1]:+.3f}"
        if ci[0] > 0:
            lines.append(f"    clearly higher F1 on your annotated micrographs ({gain} over "
                         f"them): use --finder {name} for the rest of this data")  # fmt: skip
        elif ci[1] < 0:
            lines.append(f"    clearly lower F1 on your annotated micrographs ({gain}): keep "
                         "this run's finder")  # fmt: skip
        else:
            lines.append(f"    no clear difference ({gain}): keep this run's finder, or "
                         "annotate more micrographs to decide")  # fmt: skip
    return lines


def _class_lines(shares: dict[str, list[Any]], n_mics: int) -> list[str]:
    """The annotated classes' shares among the annotated and the found liposomes, and
    whether detection clearly changes them (an interval away from 0, with at least
    ``_MIN_TO_CHOOSE`` annotated micrographs); the other finders' largest change beside."""
    if not shares:
        return []
    finder, mine = next(iter(shares.items()))
    lines = ["class shares: annotated, and among the annotated liposomes found (what a "
             "perfect classifier would report from these detections):",
             f"  {'class':<20} {'truth':>6} {'found':>6} {'recall':>6} {'true %':>7} "
             f"{'found %':>7}  change, pp (95 % interval)"]  # fmt: skip
    for c in mine:
        ci = "" if math.isnan(c.low) else f" ({c.low:+.1f} to {c.high:+.1f})"
        lines.append(f"  {c.label:<20} {c.truth:>6} {c.matched:>6} {c.recall:>6.3f} "
                     f"{c.true_share:>7.1f} {c.found_share:>7.1f}  "
                     f"{c.change:+.1f}{ci}")  # fmt: skip
    for name, other in list(shares.items())[1:]:
        worst = max(other, key=lambda c: abs(c.change))
        mine_worst = max(abs(c.change) for c in mine)
        lines.append(f"  --finder {name}: largest change {worst.label} {worst.change:+.1f} pp "
                     f"(this run, {finder}: {mine_worst:.1f} pp)")  # fmt: skip
    if n_mics < _MIN_TO_CHOOSE:
        lines.append(f"  {n_mics} annotated micrograph(s): too few to say whether detection "
                     f"changes the shares (annotate {_MIN_TO_CHOOSE} or more)")  # fmt: skip
        return lines
    moved = [c for c in mine if c.low > 0 or c.high < 0]
    if moved:
        what = ", ".join(f"{c.label} {c.change:+.1f} pp" for c in moved)
        lines.append(f"  detection changes the shares ({what}): shares measured on these "
                     "detections carry this bias whatever the classifier; compare the other "
                     "--finder's change above, and state the bias beside the shares you "
                     "report")  # fmt: skip
    else:
        lines.append("  no clear change of the shares by detection on these micrographs "
                     "(every interval holds 0)")  # fmt: skip
    return lines


def micrograph_bar(n: int, progress: bool | None, desc: str) -> Any:
    """A tqdm bar over ``n`` micrographs on stderr, shown when ``progress`` (None: when
    stderr is a terminal); hidden, its ``update`` and ``close`` do nothing."""
    import sys

    from tqdm import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    return tqdm(total=n, desc=desc, unit="micrograph", file=sys.stderr, disable=not show)


def detect_to_folder(
    micrographs: Sequence[str | os.PathLike[str]],
    out: Path,
    cfg: DetectConfig,
    *,
    pixel_size_nm: float | None = None,
    truth: Path | None = None,
    truth_classes: Path | None = None,
    progress: bool | None = None,
) -> DetectResult:
    """Detect on every micrograph; write into ``out`` (a staging folder renamed at the end)
    ``<stem>.tif`` label images of the accepted particles, ``detections.csv`` (every
    candidate, ``DETECTION_COLUMNS``), ``overlays/<stem>.png`` and, with ``truth`` (label
    image or folder, as ``crop --labels``), ``detection_scores.csv`` (``SCORE_COLUMNS``,
    per micrograph and ``all``) and ``finder_comparison.csv`` (every candidate finder on the
    annotated micrographs, ``FINDER_COMPARISON_COLUMNS``), with ``truth_classes`` (a class
    per truth instance, as ``crop --classes``) ``detection_by_class.csv``
    (``CLASS_SHARE_COLUMNS``), and ``detect.json`` (the settings, software versions and,
    with the learned finder, its training record). Paths, pixel sizes, the truth files,
    the class table and the verifier are checked before the first detection.
    ``progress``: a bar over the micrographs (default: when stderr is a terminal)."""
    from lipoclass.data import publish_folder
    from lipoclass.micrograph.io import check_micrographs, read_micrograph, write_label_image
    from lipoclass.micrograph.verify import load_verifier

    out = Path(out)
    if out.exists():
        raise LipoclassError(f"{out}: already exists (choose another --out)")
    paths, pxs = check_micrographs(
        micrographs, pixel_size_nm, cfg.unit == "nm", None, "label images would clash"
    )
    for p in paths:
        cfg.diameters_px(pxs[p], str(p))  # nm without a pixel size: fail before any work
    annotated = _Truth.read(truth, truth_classes, paths)
    verifier = load_verifier(cfg.verifier) or False
    staging = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    result = DetectResult(out, {}, {}, {})
    try:
        (staging / "overlays").mkdir(parents=True)
        (staging / "detect.json").write_text(json.dumps(_run_record(cfg), indent=1))
        rows: list[dict[str, object]] = []
        bar = micrograph_bar(len(paths), progress, "detect")
        for p in paths:
            mic = read_micrograph(p, pixel_size_nm=pxs[p], require_pixel_size=False)
            missed = None
            if p in annotated.files:  # scored, beside the other finders (one run for all)
                det, missed = annotated.detect(mic, cfg, verifier, result.scores)
            else:
                det = detect_candidates(mic.image, cfg, mic.pixel_size_nm, str(p), verifier)
            write_label_image(staging / f"{mic.name}.tif", det.labels, mic.pixel_size_nm)
            png = overlay_png(mic, det, missed=missed)
            (staging / "overlays" / f"{mic.name}.png").write_bytes(png)
            n = int(det.labels.max(initial=0))
            result.accepted[mic.name] = n
            result.rejected[mic.name] = int((~det.accepted).sum())
            if n == 0:
                warnings.warn(MicrographWarning(f"{p}: no particle found"), stacklevel=2)
            rows += detection_rows(mic, det)
            bar.update(1)
        bar.close()
        _write_csv(staging / "detections.csv", DETECTION_COLUMNS, rows)
        if result.scores:
            _score_folder(staging, result, annotated, cfg.finder)
        publish_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


@dataclass
class _Truth:
    """A lab's annotated micrographs for ``detect --truth``: the label image of each
    micrograph, the class table (``truth_classes``) and, filled micrograph by micrograph,
    the class of each truth instance and the other finders' matches."""

    files: dict[Path, Path]
    table: dict[tuple[str | None, int], tuple[str, int]] | None = None
    table_path: Path | None = None
    classes: list[dict[int, str]] = field(default_factory=list)
    others: dict[str, list[Any]] = field(default_factory=dict)

    @classmethod
    def read(cls, truth: Path | None, classes: Path | None, paths: Sequence[Path]) -> _Truth:
        """Find the truth files and read the class table (before any detection)."""
        from lipoclass.micrograph.annotations import check_class_table, read_class_table

        if truth is None:
            if classes is not None:
                raise LipoclassError(f"{classes}: a class table goes with the truth label "
                                     "images (--truth)")  # fmt: skip
            return cls({})
        out = cls(_truth_files(Path(truth), paths))
        if classes is not None:
            out.table, out.table_path = read_class_table(Path(classes)), Path(classes)
            check_class_table(out.table, Path(classes), paths)
            stems = {p.stem for p in paths} | {None}
            if not any(m in stems for m, _ in out.table):
                raise LipoclassError(f"{classes}: no row names one of the micrographs "
                                     f"({', '.join(sorted(p.name for p in paths))})")  # fmt: skip
        return out

    def detect(
        self, mic: Micrograph, cfg: DetectConfig, verifier: Any, scores: dict[str, Any]
    ) -> tuple[Detections, np.ndarray]:
        """This run's detections on an annotated micrograph and the annotated particles it
        missed (label image), its match against the truth put in ``scores``; also the other
        finders' matches and the instances' classes."""
        from lipoclass.micrograph.annotations import instance_classes
        from lipoclass.micrograph.io import read_label_image
        from lipoclass.micrograph.match import match_instances

        path = self.files[mic.path]
        t = read_label_image(path, mic.shape, mic.path.name)
        if self.table is not None:
            self.classes.append(instance_classes(self.table, mic.name, t, path, self.table_path))
        dets = _every_finder(mic, cfg, verifier)
        for name, det in dets.items():
            if name != cfg.finder:
                self.others.setdefault(name, []).append(match_instances(t, det.labels))
        m = scores[mic.name] = match_instances(t, dets[cfg.finder].labels)
        missed = np.where(np.isin(t, m.pairs[:, 0]), 0, t)
        return dets[cfg.finder], missed


def _score_folder(staging: Path, result: DetectResult, truth: _Truth, finder: str) -> None:
    """Pool the per-micrograph scores of ``result`` (and of the other finders) into it and
    write ``detection_scores.csv``, ``finder_comparison.csv`` and, with annotated classes,
    ``detection_by_class.csv``."""
    from lipoclass.micrograph.match import (
        class_shares,
        paired_f1_interval,
        pool_matches,
        pooled_interval,
    )

    per_mic = list(result.scores.values())
    others = truth.others
    result.scores["all"] = mine = pool_matches(per_mic)
    result.other_finders = {
        k: (pool_matches(v), paired_f1_interval(per_mic, v) if len(v) > 1 else None)
        for k, v in others.items()
    }
    result.interval = pooled_interval(per_mic) if len(per_mic) > 1 else {}
    _write_csv(staging / "detection_scores.csv", SCORE_COLUMNS,
               [_score_row(k, m, result.interval if k == "all" else {})
                for k, m in result.scores.items()])  # fmt: skip
    if result.other_finders:
        both = {finder: (mine, None), **result.other_finders}
        _write_csv(staging / "finder_comparison.csv", FINDER_COMPARISON_COLUMNS,
                   [_comparison_row(k, m, ci, mine, k == finder)
                    for k, (m, ci) in both.items()])  # fmt: skip
    if truth.table is None:
        return
    # every micrograph of a truth run is annotated and ``_Truth.read`` refused a table that
    # names none of them, so each finder gets a share per class
    result.class_shares = {k: class_shares(v, truth.classes)
                           for k, v in {finder: per_mic, **others}.items()}  # fmt: skip
    _write_csv(staging / "detection_by_class.csv", CLASS_SHARE_COLUMNS,
               [{"finder": k, "used": "yes" if k == finder else "no", **_class_row(c)}
                for k, v in result.class_shares.items() for c in v])  # fmt: skip


def _every_finder(mic: Micrograph, cfg: DetectConfig, verifier: Any) -> dict[str, Detections]:
    """The detections of every candidate finder (``CANDIDATE_FINDERS``) on a micrograph,
    from one run: the learned finder only adds to the ring filter's detections, which
    ``ring_detections`` recovers. Without a verifier only ``cfg.finder``'s (the learned
    finder only adds to a verified ring filter)."""
    from dataclasses import replace

    if verifier is False:
        return {cfg.finder: detect_candidates(mic.image, cfg, mic.pixel_size_nm, str(mic.path),
                                              verifier)}  # fmt: skip
    both = detect_candidates(mic.image, replace(cfg, finder="ring+learned"), mic.pixel_size_nm,
                             str(mic.path), verifier)  # fmt: skip
    return {"ring": ring_detections(both), "ring+learned": both}


def _run_record(cfg: DetectConfig) -> dict[str, Any]:
    """``detect.json``: the resolved settings, software versions and the learned finder's
    training record when it is used (loaded before the first detection; it runs through
    onnxruntime, whose version is added)."""
    from dataclasses import asdict
    from importlib import metadata

    from lipoclass.provenance import versions

    rec: dict[str, Any] = {"config": asdict(cfg), "versions": versions()}
    if cfg.finder != "ring":
        from lipoclass.micrograph.finder import load_finder

        rec["finder"] = load_finder().info
        rec["versions"]["onnxruntime"] = metadata.version("onnxruntime")
    return rec


def _rounded(v: float) -> object:
    """A figure as written to the score CSVs: 4 decimals, empty for NaN."""
    return "" if math.isnan(v) else round(v, 4)


def _match_fields(m: Any) -> dict[str, object]:
    """The columns ``SCORE_COLUMNS`` and ``FINDER_COMPARISON_COLUMNS`` share, of a match."""
    return {"truth": m.n_truth, "detected": m.n_found, "matched": len(m.pairs),
            "precision": _rounded(m.precision), "recall": _rounded(m.recall),
            "f1": _rounded(m.f1), "mean_iou": _rounded(m.mean_iou)}  # fmt: skip


def _comparison_row(
    finder: str, m: Any, ci: tuple[float, float] | None, mine: Any, used: bool
) -> dict[str, object]:
    return {"finder": finder, "used": "yes" if used else "no", **_match_fields(m),
            "f1_difference": "" if used else _rounded(m.f1 - mine.f1),
            "f1_difference_low": "" if ci is None else _rounded(ci[0]),
            "f1_difference_high": "" if ci is None else _rounded(ci[1])}  # fmt: skip


def _class_row(c: Any) -> dict[str, object]:
    return {"class": c.label, "truth": c.truth, "matched": c.matched,
            "recall": _rounded(c.recall), "true_share": _rounded(c.true_share),
            "found_share": _rounded(c.found_share), "change": _rounded(c.change),
            "change_low": _rounded(c.low), "change_high": _rounded(c.high)}  # fmt: skip


def _score_row(name: str, m: Any, ci: dict[str, tuple[float, float]]) -> dict[str, object]:
    row: dict[str, object] = {"micrograph": name, **_match_fields(m)}
    for k in ("precision", "recall"):
        lo, hi = ci.get(k, (math.nan, math.nan))
        row[f"{k}_low"], row[f"{k}_high"] = _rounded(lo), _rounded(hi)
    return row


def _write_csv(path: Path, cols: Sequence[str], rows: list[dict[str, object]]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(cols))
        w.writeheader()
        w.writerows(rows)
