"""Whole synthetic micrographs (``lipoclass synth ... --micrographs``): many liposomes drawn
by the same renderer as the crops (``render.draw_vesicle`` on a ``scenes.plan_particle``
plan, one ``render.image_formation`` for the whole field), some touching or overlapping,
with ice contamination, an optional carbon edge and, on request, debris and an uneven
illumination (the distractors a detector must reject). Writes per micrograph the image (16-bit
TIFF with its pixel size in the resolution tags, or float32 MRC with ``voxel_size``), an
instance label image (0 background, 1..K) and one class table for all micrographs.

Layout of the output folder (written to a staging folder, then renamed)::

    OUT/micrographs/mic0001.tif|.mrc   the micrographs
    OUT/labels/mic0001.tif             uint16 (uint32 beyond 65535) instance label images
    OUT/annotations.csv                micrograph,instance,label,x,y,diameter_nm,...
    OUT/synth.json                     settings and each micrograph's imaging conditions
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipoclass.data import publish_folder
from lipoclass.errors import LipoclassError
from lipoclass.synth.generate import GENERATOR_VERSION, Ratios, _quantise, resolve_shares
from lipoclass.synth.render import (
    SampleParams,
    VesicleSpec,
    _radius_field,
    _window,
    add_ice_blob,
    draw_sample,
    draw_vesicle,
    fractal_noise,
    image_formation,
)
from lipoclass.synth.scenes import PROBLEMS, plan_particle

__all__ = [
    "ANNOTATION_COLUMNS",
    "MICROGRAPH_FORMATS",
    "MicrographConfig",
    "SyntheticMicrograph",
    "render_micrograph",
    "synthesize_micrographs",
    "write_label_tiff",
]

MICROGRAPH_FORMATS = ("tiff", "mrc")
ANNOTATION_COLUMNS = (
    "micrograph", "instance", "label", "x", "y", "diameter_nm", "diameter_px",
    "pixel_size_nm", "touching", "edge", "area_px",
)  # fmt: skip
_TOUCH_RANGE = (0.72, 1.0)  # centre distance / radii sum of a touching or overlapping pair


@dataclass(frozen=True)
class MicrographConfig:
    """Settings of a set of synthetic micrographs. ``density``: fraction of the field covered
    by liposomes (outline area); ``noise``: shot-noise multiplier (the dose is divided by
    noise**2, 1 = the sample's drawn dose); ``touching``: share of liposomes placed against
    another (centre distance 0.72-1.0 of the radii sum: touching to clearly overlapping);
    ``ice``: mean number of contamination blobs per 1024 x 1024 px; ``carbon``: chance that
    a micrograph shows a carbon-film edge (straight or curved hole edge); ``debris``: mean
    number of irregular dark fragments and fibres per 1024 x 1024 px; ``gradient``: uneven
    illumination, the relative change of brightness across the field (0 = even);
    ``dose_per_area``: with ``pixel_size_nm``, keep the drawn dose per nm^2 (the dose per
    pixel then grows with the pixel area, as at a lower magnification) instead of the drawn
    dose per pixel."""

    problem: str = "lamellarity"
    count: int = 1
    size: int = 1024
    density: float = 0.2
    noise: float = 1.0
    fmt: str = "tiff"
    seed: int = 0
    touching: float = 0.3
    ice: float = 2.0
    carbon: float = 0.5
    pixel_size_nm: float | None = None
    shares: tuple[float, ...] | None = None
    debris: float = 0.0
    gradient: float = 0.0
    dose_per_area: bool = False

    def __post_init__(self) -> None:
        if self.problem not in PROBLEMS:
            raise ValueError(f"problem must be one of {', '.join(PROBLEMS)}, got {self.problem!r}")
        if self.count < 1:
            raise ValueError(f"count must be at least 1, got {self.count}")
        if not 64 <= self.size <= 16384:
            raise ValueError(f"micrograph size must be 64..16384 px, got {self.size}")
        if not 0.0 < self.density <= 0.6:
            raise ValueError(f"density must be in (0, 0.6] (covered fraction), got {self.density}")
        if not 0.1 <= self.noise <= 10.0:
            raise ValueError(f"noise must be in [0.1, 10], got {self.noise}")
        if self.fmt not in MICROGRAPH_FORMATS:
            raise ValueError(f"format must be one of {', '.join(MICROGRAPH_FORMATS)}")
        if not 0.0 <= self.touching <= 1.0:
            raise ValueError(f"touching must be in [0, 1], got {self.touching}")
        if not 0.0 <= self.ice <= 100.0:
            raise ValueError(f"ice must be in [0, 100], got {self.ice}")
        if not 0.0 <= self.carbon <= 1.0:
            raise ValueError(f"carbon must be in [0, 1], got {self.carbon}")
        if not 0.0 <= self.debris <= 100.0:
            raise ValueError(f"debris must be in [0, 100], got {self.debris}")
        if not 0.0 <= self.gradient <= 0.8:
            raise ValueError(f"gradient must be in [0, 0.8], got {self.gradient}")
        if self.pixel_size_nm is not None and not 0.05 <= self.pixel_size_nm <= 20.0:
            raise ValueError(f"pixel size must be 0.05..20 nm, got {self.pixel_size_nm}")
        n_cls = len(PROBLEMS[self.problem][0])
        if self.shares is not None and (
            len(self.shares) != n_cls or min(self.shares) < 0 or sum(self.shares) <= 0
        ):
            raise ValueError(f"shares needs {n_cls} values >= 0 with a positive sum")

    @property
    def classes(self) -> tuple[str, ...]:
        return PROBLEMS[self.problem][0]

    def resolved_shares(self) -> np.ndarray:
        s = np.asarray(self.shares if self.shares is not None else PROBLEMS[self.problem][1], float)
        return s / s.sum()


@dataclass
class SyntheticMicrograph:
    """One rendered micrograph: grey image (H, W) float64 on the 0-255 scale, instance labels
    (H, W) uint32, one dict per particle (the annotations.csv row) and its conditions."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    particles: list[dict[str, object]]
    sample: SampleParams
    carbon: str  # "none" | "straight" | "curved"


def _micrograph_rng(seed: int, i: int) -> np.random.Generator:
    # spawn key (2, i): apart from the crop generator's plan (0,) and particles (1, i)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, i)))


def _distractor_rng(seed: int, i: int) -> np.random.Generator:
    # spawn key (3, i): debris and illumination draw from their own stream, so micrographs
    # rendered without them are the same as before they existed
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3, i)))


