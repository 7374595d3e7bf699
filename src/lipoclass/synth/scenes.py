"""What each class looks like: per-class geometry, contents and ambiguity modes, turned
into a ``ParticlePlan`` that ``render.render_particle`` draws. The numbers are documented
choices (docs/synth.md), not fitted to any real data set or tuned to any model."""

from __future__ import annotations

import math

import numpy as np

from lipoclass.synth.render import ParticlePlan, SampleParams, VesicleSpec

__all__ = ["PROBLEMS", "plan_particle"]

# Class order and the thesis' counts (Tables 1 and 2), used as default shares.
PROBLEMS: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {
    "lamellarity": (("unilamellar", "multilamellar", "uncertain"), (12368, 1717, 84)),
    "encapsulation": (("full", "uncertain", "empty"), (24255, 502, 161)),
}

_BILAYER_NM = 4.6
_MAX_D_PX = 150.0  # keeps crops at most ~250 px
_MIN_D_PX = 16.0


def _lognormal_nm(rng: np.random.Generator, median: float, sigma: float, lo: float, hi: float):
    return float(np.clip(median * math.exp(sigma * rng.standard_normal()), lo, hi))


def _shape(rng: np.random.Generator, irregular: float = 1.0) -> dict:
    """Slightly elliptical, slightly wobbly outline parameters."""
    amps = rng.normal(0.0, 1.0, size=4) * np.array([0.02, 0.012, 0.008, 0.005]) * irregular
    phases = rng.uniform(0, 2 * np.pi, size=4)
    return {
        "ecc": float(abs(rng.normal(0.0, 0.05)) * irregular),
        "angle": float(rng.uniform(0, np.pi)),
        "harm": np.stack([amps, phases], axis=1),
    }


def _inner_shells(
    rng: np.random.Generator, radius: float, px: float, count: int, strength: tuple[float, float]
) -> list[tuple[float, float, float, float]]:
    """Nested shells inside a vesicle of ``radius`` px: tight onion layers or a smaller,
    off-centre vesicle inside (vesicle-in-vesicle)."""
    t = _BILAYER_NM / px
    shells: list[tuple[float, float, float, float]] = []
    r_prev, oy, ox = radius, 0.0, 0.0
    for i in range(count):
        if i == 0 and rng.random() < 0.35:
            r_new = r_prev * rng.uniform(0.35, 0.8)
            room = max(r_prev - r_new - 1.5 * t, 0.0)
            off = room * rng.uniform(0.1, 0.9)
        else:
            r_new = r_prev - rng.uniform(5.5, 13.0) / px
            off = rng.uniform(0.0, 0.6) * max(r_prev - r_new - t, 0.0)
        if r_new < max(8.0 / px, 2.0 * t):
            break
        a = rng.uniform(0, 2 * np.pi)
        oy, ox = oy + off * math.sin(a), ox + off * math.cos(a)
        shells.append((oy, ox, r_new, float(rng.uniform(*strength))))
        r_prev = r_new
    return shells


def _neighbour(
    rng: np.random.Generator,
    problem: str,
    radius: float,
    cy: float,
    cx: float,
    px: float,
) -> VesicleSpec:
    """A neighbouring liposome of the same preparation (a typical, certain-looking one)."""
    v = VesicleSpec(cy=cy, cx=cx, radius=radius, **_shape(rng))
    v.strength = float(rng.uniform(0.7, 1.2))
    if problem == "lamellarity":
        v.content = float(rng.uniform(0.0, 0.15))
        if rng.random() < 0.15:
            v.inner = _inner_shells(rng, radius, px, int(rng.integers(1, 3)), (0.6, 1.1))
    else:
        full = rng.random() < 0.9
        v.content = float(rng.uniform(0.45, 1.1) if full else rng.uniform(0.0, 0.12))
        v.texture = float(rng.uniform(0.2, 0.6))
    return v


