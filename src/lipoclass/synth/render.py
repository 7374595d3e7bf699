"""Image formation for one simulated liposome crop (cryo-TEM-like).

The model, in the order it is applied (see docs/synth.md for the reasons):

1. a *projected excess density* map ``P`` (H, W) in units of "absorbed fraction": every
   vesicle is a set of spherical bilayer shells (two dense head-group layers with a lighter
   tail gap) whose projection is computed analytically from chord lengths through spheres,
   on a slightly elliptical, harmonically wobbled radius field; plus interior contents
   (dense textured interior and bent precipitate rods for "full" liposomes), neighbours cut
   by the image edges, ice blobs and a multi-octave (1/f^beta, FFT) ice-thickness background;
2. a CTF-ish transfer: Gaussian blur (defocus) plus a difference-of-Gaussians fringe, which
   gives the light halo next to dark edges seen in under-focused cryo-TEM;
3. transmission ``exp(-P)``, shot (Poisson) noise at the sample's electron dose, a small
   detector blur, and the sample's grey-level mapping.

Everything random comes from the ``numpy.random.Generator`` passed in; nothing global.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

__all__ = ["SampleParams", "VesicleSpec", "draw_sample", "render_particle"]

# Physical constants of the look (per nm of projected path; see docs/synth.md).
_HEAD_NM = 1.1  # head-group layer thickness
_BILAYER_NM = 4.6  # total bilayer thickness (outer head to inner head)
_HEAD_DENS = 0.040  # excess density of a head-group layer, per nm of path
_TAIL_DENS = 0.006  # lipid tails: lighter than the heads -> the light gap between two lines
_CONTENT_DENS = 0.008  # "full" interior at relative density 1, per nm of path
_ROD_DENS = 0.020  # drug precipitate (doxorubicin-like bundles), per nm of path


@dataclass(frozen=True)
class SampleParams:
    """Imaging conditions shared by all particles of one micrograph ("sample")."""

    pixel_size_nm: float  # nm per pixel
    dose: float  # electrons per pixel (shot-noise level)
    blur_px: float  # defocus blur sigma, pixels
    fringe: float  # amplitude of the under-focus fringe (DoG)
    lowcut: float  # fraction of low-frequency contrast removed (phase contrast, CTF ~ 0 at 0)
    lowcut_px: float  # scale of that low-frequency cut, pixels
    contrast: float  # scale of all excess densities
    ice_amp: float  # amplitude of the fractal ice-thickness background
    ice_beta: float  # spectral slope of that background
    grey0: float  # grey level of clear ice
    gain: float  # grey levels per unit relative intensity change


def draw_sample(rng: np.random.Generator) -> SampleParams:
    """Draw one micrograph's imaging conditions."""
    return SampleParams(
        pixel_size_nm=float(rng.uniform(0.4, 1.2)),
        dose=float(np.exp(rng.uniform(np.log(6.0), np.log(40.0)))),
        blur_px=float(rng.uniform(0.5, 1.6)),
        fringe=float(rng.uniform(0.2, 0.9)),
        lowcut=float(rng.uniform(0.5, 0.8)),
        lowcut_px=float(rng.uniform(5.0, 10.0)),
        contrast=float(rng.uniform(0.7, 1.3)),
        ice_amp=float(rng.uniform(0.02, 0.10)),
        ice_beta=float(rng.uniform(1.8, 2.8)),
        grey0=float(rng.uniform(130.0, 185.0)),
        gain=float(rng.uniform(80.0, 130.0)),
    )


@dataclass
class VesicleSpec:
    """Geometry and contents of one vesicle (main particle or neighbour); lengths in px."""

    cy: float
    cx: float
    radius: float  # outer membrane surface, px
    ecc: float = 0.0  # ellipticity (area-preserving stretch)
    angle: float = 0.0
    harm: np.ndarray = field(default_factory=lambda: np.zeros((4, 2)))  # (K, [amp, phase])
    strength: float = 1.0  # membrane density factor (faint membranes < 1)
    gaps: list[tuple[float, float]] = field(default_factory=list)  # broken arcs (centre, width)
    inner: list[tuple[float, float, float, float]] = field(default_factory=list)  # (dy, dx, R, s)
    content: float = 0.0  # interior density relative to _CONTENT_DENS
    texture: float = 0.0  # relative amplitude of interior texture
    # precipitate rods: (dy, dx, half length, radius, bend) in px
    rods: list[tuple[float, float, float, float, float]] = field(default_factory=list)


