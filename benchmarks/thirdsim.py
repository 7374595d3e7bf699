"""A third cryo-TEM micrograph simulator of liposomes, for evaluation only: nothing trained or
tuned on it (benchmark code, not part of the package; it imports neither ``lipoclass.synth``
nor ``benchmarks/altsim.py`` and differs from both in object, optics and detector).

Object (projected Coulomb potential relative to vitreous ice, V nm, on the detector grid):
each lamella is a smooth radial potential profile, two Gaussian head-group peaks (P-P
distance 3.6-4.4 nm, sigma 0.35-0.5 nm, +1.4-2.2 V) around a Gaussian methyl-trough dip
(sigma 0.6-0.9 nm, -0.5-0.9 V), projected numerically (forward Abel transform as a sum of
0.1 nm shells). Outlines are non-spherical: low-order harmonics (n = 2-4) of the radius.
Diameters are bimodal gamma (an extruded mode, mean 110 nm, CV 0.28, and a sonicated mode,
mean 42 nm, CV 0.3; 25-300 nm). Some liposomes are multilamellar (2-3 lamellae, repeat
6.0-6.8 nm), some hold an off-centre vesicle, some dense content (a uniform denser lumen or
a drug-crystal rod, doxorubicin-sulfate like). Liposomes gather where the ice is thicker.
Distractors: hexagonal ice crystals (flat faceted plates 50-400 nm, 40-200 nm thick,
strongly absorbing with Bragg loss), frost grains (10-50 nm, in small clusters), gold
fiducials (5/10/15 nm), a holey-carbon hole edge (curled rim, fractal thickness, atomic
grain), an ice-thickness gradient (no energy filter: the inelastic share is a chromatically
blurred copy), drift and beam-induced-motion blur.

Image formation: the linear weak-object image 1 + 2 F^-1[E_s E_t CTF Phi] with CTF = -sin(chi
+ arcsin 0.07) (defocus with astigmatism in CTFFIND's df1/df2/angle convention, Cs 2.0 or 2.7
mm, spatial-coherence envelope from the illumination semi-angle, temporal from the focal
spread), times the envelope-blurred transmission of the strong absorbers (crystals, gold,
frost; their phase saturated at ~1 rad). Detector: a counting camera (pixel-aperture MTF
sinc(pi w / 2), DQE(0) 0.8, Poisson counts, a 2 % gain-reference error, a few hot pixels) or
a scintillator CCD (Poisson electrons, then the scintillator PSF, 10 ADU / e, read noise);
optional 8-bit export with a 0.2-99.8 % contrast stretch. Truth: each liposome's projected
outer outline; a pixel inside several goes to the one it is relatively deepest in (smallest
distance / outline radius along its ray).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import fft, ndimage

__all__ = ["ThirdConfig", "ThirdMicrograph", "render", "write_mrc"]

V_ICE, V_CARBON = 4.5, 10.7  # mean inner potentials (V)
LAMBDA_IN_ICE = {300.0: 350.0, 200.0: 290.0}  # inelastic mean free path of ice (nm)


@dataclass(frozen=True)
class ThirdConfig:
    """One micrograph's settings. ``density``: share of the field covered by liposome
    outlines; ``overlap``: share placed against an earlier one; ``crystals`` / ``frost`` /
    ``gold``: mean count per um^2; ``carbon``: chance of a hole edge in the field; ``ice_nm``:
    vitreous ice thickness range (thin to thick); ``drift_nm``: largest residual drift;
    ``detector``: "counting" or "ccd"; ``eight_bit``: contrast-stretched 8-bit export;
    ``lamellar`` / ``nested`` / ``dense`` / ``deform``: shares of multilamellar, vesicle-in-
    vesicle and dense-content liposomes, and the outline's harmonic amplitude."""

    size: int = 1024
    pixel_nm: float = 1.0
    kv: float = 300.0
    dose: float = 30.0  # e/A^2
    defocus_um: tuple[float, float] = (1.0, 2.5)
    density: float = 0.18
    overlap: float = 0.25
    crystals: float = 0.8
    frost: float = 6.0
    gold: float = 2.0
    carbon: float = 0.4
    ice_nm: tuple[float, float] = (50.0, 150.0)
    drift_nm: float = 2.0
    detector: str = "counting"
    eight_bit: bool = False
    lamellar: float = 0.2
    nested: float = 0.08
    dense: float = 0.12
    deform: float = 0.04

    def __post_init__(self) -> None:
        if not (64 <= self.size and 0.2 <= self.pixel_nm <= 5 and self.dose > 0):
            raise ValueError(f"bad size, pixel size or dose in {self}")
        if self.detector not in ("counting", "ccd") or self.kv not in LAMBDA_IN_ICE:
            raise ValueError(f"detector must be counting/ccd, kv 200/300: {self}")