def _add_debris(
    p: np.ndarray, rng: np.random.Generator, px: float, avoid: list[tuple[float, float, float]]
) -> None:
    """One irregular dark fragment (a random star-shaped polygon, 8-60 nm) or a fibre (a
    thick bent segment, 30-200 nm long) into ``p``, away from the (cy, cx, r) in ``avoid``."""
    from skimage.draw import polygon

    h, w = p.shape
    for _try in range(20):
        cy, cx = rng.uniform(0, h - 1), rng.uniform(0, w - 1)
        size = rng.uniform(8.0, 60.0) / px if rng.random() < 0.6 else rng.uniform(30, 200) / px
        if all(math.hypot(cy - y, cx - x) > 0.6 * size + r + 3 for y, x, r in avoid):
            break
    else:
        return
    dark = float(rng.uniform(0.15, 0.6))
    if size < 60.0 / px:  # fragment: irregular polygon, sharp and concave in places
        k = int(rng.integers(5, 11))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = 0.5 * size * rng.uniform(0.3, 1.0, k)
        ys, xs = cy + rad * np.sin(ang), cx + rad * np.cos(ang)
    else:  # fibre: a bent band a few nm wide
        a = rng.uniform(0, np.pi)
        t = np.linspace(-0.5, 0.5, 12) * size
        bend = rng.normal(0, 0.15) * size * (t / size) ** 2 * 4
        half = max(1.0, rng.uniform(2.0, 6.0) / px)
        cyl, cxl = (
            cy + t * math.sin(a) + bend * math.cos(a),
            cx + t * math.cos(a) - bend * math.sin(a),
        )
        ys = np.r_[cyl + half * math.cos(a), cyl[::-1] - half * math.cos(a)]
        xs = np.r_[cxl - half * math.sin(a), cxl[::-1] + half * math.sin(a)]
    rr, cc = polygon(ys, xs, shape=(h, w))
    p[rr, cc] += -math.log(1.0 - dark)


def _illumination(rng: np.random.Generator, h: int, w: int, amount: float) -> np.ndarray:
    """Relative brightness (H, W) float32 around 1: a linear ramp of +-``amount``/2 in a
    random direction plus a smooth off-centre fall-off of up to ``amount``/2."""
    yy = (np.arange(h, dtype=np.float32)[:, None] - (h - 1) / 2) / max(h, w)
    xx = (np.arange(w, dtype=np.float32)[None, :] - (w - 1) / 2) / max(h, w)
    a = rng.uniform(0, 2 * np.pi)
    ramp = amount * (yy * math.sin(a) + xx * math.cos(a))
    oy, ox = rng.uniform(-0.5, 0.5, 2)
    fall = 0.5 * amount * ((yy - oy) ** 2 + (xx - ox) ** 2)
    return (1.0 + ramp - fall).astype(np.float32)


