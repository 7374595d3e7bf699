"""Turn particle images into fixed-size model inputs (input modes of thesis section 8.5).

Pipeline per particle, in this order (documented choices, see docs/data.md):

1. decode the image (float32, original values) and its mask (nonzero = particle);
2. input mode: ``surround`` keeps the whole image; ``crop`` cuts the mask's bounding box;
   ``masked`` cuts the bounding box and zeroes everything outside the mask (step 3);
   a particle without a mask gets an automatic one (Otsu threshold on the smoothed image,
   component at the centre) for ``crop``/``masked``; a mask with no particle pixels is
   skipped for ``crop``/``masked`` with a warning and counted;
3. per-image intensity normalisation: ``zscore`` (default; mean 0, std 1 over the pixels the
   model sees, i.e. the mask for ``masked``) removes the contrast/exposure differences
   between micrographs; ``minmax`` maps to [0, 1]; ``none`` keeps raw values;
4. aspect: ``pad`` (default) pads the shorter side symmetrically with 0 (the mean after
   z-scoring) so shapes are not distorted; ``stretch`` resizes each axis independently;
5. resize to ``size`` x ``size`` with antialiased bilinear interpolation (PIL, area-aware
   when shrinking, so thin membranes are averaged rather than aliased).

Results are cached on disk, keyed by the dataset table, every image/mask file's size and
modification time, and the settings, so a second run does not decode again and an edited
image invalidates the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from lipoclass.data.dataset import Particle, ParticleDataset
from lipoclass.data.io import read_image
from lipoclass.errors import LipoclassError

__all__ = [
    "META_COLUMNS",
    "MODES",
    "PrepConfig",
    "Prepared",
    "auto_mask",
    "default_cache_dir",
    "prepare",
    "prepare_arrays",
]

MODES = ("surround", "crop", "masked")
META_COLUMNS = (
    "image_width",
    "image_height",
    "bbox_width",
    "bbox_height",
    "mask_area",
    "pixel_size_nm",
)
_PREP_VERSION = 1


@dataclass(frozen=True)
class PrepConfig:
    """How particle images become model inputs."""

    mode: Literal["surround", "crop", "masked"] = "masked"
    size: int = 28
    aspect: Literal["pad", "stretch"] = "pad"
    normalize: Literal["zscore", "minmax", "none"] = "zscore"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not 4 <= int(self.size) <= 1024:
            raise ValueError(f"size must be between 4 and 1024, got {self.size}")
        if self.aspect not in ("pad", "stretch"):
            raise ValueError(f"aspect must be 'pad' or 'stretch', got {self.aspect!r}")
        if self.normalize not in ("zscore", "minmax", "none"):
            raise ValueError(
                f"normalize must be 'zscore', 'minmax' or 'none', got {self.normalize!r}"
            )


@dataclass
class Prepared:
    """Model-ready arrays for the particles that could be prepared.

    ``x`` (N, 1, S, S) float32; ``y`` (N,) int64 class index or -1; ``index`` (N,) positions
    in ``dataset.particles``; ``meta`` (N, len(META_COLUMNS)) float64 with the original size
    information (pixel_size_nm is NaN when unknown).
    """

    x: np.ndarray
    y: np.ndarray
    index: np.ndarray
    ids: list[str]
    meta: np.ndarray
    classes: tuple[str, ...]
    config: PrepConfig
    skipped: list[tuple[str, str]] = field(default_factory=list)
    auto_masked: int = 0
    from_cache: bool = False

    def __len__(self) -> int:
        return len(self.ids)

    def meta_column(self, name: str) -> np.ndarray:
        return self.meta[:, META_COLUMNS.index(name)]


def auto_mask(img: np.ndarray) -> np.ndarray:
    """Fallback particle mask for a particle without one: Otsu threshold of the smoothed
    image, either polarity, keeping the filled component nearest the centre whose area is a
    plausible particle (2-90% of the image); else a centred disk of 0.35 * min(H, W)."""
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    h, w = img.shape
    smooth = ndi.gaussian_filter(img.astype(np.float32), sigma=max(1.0, min(h, w) / 40))
    yy, xx = np.mgrid[:h, :w]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    best: np.ndarray | None = None
    best_d = np.inf
    try:
        t = threshold_otsu(smooth)
    except ValueError:
        t = None
    if t is not None:
        for fg in (smooth < t, smooth > t):
            lab, n = ndi.label(ndi.binary_fill_holes(fg))
            for k in range(1, n + 1):
                comp = lab == k
                frac = comp.mean()
                if not 0.02 <= frac <= 0.9:
                    continue
                d = np.hypot(yy[comp].mean() - cy, xx[comp].mean() - cx)
                if d < best_d and d < 0.25 * min(h, w):
                    best, best_d = comp, d
    if best is None:
        best = np.hypot(yy - cy, xx - cx) <= 0.35 * min(h, w)
    return best


def _resize(img: np.ndarray, size: int, aspect: str) -> np.ndarray:
    from PIL import Image

    if aspect == "pad":
        h, w = img.shape
        s = max(h, w)
        if h != w:
            top, left = (s - h) // 2, (s - w) // 2
            padded = np.zeros((s, s), dtype=np.float32)
            padded[top : top + h, left : left + w] = img
            img = padded
    out = Image.fromarray(np.ascontiguousarray(img, dtype=np.float32), mode="F").resize(
        (size, size), Image.Resampling.BILINEAR
    )
    return np.asarray(out, dtype=np.float32)


def _normalize(img: np.ndarray, sel: np.ndarray | None, how: str) -> np.ndarray:
    vals = img[sel] if sel is not None else img
    if how == "zscore":
        sd = float(vals.std())
        return (img - float(vals.mean())) / (sd if sd > 1e-8 else 1.0)
    if how == "minmax":
        lo, hi = float(vals.min()), float(vals.max())
        return (img - lo) / (hi - lo if hi - lo > 1e-8 else 1.0)
    return img


def prepare_arrays(
    img: np.ndarray, mask: np.ndarray | None, cfg: PrepConfig
) -> tuple[np.ndarray, tuple[int, int, int]] | str:
    """Prepare one image (H, W) -> (size, size) float32 plus (bbox_h, bbox_w, mask_area).

    Returns a reason string instead when the particle must be skipped."""
    h, w = img.shape
    if mask is not None:
        area = int(mask.sum())
        if area == 0:
            return "mask has no particle pixels"
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    else:
        area, r0, r1, c0, c1 = h * w, 0, h, 0, w
    if cfg.mode == "surround":
        out = _normalize(img, None, cfg.normalize)
    else:
        assert mask is not None
        crop = img[r0:r1, c0:c1]
        m = mask[r0:r1, c0:c1]
        if cfg.mode == "crop":
            out = _normalize(crop, None, cfg.normalize)
        else:
            out = _normalize(crop, m, cfg.normalize) * m
    return _resize(out, cfg.size, cfg.aspect), (int(r1 - r0), int(c1 - c0), area)


def _prepare_one(p: Particle, cfg: PrepConfig) -> tuple[np.ndarray, np.ndarray, bool] | str:
    img = read_image(p.image)
    mask = None
    auto = False
    if p.mask is not None:
        mask = read_image(p.mask) > 0
        if mask.shape != img.shape:
            raise LipoclassError(
                f"{p.mask}: mask is {mask.shape[1]}x{mask.shape[0]} but image {p.image.name} is "
                f"{img.shape[1]}x{img.shape[0]} (particles.csv row {p.row}, id {p.id})"
            )
    elif cfg.mode != "surround":
        mask, auto = auto_mask(img), True
    res = prepare_arrays(img, mask, cfg)
    if isinstance(res, str):
        if cfg.mode == "surround":  # empty mask does not matter when the mask is unused
            res = prepare_arrays(img, None, cfg)
            assert not isinstance(res, str)
        else:
            return res
    arr, (bh, bw, area) = res
    px = np.nan if p.pixel_size_nm is None else p.pixel_size_nm
    meta = np.array([img.shape[1], img.shape[0], bw, bh, area, px], dtype=np.float64)
    return arr, meta, auto


def _prepare_chunk(
    args: tuple[list[Particle], PrepConfig],
) -> list[tuple[np.ndarray, np.ndarray, bool] | str]:
    parts, cfg = args
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [_prepare_one(p, cfg) for p in parts]


def default_cache_dir() -> Path:
    """``$LIPOCLASS_CACHE`` or ``~/.cache/lipoclass``."""
    env = os.environ.get("LIPOCLASS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "lipoclass"


def dataset_fingerprint(dataset: ParticleDataset) -> str:
    """Hash of particles.csv, dataset.toml and every referenced file's size and mtime."""
    h = hashlib.sha256()
    for name in ("particles.csv", "dataset.toml"):
        f = dataset.root / name
        if f.is_file():
            h.update(f.read_bytes())
    h.update(str(dataset.root.resolve()).encode())
    for p in dataset.particles:
        for f in (p.image, p.mask):
            if f is None:
                h.update(b"-")
                continue
            try:
                st = f.stat()
            except OSError:
                raise LipoclassError(
                    f"{f}: file not found (particles.csv row {p.row}, id {p.id})"
                ) from None
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def _progress(total: int, desc: str):  # pragma: no cover - cosmetic
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=total < 2000 or not sys.stderr.isatty())