@dataclass
class ThirdMicrograph:
    """Image (H, W) float32, instance labels (H, W) int32, pixel size (nm), the liposomes
    (cy, cx px, r_nm outer radius, lamellae, content) and distractor masks (H, W) bool."""

    image: np.ndarray
    labels: np.ndarray
    pixel_nm: float
    vesicles: list[dict[str, float]]
    absorbers: np.ndarray
    carbon: np.ndarray
    defocus_um: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


def _optics(kv: float) -> tuple[float, float]:
    """Relativistic wavelength (nm) and interaction constant sigma (rad / (V nm))."""
    e0 = 510998.95  # electron rest energy (eV)
    v = kv * 1e3
    lam = 1239.84198 / math.sqrt(v * (2 * e0 + v))  # h c / sqrt(E (E + 2 m c^2)), nm
    return lam, 2 * math.pi / (lam * v) * (e0 + v) / (2 * e0 + v)


def _abel(rho: np.ndarray, h: float) -> np.ndarray:
    """Forward Abel projection of a radial profile sampled at shell mid-points (j + 0.5) h:
    P(s_i) = sum_j rho_j 2 (sqrt(r_{j+1}^2 - s_i^2) - sqrt(r_j^2 - s_i^2)), s_i = i h."""
    nz = np.flatnonzero(np.abs(rho) > 1e-5)
    s = np.arange(len(rho) + 1) * h
    if not len(nz):
        return np.zeros_like(s)
    r0, r1 = nz * h, (nz + 1) * h
    s2 = (s * s)[:, None]
    chord = np.sqrt(np.maximum(r1 * r1 - s2, 0)) - np.sqrt(np.maximum(r0 * r0 - s2, 0))
    return 2 * chord @ rho[nz]


def _gauss(x: np.ndarray, mu: float, sd: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mu) / sd) ** 2)


def _profile(rng: np.random.Generator, r_out: float, mem: dict, cfg: ThirdConfig) -> tuple:
    """Projected profile P(s) (V nm, s on a 0.1 nm grid) of one liposome of outer radius
    ``r_out`` (outer head-group edge), its lamellae and content ("", "lumen", "rod")."""
    h = 0.1
    r = (np.arange(int((r_out + 2 + 2 * cfg.pixel_nm) / h)) + 0.5) * h
    d, sh = mem["pp"], mem["sh"]
    centres = [r_out - d / 2 - sh]
    if rng.random() < cfg.lamellar:
        for _ in range(int(rng.integers(1, 3))):
            if centres[-1] - mem["repeat"] > 12:
                centres.append(centres[-1] - mem["repeat"])
    rho = np.zeros_like(r)
    for c in centres:
        rho += mem["ah"] * (_gauss(r, c - d / 2, sh) + _gauss(r, c + d / 2, sh))
        rho -= mem["at"] * _gauss(r, c, mem["st"])
    content = ""
    inner = centres[-1] - d / 2 - 2 * sh
    prof = _abel(rho, h)
    if rng.random() < cfg.dense / 2 and inner > 10:
        content = "lumen"  # concentrated protein or drug: a uniform denser lumen (+0.3-0.8 V)
        s = np.arange(len(prof)) * h
        prof += rng.uniform(0.3, 0.8) * 2 * np.sqrt(np.maximum(inner * inner - s * s, 0))
    # pixel-area average: the radial profile smoothed by a Gaussian of the variance of a
    # p x p square's projection on a line (p^2 / 12)
    prof = ndimage.gaussian_filter1d(prof, 0.29 * cfg.pixel_nm / h, mode="nearest")
    return prof, len(centres), content, inner