def _place_neighbours(
    rng: np.random.Generator,
    plan: ParticlePlan,
    problem: str,
    px: float,
    count: int,
) -> None:
    """Non-overlapping neighbours anywhere in the crop, often cut by the edges."""
    main = plan.main
    placed: list[tuple[float, float, float]] = [(main.cy, main.cx, main.radius)]
    for _ in range(count):
        rn = _lognormal_nm(rng, 60.0, 0.35, 25.0, 200.0) / px
        rn = float(np.clip(rn, 8.0, _MAX_D_PX / 2))
        for _try in range(12):
            y = rng.uniform(-0.6 * rn, plan.height + 0.6 * rn)
            x = rng.uniform(-0.6 * rn, plan.width + 0.6 * rn)
            if all(math.hypot(y - py, x - pxx) > 1.03 * (rn + pr) for py, pxx, pr in placed):
                placed.append((y, x, rn))
                plan.neighbours.append(_neighbour(rng, problem, rn, y, x, px))
                break


def _apply_ambiguity(
    rng: np.random.Generator, plan: ParticlePlan, mode: str, problem: str, px: float
) -> None:
    """Make the main particle genuinely ambiguous in one of several ways."""
    v = plan.main
    r = v.radius
    if mode == "overlap":
        rn = r * rng.uniform(0.5, 1.2)
        d = (r + rn) * rng.uniform(0.45, 0.92)
        a = rng.uniform(0, 2 * np.pi)
        nb = _neighbour(rng, problem, rn, v.cy + d * math.sin(a), v.cx + d * math.cos(a), px)
        plan.neighbours.append(nb)
    elif mode == "ice":
        rb = r * rng.uniform(0.45, 0.95)
        d = r * rng.uniform(0.2, 1.0)
        a = rng.uniform(0, 2 * np.pi)
        plan.ice.append(
            (v.cy + d * math.sin(a), v.cx + d * math.cos(a), rb, float(rng.uniform(0.45, 0.9)))
        )
    elif mode == "faint":
        v.strength *= float(rng.uniform(0.25, 0.45))
    elif mode == "broken":
        k = int(rng.integers(1, 4))
        v.gaps = [
            (float(rng.uniform(-np.pi, np.pi)), float(rng.uniform(0.3, 0.8))) for _ in range(k)
        ]
    elif mode == "faint_inner":
        if v.inner:
            v.inner = [(dy, dx, ri, s * rng.uniform(0.2, 0.45)) for dy, dx, ri, s in v.inner]
        else:
            ri = r * rng.uniform(0.45, 0.85)
            v.inner = [(0.0, 0.0, ri, float(rng.uniform(0.2, 0.4)))]
    elif mode == "noisy":
        plan.dose_scale = float(rng.uniform(0.35, 0.6))
    elif mode == "intermediate":
        v.content = float(rng.uniform(0.12, 0.4))
    elif mode == "partial":
        rin = r - _BILAYER_NM / px
        v.content = float(rng.uniform(0.03, 0.2))
        v.rods = [
            (
                *(rng.uniform(-0.3, 0.3, size=2) * rin),
                float(rin * rng.uniform(0.15, 0.35)),
                float(rin * rng.uniform(0.08, 0.15)),
                float(rng.uniform(-0.3, 0.3)),
            )
        ]


_LAM_MODES = ("overlap", "ice", "faint", "broken", "faint_inner", "noisy")
_LAM_P = np.array([0.28, 0.22, 0.14, 0.14, 0.14, 0.08])
_ENC_MODES = ("intermediate", "partial", "ice", "overlap", "faint", "noisy")
_ENC_P = np.array([0.32, 0.2, 0.18, 0.18, 0.05, 0.07])


def _base_and_diameter(rng: np.random.Generator, problem: str, label: str) -> tuple[str, float]:
    """(the class whose structure is drawn: an uncertain lamellarity particle looks uni- or
    multilamellar, the diameter in nm of a particle of class ``label``)."""
    if problem != "lamellarity":
        median = {"full": 70.0, "empty": 64.0, "uncertain": 76.0}[label]
        sigma = 0.42 if label == "uncertain" else 0.33
        return label, _lognormal_nm(rng, median, sigma, 28.0, 240.0)
    if label == "uncertain":
        base = "unilamellar" if rng.random() < 0.55 else "multilamellar"
        return base, _lognormal_nm(rng, 80.0, 0.45, 28.0, 260.0)
    if label == "unilamellar":
        return label, _lognormal_nm(rng, 62.0, 0.35, 28.0, 220.0)
    return label, _lognormal_nm(rng, 100.0, 0.38, 40.0, 260.0)


