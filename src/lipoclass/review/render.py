"""PNG pictures of a particle for the review page, rendered on demand and cached: the crop
(the tile of the grid) and its context (the window of its micrograph around it with the other
particles boxed, or the whole crop with its mask outline when the micrograph is not known)."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from lipoclass.review.source import ReviewSource

__all__ = ["Renderer"]

_HIGHLIGHT = (230, 159, 0)  # Okabe-Ito orange
_OTHER = (86, 180, 233)  # sky blue


def _to_u8(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img, dtype=np.float32)
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return np.zeros(a.shape, np.uint8)
    lo, hi = np.percentile(finite, (1, 99))
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((np.nan_to_num(a, nan=lo) - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def _png(img: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")  # type: ignore[attr-defined]
    return buf.getvalue()


class Renderer:
    """``crop(i)`` and ``context(i)`` PNG bytes of the source's i-th item (thread-safe)."""

    def __init__(self, source: ReviewSource, tile: int = 128, context: int = 480) -> None:
        self.src, self.tile, self.ctx = source, tile, context
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._mics: OrderedDict[Path, np.ndarray] = OrderedDict()
        self._by_mic: dict[Path, list[int]] = {}
        for i, g in enumerate(source.geometry):
            if g is not None:
                self._by_mic.setdefault(g.path, []).append(i)

    def _cached(self, key: tuple[str, int], make: object) -> bytes:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        data = make()  # type: ignore[operator]
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > 4000:
                self._cache.popitem(last=False)
        return data

    def _micrograph(self, path: Path) -> np.ndarray:
        with self._lock:
            if path in self._mics:
                self._mics.move_to_end(path)
                return self._mics[path]
        from lipoclass.micrograph.io import read_micrograph

        img = _to_u8(read_micrograph(path, require_pixel_size=False).image)
        with self._lock:
            self._mics[path] = img
            while len(self._mics) > 3:
                self._mics.popitem(last=False)
        return img

    def _particle(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        from lipoclass.data import read_image

        p = self.src.dataset.particles[self.src.positions[i]]
        img = _to_u8(read_image(p.image))
        mask = read_image(p.mask) > 0 if p.mask is not None else None
        return img, mask

    def crop(self, i: int) -> bytes:
        return self._cached(("crop", i), lambda: self._crop(i))

    def context(self, i: int) -> bytes:
        return self._cached(("context", i), lambda: self._context(i))

    def _crop(self, i: int) -> bytes:
        from PIL import Image

        g = self.src.geometry[i] if self.src.geometry else None
        if self.src.dataset is not None:
            img, _ = self._particle(i)
        elif g is not None:
            mic = self._micrograph(g.path)
            x0, y0, x1, y1 = g.box
            pad = 0.25 * max(x1 - x0, y1 - y0)
            img = self._window(mic, (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) + 2 * pad)
        else:  # pragma: no cover - every kind has pixels
            img = np.zeros((8, 8), np.uint8)
        pil = Image.fromarray(img)
        scale = self.tile / max(pil.size)
        size = (max(1, round(pil.size[0] * scale)), max(1, round(pil.size[1] * scale)))
        return _png(pil.resize(size, Image.Resampling.LANCZOS))

    @staticmethod
    def _window(mic: np.ndarray, cx: float, cy: float, side: float) -> np.ndarray:
        h, w = mic.shape
        half = max(4, round(side / 2))
        y0, y1 = max(0, int(cy) - half), min(h, int(cy) + half)
        x0, x1 = max(0, int(cx) - half), min(w, int(cx) + half)
        return mic[y0:y1, x0:x1]

    def _context(self, i: int) -> bytes:
        from PIL import Image, ImageDraw

        g = self.src.geometry[i] if self.src.geometry else None
        if g is None:  # the whole crop, enlarged, with the mask outline
            img, mask = self._particle(i)
            pil = Image.fromarray(img).convert("RGB")
            if mask is not None:
                edge = mask & ~np.pad(mask, 1)[2:, 1:-1] | mask & ~np.pad(mask, 1)[:-2, 1:-1]
                edge |= mask & ~np.pad(mask, 1)[1:-1, 2:] | mask & ~np.pad(mask, 1)[1:-1, :-2]
                rgb = np.asarray(pil).copy()
                rgb[edge] = _HIGHLIGHT
                pil = Image.fromarray(rgb)
            scale = self.ctx / max(pil.size)
            size = (max(1, round(pil.size[0] * scale)), max(1, round(pil.size[1] * scale)))
            return _png(pil.resize(size, Image.Resampling.NEAREST))
        mic = self._micrograph(g.path)
        h, w = mic.shape
        side = max(256.0, 6.0 * g.diameter_px)
        half = side / 2
        wx0, wy0 = max(0, int(g.x - half)), max(0, int(g.y - half))
        wx1, wy1 = min(w, int(g.x + half)), min(h, int(g.y + half))
        pil = Image.fromarray(mic[wy0:wy1, wx0:wx1]).convert("RGB")
        scale = self.ctx / max(pil.size)
        pil = pil.resize(
            (max(1, round(pil.size[0] * scale)), max(1, round(pil.size[1] * scale))),
            Image.Resampling.LANCZOS,
        )
        draw = ImageDraw.Draw(pil)
        for j in self._by_mic.get(g.path, []):
            o = self.src.geometry[j]
            assert o is not None
            bx0, by0, bx1, by1 = o.box
            if bx1 < wx0 or bx0 > wx1 or by1 < wy0 or by0 > wy1:
                continue
            box = [
                (bx0 - wx0) * scale,
                (by0 - wy0) * scale,
                (bx1 - wx0) * scale,
                (by1 - wy0) * scale,
            ]
            draw.rectangle(box, outline=_HIGHLIGHT if j == i else _OTHER, width=3 if j == i else 1)
        return _png(pil)
