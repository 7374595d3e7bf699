"""An independent cryo-TEM micrograph simulator of liposomes, to check ``lipoclass detect`` on
images it was never trained on. Written from the physics, sharing no code or habits with
``lipoclass.synth`` (benchmark code, not part of the package).

Object: the projected Coulomb potential (V nm, relative to vitreous ice) on a simulation grid
(half the pixel size), then a complex exit wave exp(-mu + i sigma V) (sigma: interaction
constant at the voltage; mu = 0.07 x the phase for lipid and protein, thickness / 2 Lambda for
ice contamination and carbon: they scatter out of the aperture), propagated through the
objective lens (defocus with astigmatism, Cs 2.7 mm, B-factor envelope; the wave band-limited
to the detector's Nyquist) in Fourier space, |.|^2, binned 2 x 2 to the detector pixel, uneven
illumination, Poisson counts at the dose per pixel area x DQE 0.5.
Liposomes: bilayers as analytic projections of spherical shells (two headgroup leaflets denser
than water around a lighter tail region), log-normal diameters, slightly elliptical,
1-4 lamellae, some with a dense core, touching / overlapping pairs and chains. Distractors:
ice-contamination blobs (thresholded sums of random Gaussians, 30-400 nm, 0.5-1.2 x as thick
as wide), a carbon film beyond a straight or hole-rim edge with its own texture, protein
aggregates (clusters of small spheres). Truth: an instance label image of each liposome's
projected outer disc; a pixel inside several goes to the one of smallest power distance
|x - c|^2 - R^2 (the split runs along the chord through the two outlines' crossings).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import fft, ndimage

__all__ = ["AltConfig", "AltMicrograph", "render", "write_mrc"]


@dataclass(frozen=True)
class AltConfig:
    """One micrograph's settings; ``density``: share of the field covered by liposome discs;
    ``ice`` / ``debris``: mean count per um^2; ``carbon``: chance of a film edge;
    ``illumination``: relative brightness change across the field; ``defocus_um``: range;
    ``max_aspect``: liposomes' aspect ratio drawn in [1, max_aspect]; ``multilamellar`` and
    ``cores``: shares of liposomes with 2-4 lamellae and with a dense core."""

    size: int = 1024
    pixel_nm: float = 1.0
    dose: float = 40.0  # e/A^2
    kv: float = 300.0
    defocus_um: tuple[float, float] = (1.5, 3.0)
    density: float = 0.2
    touching: float = 0.3
    ice: float = 1.5
    debris: float = 8.0
    carbon: float = 0.5
    illumination: float = 0.15
    median_d_nm: float = 80.0
    max_aspect: float = 1.15
    multilamellar: float = 0.32
    cores: float = 0.12

    def __post_init__(self) -> None:
        if not (64 <= self.size and 0.2 <= self.pixel_nm <= 5 and self.dose > 0):
            raise ValueError(f"bad size, pixel size or dose in {self}")
        if not (0 < self.density <= 0.6 and 0 <= self.touching <= 1):
            raise ValueError(f"bad density or touching in {self}")


@dataclass
class AltMicrograph:
    """Counts image (H, W) float32, instance labels (H, W) int32, pixel size, the liposomes
    (cy, cx px, outer radius nm, lamellae, core) and distractor masks (H, W) bool."""

    image: np.ndarray
    labels: np.ndarray
    pixel_nm: float
    vesicles: list[dict[str, float]]
    ice: np.ndarray
    carbon: np.ndarray
    debris: np.ndarray
    defocus_um: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


def _wavelength_a(kv: float) -> float:
    v = kv * 1e3
    return 12.2643 / math.sqrt(v * (1 + 0.978459e-6 * v))


def _sigma_per_v_nm(kv: float) -> float:
    """Interaction constant (rad per V nm)."""
    lam = _wavelength_a(kv) * 1e-10
    m, e, h, c = 9.109e-31, 1.602e-19, 6.626e-34, 2.998e8
    gamma = 1 + e * kv * 1e3 / (m * c * c)
    return 2 * math.pi * gamma * m * e * lam / h**2 * 1e-9


def _shell_projection(s: np.ndarray, shells: list[tuple[float, float, float]]) -> np.ndarray:
    """Projected potential (V nm) at radius s (nm) of concentric uniform shells (a, b, dV):
    dV x chord length through the shell, 2 (sqrt(b^2 - s^2) - sqrt(a^2 - s^2))."""
    out = np.zeros_like(s)
    s2 = s * s
    for a, b, dv in shells:
        out += 2 * dv * (np.sqrt(np.maximum(b * b - s2, 0)) - np.sqrt(np.maximum(a * a - s2, 0)))
    return out


def _vesicle_shells(rng: np.random.Generator, r_out: float, mem: dict[str, float]) -> tuple:
    """Shells (a, b, dV) of one liposome: lamellae (headgroup leaflets and tail region) from
    the outside in, and a dense core in some."""
    n = int(
        rng.choice([1, 2, 3, 4], p=[1 - mem["multi"], *(mem["multi"] * np.array([17, 10, 5]) / 32)])
    )
    half, head = mem["thick"] / 2, mem["head_w"]
    centres = [r_out - half]
    for _ in range(n - 1):
        gap = rng.uniform(5.5, 8.0) if rng.random() > 0.3 else centres[-1] * rng.uniform(0.2, 0.5)
        if centres[-1] - gap < 10 + half:
            break
        centres.append(centres[-1] - gap)
    shells = []
    for c in centres:
        shells += [(c + half - head, c + half, mem["head_v"]),
                   (c - half + head, c + half - head, mem["tail_v"]),
                   (c - half, c - half + head, mem["head_v"])]  # fmt: skip
    core = 0.0
    if rng.random() < mem["cores"]:
        core = rng.uniform(0.15, 0.6)
        shells.append((0.0, centres[-1] - half, core))
    return shells, len(centres), core


def _blob(rng: np.random.Generator, d: float, g: float) -> tuple[np.ndarray, int]:
    """Thickness map (nm) of an irregular ice particle of about d nm on a grid of g nm: a dome
    over the region where a sum of 3-9 random Gaussians plus a smooth random field (a coarse
    Gaussian field, cubic-zoomed) exceeds 0.5."""
    half = math.ceil(0.8 * d / g) + 2
    yy, xx = (np.mgrid[-half : half + 1, -half : half + 1] * g).astype(np.float32)
    f = np.zeros_like(yy)
    for _ in range(int(rng.integers(3, 10))):
        c = rng.normal(0, 0.2 * d, 2)
        w = d * rng.uniform(0.08, 0.25)
        f += np.exp(-((yy - c[0]) ** 2 + (xx - c[1]) ** 2) / (2 * w * w))
    coarse = ndimage.gaussian_filter(rng.standard_normal((13, 13)), 1.0)
    field = ndimage.zoom(coarse / coarse.std(), yy.shape[0] / 13, order=3)
    env = np.exp(-(((yy**2 + xx**2) / (0.4 * d) ** 2) ** 2))  # 0 well inside the box
    f += 0.6 * field[: f.shape[0], : f.shape[1]] * env
    thick = min(400.0, d * rng.uniform(0.5, 1.2))
    return thick * np.sqrt(np.clip((f - 0.5) / max(float(f.max()) - 0.5, 1e-3), 0, 1)), half


def _stamp(dst: np.ndarray, patch: np.ndarray, cy: int, cx: int, half: int) -> None:
    """Add ``patch`` (2 half + 1 square) centred at (cy, cx) into ``dst``, clipped."""
    y0, x0 = cy - half, cx - half
    ys, xs = max(0, -y0), max(0, -x0)
    ye = min(patch.shape[0], dst.shape[0] - y0)
    xe = min(patch.shape[1], dst.shape[1] - x0)
    if ye > ys and xe > xs:
        dst[y0 + ys : y0 + ye, x0 + xs : x0 + xe] += patch[ys:ye, xs:xe]


def _carbon(rng: np.random.Generator, n: int, g: float) -> tuple[np.ndarray, np.ndarray]:
    """Carbon thickness (nm) on the n x n grid: beyond a straight edge or a hole's rim
    crossing the field, 10-30 nm with a 1-2 nm-scale texture, edge smoothed over ~3 nm."""
    w = n * g
    yy, xx = np.ogrid[:n, :n]
    yy, xx = yy.astype(np.float32) * g - w / 2, xx.astype(np.float32) * g - w / 2
    th = rng.uniform(0, 2 * math.pi)
    e = rng.uniform(0.15, 0.45) * w
    if rng.random() < 0.35:
        dist = xx * math.cos(th) + yy * math.sin(th) - e  # > 0: film
    else:
        rh = rng.uniform(0.7, 2.0) * w
        cy, cx = -(rh - e) * math.sin(th), -(rh - e) * math.cos(th)
        dist = np.hypot(yy - cy, xx - cx) - rh
    edge = 1 / (1 + np.exp(-np.clip(dist / 1.5, -30, 30)))
    tex = ndimage.gaussian_filter(rng.standard_normal((n, n)).astype(np.float32), 1.2 / g)
    tex /= tex.std() + 1e-9
    return edge * rng.uniform(10, 30) * (1 + 0.1 * tex), dist


def _place(rng: np.random.Generator, cfg: AltConfig, free: np.ndarray, w_nm: float) -> list:
    """Liposome centres (y, x nm) and outer radii: random until ``density`` of the field is
    covered; ``touching`` of them against an earlier one, overlapping it by 0-40 % of the
    smaller one's radius (in projection; none hides another's centre)."""
    out: list[tuple[float, float, float]] = []
    area, target = 0.0, cfg.density * w_nm * w_nm
    g = w_nm / free.shape[0]
    for _ in range(20000):
        if area >= target:
            break
        r = float(np.clip(rng.lognormal(math.log(cfg.median_d_nm), 0.5), 30, 300)) / 2
        arr = np.asarray(out).reshape(-1, 3)
        touch = len(out) > 0 and rng.random() < cfg.touching
        if touch:
            j = int(rng.integers(len(out)))
            a = rng.uniform(0, 2 * math.pi)
            dd = r + arr[j, 2] - rng.uniform(0, 0.4) * min(r, arr[j, 2])
            y, x = arr[j, 0] + dd * math.sin(a), arr[j, 1] + dd * math.cos(a)
        else:
            y, x = rng.uniform(0, w_nm, 2)
        if not (0 <= y < w_nm and 0 <= x < w_nm):
            continue
        d = np.hypot(arr[:, 0] - y, arr[:, 1] - x)
        close = r + arr[:, 2] - (0.4 * np.minimum(r, arr[:, 2]) if touch else -3.0)
        if np.any(d < close - 1e-9):
            continue
        iy, ix = int(y / g), int(x / g)
        if free[iy, ix] < 0.9 * r:  # distance (nm) to carbon or ice
            continue
        out.append((y, x, r))
        area += math.pi * r * r
    return out


@functools.lru_cache(maxsize=2)
def _freqs(n: int, g: float) -> tuple[np.ndarray, ...]:
    """|k|^2 (1/A^2), cos 2 theta, sin 2 theta and |k| of an n x n FFT grid of g nm."""
    ky = fft.fftfreq(n, g * 10).astype(np.float32)[:, None]
    kx = fft.fftfreq(n, g * 10).astype(np.float32)[None, :]
    k2 = ky * ky + kx * kx
    with np.errstate(invalid="ignore", divide="ignore"):
        c2 = np.nan_to_num((kx * kx - ky * ky) / k2)
        s2 = np.nan_to_num(2 * kx * ky / k2)
    return k2, c2, s2, np.sqrt(k2)


def _lens(rng: np.random.Generator, cfg: AltConfig, n: int, g: float) -> tuple:
    """Objective-lens transfer (n, n) complex64 on a grid of g nm: exp(i chi) with chi = pi
    lambda df k^2 - pi/2 Cs lambda^3 k^4 (A; astigmatism up to 5 % of df, Cs 2.7 mm), a
    B-factor envelope (60-200 A^2) and the wave band-limited to the detector's Nyquist (as
    Fourier-cropped binning of counting movies), so that |wave|^2 fits the half-pixel grid
    without aliasing; and the defocus (A) and B-factor drawn."""
    lam = _wavelength_a(cfg.kv)
    df = rng.uniform(*cfg.defocus_um) * 1e4
    dfa, afa = rng.uniform(0, 0.05) * df, rng.uniform(0, math.pi)
    k2, c2, s2, k = _freqs(n, g)
    dft = df + dfa * (c2 * math.cos(2 * afa) + s2 * math.sin(2 * afa))
    chi = np.float32(math.pi * lam) * dft * k2 - np.float32(math.pi / 2 * 2.7e7 * lam**3) * k2 * k2
    bfac = rng.uniform(60, 200)
    k_ny = 1 / (20 * cfg.pixel_nm)
    ap = np.clip((k_ny - k) / (0.1 * k_ny), 0, 1)
    env = np.exp(np.float32(-bfac / 4) * k2) * (0.5 - 0.5 * np.cos(np.float32(np.pi) * ap))
    return env * np.cos(chi) + 1j * (env * np.sin(chi)), df, bfac


def render(cfg: AltConfig, seed: int) -> AltMicrograph:
    """One micrograph from ``seed``."""
    rng = np.random.default_rng(seed)
    p = cfg.pixel_nm
    os_ = 2  # simulation grid: half the pixel, so |wave|^2 does not alias (wave band-limited)
    g, n = p / os_, cfg.size * os_
    w_nm = cfg.size * p
    pot = np.zeros((n, n), np.float32)  # projected potential of lipid / protein (V nm)
    thick_ice = np.zeros((n, n), np.float32)
    occupied = np.zeros((n, n), bool)
    thick_c = np.zeros((n, n), np.float32)
    if rng.random() < cfg.carbon:
        thick_c, dist = _carbon(rng, n, g)
        occupied |= dist > -2
    n_ice = rng.poisson(cfg.ice * w_nm * w_nm / 1e6)
    for _ in range(n_ice):
        d = float(np.exp(rng.uniform(math.log(30), math.log(400))))
        blob, half = _blob(rng, d, g)
        _stamp(thick_ice, blob, int(rng.integers(n)), int(rng.integers(n)), half)
    occupied |= thick_ice > 0
    free = ndimage.distance_transform_edt(~occupied[::os_, ::os_]) * p if occupied.any() else None
    if free is None:
        free = np.full((cfg.size, cfg.size), 1e9)
    mem = {"thick": rng.uniform(4.0, 5.5), "head_w": rng.uniform(0.8, 1.3),
           "head_v": rng.uniform(1.0, 1.8), "tail_v": -rng.uniform(0.2, 0.6),
           "multi": cfg.multilamellar, "cores": cfg.cores}  # fmt: skip
    ves = _place(rng, cfg, free, w_nm)
    labels = np.zeros((cfg.size, cfg.size), np.int32)
    power = np.full((cfg.size, cfg.size), np.inf, np.float32)
    ss = max(1, math.ceil(g / 0.35))
    info = []
    for k, (y, x, r) in enumerate(ves, start=1):
        shells, nlam, core = _vesicle_shells(rng, r, mem)
        q = math.sqrt(rng.uniform(1.0, cfg.max_aspect))
        ang = rng.uniform(0, math.pi)
        ca, sa = math.cos(ang), math.sin(ang)

        def s_eff(yy: np.ndarray, xx: np.ndarray, y=y, x=x, q=q, ca=ca, sa=sa) -> np.ndarray:
            u, v = (xx - x) * ca + (yy - y) * sa, -(xx - x) * sa + (yy - y) * ca
            return np.sqrt((u * q) ** 2 + (v / q) ** 2)

        # simulation grid, supersampled ss x ss per cell, averaged
        lo_y, hi_y = max(0, int((y - r * q) / g) - 1), min(n, int((y + r * q) / g) + 2)
        lo_x, hi_x = max(0, int((x - r * q) / g) - 1), min(n, int((x + r * q) / g) + 2)
        sub = (np.arange(ss) + 0.5) / ss
        yy = ((np.arange(lo_y, hi_y)[:, None] + sub[None, :]) * g).ravel()
        xx = ((np.arange(lo_x, hi_x)[:, None] + sub[None, :]) * g).ravel()
        sgrid = np.linspace(0, r + 0.5, int((r + 0.5) / 0.05) + 2)
        prof = _shell_projection(sgrid, shells)
        val = np.interp(s_eff(yy[:, None], xx[None, :]), sgrid, prof, right=0.0)
        val = val.reshape(hi_y - lo_y, ss, hi_x - lo_x, ss).mean(axis=(1, 3))
        pot[lo_y:hi_y, lo_x:hi_x] += val.astype(np.float32)
        # truth at the detector pixels: outer disc, power-distance split
        ly0, ly1 = max(0, int((y - r * q) / p) - 1), min(cfg.size, int((y + r * q) / p) + 2)
        lx0, lx1 = max(0, int((x - r * q) / p) - 1), min(cfg.size, int((x + r * q) / p) + 2)
        se = s_eff((np.arange(ly0, ly1)[:, None] + 0.5) * p, (np.arange(lx0, lx1)[None] + 0.5) * p)
        pw = (se * se - r * r).astype(np.float32)
        win = (pw <= 0) & (pw < power[ly0:ly1, lx0:lx1])
        power[ly0:ly1, lx0:lx1][win] = pw[win]
        labels[ly0:ly1, lx0:lx1][win] = k
        info.append({"cy": y / p - 0.5, "cx": x / p - 0.5, "r_nm": r, "lamellae": nlam,
                     "core": core, "aspect": q * q})  # fmt: skip
    deb = np.zeros((n, n), np.float32)
    for _ in range(rng.poisson(cfg.debris * w_nm * w_nm / 1e6)):
        m = int(rng.integers(2, 30)) if rng.random() < 0.3 else int(rng.integers(1, 8))
        c = rng.uniform(0, w_nm, 2)
        for _j in range(m):
            c = c + rng.normal(0, 6, 2)
            rs = rng.uniform(2.5, 7)
            sd = math.sqrt(rs * rs / 5 + (0.4 * g) ** 2)
            half = math.ceil(3 * sd / g) + 1
            ax = np.arange(-half, half + 1) * g
            cy, cx = int(c[0] / g), int(c[1] / g)
            fy, fx = c[0] - cy * g, c[1] - cx * g
            gau = np.exp(-((ax[:, None] - fy) ** 2 + (ax[None, :] - fx) ** 2) / (2 * sd * sd))
            mass = 4 / 3 * math.pi * rs**3 * 2.0  # protein: ~2 V above ice
            _stamp(deb, (mass * gau / (2 * math.pi * sd * sd)).astype(np.float32), cy, cx, half)
    sigma = _sigma_per_v_nm(cfg.kv)
    texture = ndimage.gaussian_filter(rng.standard_normal((n, n)).astype(np.float32), 0.6 / g)
    phase = (
        np.float32(sigma) * (pot + deb + 4.5 * thick_ice + 5.0 * thick_c)
        + 0.01 * texture / texture.std()
    )
    mu = np.float32(0.07 * sigma) * (pot + deb) + thick_ice / (2 * 150.0) + thick_c / (2 * 150.0)
    # reflect-pad: no wrap-around fringes at the field's edges
    size = fft.next_fast_len(n + 2 * max(16, math.ceil(20 / g)))
    pad = ((size - n) // 2, size - n - (size - n) // 2)
    amp, ph = np.exp(-mu).astype(np.float32), phase.astype(np.float32)
    wave = np.pad(amp * np.cos(ph) + 1j * (amp * np.sin(ph)), pad, mode="reflect")
    h, df, bfac = _lens(rng, cfg, size, g)
    out = fft.ifft2(fft.fft2(wave, overwrite_x=True) * h, overwrite_x=True)
    out = out[pad[0] : pad[0] + n, pad[0] : pad[0] + n]
    inten = out.real**2 + out.imag**2
    if os_ > 1:
        inten = inten.reshape(cfg.size, os_, cfg.size, os_).mean(axis=(1, 3))
    yy, xx = (a.astype(np.float32) / cfg.size - 0.5 for a in np.ogrid[: cfg.size, : cfg.size])
    a = rng.uniform(0, 2 * math.pi)
    ramp = xx * math.cos(a) + yy * math.sin(a)
    cy, cx = rng.uniform(-0.6, 0.6, 2)
    fall = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.8)
    illum = (1 + cfg.illumination * ramp) * (1 - cfg.illumination * 0.5 * (1 - fall))
    dose_px = cfg.dose * (p * 10) ** 2 * 0.5  # detective quantum efficiency ~0.5
    img = rng.poisson(np.maximum(inten * illum * dose_px, 0)).astype(np.float32)

    def down(m: np.ndarray) -> np.ndarray:
        return m.reshape(cfg.size, os_, cfg.size, os_).max(axis=(1, 3)) if os_ > 1 else m

    return AltMicrograph(img, labels, p, info, down(thick_ice > 1), down(thick_c > 1),
                         down(deb * sigma > 0.02), df / 1e4,
                         {"bfactor": bfac, "membrane_thick": mem["thick"]})  # fmt: skip


def write_mrc(path: str, image: np.ndarray, pixel_nm: float) -> None:
    """Float32 MRC with the pixel size (Angstrom) in the header."""
    import mrcfile

    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.asarray(image, np.float32))
        m.voxel_size = pixel_nm * 10