# --------------------------------------------------------------------------- noise


def fractal_noise(shape: tuple[int, int], beta: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-std 1/f^beta noise (H, W) via one real FFT: the sum of all octaves at
    once, i.e. the spectral equivalent of Perlin/fBm multi-octave noise."""
    h, w = shape
    hh, ww = sfft.next_fast_len(h, real=True), sfft.next_fast_len(w, real=True)
    spec = sfft.rfft2(rng.standard_normal((hh, ww)))  # (hh, ww//2+1)
    f2 = _freq2(hh, ww)
    f2[0, 0] = 1.0
    spec *= f2 ** (-beta / 4.0)
    spec[0, 0] = 0.0
    out = sfft.irfft2(spec, s=(hh, ww))[:h, :w]
    sd = out.std()
    return out / sd if sd > 0 else out


def _freq2(h: int, w: int) -> np.ndarray:
    """Squared spatial frequency (cycles/px) on the rfft2 grid, (H, W//2+1)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    return fy * fy + fx * fx


def _add_lowfreq_noise(spec: np.ndarray, beta: float, amp: float, rng: np.random.Generator) -> None:
    """Add, in place, to the rfft2 spectrum ``spec`` (hh, ww//2+1) of an (hh, ww) field the
    spectrum of 1/f^beta noise with std ~``amp``, drawn only for the lowest eighth of
    frequencies (the upper octaves carry almost no power at beta >= 1.8 and the shot noise
    dominates there); cheap: 1/32 of the random numbers of a full field."""
    hh = spec.shape[0]
    ww = 2 * (spec.shape[1] - 1)
    my, mx = hh // 8 + 1, ww // 8 + 1
    rows = np.r_[0:my, hh - my + 1 : hh]
    f2 = np.fft.fftfreq(hh)[rows, None] ** 2 + np.fft.rfftfreq(ww)[None, :mx] ** 2
    f2[0, 0] = 1.0
    weight = f2 ** (-beta / 4.0)  # amplitude ~ f^(-beta/2)
    weight[0, 0] = 0.0
    # std of the irfft2 of this (Hermitian-completed) spectrum, ~ sqrt(2 sum |W|^2) / N
    var = 2.0 * 2.0 * (weight**2).sum() / float(hh * ww) ** 2
    weight *= amp / math.sqrt(max(var, 1e-30))
    z = rng.standard_normal((2, rows.size, mx))
    spec[rows, :mx] += ((z[0] + 1j * z[1]) * weight).astype(spec.dtype)


# --------------------------------------------------------------------------- geometry


def _window(shape: tuple[int, int], cy: float, cx: float, ext: float) -> tuple[slice, slice]:
    h, w = shape
    y0, y1 = max(0, int(cy - ext)), min(h, math.ceil(cy + ext) + 1)
    x0, x1 = max(0, int(cx - ext)), min(w, math.ceil(cx + ext) + 1)
    return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))