def _outline(rng: np.random.Generator, amp: float) -> tuple[np.ndarray, np.ndarray]:
    """Harmonic amplitudes a_n ~ N(0, amp / (n - 1)) and phases of n = 2, 3, 4."""
    return rng.normal(0, amp, 3) / np.array([1.0, 2.0, 3.0]), rng.uniform(0, 2 * math.pi, 3)


def _rel(dy: np.ndarray, dx: np.ndarray, a: np.ndarray, ph: np.ndarray) -> np.ndarray:
    """Outline radius factor R(theta) / R at each offset (dy, dx)."""
    th = np.arctan2(dy, dx)
    return 1 + sum(a[i] * np.cos((i + 2) * th - ph[i]) for i in range(3))


def _hexagon(n: int, p: float, cy: float, cx: float, a: float, ang: float) -> tuple:
    """Window slices and an anti-aliased mask of a regular hexagon (inradius ``a`` nm)."""
    half = a * 1.16 + 2 * p
    y0, y1 = max(0, int((cy - half) / p)), min(n, int((cy + half) / p) + 1)
    x0, x1 = max(0, int((cx - half) / p)), min(n, int((cx + half) / p) + 1)
    yy = (np.arange(y0, y1)[:, None] + 0.5) * p - cy
    xx = (np.arange(x0, x1)[None, :] + 0.5) * p - cx
    dist = np.full(np.broadcast_shapes(yy.shape, xx.shape), -np.inf)
    for k in range(6):
        t = ang + k * math.pi / 3
        dist = np.maximum(dist, xx * math.cos(t) + yy * math.sin(t) - a)
    return np.s_[y0:y1, x0:x1], np.clip(0.5 - dist / p, 0, 1)


def _fractal(rng: np.random.Generator, n: int, beta: float) -> np.ndarray:
    """Unit-variance Gaussian random field with power spectrum 1 / k^beta."""
    k = np.hypot(fft.fftfreq(n)[:, None], fft.rfftfreq(n)[None, :])
    k[0, 0] = 1.0
    spec = k ** (-beta / 2) * (rng.normal(size=k.shape) + 1j * rng.normal(size=k.shape))
    spec[0, 0] = 0
    f = fft.irfft2(spec, s=(n, n))
    return f / (f.std() + 1e-12)