def prepare(
    dataset: ParticleDataset,
    config: PrepConfig | None = None,
    *,
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
) -> Prepared:
    """Prepare every particle of ``dataset`` for a model (see the module docstring).

    Particles whose empty mask makes ``crop``/``masked`` impossible are skipped with a warning
    and listed in ``Prepared.skipped``; unreadable images and masks of the wrong size raise
    ``LipoclassError``. ``workers`` defaults to the CPU count (processes, for large sets)."""
    cfg = config or PrepConfig()
    key = ""
    cache_file: Path | None = None
    if cache:
        key = hashlib.sha256(
            (dataset_fingerprint(dataset) + json.dumps(asdict(cfg), sort_keys=True)).encode()
            + f"v{_PREP_VERSION}".encode()
        ).hexdigest()[:24]
        cache_file = Path(cache_dir or default_cache_dir()) / "prepared" / f"{key}.npz"
        if cache_file.is_file():
            try:
                with np.load(cache_file, allow_pickle=False) as z:
                    index = z["index"]
                    skipped = json.loads(str(z["skipped"]))
                    prep = Prepared(
                        x=z["x"],
                        y=dataset.labels[index],
                        index=index,
                        ids=[dataset.particles[i].id for i in index],
                        meta=z["meta"],
                        classes=dataset.classes,
                        config=cfg,
                        skipped=[tuple(s) for s in skipped],  # type: ignore[misc]
                        auto_masked=int(z["auto_masked"]),
                        from_cache=True,
                    )
                _warn_skipped(prep)
                return prep
            except Exception:  # corrupt cache: rebuild
                pass

    parts = list(dataset.particles)
    n = len(parts)
    nw = workers if workers is not None else (os.cpu_count() or 1)
    results: list[tuple[np.ndarray, np.ndarray, bool] | str] = []
    if nw > 1 and n >= 400:
        chunk = max(64, n // (nw * 8))
        chunks = [(parts[i : i + chunk], cfg) for i in range(0, n, chunk)]
        bar = _progress(n, "prepare")
        with ProcessPoolExecutor(max_workers=nw) as ex:
            for res in ex.map(_prepare_chunk, chunks):
                results.extend(res)
                bar.update(len(res))
        bar.close()
    else:
        results = _prepare_chunk((parts, cfg))

    keep = [i for i, r in enumerate(results) if not isinstance(r, str)]
    skipped = [(parts[i].id, r) for i, r in enumerate(results) if isinstance(r, str)]
    size = cfg.size
    x = np.empty((len(keep), 1, size, size), dtype=np.float32)
    meta = np.empty((len(keep), len(META_COLUMNS)), dtype=np.float64)
    auto = 0
    for j, i in enumerate(keep):
        arr, m, a = results[i]  # type: ignore[misc]
        x[j, 0] = arr
        meta[j] = m
        auto += int(a)
    index = np.asarray(keep, dtype=np.int64)
    prep = Prepared(
        x=x,
        y=dataset.labels[index],
        index=index,
        ids=[parts[i].id for i in keep],
        meta=meta,
        classes=dataset.classes,
        config=cfg,
        skipped=skipped,
        auto_masked=auto,
    )
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(
            tmp, x=x, meta=meta, index=index, skipped=json.dumps(skipped),
            auto_masked=np.int64(auto),
        )  # fmt: skip
        os.replace(tmp, cache_file)
    _warn_skipped(prep)
    return prep


def _warn_skipped(prep: Prepared) -> None:
    if prep.skipped:
        first = ", ".join(i for i, _ in prep.skipped[:5])
        warnings.warn(
            f"{len(prep.skipped)} particle(s) skipped for mode '{prep.config.mode}' "
            f"(mask has no particle pixels): {first}{' ...' if len(prep.skipped) > 5 else ''}",
            stacklevel=3,
        )
