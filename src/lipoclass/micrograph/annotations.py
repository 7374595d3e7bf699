"""Particle annotations on micrographs, from four kinds of source, all turned into one list of
``ParticleAnnotation`` (a local mask placed in the micrograph, a centre, an extent, a label):

* ``LabelImageSource``: instance label images (TIFF/PNG label maps from cellpose, StarDist,
  napari, micro-sam, ``lipoclass detect`` or ``lipoclass synth --micrographs``), with an
  optional class table (CSV ``instance,label`` with an optional ``micrograph`` column);
* ``CocoSource``: COCO JSON (CVAT, Roboflow, LNP-MOD): polygons, RLE (uncompressed, or
  compressed with the small decoder below), or only a bbox (automatic mask in the box);
* ``CoordinateSource``: a CSV of ``micrograph,x,y`` with ``diameter`` or ``w,h`` (pixels;
  x = column, y = row, origin at the centre of the top-left pixel), optional ``label``;
  or a RELION / cryoSPARC particle STAR file (``rlnMicrographName``, ``rlnCoordinateX/Y``)
  read with ``starfile``, with ``--diameter``; automatic mask in a window;
* ``DetectSource``: the classical detector of ``lipoclass.micrograph.detect``.

Every source is checked (files, columns, names) when built, before any pixel is read.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lipoclass.errors import LipoclassError, finite_number
from lipoclass.micrograph.io import LABEL_SUFFIXES, Micrograph, read_label_image

__all__ = [
    "ANNOTATION_KINDS",
    "AnnotationSource",
    "CocoSource",
    "CoordinateSource",
    "DetectSource",
    "LabelImageSource",
    "ParticleAnnotation",
    "box_mask",
    "check_class_table",
    "decode_rle",
    "encode_rle_string",
    "instance_classes",
    "instances_from_labels",
    "read_class_table",
    "read_sample_table",
]

ANNOTATION_KINDS = ("labels", "coco", "coords", "star", "detect")


@dataclass(frozen=True)
class ParticleAnnotation:
    """One particle on a micrograph. ``mask`` (h, w) bool has its [0, 0] at micrograph pixel
    (``top``, ``left``); (``cy``, ``cx``) is the crop centre and ``height`` x ``width`` the
    particle's extent in px (its box); ``key`` names it in ids and messages."""

    top: int
    left: int
    mask: np.ndarray
    cy: float
    cx: float
    height: float
    width: float
    label: str | None
    key: str


class AnnotationSource(Protocol):
    """Where the particles of a micrograph come from."""

    classes: tuple[str, ...]

    def particles(self, mic: Micrograph) -> list[ParticleAnnotation]: ...


def _stem(name: str) -> str:
    """Micrograph key of a file name or path: base name without (double) suffix."""
    base = Path(str(name).replace("\\", "/")).name
    for suffix in (".mrcs", ".mrc", ".tiff", ".tif", ".png", ".map", ".jpg", ".jpeg"):
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return Path(base).stem