def _stage(rng: np.random.Generator, cfg: ThirdConfig) -> dict:
    """Carbon film (thickness nm, mask), vitreous ice thickness (nm), strong absorbers
    (optical depth, saturated phase) and frost / gold / crystal mask on the detector grid."""
    n, p = cfg.size, cfg.pixel_nm
    w = n * p
    yy, xx = ((np.arange(n, dtype=np.float32) + 0.5) * p - w / 2 for _ in range(2))
    yy, xx = yy[:, None], xx[None, :]
    carbon_t = np.zeros((n, n), np.float32)
    edge_dist = np.full((n, n), np.float32(1e6))  # nm into the hole from the carbon edge
    if rng.random() < cfg.carbon:
        rh = rng.uniform(600, 1000)  # hole radius (Quantifoil R1.2 - R2)
        th, e = rng.uniform(0, 2 * math.pi), rng.uniform(-0.35, 0.1) * w  # e > 0: centre on C
        edge_dist = rh - np.hypot(yy - (rh + e) * math.sin(th), xx - (rh + e) * math.cos(th))
        on = 1 / (1 + np.exp(np.clip(edge_dist / 1.0, -30, 30)))
        tc = rng.uniform(12, 25) * (1 + 0.5 * np.exp(-np.abs(edge_dist) / 30))  # curled rim
        carbon_t = (on * tc * (1 + 0.08 * _fractal(rng, n, 2.0))).astype(np.float32)
    t0, t1 = cfg.ice_nm
    ramp = xx * math.cos(a := rng.uniform(0, 2 * math.pi)) + yy * math.sin(a)
    meniscus = np.exp(-np.maximum(edge_dist, 0) / rng.uniform(200, 500))
    ice = t0 + (t1 - t0) * np.clip(0.5 * (ramp / w + 0.5) + 0.7 * meniscus, 0, 1)
    depth = np.zeros((n, n), np.float32)  # optical depth of the strong absorbers
    phase = np.zeros((n, n), np.float32)  # their projected potential (V nm)
    area = w * w / 1e6
    for _ in range(rng.poisson(cfg.crystals * area)):
        a = math.exp(rng.uniform(math.log(25), math.log(200)))
        c = rng.uniform(0, w, 2)
        for k in range(1 + (rng.random() < 0.4)):  # a plate, sometimes a terrace on it
            sl, m = _hexagon(n, p, c[0], c[1], a * (1 - 0.4 * k), rng.uniform(0, math.pi / 3))
            t = rng.uniform(40, 200) / (1 + k)
            depth[sl] += m * t / rng.uniform(50, 110)  # Bragg + inelastic loss
            phase[sl] += m * t * V_ICE
    for kind, rate in (("frost", cfg.frost), ("gold", cfg.gold)):
        for _ in range(rng.poisson(rate * area)):
            c = rng.uniform(0, w, 2)
            for _j in range(int(rng.integers(1, 7 if kind == "frost" else 4))):
                if kind == "frost":
                    rad, v, lam = rng.uniform(5, 25), V_ICE, 200.0
                else:
                    rad, v, lam = float(rng.choice([2.5, 5.0, 7.5])), 30.0, 8.0
                c = c + rng.normal(0, 1.5 * rad, 2)
                half = rad + 2 * p
                y0, x0 = max(0, int((c[0] - half) / p)), max(0, int((c[1] - half) / p))
                y1, x1 = min(n, int((c[0] + half) / p) + 1), min(n, int((c[1] + half) / p) + 1)
                if y1 <= y0 or x1 <= x0:
                    continue
                s = np.hypot((np.arange(y0, y1)[:, None] + 0.5) * p - c[0],
                             (np.arange(x0, x1)[None, :] + 0.5) * p - c[1])  # fmt: skip
                chord = 2 * np.sqrt(np.maximum(rad * rad - s * s, 0))
                chord = ndimage.uniform_filter(chord, 3) if p < rad / 2 else chord
                depth[y0:y1, x0:x1] += chord / lam
                phase[y0:y1, x0:x1] += chord * v
    return {"carbon_t": carbon_t, "carbon": carbon_t > 2, "ice": ice.astype(np.float32),
            "depth": depth, "phase": phase, "absorbers": depth > 0.05}  # fmt: skip


def _place(rng: np.random.Generator, cfg: ThirdConfig, st: dict) -> list[tuple]:
    """Liposome centres (y, x nm) and outer radii until ``density`` of the hole is covered;
    off carbon and absorbers, more likely where the ice is thick; ``overlap`` of them against
    an earlier one (centre distance >= the larger radius + a quarter of the smaller)."""
    p, w = cfg.pixel_nm, cfg.size * cfg.pixel_nm
    blocked = st["carbon"] | ndimage.binary_dilation(st["absorbers"], iterations=2)
    free = ndimage.distance_transform_edt(~blocked) * p if blocked.any() else None
    ice = st["ice"] / st["ice"].max()
    out: list[tuple[float, float, float]] = []
    arr = np.zeros((0, 3))
    area, target = 0.0, cfg.density * w * w * (1 - float(st["carbon"].mean()))  # of the hole
    for _ in range(30000):
        if area >= target:
            break
        mean, cv = (42.0, 0.3) if rng.random() < 0.3 else (110.0, 0.28)
        r = min(max(rng.gamma(1 / cv**2, mean * cv**2), 25.0), 300.0) / 2
        if len(out) and rng.random() < cfg.overlap:
            j = int(rng.integers(len(out)))
            big, small = max(r, arr[j, 2]), min(r, arr[j, 2])
            dd = max(rng.uniform(0.75, 1.0) * (r + arr[j, 2]), big + 0.25 * small)
            a = rng.uniform(0, 2 * math.pi)
            y, x = arr[j, 0] + dd * math.sin(a), arr[j, 1] + dd * math.cos(a)
            skip = j
        else:
            y, x = rng.uniform(0, w, 2)
            skip = -1
        if not (0 <= y < w and 0 <= x < w):
            continue
        iy, ix = int(y / p), int(x / p)
        if rng.random() > ice[iy, ix]:
            continue
        if free is not None and free[iy, ix] < 1.1 * r:
            continue
        d = np.hypot(arr[:, 0] - y, arr[:, 1] - x)
        close = d < r + arr[:, 2] + 2
        if skip >= 0:
            close[skip] = False
        if np.any(close):
            continue
        out.append((y, x, r))
        arr = np.asarray(out)
        area += math.pi * r * r
    return out


