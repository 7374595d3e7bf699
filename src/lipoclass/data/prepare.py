"""Turn particle images into fixed-size model inputs (input modes of thesis section 8.5).

Pipeline per particle, in this order (documented choices, see docs/data.md):

1. decode the image (original values, converted to float32 after cropping) and its mask
   (nonzero = particle), each file once;
2. input mode: ``surround`` keeps the whole image; ``crop`` cuts the mask's bounding box;
   ``masked`` cuts the bounding box and zeroes everything outside the mask (step 3);
   a particle without a mask gets an automatic one (Otsu threshold on the smoothed image,
   component at the centre) for ``crop``/``masked``; a mask with no particle pixels is
   skipped for ``crop``/``masked`` with a warning and counted (``predict`` then prepares it
   on the automatic mask instead, ``prepare_without_masks``);
3. per-image intensity normalisation: ``zscore`` (default; mean 0, std 1 over the pixels the
   model sees, i.e. the mask for ``masked``) removes the contrast/exposure differences
   between micrographs; ``minmax`` maps to [0, 1]; ``none`` keeps raw values;
4. aspect: ``pad`` (default) pads the shorter side symmetrically with 0 (the mean after
   z-scoring) so shapes are not distorted; ``stretch`` resizes each axis independently;
5. resize to ``size`` x ``size`` with antialiased bilinear interpolation (PIL, area-aware
   when shrinking, so thin membranes are averaged rather than aliased; reductions of more
   than 3x first box-average by an integer factor, PIL's ``reducing_gap=3``).
   With a common scale (``nm_per_px`` set; the recipe's rescale rule, docs/cnn.md) steps
   4-5 become instead: resample by (the particle's pixel size / ``nm_per_px``) with
   scikit-image (bilinear, Gaussian antialiasing when shrinking), then centre-crop or
   zero-pad to ``size`` x ``size``, so one input pixel is ``nm_per_px`` nm for every
   particle and the physical size is in the pixels. A particle without a pixel size is
   refused then (``LipoclassError`` naming the row).

Results are cached on disk, keyed by the dataset table, every image/mask file's size and
modification time, and the settings, so a second run does not decode again and an edited
image invalidates the cache.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np

from lipoclass.choices import INPUT_MODES, MODES
from lipoclass.data.dataset import Particle, ParticleDataset
from lipoclass.data.io import read_native
from lipoclass.data.parallel import parallel_map, warn_collected
from lipoclass.errors import LipoclassError

__all__ = [
    "INPUT_MODES",
    "META_COLUMNS",
    "MODES",
    "PrepConfig",
    "Prepared",
    "auto_mask",
    "check_pixel_sizes",
    "default_cache_dir",
    "no_pixel_size_error",
    "prepare",
    "prepare_arrays",
    "prepare_without_masks",
    "read_particle",
]

META_COLUMNS = (
    "image_width",
    "image_height",
    "bbox_width",
    "bbox_height",
    "mask_area",
    "pixel_size_nm",
)
_PREP_VERSION = 2  # bump when the pixels produced change (invalidates caches)


@dataclass(frozen=True)
class PrepConfig:
    """How particle images become model inputs.

    ``mode="auto"`` is resolved against a dataset by ``resolve``: ``masked`` (the thesis'
    best input, section 8.5) when every particle has a mask, else ``surround``, because an
    automatic threshold mask is a poor stand-in for a curated one (docs/data.md)."""

    mode: Literal["auto", "surround", "crop", "masked"] = "masked"
    size: int = 28
    aspect: Literal["pad", "stretch"] = "pad"
    normalize: Literal["zscore", "minmax", "none"] = "zscore"
    #: the common scale (nm per input pixel) every particle is resampled to before it is
    #: centre-cropped / padded to ``size``; None: each box is resized to ``size`` instead
    nm_per_px: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in INPUT_MODES:
            raise ValueError(f"mode must be one of {', '.join(INPUT_MODES)}, got {self.mode!r}")
        if not 4 <= int(self.size) <= 1024:
            raise ValueError(f"size must be between 4 and 1024, got {self.size}")
        if self.aspect not in ("pad", "stretch"):
            raise ValueError(f"aspect must be 'pad' or 'stretch', got {self.aspect!r}")
        if self.normalize not in ("zscore", "minmax", "none"):
            raise ValueError(
                f"normalize must be 'zscore', 'minmax' or 'none', got {self.normalize!r}"
            )
        if self.nm_per_px is not None and not (
            math.isfinite(float(self.nm_per_px)) and float(self.nm_per_px) > 0
        ):
            raise ValueError(f"nm_per_px must be a positive number, got {self.nm_per_px}")

    def resolve(self, dataset: ParticleDataset) -> PrepConfig:
        """This config with ``mode="auto"`` replaced by the mode for ``dataset``: ``masked``
        when every particle names a mask file, else ``surround``. Concrete modes are kept."""
        if self.mode != "auto":
            return self
        from dataclasses import replace

        all_masked = all(p.mask is not None for p in dataset.particles)
        return replace(self, mode="masked" if all_masked else "surround")


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
    """Fallback particle mask for a particle without one, from its image (H, W) of any
    numeric dtype: Otsu threshold of the smoothed (float32) image, either polarity, keeping
    the filled component nearest the centre whose area is a plausible particle (2-90% of the
    image); else a centred disk of 0.35 * min(H, W)."""
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    h, w = img.shape
    smooth = ndi.gaussian_filter(img.astype(np.float32), sigma=max(1.0, min(h, w) / 40))
    # pixel coordinates, flat (h*w,) float64: the weights of the centroid bincounts
    yy = np.repeat(np.arange(h, dtype=np.float64), w)
    xx = np.tile(np.arange(w, dtype=np.float64), h)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    best: np.ndarray | None = None
    best_d = np.inf
    try:
        t = threshold_otsu(smooth)
    except ValueError:
        t = None
    if t is not None:
        for fg in (smooth < t, smooth > t):
            # fill holes = keep what the (4-connected) background reachable from the border
            # does not cover: binary_fill_holes' result from one labelling, several x faster
            bg, _ = ndi.label(np.pad(~fg, 1, constant_values=True))
            lab, n = ndi.label((bg != bg[0, 0])[1:-1, 1:-1])
            if n == 0:
                continue
            # every component's area and centroid from three bincounts (not one pass each)
            flat = lab.ravel().astype(np.intp)  # (h*w,) cast once, not in every bincount
            cnt = np.bincount(flat, minlength=n + 1)[1:].astype(np.float64)  # (n,)
            my = np.bincount(flat, weights=yy, minlength=n + 1)[1:] / np.maximum(cnt, 1)
            mx = np.bincount(flat, weights=xx, minlength=n + 1)[1:] / np.maximum(cnt, 1)
            d_all = np.hypot(my - cy, mx - cx)  # (n,)
            frac = cnt / (h * w)
            ok = (frac >= 0.02) & (frac <= 0.9) & (d_all < 0.25 * min(h, w))
            if ok.any():
                k = int(np.flatnonzero(ok)[np.argmin(d_all[ok])])  # first of equal distances
                if d_all[k] < best_d:
                    best, best_d = lab == k + 1, float(d_all[k])
    if best is None:
        yo, xo = np.ogrid[:h, :w]
        best = np.hypot(yo - cy, xo - cx) <= 0.35 * min(h, w)
    return best


def _resize(img: np.ndarray, size: int, aspect: str) -> np.ndarray:
    """(h, w) float32 -> (size, size) float32; ``pad`` centres it on a zero square first.
    Large reductions first box-average by an integer factor (PIL ``reducing_gap``), which is
    about twice as fast and still area-aware."""
    from PIL import Image

    if aspect == "pad":
        h, w = img.shape
        s = max(h, w)
        if h != w:
            top, left = (s - h) // 2, (s - w) // 2
            padded = np.zeros((s, s), dtype=np.float32)
            padded[top : top + h, left : left + w] = img
            img = padded
    pil = Image.fromarray(np.ascontiguousarray(img, dtype=np.float32))  # mode "F"
    out = pil.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(out, dtype=np.float32)


def _to_scale(img: np.ndarray, factor: float, size: int) -> np.ndarray:
    """(h, w) float32 resampled by ``factor`` (scikit-image ``rescale``: bilinear, Gaussian
    antialiasing when shrinking), then centre-cropped / zero-padded to (size, size)."""
    if abs(factor - 1.0) > 1e-9:
        from skimage.transform import rescale

        img = rescale(img, factor, order=1, anti_aliasing=factor < 1.0, preserve_range=True,
                      mode="constant", cval=0.0).astype(np.float32)  # fmt: skip
    h, w = img.shape
    out = np.zeros((size, size), dtype=np.float32)
    # centre crop (source offsets) or centre pad (target offsets), per axis
    sy, ty = max(0, (h - size) // 2), max(0, (size - h) // 2)
    sx, tx = max(0, (w - size) // 2), max(0, (size - w) // 2)
    n_y, n_x = min(h, size), min(w, size)
    out[ty : ty + n_y, tx : tx + n_x] = img[sy : sy + n_y, sx : sx + n_x]
    return out


def no_pixel_size_error(where: str, nm_per_px: float) -> LipoclassError:
    """The one error for a particle / micrograph without a pixel size given to a model that
    reads inputs at a common scale."""
    return LipoclassError(
        f"{where}: no pixel size, but this model reads every particle at {nm_per_px:g} nm "
        "per pixel (it was trained on several pixel sizes); give pixel_size_nm (particles.csv "
        "column or dataset.toml; for micrographs the file header or --pixel-size)"
    )


def _normalize(img: np.ndarray, sel: np.ndarray | None, how: str) -> np.ndarray:
    """Normalise ``img`` (h, w) float32 with statistics over the pixels ``sel`` (bool, same
    shape) or all pixels."""
    vals = img[sel] if sel is not None else img.ravel()  # (n,)
    if how == "zscore":
        n = vals.size
        mean = float(vals.sum(dtype=np.float64)) / n
        d = vals - np.float32(mean)
        sd = float(np.sqrt(np.dot(d, d) / n))
        return (img - np.float32(mean)) * np.float32(1.0 / (sd if sd > 1e-8 else 1.0))
    if how == "minmax":
        lo, hi = float(vals.min()), float(vals.max())
        return (img - np.float32(lo)) * np.float32(1.0 / (hi - lo if hi - lo > 1e-8 else 1.0))
    return img


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(r0, r1, c0, c1) bounding box of the nonzero pixels of ``mask`` (H, W), None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def prepare_arrays(
    img: np.ndarray,
    mask: np.ndarray | None,
    cfg: PrepConfig,
    pixel_size_nm: float | None = None,
) -> tuple[np.ndarray, tuple[int, int, int]] | str:
    """Prepare one image (H, W) -> (size, size) float32 plus (bbox_h, bbox_w, mask_area).

    ``img`` may be any numeric dtype; only the part the mode needs is converted to float32.
    ``pixel_size_nm`` (nm per image pixel) is needed when ``cfg.nm_per_px`` is set (a
    ValueError otherwise; callers check first and raise the one-line error). Returns a
    reason string instead when the particle must be skipped."""
    if cfg.mode == "auto":
        raise ValueError("mode 'auto' must be resolved first (PrepConfig.resolve(dataset))")
    if cfg.nm_per_px is not None and pixel_size_nm is None:
        raise ValueError("a pixel size is needed to prepare at a common nm_per_px")
    h, w = img.shape
    if mask is not None:
        box = _bbox(mask)
        if box is None:
            return "mask has no particle pixels"
        r0, r1, c0, c1 = box
        m = mask[r0:r1, c0:c1]  # (h', w') bool
        area = int(np.count_nonzero(m))
    else:
        area, r0, r1, c0, c1 = h * w, 0, h, 0, w
    if cfg.mode == "surround":
        out = _normalize(img.astype(np.float32), None, cfg.normalize)
    else:
        assert mask is not None
        crop = img[r0:r1, c0:c1].astype(np.float32)  # (h', w')
        if cfg.mode == "crop":
            out = _normalize(crop, None, cfg.normalize)
        else:
            out = _normalize(crop, m, cfg.normalize) * m
    if cfg.nm_per_px is not None:
        assert pixel_size_nm is not None
        arr = _to_scale(out, float(pixel_size_nm) / float(cfg.nm_per_px), cfg.size)
        return arr, (r1 - r0, c1 - c0, area)
    return _resize(out, cfg.size, cfg.aspect), (r1 - r0, c1 - c0, area)


_Result = tuple[np.ndarray, np.ndarray, bool] | str


def read_particle(p: Particle) -> tuple[np.ndarray, np.ndarray | None]:
    """Image (H, W) in the file's dtype and mask (H, W) bool or None of one particle; a mask
    of another size raises ``LipoclassError`` naming both files, the row and the id, and so
    does an image with non-finite pixels (NaN or infinity, possible in float TIFFs): they are
    refused, not repaired (docs/data.md)."""
    img = read_native(p.image)  # (H, W) file dtype; callers crop before float conversion
    if img.dtype.kind == "f" and not np.isfinite(img).all():
        bad = int(img.size - np.count_nonzero(np.isfinite(img)))
        raise LipoclassError(
            f"{p.image}: {bad} non-finite pixel value(s) (NaN or infinity) (particles.csv row "
            f"{p.row}, id {p.id}); fix or remove this image"
        )
    if p.mask is None:
        return img, None
    mask = read_native(p.mask) > 0  # (H, W) bool
    if mask.shape != img.shape:
        raise LipoclassError(
            f"{p.mask}: mask is {mask.shape[1]}x{mask.shape[0]} but image {p.image.name} is "
            f"{img.shape[1]}x{img.shape[0]} (particles.csv row {p.row}, id {p.id})"
        )
    return img, mask


def _prepare_one(p: Particle, cfg: PrepConfig, own_mask: bool = True) -> _Result:
    img, mask = read_particle(p)
    if not own_mask:
        mask = None  # the fallback of prepare_without_masks: as if there were no mask file
    auto = False
    if mask is None and cfg.mode != "surround":
        mask, auto = auto_mask(img), True  # converts to float32 itself
    res = prepare_arrays(img, mask, cfg, p.pixel_size_nm)
    if isinstance(res, str):
        if cfg.mode == "surround":  # empty mask does not matter when the mask is unused
            res = prepare_arrays(img, None, cfg, p.pixel_size_nm)
            assert not isinstance(res, str)
        else:
            return res
    arr, (bh, bw, area) = res
    px = np.nan if p.pixel_size_nm is None else p.pixel_size_nm
    meta = np.array([img.shape[1], img.shape[0], bw, bh, area, px], dtype=np.float64)
    return arr, meta, auto


def _cache_settings(cfg: PrepConfig) -> dict[str, object]:
    """The settings part of the cache key (without ``nm_per_px`` when unset, so caches made
    before the common scale existed stay valid)."""
    d: dict[str, object] = asdict(cfg)
    if cfg.nm_per_px is None:
        del d["nm_per_px"]
    return d


def check_pixel_sizes(dataset: ParticleDataset, cfg: PrepConfig) -> None:
    """Before any pixel: with a common scale (``cfg.nm_per_px``) every particle needs a
    pixel size; the first without one -> ``LipoclassError`` naming its row and id."""
    if cfg.nm_per_px is None:
        return
    for p in dataset.particles:
        if p.pixel_size_nm is None:
            where = f"{dataset.root / 'particles.csv'} row {p.row} (id {p.id})"
            raise no_pixel_size_error(where, cfg.nm_per_px)


def default_cache_dir() -> Path:
    """``$LIPOCLASS_CACHE`` or ``~/.cache/lipoclass``."""
    env = os.environ.get("LIPOCLASS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "lipoclass"


def dataset_fingerprint(dataset: ParticleDataset) -> str:
    """Hash of particles.csv, dataset.toml, the dataset folder and every referenced file's
    name, size and modification time: the one fingerprint of a dataset's content, used by the
    preparation cache, cv runs, model folders, export's check and study run keys (an edited
    image changes it, so nothing stale is reused)."""
    h = hashlib.sha256()
    for name in ("particles.csv", "dataset.toml"):
        table = dataset.root / name
        if table.is_file():
            h.update(table.read_bytes())
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
    cfg = (config or PrepConfig()).resolve(dataset)
    check_pixel_sizes(dataset, cfg)
    key = ""
    cache_file: Path | None = None
    if cache:
        key = hashlib.sha256(
            (
                dataset_fingerprint(dataset) + json.dumps(_cache_settings(cfg), sort_keys=True)
            ).encode()
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
    results, messages = parallel_map(
        partial(_prepare_one, cfg=cfg), parts, workers, desc="prepare", min_chunk=64
    )
    warn_collected(messages)  # worker warnings, summarised, pointing at the caller

    prep = _assemble(dataset, cfg, list(range(len(parts))), results)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(
            tmp, x=prep.x, meta=prep.meta, index=prep.index, skipped=json.dumps(prep.skipped),
            auto_masked=np.int64(prep.auto_masked),
        )  # fmt: skip
        os.replace(tmp, cache_file)
    _warn_skipped(prep)
    return prep


def _assemble(
    dataset: ParticleDataset,
    cfg: PrepConfig,
    positions: list[int],
    results: list[_Result],
    why_prefix: str = "",
) -> Prepared:
    """``Prepared`` from the per-particle results of the particles at ``positions`` in
    ``dataset.particles``: arrays for the prepared ones, (id, ``why_prefix`` + reason) in
    ``skipped`` for the others."""
    keep = [(i, r) for i, r in zip(positions, results) if not isinstance(r, str)]
    skipped = [(dataset.particles[i].id, why_prefix + r)
               for i, r in zip(positions, results) if isinstance(r, str)]  # fmt: skip
    x = np.empty((len(keep), 1, cfg.size, cfg.size), dtype=np.float32)  # (n,1,S,S)
    meta = np.empty((len(keep), len(META_COLUMNS)), dtype=np.float64)
    auto = 0
    for j, (_i, (arr, m, a)) in enumerate(keep):
        x[j, 0], meta[j] = arr, m
        auto += int(a)
    index = np.asarray([i for i, _r in keep], dtype=np.int64)
    return Prepared(
        x=x,
        y=dataset.labels[index],
        index=index,
        ids=[dataset.particles[i].id for i in index],
        meta=meta,
        classes=dataset.classes,
        config=cfg,
        skipped=skipped,
        auto_masked=auto,
    )


def prepare_without_masks(
    dataset: ParticleDataset, positions: np.ndarray, config: PrepConfig | None = None
) -> Prepared:
    """The documented fallback for particles ``prepare`` skips (a mask with no particle pixels
    in ``crop``/``masked`` mode; docs/deployment.md, *Every particle counted*): the particles
    at ``positions`` in ``dataset.particles`` prepared as if they had no mask file, i.e. on
    ``auto_mask``, so exactly as a maskless particle. Serial and uncached (meant for the few
    skipped); ``skipped`` lists any whose automatic mask is empty too (images of 2 x 2 px)."""
    cfg = (config or PrepConfig()).resolve(dataset)
    check_pixel_sizes(dataset, cfg)
    pos = [int(i) for i in np.asarray(positions, dtype=np.int64).reshape(-1)]
    results = [_prepare_one(dataset.particles[i], cfg, own_mask=False) for i in pos]
    return _assemble(dataset, cfg, pos, results, why_prefix="automatic mask: ")


def _warn_skipped(prep: Prepared) -> None:
    if prep.skipped:
        first = ", ".join(i for i, _ in prep.skipped[:5])
        warnings.warn(
            f"{len(prep.skipped)} particle(s) skipped for mode '{prep.config.mode}' "
            f"(mask has no particle pixels): {first}{' ...' if len(prep.skipped) > 5 else ''}",
            stacklevel=3,
        )
