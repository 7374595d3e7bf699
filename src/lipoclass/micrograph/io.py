"""Reading micrographs (MRC, TIFF 8/16/32-bit or float, PNG 8/16-bit, JPEG; colour images
become luminance 0.299 R + 0.587 G + 0.114 B with a warning) with their pixel size, and
instance label images (0 background, 1..K, any integer type), e.g. from cellpose, StarDist,
napari or micro-sam.

Non-finite pixels (NaN, +-Inf: dead pixels, masked regions of float exports) are replaced by
the median of the micrograph's finite pixels, with one ``MicrographWarning`` giving their
count; ``Micrograph.filled`` marks them so that detection can report the particles touching
them. A micrograph without any finite pixel is an error.

Pixel size, in order: an explicit value; the MRC header's ``voxel_size`` (Angstrom; 0 means
unset); TIFF ImageJ metadata (``unit`` nm / um / Angstrom with the resolution tags, as Fiji
writes them) or the TIFF resolution tags in pixels per cm or inch (values above 100 nm/px,
e.g. the usual 72 dpi default, are taken as unset)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipoclass.data.io import read_native
from lipoclass.errors import LipoclassError

__all__ = [
    "LABEL_SUFFIXES",
    "MICROGRAPH_SUFFIXES",
    "Micrograph",
    "MicrographWarning",
    "check_micrograph_path",
    "check_micrographs",
    "fill_nonfinite",
    "read_label_image",
    "read_micrograph",
    "read_pixel_size",
    "write_label_image",
]

MICROGRAPH_SUFFIXES = (".mrc", ".mrcs", ".map", ".tif", ".tiff", ".png", ".jpg", ".jpeg")
LABEL_SUFFIXES = (".tif", ".tiff", ".png")  # lossless only: JPEG would change instance ids
_MRC = (".mrc", ".mrcs", ".map")
_UNIT_NM = {"nm": 1.0, "nanometer": 1.0, "nanometers": 1.0, "um": 1e3, "µm": 1e3,
            "\\u00b5m": 1e3, "micron": 1e3, "microns": 1e3, "micrometer": 1e3,
            "a": 0.1, "å": 0.1, "angstrom": 0.1, "pm": 1e-3}  # fmt: skip
_MAX_PLAUSIBLE_NM = 100.0


class MicrographWarning(UserWarning):
    """A micrograph-level problem that does not stop the run (e.g. no particle found)."""


@dataclass(frozen=True)
class Micrograph:
    """One micrograph: pixels (H, W) in the file's own dtype (colour files: float32
    luminance), pixel size in nm (None when unknown) and where it came from; ``filled``
    (H, W) bool marks pixels that were NaN/Inf in the file (None when there were none)."""

    path: Path
    image: np.ndarray
    pixel_size_nm: float | None
    filled: np.ndarray | None = None

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])


def check_micrograph_path(path: str | os.PathLike[str]) -> Path:
    """The path if it is an existing file of a supported type, else ``LipoclassError``."""
    p = Path(path)
    if not p.is_file():
        raise LipoclassError(f"{p}: micrograph file not found")
    if p.suffix.lower() not in MICROGRAPH_SUFFIXES:
        raise LipoclassError(
            f"{p}: unsupported micrograph type {p.suffix!r} (use {', '.join(MICROGRAPH_SUFFIXES)})"
        )
    return p


def _tiff_pixel_size(p: Path) -> float | None:
    import tifffile

    with tifffile.TiffFile(p) as tf:
        page = tf.pages[0]
        tags = page.tags  # type: ignore[union-attr]
        xres = tags.get("XResolution")
        if xres is None:
            return None
        num, den = xres.value
        if not num or not den:
            return None
        per_unit = den / num  # units per pixel
        ij = tf.imagej_metadata or {}
        unit = str(ij.get("unit", "")).strip().lower()
        if unit:
            factor = _UNIT_NM.get(unit)
            value = per_unit * factor if factor is not None else None
        else:
            ru = tags.get("ResolutionUnit")
            code = int(ru.value) if ru is not None else 2
            value = {2: per_unit * 2.54e7, 3: per_unit * 1e7}.get(code)
    if value is None or not 0 < value <= _MAX_PLAUSIBLE_NM:
        return None
    return float(value)


def read_pixel_size(path: str | os.PathLike[str]) -> float | None:
    """Pixel size in nm from the file's header (MRC ``voxel_size``, TIFF resolution tags),
    None when the header has none. Raises ``LipoclassError`` when the header is unreadable."""
    p = Path(path)
    suffix = p.suffix.lower()
    try:
        if suffix in _MRC:
            import mrcfile

            with mrcfile.open(p, header_only=True, permissive=True) as m:
                vx = float(m.voxel_size.x)
            return vx / 10.0 if vx > 0 and np.isfinite(vx) else None
        if suffix in (".tif", ".tiff"):
            return _tiff_pixel_size(p)
    except Exception as exc:
        raise LipoclassError(f"{p}: unreadable header ({type(exc).__name__}: {exc})") from None
    return None


def resolve_pixel_size(
    path: Path, pixel_size_nm: float | None, require: bool, option: str = "--pixel-size"
) -> float | None:
    """Explicit value, else the header's; an MRC without either is an error when ``require``."""
    if pixel_size_nm is not None:
        if not pixel_size_nm > 0:
            raise LipoclassError(f"{option} must be positive, got {pixel_size_nm}")
        return float(pixel_size_nm)
    px = read_pixel_size(path)
    if px is None and require and path.suffix.lower() in _MRC:
        raise LipoclassError(
            f"{path}: the MRC header has no pixel size (voxel size 0); give {option} NM"
        )
    return px