def _vesicles(rng: np.random.Generator, cfg: ThirdConfig, st: dict, parts: list | None = None):
    """Projected potential (V nm, supersampled per pixel), labels, liposome records. With a
    list ``parts``, each potential patch added is appended to it as (label of the liposome it
    belongs to, its window's slices, the float32 patch): a liposome's own profile, its rod and
    its nested vesicle (benchmarks/ideal_observer_thirdsim.py); no draw or output changes."""
    n, p = cfg.size, cfg.pixel_nm
    pot = np.zeros((n, n), np.float32)
    labels = np.zeros((n, n), np.int32)
    depth = np.full((n, n), np.inf, np.float32)
    mem = {"pp": rng.uniform(3.6, 4.4), "sh": rng.uniform(0.35, 0.5), "ah": rng.uniform(1.4, 2.2),
           "st": rng.uniform(0.6, 0.9), "at": rng.uniform(0.5, 0.9),
           "repeat": rng.uniform(6.0, 6.8)}  # fmt: skip
    info = []
    todo = [(y, x, r, True, 0) for y, x, r in _place(rng, cfg, st)]
    k = 0
    while todo:
        y, x, r, real, owner = todo.pop(0)
        owner = k + 1 if real else owner
        prof, nlam, content, inner = _profile(rng, r, mem, cfg)
        a, ph = _outline(rng, cfg.deform)
        ext = r * (1 + np.abs(a).sum()) + p
        y0, y1 = max(0, int((y - ext) / p)), min(n, int((y + ext) / p) + 1)
        x0, x1 = max(0, int((x - ext) / p)), min(n, int((x + ext) / p) + 1)
        if y1 <= y0 or x1 <= x0:
            continue
        py = (np.arange(y0, y1)[:, None] + 0.5) * p - y
        px = (np.arange(x0, x1)[None, :] + 0.5) * p - x
        q = np.hypot(py, px) / _rel(py, px, a, ph)  # distance scaled to the round outline
        patch = np.interp(q, np.arange(len(prof)) * 0.1, prof, right=0.0)
        pot[y0:y1, x0:x1] += patch
        if parts is not None:
            parts.append((owner, np.s_[y0:y1, x0:x1], patch.astype(np.float32)))
        if content == "" and inner > 20 and rng.random() < cfg.dense / 2:
            content = "rod"  # drug-crystal bundle across the lumen (Doxil-like)
            sl, rod = _rod(rng, pot, p, y, x, inner)
            if parts is not None:
                parts.append((owner, sl, rod))
        if content == "" and inner > 30 and real and rng.random() < cfg.nested:
            content = "nested"  # an off-centre vesicle inside (drawn, not labelled)
            ri = rng.uniform(0.3, 0.6) * inner
            off = rng.uniform(0, inner - ri - 4)
            ang = rng.uniform(0, 2 * math.pi)
            todo.append((y + off * math.sin(ang), x + off * math.cos(ang), ri, False, owner))
        if not real:
            continue
        k += 1
        rel = q / r
        win = (rel <= 1) & (rel < depth[y0:y1, x0:x1])
        depth[y0:y1, x0:x1][win] = rel[win]
        labels[y0:y1, x0:x1][win] = k
        info.append({"cy": y / p - 0.5, "cx": x / p - 0.5, "r_nm": r, "lamellae": nlam,
                     "content": content})  # fmt: skip
    return pot, labels, info


def _rod(rng: np.random.Generator, pot: np.ndarray, p: float, y: float, x: float, inner: float):
    """A crystal rod (cylinder 8-25 nm wide, +2 V) across the lumen, through its centre, added
    to ``pot``; its window's slices and potential."""
    wid, ln = rng.uniform(8, 25) / 2, rng.uniform(0.6, 0.9) * inner
    ang = rng.uniform(0, math.pi)
    half = ln + wid + 2 * p
    y0, x0 = max(0, int((y - half) / p)), max(0, int((x - half) / p))
    y1, x1 = min(pot.shape[0], int((y + half) / p) + 1), min(pot.shape[1], int((x + half) / p) + 1)
    dy = (np.arange(y0, y1)[:, None] + 0.5) * p - y
    dx = (np.arange(x0, x1)[None, :] + 0.5) * p - x
    along = np.clip(dx * math.cos(ang) + dy * math.sin(ang), -ln, ln)
    d = np.hypot(dx - along * math.cos(ang), dy - along * math.sin(ang))
    rod = (2.0 * 2 * np.sqrt(np.maximum(wid * wid - d * d, 0))).astype(np.float32)
    pot[y0:y1, x0:x1] += rod
    return np.s_[y0:y1, x0:x1], rod