def _carbon_distance(rng: np.random.Generator, h: int, w: int) -> tuple[str, np.ndarray]:
    """Signed distance (H, W) float32 in px to a carbon-film edge, positive on the carbon:
    a straight edge or the curved rim of a hole (radius 1-2 field widths) crossing the field,
    covering roughly 10-35 % of it."""
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    ang = rng.uniform(0, 2 * np.pi)
    ny, nx = math.sin(ang), math.cos(ang)
    # the edge passes at a distance from the centre so that ~10-35 % lies beyond it
    off = rng.uniform(0.15, 0.4) * min(h, w)
    cy, cx = (h - 1) / 2 + off * ny, (w - 1) / 2 + off * nx
    if rng.random() < 0.5:
        return "straight", ((yy - cy) * ny + (xx - cx) * nx).astype(np.float32)
    radius = rng.uniform(1.0, 2.0) * max(h, w)  # hole centre lies away from the carbon
    hy, hx = cy - radius * ny, cx - radius * nx
    return "curved", (np.sqrt((yy - hy) ** 2 + (xx - hx) ** 2) - radius).astype(np.float32)


def _shift(v: VesicleSpec, cy: float, cx: float) -> tuple[float, float]:
    dy, dx = cy - v.cy, cx - v.cx
    v.cy, v.cx = cy, cx
    return dy, dx


#: placed liposomes: (vesicle, label, its ice blobs (y, x, radius, darkness), index of the
#: liposome it touches or -1)
_Placed = list[tuple[VesicleSpec, str, list[tuple[float, float, float, float]], int]]


def _place(
    rng: np.random.Generator,
    cfg: MicrographConfig,
    sample: SampleParams,
    cdist: np.ndarray | None,
) -> _Placed:
    """Liposomes placed at random (touching pairs at ``cfg.touching``, in the carbon hole
    when there is one) until ``cfg.density`` of the area is covered."""
    h = w = cfg.size
    classes, shares = cfg.classes, cfg.resolved_shares()
    # --- placement: (vesicle, label, ice blobs, partner) until the covered area is reached
    placed: _Placed = []
    covered, target = 0.0, cfg.density * h * w
    attempts, max_attempts = 0, 400 + int(60 * target / 2000.0)
    while covered < target and attempts < max_attempts:
        attempts += 1
        label = classes[int(rng.choice(len(classes), p=shares))]
        plan = plan_particle(rng, cfg.problem, label, sample)
        v, r = plan.main, plan.main.radius
        partner = -1
        if placed and rng.random() < cfg.touching:
            partner = int(rng.integers(len(placed)))
            pv = placed[partner][0]
            d = (r + pv.radius) * rng.uniform(*_TOUCH_RANGE)
            a = rng.uniform(0, 2 * np.pi)
            cy, cx = pv.cy + d * math.sin(a), pv.cx + d * math.cos(a)
        else:
            cy, cx = rng.uniform(0, h - 1), rng.uniform(0, w - 1)
        if not (0 <= cy <= h - 1 and 0 <= cx <= w - 1):
            continue
        if cdist is not None and cdist[int(cy), int(cx)] > -r:  # liposomes sit in the hole
            continue
        ok = all(
            k == partner or math.hypot(cy - q.cy, cx - q.cx) > 1.04 * (r + q.radius)
            for k, (q, *_rest) in enumerate(placed)
        )
        if not ok:
            continue
        dy, dx = _shift(v, cy, cx)
        ice = [(y + dy, x + dx, rb, dk) for y, x, rb, dk in plan.ice]  # ambiguity-mode ice
        placed.append((v, label, ice, partner))
        covered += math.pi * r * r
    return placed