def _read_csv(path: Path, what: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header (lower case) and (row number, row) of a CSV; header is row 0."""
    if not path.is_file():
        raise LipoclassError(f"{path}: {what} not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            try:
                header = [h.strip().lower() for h in next(reader)]
            except StopIteration:
                raise LipoclassError(f"{path}: empty {what}") from None
            rows = []
            for r, values in enumerate(reader, start=1):
                if not values or all(v.strip() == "" for v in values):
                    continue
                if len(values) != len(header):
                    raise LipoclassError(
                        f"{path} row {r}: {len(values)} fields, header has {len(header)}"
                    )
                rows.append((r, {h: v.strip() for h, v in zip(header, values)}))
    except UnicodeDecodeError:
        raise LipoclassError(f"{path}: not a text CSV file") from None
    return header, rows


def read_class_table(path: Path) -> dict[tuple[str | None, int], tuple[str, int]]:
    """CSV ``instance,label`` (optional ``micrograph``) -> {(micrograph stem | None,
    instance): (label, row)}."""
    header, rows = _read_csv(path, "class table")
    for req in ("instance", "label"):
        if req not in header:
            raise LipoclassError(f"{path}: required column '{req}' is missing")
    table: dict[tuple[str | None, int], tuple[str, int]] = {}
    for r, row in rows:
        where = f"{path} row {r}"
        inst = finite_number(row["instance"], "instance", where)
        if inst != int(inst) or inst < 1:
            raise LipoclassError(
                f"{where}: instance must be an integer >= 1, got {row['instance']}"
            )
        mic = _stem(row["micrograph"]) if row.get("micrograph") else None
        key = (mic, int(inst))
        if key in table:
            raise LipoclassError(f"{where}: instance {int(inst)} listed twice")
        if row["label"]:
            table[key] = (row["label"], r)
    return table


def check_class_table(
    table: dict[tuple[str | None, int], tuple[str, int]], path: Path, micrographs: Sequence[Path]
) -> None:
    """A class table for several micrographs must say which micrograph each row is on
    (instance ids repeat across label images); otherwise one row would class an instance of
    every micrograph."""
    if len(micrographs) > 1:
        for (m, _inst), (_lab, row) in table.items():
            if m is None:
                raise LipoclassError(
                    f"{path} row {row}: no micrograph given, but there are {len(micrographs)} "
                    "micrographs (add a 'micrograph' column: instance ids repeat across them)"
                )


def instance_classes(
    table: dict[tuple[str | None, int], tuple[str, int]],
    micrograph: str,
    labels: np.ndarray,
    label_path: Path,
    table_path: Path | None,
) -> dict[int, str]:
    """The rows of a class table (``read_class_table``) for one micrograph's label image:
    instance -> class; a row naming an instance the image lacks is an error."""
    present = np.zeros(int(labels.max(initial=0)) + 1, dtype=bool)
    present[np.unique(labels)] = True
    out: dict[int, str] = {}
    for (m, inst), (lab, row) in table.items():
        if m is not None and m != micrograph:
            continue
        if inst >= present.size or not present[inst]:
            raise LipoclassError(
                f"{table_path} row {row}: instance {inst} is not in label image {label_path}"
            )
        out[inst] = lab
    return out


def read_sample_table(path: Path) -> dict[str, str]:
    """CSV ``micrograph,sample`` -> {micrograph stem: sample}."""
    header, rows = _read_csv(path, "sample table")
    for req in ("micrograph", "sample"):
        if req not in header:
            raise LipoclassError(f"{path}: required column '{req}' is missing")
    out: dict[str, str] = {}
    for r, row in rows:
        if not row["micrograph"] or not row["sample"]:
            raise LipoclassError(f"{path} row {r}: empty micrograph or sample")
        out[_stem(row["micrograph"])] = row["sample"]
    return out


# --------------------------------------------------------------------------- masks


def instances_from_labels(
    labels: np.ndarray, table: dict[int, str] | None = None
) -> list[ParticleAnnotation]:
    """Instance label image (H, W) -> one annotation per instance present (bbox centre)."""
    from scipy import ndimage as ndi

    out: list[ParticleAnnotation] = []
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        m = labels[sl] == i  # (h, w) bool
        t, b = sl[0].start, sl[0].stop
        left, right = sl[1].start, sl[1].stop
        label = table.get(i) if table else None
        out.append(
            ParticleAnnotation(
                t, left, m, (t + b - 1) / 2, (left + right - 1) / 2, b - t, right - left,
                label, f"{i:04d}",
            )
        )  # fmt: skip
    return out


def box_mask(
    image: np.ndarray, cy: float, cx: float, height: float, width: float
) -> tuple[int, int, np.ndarray]:
    """Automatic particle mask for a box of ``height`` x ``width`` px centred at (cy, cx):
    ``lipoclass.data.auto_mask`` (Otsu, filled, nearest the centre) on a window 1.5x the
    box, kept when it lies within 1.15x the box ellipse, covers the centre and has 0.6-1.3x
    the ellipse's area; else the ellipse inscribed in the box. Returns (top, left, mask)."""
    from lipoclass.data import auto_mask

    h, w = image.shape
    ry, rx = max(height / 2, 1.0), max(width / 2, 1.0)
    y0, y1 = max(0, math.floor(cy - 1.5 * ry)), min(h, math.ceil(cy + 1.5 * ry) + 1)
    x0, x1 = max(0, math.floor(cx - 1.5 * rx)), min(w, math.ceil(cx + 1.5 * rx) + 1)
    yy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    xx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    q = (yy / ry) ** 2 + (xx / rx) ** 2  # (h', w') 1 on the box ellipse
    ellipse = q <= 1.0
    mask = ellipse
    win = image[y0:y1, x0:x1]
    if win.shape[0] >= 8 and win.shape[1] >= 8 and ellipse.any():
        auto = auto_mask(win) & (q <= 1.15**2)
        iy, ix = round(cy) - y0, round(cx) - x0
        inside = 0 <= iy < auto.shape[0] and 0 <= ix < auto.shape[1] and bool(auto[iy, ix])
        ratio = auto.sum() / max(ellipse.sum(), 1)
        if inside and 0.6 <= ratio <= 1.3:
            mask = auto
    return y0, x0, mask


def decode_rle(rle: dict[str, Any], where: str) -> np.ndarray:
    """COCO RLE -> mask (H, W) bool. ``counts`` is a list of run lengths (uncompressed) or
    the compressed string of the COCO mask API: each count is a signed little-endian base-32
    number, 5 bits per character (char - 48; bit 0x20 = more characters follow, bit 0x10 of
    the last one = sign) and counts from the third on are stored as differences to the count
    two before. Runs alternate background/foreground, starting with background, over the
    image in column-major (Fortran) order."""
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError):
        raise LipoclassError(f"{where}: RLE needs 'size' [h, w] and 'counts'") from None
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if isinstance(counts, str):
        runs: list[int] = []
        p = 0
        while p < len(counts):
            x, k, more = 0, 0, True
            while more:
                if p >= len(counts):
                    raise LipoclassError(f"{where}: truncated compressed RLE string")
                c = ord(counts[p]) - 48
                x |= (c & 0x1F) << (5 * k)
                more = bool(c & 0x20)
                p += 1
                k += 1
                if not more and (c & 0x10):
                    x |= -1 << (5 * k)
            if len(runs) > 2:
                x += runs[-2]
            runs.append(x)
    elif isinstance(counts, list):
        runs = [int(c) for c in counts]
    else:
        raise LipoclassError(f"{where}: RLE 'counts' must be a list or a string")
    arr = np.asarray(runs, dtype=np.int64)
    if (arr < 0).any() or int(arr.sum()) != h * w:
        raise LipoclassError(f"{where}: RLE runs sum to {int(arr.sum())}, expected {h} x {w}")
    flat = np.repeat(np.arange(arr.size) % 2 == 1, arr)  # (h*w,) bool, column-major
    return flat.reshape((w, h)).T