def _ctf(rng: np.random.Generator, cfg: ThirdConfig, n: int) -> tuple:
    """Weak-object transfer and the envelope (rfft grid n x n); the defocus drawn (um)."""
    lam, p = _optics(cfg.kv)[0], cfg.pixel_nm
    ky, kx = fft.fftfreq(n, p)[:, None], fft.rfftfreq(n, p)[None, :]  # 1/nm
    k2 = ky * ky + kx * kx
    df = rng.uniform(*cfg.defocus_um) * 1e3  # nm, underfocus > 0
    astig = rng.uniform(0, 80)
    df1, df2, ang = df + astig / 2, df - astig / 2, rng.uniform(0, math.pi)
    dfk = 0.5 * (df1 + df2 + (df1 - df2) * np.cos(2 * (np.arctan2(ky, kx) - ang)))
    cs = float(rng.choice([2.0, 2.7])) * 1e6  # nm
    chi = math.pi * lam * dfk * k2 - 0.5 * math.pi * cs * lam**3 * k2 * k2
    alpha = rng.uniform(0.005, 0.03) * 1e-3  # illumination semi-angle (rad)
    k = np.sqrt(k2)
    e_s = np.exp(-((math.pi * alpha / lam) ** 2) * (cs * lam**3 * k**3 - dfk * lam * k) ** 2)
    e_t = np.exp(-0.5 * (math.pi * lam * rng.uniform(4, 9) * k2) ** 2)  # focal spread 4-9 nm
    u = rng.uniform(0.1, 0.2)  # rms beam-induced motion (nm)
    env = e_s * e_t * np.exp(-2 * (math.pi * u) ** 2 * k2)
    return -np.sin(chi + math.asin(0.07)) * env, env, df / 1e3


def _detect(
    rng: np.random.Generator, cfg: ThirdConfig, inten: np.ndarray, trace: dict | None = None
) -> np.ndarray:
    """Counts from unit-mean intensity: drift blur, then the camera (class docstring). With a
    dict ``trace``: the linear transfer, gain and noise-free mean output recorded in it."""
    n, p = cfg.size, cfg.pixel_nm
    fy, fx = fft.fftfreq(n)[:, None], fft.rfftfreq(n)[None, :]  # cycles / px
    dr = rng.uniform(0, cfg.drift_nm) / p
    a = rng.uniform(0, math.pi)
    tr = np.sinc(dr * (fy * math.sin(a) + fx * math.cos(a)))  # linear drift of dr px
    n_e = cfg.dose * (10 * p) ** 2  # electrons per pixel
    if cfg.detector == "counting":
        mtf = np.sinc(fy) * np.sinc(fx)  # sinc(pi w / 2), w = f / Nyquist
        sig = fft.irfft2(fft.rfft2(inten) * tr * mtf, s=(n, n))
        mean = np.maximum(sig, 0) * n_e * 0.8
        img = rng.poisson(mean).astype(np.float32)
        img *= (1 + 0.02 * rng.standard_normal((n, n))).astype(np.float32)  # gain ref error
        hot = rng.random((n, n)) < 2e-5
        img[hot] += rng.uniform(3, 10, int(hot.sum())) * n_e * 0.8
        if trace is not None:
            trace.update(transfer=tr * mtf, gain=n_e * 0.8, mean=mean, hot=hot)
        return img
    sig = fft.irfft2(fft.rfft2(inten) * tr, s=(n, n))
    elec = rng.poisson(np.maximum(sig, 0) * n_e * 0.6).astype(np.float32)
    psf = 1 / (1 + (np.hypot(fy, fx) / 0.2) ** 2)  # scintillator, MTF 0.14 at Nyquist
    img = fft.irfft2(fft.rfft2(elec) * psf, s=(n, n)) * 10.0
    if trace is not None:
        e_mean = np.maximum(sig, 0) * n_e * 0.6
        mean = fft.irfft2(fft.rfft2(e_mean) * psf, s=(n, n)) * 10.0
        trace.update(transfer=tr, gain=n_e * 0.6, psf=psf, electrons=e_mean, mean=mean,
                     hot=np.zeros((n, n), bool))  # fmt: skip
    return (img + rng.normal(0, 4.0, (n, n))).astype(np.float32)