def _image(
    rng: np.random.Generator,
    cfg: MicrographConfig,
    i: int,
    sample: SampleParams,
    placed: _Placed,
    cdist: np.ndarray | None,
) -> np.ndarray:
    """The micrograph (H, W): projected density of liposomes, ice, carbon and debris, then
    image formation (CTF, dose, noise) and uneven illumination."""
    h = w = cfg.size
    px = sample.pixel_size_nm
    # --- projected density (H, W): liposomes, ice, carbon
    p = np.zeros((h, w), dtype=np.float64)
    for v, _label, ice, _partner in placed:
        draw_vesicle(p, v, px, rng)
        for y, x, rb, dk in ice:
            add_ice_blob(p, y, x, rb, dk, rng)
    scale = cfg.size / 1024.0
    for _ in range(int(rng.poisson(cfg.ice * scale * scale))):
        rb = float(rng.uniform(12.0, 55.0)) * max(scale, 0.35)
        for _try in range(20):
            y, x = rng.uniform(0, h - 1), rng.uniform(0, w - 1)
            if all(math.hypot(y - q.cy, x - q.cx) > 1.7 * rb + q.radius for q, *_ in placed):
                add_ice_blob(p, y, x, rb, float(rng.uniform(0.4, 0.85)), rng)
                break
    if cdist is not None:
        thick = float(rng.uniform(0.25, 0.5))
        edge = 1.0 / (1.0 + np.exp(-np.clip(cdist / 1.5, -30, 30)))  # (H, W) 0 hole .. 1 carbon
        tex = 1.0 + 0.15 * fractal_noise((h, w), 2.0, rng)
        p += thick * edge * tex
    extra = _distractor_rng(cfg.seed, i)
    avoid = [(q.cy, q.cx, q.radius) for q, *_ in placed]
    for _ in range(int(extra.poisson(cfg.debris * scale * scale))):
        _add_debris(p, extra, px, avoid)
    p *= sample.contrast
    image = image_formation(p, sample, rng, dose_scale=1.0 / (cfg.noise * cfg.noise))
    if cfg.gradient > 0:
        image *= _illumination(extra, h, w, cfg.gradient)
    return image


def _instance_labels(placed: _Placed, h: int, w: int) -> np.ndarray:
    """(H, W) uint32 instance labels (0 background, k + 1 for liposome k)."""
    # a pixel inside several outlines goes to the one whose (distorted)
    # centre distance relative to its radius is smallest
    labels = np.zeros((h, w), dtype=np.uint32)
    best = np.full((h, w), np.inf, dtype=np.float32)
    for k, (v, *_rest) in enumerate(placed):
        ext = v.radius * (1.0 + v.ecc) * (1.0 + np.abs(v.harm[:, 0]).sum()) + 3.0
        ys, xs = _window((h, w), v.cy, v.cx, ext)
        rr, _ = _radius_field(ys, xs, v.cy, v.cx, v)
        rel = rr / v.radius  # (h', w') 1 on the outline
        take = (rel <= 1.0) & (rel < best[ys, xs])
        labels[ys, xs][take] = k + 1
        best[ys, xs][take] = rel[take]
    return labels


def _annotation_rows(
    placed: _Placed, labels: np.ndarray, name: str, px: float
) -> list[dict[str, object]]:
    """annotations.csv rows of the placed liposomes (touching, at the edge, area)."""
    areas = np.bincount(labels.ravel(), minlength=len(placed) + 1)
    border = np.zeros(len(placed) + 1, dtype=bool)
    for edge_px in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        border[edge_px] = True
    touching = {k for k, (*_r, partner) in enumerate(placed) if partner >= 0}
    touching |= {partner for *_r, partner in placed if partner >= 0}
    rows: list[dict[str, object]] = []
    for k, (v, label, _ice, _partner) in enumerate(placed):
        rows.append(
            {
                "micrograph": name,
                "instance": k + 1,
                "label": label,
                "x": round(v.cx, 2),
                "y": round(v.cy, 2),
                "diameter_nm": round(2 * v.radius * px, 2),
                "diameter_px": round(2 * v.radius, 2),
                "pixel_size_nm": round(px, 4),
                "touching": int(k in touching),
                "edge": int(border[k + 1]),
                "area_px": int(areas[k + 1]),
            }
        )
    return rows


def render_micrograph(
    cfg: MicrographConfig, i: int, name: str | None = None
) -> SyntheticMicrograph:
    """Render micrograph ``i`` of a set (deterministic for ``cfg.seed`` and ``i``)."""
    rng = _micrograph_rng(cfg.seed, i)
    name = name or f"mic{i + 1:04d}"
    sample = draw_sample(rng)
    if cfg.pixel_size_nm is not None:
        dose = sample.dose
        if cfg.dose_per_area:  # same electrons per nm^2 as the drawn pixel size had
            dose *= (float(cfg.pixel_size_nm) / sample.pixel_size_nm) ** 2
        sample = dataclasses.replace(sample, pixel_size_nm=float(cfg.pixel_size_nm), dose=dose)
    px = sample.pixel_size_nm
    h = w = cfg.size
    carbon, cdist = "none", None
    if rng.random() < cfg.carbon:
        carbon, cdist = _carbon_distance(rng, h, w)

    placed = _place(rng, cfg, sample, cdist)
    image = _image(rng, cfg, i, sample, placed, cdist)
    labels = _instance_labels(placed, h, w)
    rows = _annotation_rows(placed, labels, name, px)
    return SyntheticMicrograph(name, image, labels, rows, sample, carbon)


