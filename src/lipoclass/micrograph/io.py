"""Reading micrographs (MRC, TIFF 8/16-bit or float, PNG) with their pixel size, and
instance label images (0 background, 1..K), e.g. from cellpose, StarDist, napari or micro-sam.

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
    "read_label_image",
    "read_micrograph",
    "read_pixel_size",
    "write_label_image",
]

MICROGRAPH_SUFFIXES = (".mrc", ".mrcs", ".map", ".tif", ".tiff", ".png")
LABEL_SUFFIXES = (".tif", ".tiff", ".png")
_MRC = (".mrc", ".mrcs", ".map")
_UNIT_NM = {"nm": 1.0, "nanometer": 1.0, "nanometers": 1.0, "um": 1e3, "µm": 1e3,
            "\\u00b5m": 1e3, "micron": 1e3, "microns": 1e3, "micrometer": 1e3,
            "a": 0.1, "å": 0.1, "angstrom": 0.1, "pm": 1e-3}  # fmt: skip
_MAX_PLAUSIBLE_NM = 100.0


class MicrographWarning(UserWarning):
    """A micrograph-level problem that does not stop the run (e.g. no particle found)."""


@dataclass(frozen=True)
class Micrograph:
    """One micrograph: pixels (H, W) in the file's own dtype, pixel size in nm (None when
    unknown) and where it came from."""

    path: Path
    image: np.ndarray
    pixel_size_nm: float | None

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
    arr = read_native(p)  # (H, W), LipoclassError naming the file when unreadable
    if arr.shape[0] < 8 or arr.shape[1] < 8:
        raise LipoclassError(f"{p}: image of {arr.shape[1]} x {arr.shape[0]} px is too small")
    return Micrograph(p, arr, px)


def read_label_image(
    path: str | os.PathLike[str], shape: tuple[int, int] | None = None, micrograph: str = ""
) -> np.ndarray:
    """Instance label image (H, W) as int64 (0 background, 1..K instances; RGB label
    images are not supported). ``shape``: the micrograph's (H, W), checked."""
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
        if not np.all(np.mod(arr, 1) == 0):
            raise LipoclassError(f"{p}: label image holds non-integer values ({arr.dtype})")
    if arr.min() < 0:
        raise LipoclassError(f"{p}: label image holds negative values")
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