def render(cfg: ThirdConfig, seed: int, trace: dict | None = None) -> ThirdMicrograph:
    """One micrograph from ``seed``. With a dict ``trace`` (benchmarks/ideal_observer_
    thirdsim.py) the image formation's linear steps are recorded in it: each liposome's
    potential patches (``_vesicles``), the grain's std, sigma, the CTF with ``through``, the
    absorbers' transmission, the elastic share ``keep``, the inelastic blur, the detector's
    transfer, gain and noise-free mean (``_detect``), the 8-bit stretch; the same draws and
    the same image as without it."""
    rng = np.random.default_rng([seed, 3])
    n, p = cfg.size, cfg.pixel_nm
    sigma = _optics(cfg.kv)[1]
    st = _stage(rng, cfg)
    parts: list | None = [] if trace is not None else None
    pot, labels, info = _vesicles(rng, cfg, st, parts)
    # atomic grain of the carbon (random C atoms, S(0) ~ 0.3) and of the ice (water, S(0) ~
    # 0.06): per-pixel std of the projected potential 0.107 sqrt(30 t / A), 0.136 sqrt(2 t / A)
    grain = np.sqrt(30 * st["carbon_t"]) * 0.107 + np.sqrt(2 * st["ice"]) * 0.136
    pot += grain / p * rng.standard_normal((n, n)).astype(np.float32)
    if trace is not None:
        trace.update(grain=grain / p)  # the grain's per-pixel std (V nm)
    pot += (V_CARBON - V_ICE) * st["carbon_t"]
    strong = 1.2 * np.tanh(sigma * st["phase"] / 1.2)  # strong absorbers' phase, saturated
    phi = sigma * pot + strong
    pad = 64
    size = fft.next_fast_len(n + 2 * pad)
    ctf, env, df = _ctf(rng, cfg, size)

    def through(img: np.ndarray, h: np.ndarray) -> np.ndarray:
        big = np.pad(img, ((pad, size - n - pad),) * 2, mode="reflect")
        return fft.irfft2(fft.rfft2(big) * h, s=(size, size))[pad : pad + n, pad : pad + n]

    wave = 1 + 2 * through(phi, ctf)
    trans = through(np.exp(-st["depth"]), env)
    inten = wave * trans
    lam_in = LAMBDA_IN_ICE[cfg.kv]
    t_eq = st["ice"] + st["carbon_t"] * lam_in / 160.0  # carbon's inelastic path ~ 160 nm
    keep = np.exp(-t_eq / lam_in)  # elastic share; the rest arrives chromatically blurred
    blur_px = rng.uniform(3, 6) / p
    blur = ndimage.gaussian_filter(inten, blur_px, mode="reflect")
    inten = (keep * inten + (1 - keep) * blur).astype(np.float32)
    img = _detect(rng, cfg, inten, trace)
    if trace is not None:
        trace.update(parts=parts, sigma=sigma, ctf=ctf, through=through, trans=trans,
                     keep=keep, blur_px=blur_px)  # fmt: skip
    if cfg.eight_bit:
        lo, hi = np.percentile(img, [0.2, 99.8])
        if trace is not None:
            trace.update(stretch=(float(lo), float(hi)))
        img = np.clip(np.rint((img - lo) / max(hi - lo, 1e-9) * 255), 0, 255).astype(np.float32)
    return ThirdMicrograph(img, labels, p, info, st["absorbers"], st["carbon"], df,
                           {"ice_mean_nm": float(st["ice"].mean())})  # fmt: skip


def write_mrc(path: str, image: np.ndarray, pixel_nm: float) -> None:
    """Float32 MRC with the pixel size (Angstrom) in the header."""
    import mrcfile

    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.asarray(image, np.float32))
        m.voxel_size = pixel_nm * 10