def _tiff_resolution(px_nm: float) -> dict[str, object]:
    """tifffile keywords storing the pixel size the way ImageJ/Fiji read it (unit nm)."""
    return {"imagej": True, "resolution": (1.0 / px_nm, 1.0 / px_nm), "metadata": {"unit": "nm"}}


def write_label_tiff(path: str | os.PathLike[str], labels: np.ndarray, px_nm: float | None) -> None:
    """Instance labels (H, W) -> uint16 TIFF (uint32 beyond 65535 instances), 0 background."""
    import tifffile

    dtype = np.uint16 if int(labels.max(initial=0)) <= 65535 else np.uint32
    kw = _tiff_resolution(px_nm) if px_nm else {}
    tifffile.imwrite(path, labels.astype(dtype), **kw)  # type: ignore[arg-type]


def _write_micrograph(path: Path, image: np.ndarray, px_nm: float, fmt: str) -> None:
    if fmt == "tiff":
        import tifffile

        tifffile.imwrite(path, _quantise(image, True), **_tiff_resolution(px_nm))  # type: ignore[arg-type]
    else:
        import mrcfile

        with mrcfile.new(path, overwrite=True) as m:
            m.set_data(image.astype(np.float32))
            m.voxel_size = px_nm * 10.0  # Angstrom


def synthesize_micrographs(
    problem: str,
    out: str | os.PathLike[str],
    *,
    count: int = 1,
    size: int = 1024,
    density: float = 0.2,
    noise: float = 1.0,
    fmt: str = "tiff",
    seed: int = 0,
    ratios: Ratios | None = None,
    touching: float = 0.3,
    ice: float = 2.0,
    carbon: float = 0.5,
    pixel_size_nm: float | None = None,
    debris: float = 0.0,
    gradient: float = 0.0,
    progress: bool = False,
) -> Path:
    """Render ``count`` micrographs of ``problem`` into the new folder ``out`` (layout in the
    module docstring) and return it. Deterministic for a given seed."""
    shares = resolve_shares(problem, ratios)
    classes = PROBLEMS[problem][0]
    try:
        cfg = MicrographConfig(
            problem=problem, count=count, size=size, density=density, noise=noise, fmt=fmt,
            seed=seed, touching=touching, ice=ice, carbon=carbon, pixel_size_nm=pixel_size_nm,
            shares=shares, debris=debris, gradient=gradient,
        )  # fmt: skip
    except ValueError as exc:
        raise LipoclassError(f"synth: {exc}") from None
    out = Path(out)
    if out.exists():
        raise LipoclassError(f"{out}: already exists (choose another output folder)")
    staging = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    suffix = ".tif" if fmt == "tiff" else ".mrc"
    try:
        (staging / "micrographs").mkdir(parents=True)
        (staging / "labels").mkdir()
        rows: list[dict[str, object]] = []
        info: list[dict[str, object]] = []
        it = range(cfg.count)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc=f"synth {problem} micrographs", unit="micrograph")  # type: ignore[assignment]
        for i in it:
            mic = render_micrograph(cfg, i)
            px = mic.sample.pixel_size_nm
            _write_micrograph(staging / "micrographs" / f"{mic.name}{suffix}", mic.image, px, fmt)
            write_label_tiff(staging / "labels" / f"{mic.name}.tif", mic.labels, px)
            rows.extend(mic.particles)
            info.append(
                {
                    "name": mic.name,
                    "particles": len(mic.particles),
                    "carbon": mic.carbon,
                    "sample": dataclasses.asdict(mic.sample),
                }
            )
        with (staging / "annotations.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(ANNOTATION_COLUMNS))
            writer.writeheader()
            writer.writerows(rows)
        settings = dataclasses.asdict(cfg)
        meta = {"generator": f"lipoclass.synth.micrograph v{GENERATOR_VERSION}",
                "classes": list(classes), "settings": settings, "micrographs": info}  # fmt: skip
        (staging / "synth.json").write_text(json.dumps(meta, indent=2) + "\n")
        publish_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