def _radius_field(
    ys: slice, xs: slice, cy: float, cx: float, v: VesicleSpec
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Distorted radius (px) and the direction (cos theta, sin theta) over a window."""
    # float32 grids: ample precision for pixel geometry, half the memory traffic
    yy = np.arange(ys.start, ys.stop, dtype=np.float32)[:, None] - np.float32(cy)
    xx = np.arange(xs.start, xs.stop, dtype=np.float32)[None, :] - np.float32(cx)
    ca, sa = math.cos(v.angle), math.sin(v.angle)
    u = xx * ca + yy * sa
    w = -xx * sa + yy * ca
    s = 1.0 + v.ecc
    r = np.sqrt((u / s) ** 2 + (w * s) ** 2)
    rr = np.sqrt(u * u + w * w)
    rr[rr == 0] = 1.0
    c1, s1 = u / rr, w / rr  # cos(theta), sin(theta)
    ck, sk = c1 * c1 - s1 * s1, 2.0 * c1 * s1  # cos(2 theta), sin(2 theta)
    wobble = np.ones_like(r)
    for k in range(v.harm.shape[0]):
        amp, ph = float(v.harm[k, 0]), float(v.harm[k, 1])
        if amp:  # amp * cos((k+2) theta + ph)
            wobble += amp * (ck * math.cos(ph) - sk * math.sin(ph))
        ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
    return r / wobble, (c1, s1)


def _ball(r2: np.ndarray, radius: float) -> np.ndarray:
    """Projected path length (px) through a sphere of ``radius`` at squared distance r2."""
    if radius <= 0:
        return np.zeros_like(r2)
    return 2.0 * np.sqrt(np.maximum(radius * radius - r2, 0.0))


def _bilayer(r2: np.ndarray, radius: float, px_nm: float) -> np.ndarray:
    """Projected density of one bilayer whose outer surface has ``radius`` px: two dense
    head-group shells with the lighter tail region between them (cryo-TEM 'double line')."""
    h = _HEAD_NM / px_nm
    t = _BILAYER_NM / px_nm
    b0, b1 = _ball(r2, radius), _ball(r2, radius - h)
    b2, b3 = _ball(r2, radius - t + h), _ball(r2, radius - t)
    # densities per px of path = per nm * nm/px
    return (_HEAD_DENS * ((b0 - b1) + (b2 - b3)) + _TAIL_DENS * (b1 - b2)) * px_nm


def _gap_factor(
    direction: tuple[np.ndarray, np.ndarray], gaps: list[tuple[float, float]]
) -> np.ndarray | float:
    """Membrane strength along the angle: 1 except smooth dips to 0 at broken arcs."""
    if not gaps:
        return 1.0
    theta = np.arctan2(direction[1], direction[0])
    f = np.ones(theta.shape)
    for centre, width in gaps:
        d = np.angle(np.exp(1j * (theta - centre)))  # wrapped angular distance
        f = np.minimum(f, 1.0 - np.exp(-((d / width) ** 4)))
    return f


def draw_vesicle(
    p: np.ndarray,
    v: VesicleSpec,
    px_nm: float,
    rng: np.random.Generator,
    mask: np.ndarray | None = None,
) -> None:
    """Add one vesicle's projected density into ``p`` (H, W), in place; fill ``mask`` with
    its outline when given."""
    ext = v.radius * (1.0 + v.ecc) * (1.0 + np.abs(v.harm[:, 0]).sum()) + 3.0
    ys, xs = _window(p.shape, v.cy, v.cx, ext)
    if ys.stop <= ys.start or xs.stop <= xs.start:
        return
    r, theta = _radius_field(ys, xs, v.cy, v.cx, v)
    r2 = r * r
    win = p[ys, xs]
    win += v.strength * _bilayer(r2, v.radius, px_nm) * _gap_factor(theta, v.gaps)
    if mask is not None:
        mask[ys, xs] |= r <= v.radius
    inner_r = v.radius - _BILAYER_NM / px_nm
    for dy, dx, radius, s in v.inner:
        ri, _ = _radius_field(ys, xs, v.cy + dy, v.cx + dx, v)
        win += s * _bilayer(ri * ri, radius, px_nm)
    if v.content > 0 and inner_r > 1:
        dens = _CONTENT_DENS * v.content * px_nm * _ball(r2, inner_r)
        if v.texture > 0:
            tex = fractal_noise(win.shape, 1.2, rng)
            dens *= np.clip(1.0 + v.texture * tex, 0.0, None)
        win += dens
    for oy, ox, half_len, rad, bend in v.rods:
        # bent prolate ellipsoid along a random direction: projected path length
        ang = rng.uniform(0, np.pi)
        yy = np.arange(ys.start, ys.stop)[:, None] - (v.cy + oy)
        xx = np.arange(xs.start, xs.stop)[None, :] - (v.cx + ox)
        u = xx * math.cos(ang) + yy * math.sin(ang)
        w = -xx * math.sin(ang) + yy * math.cos(ang) - bend * u * u / max(half_len, 1.0)
        q = 1.0 - (u / half_len) ** 2 - (w / rad) ** 2
        win += _ROD_DENS * px_nm * 2.0 * rad * np.sqrt(np.maximum(q, 0.0))


def add_ice_blob(
    p: np.ndarray, cy: float, cx: float, radius: float, darkness: float, rng: np.random.Generator
) -> None:
    """A dark, smooth-edged, irregular blob (ice contamination) into ``p``, in place."""
    ys, xs = _window(p.shape, cy, cx, radius * 1.6 + 4)
    if ys.stop <= ys.start or xs.stop <= xs.start:
        return
    h, w = ys.stop - ys.start, xs.stop - xs.start
    yy = np.arange(ys.start, ys.stop)[:, None] - cy
    xx = np.arange(xs.start, xs.stop)[None, :] - cx
    rough = fractal_noise((h, w), 3.2, rng) * 0.15 * radius
    r = np.sqrt(yy * yy * rng.uniform(0.6, 1.4) + xx * xx) + rough
    edge = max(1.5, 0.08 * radius)
    blob = 1.0 / (1.0 + np.exp(np.clip((r - radius) / edge, -30, 30)))
    p[ys, xs] += -math.log(1.0 - darkness) * blob


# --------------------------------------------------------------------------- imaging


def image_formation(
    p: np.ndarray, s: SampleParams, rng: np.random.Generator, dose_scale: float = 1.0
) -> np.ndarray:
    """Projected density (H, W) -> grey levels (H, W) float64 on the 0-255 scale (unclipped):
    CTF-ish transfer, fractal ice background, transmission, Poisson shot noise, detector
    blur. The transfer and the background are one filter in Fourier space (periodic edges):
    ``gauss(sigma) + fringe * (gauss(sigma) - gauss(wide)) - lowcut * gauss(low)``."""
    h, w = p.shape
    # zero-padded to fast FFT sizes (the pad is clean ice; it also limits wrap-around)
    hh = sfft.next_fast_len(h + 16, real=True)
    ww = sfft.next_fast_len(w + 16, real=True)
    ky = -2.0 * np.pi**2 * np.fft.fftfreq(hh)[:, None] ** 2
    kx = -2.0 * np.pi**2 * np.fft.rfftfreq(ww)[None, :] ** 2

    def gauss(sigma: float) -> np.ndarray:  # separable Gaussian transfer, (hh, ww//2+1)
        return np.exp(ky * sigma * sigma) * np.exp(kx * sigma * sigma)

    g = gauss(s.blur_px)
    transfer = g + s.fringe * (g - gauss(2.5 * s.blur_px + 1.0)) - s.lowcut * gauss(s.lowcut_px)
    # single precision from here on: plenty for 8/16-bit output and ~2x faster
    spec = sfft.rfft2(p.astype(np.float32), s=(hh, ww)) * transfer.astype(np.float32)
    _add_lowfreq_noise(spec, s.ice_beta, s.ice_amp, rng)
    observed = sfft.irfft2(spec, s=(hh, ww))[:h, :w]  # (h, w) float32
    gy, gx = rng.normal(0.0, 0.02, size=2)  # a gentle thickness gradient across the crop
    ramp_y = (gy * (np.arange(h) / h - 0.5)).astype(np.float32)[:, None]
    ramp_x = (gx * (np.arange(w) / w - 0.5)).astype(np.float32)[None, :]
    observed += ramp_y + ramp_x
    dose = np.float32(s.dose * dose_scale)
    lam = dose * np.exp(-observed)
    # shot noise: Poisson statistics (variance = mean) drawn with the normal approximation,
    # fine at these doses (>= ~2 e/px) and several times faster than exact Poisson draws
    noise = rng.standard_normal(lam.shape, dtype=np.float32)
    counts = np.maximum(np.rint(lam + np.sqrt(lam) * noise), 0.0)
    rel = ndimage.gaussian_filter(counts / dose, 0.45, mode="nearest", truncate=3.0)
    return (s.grey0 + s.gain * (rel - 1.0)).astype(np.float64)


def render_particle(
    rng: np.random.Generator, spec: ParticlePlan, sample: SampleParams
) -> tuple[np.ndarray, np.ndarray]:
    """Render one planned particle: grey image (H, W) float64 on 0-255 and mask (H, W) bool."""
    p = np.zeros((spec.height, spec.width), dtype=np.float64)
    mask = np.zeros_like(p, dtype=bool)
    for nb in spec.neighbours:
        draw_vesicle(p, nb, sample.pixel_size_nm, rng)
    draw_vesicle(p, spec.main, sample.pixel_size_nm, rng, mask=mask)
    for cy, cx, radius, dark in spec.ice:
        add_ice_blob(p, cy, cx, radius, dark, rng)
    p *= sample.contrast
    return image_formation(p, sample, rng, spec.dose_scale), mask


@dataclass
class ParticlePlan:
    """Everything needed to render one particle (sizes in px)."""

    height: int
    width: int
    main: VesicleSpec
    neighbours: list[VesicleSpec] = field(default_factory=list)
    ice: list[tuple[float, float, float, float]] = field(default_factory=list)
    dose_scale: float = 1.0