def plan_particle(
    rng: np.random.Generator, problem: str, label: str, sample: SampleParams
) -> ParticlePlan:
    """Draw the geometry of one particle of class ``label``."""
    px = sample.pixel_size_nm
    uncertain = label == "uncertain"
    base, d_nm = _base_and_diameter(rng, problem, label)
    d_px = float(np.clip(d_nm / px, _MIN_D_PX, _MAX_D_PX))
    radius = d_px / 2.0

    shape = _shape(rng)
    a = radius * (1.0 + shape["ecc"]) * (1.0 + np.abs(shape["harm"][:, 0]).sum())
    b = radius / (1.0 + shape["ecc"]) * (1.0 + np.abs(shape["harm"][:, 0]).sum())
    ca, sa = math.cos(shape["angle"]), math.sin(shape["angle"])
    ex = math.sqrt((a * ca) ** 2 + (b * sa) ** 2)
    ey = math.sqrt((a * sa) ** 2 + (b * ca) ** 2)
    margin = min(50.0, 12.0 + 0.8 * d_px)  # ~50 px of surroundings, less for small ones
    width = 2 * math.ceil(ex + margin) + 1
    height = 2 * math.ceil(ey + margin) + 1
    cy = (height - 1) / 2 + rng.uniform(-0.5, 0.5)
    cx = (width - 1) / 2 + rng.uniform(-0.5, 0.5)
    main = VesicleSpec(cy=cy, cx=cx, radius=radius, **shape)
    main.strength = float(rng.uniform(0.75, 1.2) if rng.random() > 0.08 else rng.uniform(0.5, 0.75))
    plan = ParticlePlan(height=height, width=width, main=main)

    if problem == "lamellarity":
        main.content = float(rng.uniform(0.0, 0.15))
        if base == "multilamellar":
            count = int(rng.choice([1, 2, 3, 4], p=[0.45, 0.3, 0.15, 0.1]))
            weak = (0.35, 0.6) if rng.random() < 0.12 else (0.6, 1.1)
            main.inner = _inner_shells(rng, radius, px, count, weak)
            if not main.inner:  # too small for the spacing: one shell at half radius
                main.inner = [(0.0, 0.0, radius * 0.55, float(rng.uniform(*weak)))]
        modes, probs = _LAM_MODES, _LAM_P
    else:
        rin = radius - _BILAYER_NM / px
        if rng.random() < 0.08:
            main.inner = _inner_shells(rng, radius, px, 1, (0.6, 1.1))
        full = label == "full" or (uncertain and rng.random() < 0.5)
        if full:
            main.content = float(rng.uniform(0.45, 1.1))
            main.texture = float(rng.uniform(0.2, 0.6))
            if rng.random() < 0.6 and rin > 4:
                main.content *= 0.7
                for _ in range(1 if rng.random() < 0.7 else 2):
                    main.rods.append(
                        (
                            *(rng.uniform(-0.15, 0.15, size=2) * rin),
                            float(rin * rng.uniform(0.45, 0.8)),
                            float(rin * rng.uniform(0.12, 0.25)),
                            float(rng.uniform(-0.4, 0.4)),
                        )
                    )
        else:
            main.content = float(rng.uniform(0.0, 0.12))
            main.texture = float(rng.uniform(0.1, 0.3))
        modes, probs = _ENC_MODES, _ENC_P

    if uncertain:
        k = 1 if rng.random() < 0.65 else 2
        for m in rng.choice(len(modes), size=k, replace=False, p=probs):
            _apply_ambiguity(rng, plan, modes[int(m)], problem, px)
    elif rng.random() < 0.04:  # clear particles sometimes have ice nearby, off the particle
        rb = radius * rng.uniform(0.3, 0.7)
        d = radius + rb * rng.uniform(1.3, 2.0)
        ang = rng.uniform(0, 2 * np.pi)
        plan.ice.append((cy + d * math.sin(ang), cx + d * math.cos(ang), rb, 0.6))

    _place_neighbours(rng, plan, problem, px, min(int(rng.poisson(1.3)), 5))
    return plan
