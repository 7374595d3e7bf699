"""Reading and writing particle images: PNG, BMP, JPEG, TIFF (8/16-bit, float32) and MRC."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from lipoclass.errors import LipoclassError

__all__ = ["IMAGE_SUFFIXES", "image_size", "read_image", "read_native", "write_image"]

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".mrc", ".mrcs", ".map")


def _to_grey(arr: np.ndarray, path: Path) -> np.ndarray:
    """Colour (H, W, 3|4) -> luminance (H, W), warning once per call."""
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        warnings.warn(f"{path}: colour image converted to greyscale", stacklevel=3)
        rgb = arr[..., :3].astype(np.float32)
        return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if arr.ndim == 3 and arr.shape[0] == 1:
        return arr[0]
    if arr.ndim != 2:
        raise LipoclassError(f"{path}: expected a 2-D greyscale image, got shape {arr.shape}")
    return arr


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one particle image as a 2-D float32 array of its original values.

    8- and 16-bit images keep their integer values (as float32); float TIFF/MRC keep theirs.
    Colour images are converted to luminance with a warning. Any failure raises
    ``LipoclassError`` naming the file.
    """
    return np.ascontiguousarray(read_native(path), dtype=np.float32)


_PIL_FORMATS = {".png": ["PNG"], ".bmp": ["BMP"], ".jpg": ["JPEG"], ".jpeg": ["JPEG"]}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _decode_grey_png(data: bytes) -> np.ndarray | None:
    """8/16-bit greyscale PNG ``data`` (the usual particle crop and mask) decoded with
    imagecodecs' libpng binding, about a third faster than Pillow per file; None for any
    other PNG (palette, colour, alpha, 1-4 bit), which Pillow reads."""
    # IHDR is the first chunk: bytes 24 and 25 are the bit depth and the colour type (0: grey)
    if len(data) < 33 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    if data[25] != 0 or data[24] not in (8, 16):
        return None
    import imagecodecs

    arr: np.ndarray = imagecodecs.png_decode(data)
    return arr


def read_native(path: str | os.PathLike[str]) -> np.ndarray:
    """Like ``read_image`` but in the file's own dtype (uint8, uint16, float32, ...), so callers
    can crop or threshold before converting (faster for large images and masks). Colour
    images come back as float32 luminance."""
    p = Path(path)
    suffix = p.suffix.lower()
    if not p.is_file():
        raise LipoclassError(f"{p}: image file not found")
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            arr = np.asarray(tifffile.imread(p))
        elif suffix in (".mrc", ".mrcs", ".map"):
            import mrcfile

            with mrcfile.open(p, permissive=True) as m:
                arr = np.asarray(m.data)
            if arr.ndim == 3 and arr.shape[0] == 1:
                arr = arr[0]
        elif suffix == ".png" and (grey := _decode_grey_png(p.read_bytes())) is not None:
            arr = grey
        else:
            from PIL import Image

            # the suffix names the decoder first (skips PIL's probing of every registered
            # format); a file whose content does not match its suffix is probed as before
            try:
                opened = Image.open(p, formats=_PIL_FORMATS.get(suffix))
            except Image.UnidentifiedImageError:
                opened = Image.open(p)
            with opened:
                im: Image.Image = opened
                if im.mode in ("P", "PA"):
                    im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                elif im.mode == "LA":
                    im = im.convert("L")
                arr = np.asarray(im)
    except LipoclassError:
        raise
    except Exception as exc:  # decoder errors come in many types
        raise LipoclassError(f"{p}: unreadable image ({type(exc).__name__}: {exc})") from None
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.size == 0:
        raise LipoclassError(f"{p}: empty image")
    return _to_grey(arr, p)


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(height, width) of an image from its header, without decoding the pixels (fast, for
    summaries). Raises ``LipoclassError`` naming the file when it cannot be read."""
    p = Path(path)
    suffix = p.suffix.lower()
    if not p.is_file():
        raise LipoclassError(f"{p}: image file not found")
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(p) as tf:
                shape = tf.pages[0].shape
        elif suffix in (".mrc", ".mrcs", ".map"):
            import mrcfile

            with mrcfile.mmap(p, permissive=True) as m:
                shape = m.data.shape
        else:
            from PIL import Image

            with Image.open(p) as im:
                shape = (im.size[1], im.size[0])
    except Exception as exc:
        raise LipoclassError(f"{p}: unreadable image ({type(exc).__name__}: {exc})") from None
    if len(shape) == 3 and shape[0] == 1:  # (1, H, W) stack
        shape = shape[1:]
    return int(shape[0]), int(shape[1])


def write_image(path: str | os.PathLike[str], arr: np.ndarray) -> None:
    """Write a 2-D array: uint8 -> PNG/BMP/JPEG/TIFF, uint16 -> PNG/TIFF, float32 -> TIFF/MRC."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(p, arr)
    elif suffix in (".mrc", ".mrcs", ".map"):
        import mrcfile

        with mrcfile.new(p, overwrite=True) as m:
            m.set_data(np.asarray(arr, dtype=np.float32))
    else:
        from PIL import Image

        Image.fromarray(arr).save(p)