def encode_rle_string(mask: np.ndarray) -> dict[str, Any]:
    """Mask (H, W) bool -> compressed COCO RLE (the inverse of ``decode_rle``; for tests and
    writing COCO files)."""
    flat = np.asarray(mask, dtype=bool).T.ravel()  # column-major
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.r_[0, change, flat.size]
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0, *runs]
    chars: list[str] = []
    for i, cnt in enumerate(runs):
        x = int(cnt) - (int(runs[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": "".join(chars)}


def _from_mask(full_or_local: np.ndarray, top: int, left: int, label: str | None, key: str):
    """Annotation from a mask placed at (top, left), trimmed to its bounding box; None when
    empty."""
    ys, xs = np.nonzero(full_or_local)
    if ys.size == 0:
        return None
    t, b, lft, r = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    m = full_or_local[t:b, lft:r].copy()
    t, b, lft, r = t + top, b + top, lft + left, r + left
    return ParticleAnnotation(
        t, lft, m, (t + b - 1) / 2, (lft + r - 1) / 2, b - t, r - lft, label, key
    )


# --------------------------------------------------------------------------- sources


def _find_label_file(labels: Path, mic: Path, single: bool) -> Path:
    if labels.is_file():
        if not single:
            raise LipoclassError(
                f"{labels}: one label image for several micrographs; give a folder of label "
                f"images named after the micrographs"
            )
        return labels
    if not labels.is_dir():
        raise LipoclassError(f"{labels}: label image or folder not found")
    stem = mic.stem
    for name in (stem, f"{stem}_labels", f"{stem}_masks", f"{stem}_cp_masks", f"{stem}_label"):
        for suffix in LABEL_SUFFIXES:
            cand = labels / f"{name}{suffix}"
            if cand.is_file() and cand.resolve() != mic.resolve():
                return cand
    raise LipoclassError(
        f"{labels}: no label image for micrograph {mic.name} (expected {stem}.tif)"
    )


class LabelImageSource:
    """Instance label images (a file for one micrograph or a folder of ``<stem>.tif|png``),
    with an optional class table."""

    def __init__(
        self, labels: Path, micrographs: Sequence[Path], class_table: Path | None = None
    ) -> None:
        self.files = {
            m: _find_label_file(Path(labels), m, len(micrographs) == 1) for m in micrographs
        }
        self.table = read_class_table(class_table) if class_table is not None else {}
        self.table_path = class_table
        if class_table is not None:
            check_class_table(self.table, class_table, micrographs)
        self.classes = tuple(sorted({lab for lab, _ in self.table.values()}))

    def particles(self, mic: Micrograph) -> list[ParticleAnnotation]:
        path = self.files[mic.path]
        labels = read_label_image(path, mic.shape, mic.path.name)
        return instances_from_labels(
            labels, instance_classes(self.table, mic.name, labels, path, self.table_path)
        )


class CocoSource:
    """A COCO JSON file. ``micrographs`` given: every COCO image must be one of them (matched
    by file name without folders and suffix); none given: the images are looked up next to
    the JSON file (and in its ``images/`` folder)."""

    def __init__(self, path: Path, micrographs: Sequence[Path] = ()) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise LipoclassError(f"{self.path}: COCO file not found")
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LipoclassError(f"{self.path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise LipoclassError(f"{self.path}: not a COCO file (no 'images' list)")
        anns = data.get("annotations", [])
        cats = data.get("categories", [])
        if not isinstance(anns, list) or not isinstance(cats, list):
            raise LipoclassError(f"{self.path}: 'annotations' and 'categories' must be lists")
        try:
            self.categories = {int(c["id"]): str(c["name"]) for c in cats}
        except (KeyError, TypeError, ValueError):
            raise LipoclassError(
                f"{self.path}: every category needs an 'id' and a 'name'"
            ) from None
        by_stem = {m.stem: m for m in micrographs}
        self.images: dict[Path, dict[str, Any]] = {}
        self.ids: dict[int, Path] = {}
        for k, im in enumerate(data["images"]):
            try:
                iid, fname = int(im["id"]), str(im["file_name"])
            except (KeyError, TypeError, ValueError):
                raise LipoclassError(
                    f"{self.path}: images[{k}] needs an 'id' and a 'file_name'"
                ) from None
            if micrographs:
                found = by_stem.get(_stem(fname))
            else:
                cands = [self.path.parent / fname, self.path.parent / Path(fname).name,
                         self.path.parent / "images" / Path(fname).name]  # fmt: skip
                found = next((c for c in cands if c.is_file()), None)
            if found is None:
                where = "among the micrographs given" if micrographs else f"in {self.path.parent}"
                raise LipoclassError(f"{self.path}: image {fname!r} (id {iid}) not found {where}")
            self.images[found] = im
            self.ids[iid] = found
        self.anns: dict[Path, list[tuple[int, dict[str, Any]]]] = {p: [] for p in self.images}
        for k, a in enumerate(anns):
            try:
                iid = int(a["image_id"])
            except (KeyError, TypeError, ValueError):
                raise LipoclassError(f"{self.path}: annotations[{k}] has no 'image_id'") from None
            if iid not in self.ids:
                raise LipoclassError(
                    f"{self.path}: annotations[{k}] names image id {iid}, not in 'images'"
                )
            cat = a.get("category_id")
            if cat is not None and int(cat) not in self.categories:
                raise LipoclassError(f"{self.path}: annotations[{k}] has unknown category {cat}")
            self.anns[self.ids[iid]].append((k, a))
        used = {int(a["category_id"]) for v in self.anns.values() for _, a in v
                if a.get("category_id") is not None}  # fmt: skip
        self.classes = tuple(sorted({self.categories[c] for c in used}))

    @property
    def micrographs(self) -> list[Path]:
        return list(self.images)

    def particles(self, mic: Micrograph) -> list[ParticleAnnotation]:
        im = self.images.get(mic.path)
        if im is None:
            return []
        h, w = mic.shape
        ih, iw = im.get("height"), im.get("width")
        if ih is not None and iw is not None and (int(ih), int(iw)) != (h, w):
            raise LipoclassError(
                f"{self.path}: image {im['file_name']!r} is {iw} x {ih} px in the COCO file but "
                f"{mic.path} is {w} x {h} px"
            )
        from skimage.draw import polygon as draw_polygon

        out: list[ParticleAnnotation] = []
        for k, a in self.anns[mic.path]:
            where = f"{self.path} annotations[{k}] (id {a.get('id', '?')})"
            cat = a.get("category_id")
            label = self.categories[int(cat)] if cat is not None else None
            key = f"{int(a.get('id', k)):04d}"
            seg = a.get("segmentation")
            ann: ParticleAnnotation | None = None
            if isinstance(seg, dict):
                m = decode_rle(seg, where)
                if m.shape != (h, w):
                    raise LipoclassError(
                        f"{where}: RLE size {m.shape[1]} x {m.shape[0]} differs from the "
                        f"micrograph's {w} x {h}"
                    )
                ann = _from_mask(m, 0, 0, label, key)
            elif isinstance(seg, list) and seg:
                polys = [np.asarray(s, dtype=np.float64) for s in seg]
                pts = np.concatenate([pg.reshape(-1, 2) for pg in polys if pg.size >= 6])
                if pts.size == 0:
                    raise LipoclassError(f"{where}: polygon with fewer than 3 points")
                self._check_inside(pts[:, 0], pts[:, 1], w, h, where)
                t = max(0, math.floor(pts[:, 1].min()) - 1)
                lft = max(0, math.floor(pts[:, 0].min()) - 1)
                b = min(h, math.ceil(pts[:, 1].max()) + 2)
                r = min(w, math.ceil(pts[:, 0].max()) + 2)
                m = np.zeros((b - t, r - lft), dtype=bool)
                for pg in polys:
                    if pg.size < 6:
                        continue
                    xy = pg.reshape(-1, 2)
                    # COCO coordinates are pixel edges: pixel (i, j) has its centre at j+0.5
                    rr, cc = draw_polygon(xy[:, 1] - 0.5 - t, xy[:, 0] - 0.5 - lft, m.shape)
                    m[rr, cc] = True
                ann = _from_mask(m, t, lft, label, key)
            elif a.get("bbox") is not None:
                try:
                    bx, by, bw, bh = (float(v) for v in a["bbox"])
                except (TypeError, ValueError):
                    raise LipoclassError(f"{where}: bbox must be [x, y, width, height]") from None
                if bw <= 0 or bh <= 0:
                    raise LipoclassError(f"{where}: bbox has zero size")
                self._check_inside(np.array([bx, bx + bw]), np.array([by, by + bh]), w, h, where)
                cy, cx = by + bh / 2 - 0.5, bx + bw / 2 - 0.5
                top, left, m = box_mask(mic.image, cy, cx, bh, bw)
                ann = ParticleAnnotation(top, left, m, cy, cx, bh, bw, label, key)
            else:
                raise LipoclassError(f"{where}: no segmentation and no bbox")
            if ann is not None:
                out.append(ann)
        return out

    def _check_inside(self, xs: np.ndarray, ys: np.ndarray, w: int, h: int, where: str) -> None:
        tol = 1.0
        if xs.min() < -tol or ys.min() < -tol or xs.max() > w + tol or ys.max() > h + tol:
            raise LipoclassError(
                f"{where}: coordinates outside the {w} x {h} px image "
                f"(x {xs.min():.0f}..{xs.max():.0f}, y {ys.min():.0f}..{ys.max():.0f})"
            )


@dataclass(frozen=True)
class _Point:
    mic: str  # micrograph stem
    x: float
    y: float
    height: float
    width: float
    label: str | None
    row: int


class CoordinateSource:
    """Particle coordinates (pixels) from a CSV or a STAR file; an automatic mask per
    particle in a window of its box (``box_mask``)."""

    def __init__(
        self,
        path: Path,
        micrographs: Sequence[Path],
        *,
        diameter: float | None = None,
        star: bool | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise LipoclassError(f"{self.path}: coordinate file not found")
        if diameter is not None and not diameter > 0:
            raise LipoclassError(f"--diameter must be positive, got {diameter}")
        is_star = self.path.suffix.lower() == ".star" if star is None else star
        points = self._read_star(diameter) if is_star else self._read_csv(diameter)
        stems = {m.stem for m in micrographs}
        self.points: dict[str, list[_Point]] = {s: [] for s in stems}
        self.unmatched = 0
        for pt in points:
            if pt.mic in self.points:
                self.points[pt.mic].append(pt)
            else:
                self.unmatched += 1
        self.classes = tuple(sorted({p.label for p in points if p.label}))

    def _read_csv(self, diameter: float | None) -> list[_Point]:
        header, rows = _read_csv(self.path, "coordinate table")
        for req in ("micrograph", "x", "y"):
            if req not in header:
                raise LipoclassError(f"{self.path}: required column '{req}' is missing")
        has_d = "diameter" in header
        has_box = "w" in header and "h" in header
        if not has_d and not has_box and diameter is None:
            raise LipoclassError(f"{self.path}: no 'diameter' or 'w,h' columns; give --diameter PX")
        out: list[_Point] = []
        for r, row in rows:
            where = f"{self.path} row {r}"
            x, y = finite_number(row["x"], "x", where), finite_number(row["y"], "y", where)
            if has_box and row.get("w") and row.get("h"):
                bw, bh = finite_number(row["w"], "w", where), finite_number(row["h"], "h", where)
            elif has_d and row.get("diameter"):
                bw = bh = finite_number(row["diameter"], "diameter", where)
            elif diameter is not None:
                bw = bh = float(diameter)
            else:
                raise LipoclassError(f"{where}: empty diameter; fill it or give --diameter PX")
            if bw <= 0 or bh <= 0:
                raise LipoclassError(f"{where}: particle size must be positive")
            if not row["micrograph"]:
                raise LipoclassError(f"{where}: empty micrograph name")
            out.append(_Point(_stem(row["micrograph"]), x, y, bh, bw, row.get("label") or None, r))
        return out

    def _read_star(self, diameter: float | None) -> list[_Point]:
        import starfile

        try:
            data = starfile.read(self.path, always_dict=True)
        except Exception as exc:
            raise LipoclassError(
                f"{self.path}: unreadable STAR file ({type(exc).__name__}: {exc})"
            ) from None
        df = None
        for block in data.values():
            if hasattr(block, "columns") and "rlnCoordinateX" in block.columns:
                df = block
                break
        if df is None:
            raise LipoclassError(f"{self.path}: no data block with rlnCoordinateX/Y")
        for req in ("rlnCoordinateY", "rlnMicrographName"):
            if req not in df.columns:
                raise LipoclassError(f"{self.path}: column {req} is missing")
        if diameter is None:
            raise LipoclassError(
                f"{self.path}: STAR files give no particle size; add --diameter PX"
            )
        out: list[_Point] = []
        for r, (name, x, y) in enumerate(
            zip(df["rlnMicrographName"], df["rlnCoordinateX"], df["rlnCoordinateY"]), start=1
        ):
            where = f"{self.path} particle {r}"
            xf, yf = (
                finite_number(str(x), "rlnCoordinateX", where),
                finite_number(str(y), "rlnCoordinateY", where),
            )
            out.append(_Point(_stem(str(name)), xf, yf, float(diameter), float(diameter), None, r))
        return out

    def particles(self, mic: Micrograph) -> list[ParticleAnnotation]:
        h, w = mic.shape
        out: list[ParticleAnnotation] = []
        for pt in self.points.get(mic.name, []):
            if not (-0.5 <= pt.x < w - 0.5 and -0.5 <= pt.y < h - 0.5):
                what = "particle" if self.path.suffix.lower() == ".star" else "row"
                raise LipoclassError(
                    f"{self.path} {what} {pt.row}: coordinates x={pt.x:g}, y={pt.y:g} are "
                    f"outside micrograph {mic.path.name} ({w} x {h} px)"
                )
            top, left, m = box_mask(mic.image, pt.y, pt.x, pt.height, pt.width)
            out.append(
                ParticleAnnotation(
                    top, left, m, pt.y, pt.x, pt.height, pt.width, pt.label, f"{pt.row:04d}"
                )
            )
        return out


class DetectSource:
    """Particles found by ``lipoclass.micrograph.detect`` (unlabelled): the accepted
    candidates; ``rejected(mic)`` gives the candidates the verifier rejected on the last
    ``particles(mic)`` call for that micrograph (their circular outlines, for overlays)."""

    classes: tuple[str, ...] = ()

    def __init__(self, cfg: Any = None) -> None:
        from lipoclass.micrograph.detect import DetectConfig

        self.cfg = cfg if cfg is not None else DetectConfig()
        # per micrograph: (shape, cy, cx, radii) of the rejects, painted only when asked for
        self._rejected: dict[Path, tuple[tuple[int, int], np.ndarray, np.ndarray, np.ndarray]]
        self._rejected = {}

    def particles(self, mic: Micrograph) -> list[ParticleAnnotation]:
        from lipoclass.micrograph.detect import detect_candidates

        det = detect_candidates(mic.image, self.cfg, mic.pixel_size_nm, str(mic.path))
        rej = np.flatnonzero(~det.accepted)
        self._rejected[mic.path] = (mic.shape, det.cy[rej], det.cx[rej], det.radii[rej])
        return instances_from_labels(det.labels)

    def rejected(self, mic: Micrograph) -> list[ParticleAnnotation]:
        from lipoclass.micrograph.detect import paint_outlines

        got = self._rejected.pop(mic.path, None)
        if got is None:
            return []
        lab, _ = paint_outlines(*got)
        return [replace(a, key=f"rejected{a.key}") for a in instances_from_labels(lab)]