def check_micrographs(
    micrographs: Sequence[str | os.PathLike[str]],
    pixel_size_nm: float | None,
    require_pixel_size: bool,
    samples: Mapping[str, str] | None,
    clash: str,
) -> tuple[list[Path], dict[Path, float | None]]:
    """Validate a list of micrographs before any pixel is read: each path, unique stems
    (``clash`` says what a repeated stem would break), pixel sizes, and membership in the
    sample table. Returns (paths, pixel size per path)."""
    paths = [check_micrograph_path(m) for m in micrographs]
    if not paths:
        raise LipoclassError("no micrographs given")
    stems: dict[str, Path] = {}
    for p in paths:
        if p.stem in stems:
            raise LipoclassError(f"{p}: same name as {stems[p.stem]} ({clash})")
        stems[p.stem] = p
    pxs = {p: resolve_pixel_size(p, pixel_size_nm, require_pixel_size) for p in paths}
    if samples is not None:
        missing = [p for p in paths if p.stem not in samples]
        if missing:
            raise LipoclassError(f"{missing[0]}: not listed in the sample table")
    return paths, pxs


def read_micrograph(
    path: str | os.PathLike[str],
    *,
    pixel_size_nm: float | None = None,
    require_pixel_size: bool = True,
) -> Micrograph:
    """Read one micrograph (2-D; a single-frame MRC stack is accepted). ``pixel_size_nm``
    overrides the header; an MRC without a pixel size raises ``LipoclassError`` unless
    ``require_pixel_size`` is False. Colour images are converted to grey with a warning."""
    p = check_micrograph_path(path)
    px = resolve_pixel_size(p, pixel_size_nm, require_pixel_size)
    arr = _read_pixels(p)  # (H, W), LipoclassError naming the file when unreadable
    if arr.shape[0] < 8 or arr.shape[1] < 8:
        raise LipoclassError(f"{p}: image of {arr.shape[1]} x {arr.shape[0]} px is too small")
    arr, filled = fill_nonfinite(arr, str(p))
    return Micrograph(p, arr, px, filled)


def _read_pixels(p: Path) -> np.ndarray:
    """Pixels (H, W) of a micrograph file. Colour PNGs are decoded with imagecodecs (Pillow
    would cut 16-bit colour to 8 bits), everything else by ``read_native``."""
    if p.suffix.lower() == ".png":
        try:
            head = p.open("rb").read(26)
        except OSError as exc:
            raise LipoclassError(f"{p}: unreadable image ({exc})") from None
        # IHDR byte 25 is the PNG colour type: 2 RGB, 4 grey + alpha, 6 RGBA
        if len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[25] in (2, 4, 6):
            import imagecodecs

            try:
                arr = np.asarray(imagecodecs.png_decode(p.read_bytes()))
            except Exception as exc:
                raise LipoclassError(
                    f"{p}: unreadable image ({type(exc).__name__}: {exc})"
                ) from None
            if arr.ndim == 3 and arr.shape[-1] == 2:  # grey + alpha: the grey channel
                return arr[..., 0]
            if arr.ndim == 3 and arr.shape[-1] in (3, 4):
                warnings.warn(
                    MicrographWarning(f"{p}: colour image converted to greyscale (luminance)"),
                    stacklevel=3,
                )
                return arr[..., :3].astype(np.float32) @ _LUMA
    return read_native(p)


_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def fill_nonfinite(
    image: np.ndarray, where: str = "micrograph"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Replace NaN/Inf pixels of ``image`` (H, W) by the median of its finite pixels, with a
    ``MicrographWarning`` naming ``where`` and the count. Returns (image, filled mask (H, W)
    bool or None when every pixel was finite); integer images are returned unchanged. No
    finite pixel at all raises ``LipoclassError``."""
    if not np.issubdtype(image.dtype, np.floating):
        return image, None
    finite = np.isfinite(image)
    if finite.all():
        return image, None
    n_bad = int(finite.size - np.count_nonzero(finite))
    if n_bad == finite.size:
        raise LipoclassError(f"{where}: no finite pixel (every pixel is NaN or Inf)")
    med = float(np.median(image[finite]))
    out = np.where(finite, image, np.asarray(med, dtype=image.dtype))
    warnings.warn(
        MicrographWarning(
            f"{where}: {n_bad} NaN/Inf pixel(s) filled with the median of the finite pixels "
            f"({med:.4g})"
        ),
        stacklevel=3,
    )
    return out, ~finite


def read_label_image(
    path: str | os.PathLike[str], shape: tuple[int, int] | None = None, micrograph: str = ""
) -> np.ndarray:
    """Instance label image (H, W) as int64 (0 background, 1..K instances) from a TIFF of
    any integer type (8-64 bit, signed or not; float with whole values) or an 8/16-bit PNG;
    RGB label images are not supported. ``shape``: the micrograph's (H, W), checked."""
    p = Path(path)
    if not p.is_file():
        raise LipoclassError(f"{p}: label image not found")
    if p.suffix.lower() not in LABEL_SUFFIXES:
        raise LipoclassError(f"{p}: label images must be TIFF or PNG, got {p.suffix!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a colour label image is an error, not a grey image
        try:
            arr = read_native(p)
        except UserWarning:
            raise LipoclassError(f"{p}: colour label image; expected one integer channel") from None
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(np.mod(arr, 1) == 0):
            raise LipoclassError(f"{p}: label image holds non-integer values ({arr.dtype})")
    if arr.min() < 0:
        raise LipoclassError(f"{p}: label image holds negative values")
    if arr.dtype == np.uint64 and int(arr.max()) > np.iinfo(np.int64).max:
        raise LipoclassError(f"{p}: label image holds instance ids beyond 2**63")
    if shape is not None and tuple(arr.shape) != tuple(shape):
        of = f" of {micrograph}" if micrograph else ""
        raise LipoclassError(
            f"{p}: label image is {arr.shape[1]} x {arr.shape[0]} px but the micrograph{of} "
            f"is {shape[1]} x {shape[0]} px"
        )
    return arr.astype(np.int64, copy=False)


def write_label_image(
    path: str | os.PathLike[str], labels: np.ndarray, pixel_size_nm: float | None = None
) -> None:
    """Instance labels (H, W) -> uint16 (uint32 beyond 65535) TIFF with the pixel size."""
    from lipoclass.synth.micrograph import write_label_tiff

    write_label_tiff(path, labels, pixel_size_nm)
