"""Layer data for napari, built without napari: what the reader, widget and writer show and
save, as plain numpy arrays, pandas tables and dicts (testable without a display).

A layer is napari's *layer-data tuple* ``(data, kwargs, layer_type)``."""

from __future__ import annotations

import csv
import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lipoclass.errors import LipoclassError

__all__ = [
    "QUEUE",
    "LayerData",
    "class_colormap",
    "dataset_layers",
    "is_particle_dataset",
    "is_prediction_folder",
    "prediction_layers",
    "save_reviews",
    "set_class",
    "write_label_image",
]

LayerData = tuple[Any, dict[str, Any], str]
#: the queue name of corrections made in napari (reviews.csv ``queue``)
QUEUE = "napari"


def _palette() -> tuple[str, ...]:
    from lipoclass.micrograph.predict import PALETTE

    return PALETTE


def is_prediction_folder(path: str | os.PathLike[str]) -> bool:
    """A folder written by ``lipoclass predict MODEL MICROGRAPH... --out DIR``."""
    p = Path(path)
    return p.is_dir() and (p / "summary.json").is_file() and (p / "particles.csv").is_file()


def is_particle_dataset(path: str | os.PathLike[str]) -> bool:
    """A particle-dataset folder (``particles.csv`` without a prediction summary)."""
    p = Path(path)
    return p.is_dir() and (p / "particles.csv").is_file() and not (p / "summary.json").is_file()


def class_colormap(values: Sequence[int], names: Sequence[str], classes: Sequence[str]) -> dict:
    """napari direct label colours: label ``values[i]`` in the colour of class ``names[i]``
    (the overlays' palette, in ``classes`` order); background transparent."""
    pal = _palette()
    colour = {c: pal[k % len(pal)] for k, c in enumerate(classes)}
    cmap: dict[Any, Any] = {None: "#808080", 0: "transparent"}
    for v, n in zip(values, names):
        cmap[int(v)] = colour.get(n, "#808080")
    return cmap


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            r = csv.DictReader(fh)
            return list(r.fieldnames or []), list(r)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LipoclassError(f"{path}: unreadable ({exc})") from None


def _prediction_table(root: Path) -> tuple[list[str], list[dict[str, str]], list[str]]:
    header, rows = _read_rows(root / "particles.csv")
    for col in ("micrograph", "particle", "pred", "review"):
        if col not in header:
            raise LipoclassError(f"{root / 'particles.csv'}: column {col} missing "
                                 f"(not written by lipoclass predict)")  # fmt: skip
    classes = [c[2:] for c in header if c.startswith("p_")]
    return header, rows, classes


def prediction_layers(folder: str | os.PathLike[str]) -> list[LayerData]:
    """Each micrograph of a prediction folder as an image layer (scale = pixel size in nm)
    and a labels layer of its classified particles (``labels/<micrograph>.tif``) whose
    ``features`` hold particle, probabilities, prediction, review flag and ``new_label`` (the
    correction, empty until a person sets it), coloured by predicted class. Only the first
    micrograph's layers are visible."""
    import pandas as pd

    from lipoclass.micrograph.io import read_label_image, read_micrograph

    root = Path(folder)
    try:
        summary = json.loads((root / "summary.json").read_text())
        mics = summary["micrographs"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LipoclassError(f"{root / 'summary.json'}: unreadable ({exc})") from None
    _header, rows, classes = _prediction_table(root)
    layers: list[LayerData] = []
    for i, m in enumerate(mics):
        name = str(m["name"])
        lab_path = root / "labels" / f"{name}.tif"
        if not lab_path.is_file():
            raise LipoclassError(f"{lab_path}: not found (predicted with an older lipoclass; "
                                 f"predict again)")  # fmt: skip
        mic_path = Path(m["path"])
        if not mic_path.is_absolute() and not mic_path.is_file():
            mic_path = root / mic_path
        px = m.get("pixel_size_nm")
        mic = read_micrograph(mic_path, pixel_size_nm=px, require_pixel_size=False)
        labels = read_label_image(lab_path, mic.image.shape, mic_path.name)
        mine = [r for r in rows if r["micrograph"] == name]
        feats = pd.DataFrame({
            "index": np.arange(1, len(mine) + 1),
            "id": [f"{name}_{r['particle']}" for r in mine],
            "particle": [r["particle"] for r in mine],
            **{f"p_{c}": [float(r[f"p_{c}"]) for r in mine] for c in classes},
            "pred": [r["pred"] for r in mine],
            "review": [r["review"] == "1" for r in mine],
            "label": [r.get("label", "") for r in mine],
            "new_label": [""] * len(mine),
        })  # fmt: skip
        scale = (float(px), float(px)) if px else (1.0, 1.0)
        unit = "nm" if px else "pixel"
        meta = {"micrograph": name, "micrograph_path": str(mic_path), "classes": classes,
                "folder": str(root)}  # fmt: skip
        show = i == 0
        layers.append((mic.image, {"name": name, "scale": scale, "units": unit,
                                   "visible": show, "metadata": meta}, "image"))  # fmt: skip
        cmap = class_colormap(feats["index"], feats["pred"], classes)
        layers.append((labels.astype(np.uint32), {
            "name": f"{name} particles", "scale": scale, "units": unit, "visible": show,
            "features": feats, "colormap": cmap, "opacity": 0.5, "metadata": meta,
        }, "labels"))  # fmt: skip
    return layers


def dataset_layers(folder: str | os.PathLike[str], max_particles: int = 2000) -> list[LayerData]:
    """A particle dataset as a stack (one particle per plane, zero-padded to the largest
    crop, top-left aligned) and a labels stack of the masks (value = position + 1) coloured
    by class, with a ``features`` table (id, label, sample, micrograph). Only the first
    ``max_particles`` particles (memory)."""
    import pandas as pd

    from lipoclass.data import load_dataset
    from lipoclass.data.io import read_image

    ds = load_dataset(folder)
    parts = ds.particles[: int(max_particles)]
    imgs = [read_image(p.image) for p in parts]
    h = max(i.shape[0] for i in imgs)
    w = max(i.shape[1] for i in imgs)
    stack = np.zeros((len(imgs), h, w), np.float32)  # (N, H, W)
    labels = np.zeros((len(imgs), h, w), np.uint32)  # (N, H, W)
    for k, (p, img) in enumerate(zip(parts, imgs)):
        stack[k, : img.shape[0], : img.shape[1]] = img
        if p.mask is not None:
            m = read_image(p.mask) > 0
            if m.shape == img.shape:
                labels[k, : m.shape[0], : m.shape[1]][m] = k + 1
    feats = pd.DataFrame({
        "index": np.arange(1, len(parts) + 1),
        "id": [p.id for p in parts],
        "label": [p.label or "" for p in parts],
        "sample": [p.sample or "" for p in parts],
        "micrograph": [p.micrograph or "" for p in parts],
    })  # fmt: skip
    classes = list(ds.classes)
    meta = {"dataset": str(ds.root), "classes": classes}
    name = Path(ds.root).name
    return [
        (stack, {"name": name, "metadata": meta}, "image"),
        (labels, {"name": f"{name} masks", "features": feats, "opacity": 0.4, "metadata": meta,
                  "colormap": class_colormap(feats["index"], feats["label"], classes)}, "labels"),
    ]  # fmt: skip


def set_class(features: Any, value: int, new_label: str, classes: Sequence[str]) -> Any:
    """``features`` (a labels layer's table) with particle ``value``'s ``new_label`` set: a
    class, ``not_a_particle``, ``unsure`` or "" (undo). ValueError for anything else."""
    from lipoclass.quantify import REVIEW_SPECIAL

    if new_label and new_label not in classes and new_label not in REVIEW_SPECIAL:
        raise ValueError(f"{new_label!r} is not a class ({', '.join(classes)}) or "
                         f"{' / '.join(REVIEW_SPECIAL)}")  # fmt: skip
    rows = np.flatnonzero(np.asarray(features["index"]) == int(value))
    if not rows.size:
        raise ValueError(f"label {value} is not a particle of this layer")
    out = features.copy()
    out.loc[out.index[rows[0]], "new_label"] = new_label
    return out


def save_reviews(
    path: str | os.PathLike[str], features: Any, classes: Sequence[str], reviewer: str
) -> int:
    """Append the corrections of ``features`` (rows whose ``new_label`` is set) to the
    reviews.csv ``path`` (header ``lipoclass.quantify.REVIEW_COLUMNS``, queue "napari"; the
    review page's format and log), skipping those already recorded with the same label.
    Returns the number of rows written."""
    from lipoclass.review.store import ReviewLog

    ids = set(map(str, features["id"]))
    log = ReviewLog(path, ids=ids, labels=set(classes))
    n = 0
    try:
        for _i, r in features.iterrows():
            new = str(r["new_label"] or "")
            if not new:
                continue
            before = log.current.get((QUEUE, str(r["id"])))
            if before is not None and before.new_label == new:
                continue
            mic = str(r["id"])[: -len(str(r["particle"])) - 1]
            log.decide(str(r["id"]), mic, QUEUE, str(r.get("label", "") or ""), new, reviewer)
            n += 1
    finally:
        log.close()
    return n


def write_label_image(path: str | os.PathLike[str], data: Any) -> Path:
    """Save a 2-D labels layer as an instance label image (TIFF, zlib; 0 background, each
    particle one integer value) that ``lipoclass crop --labels`` reads; atomically."""
    import tifffile

    from lipoclass.outputs import check_output_file

    p = check_output_file(path)
    arr = np.asarray(data)
    if arr.ndim != 2:
        raise LipoclassError(f"{p}: a label image is 2-D (one micrograph), got {arr.ndim}-D")
    if not np.issubdtype(arr.dtype, np.integer) or (arr.size and int(arr.min()) < 0):
        raise LipoclassError(f"{p}: labels must be non-negative integers")
    dtype = np.uint16 if int(arr.max(initial=0)) < 65536 else np.uint32
    tmp = p.with_name(f".{p.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tifffile.imwrite(tmp, arr.astype(dtype), compression="zlib")
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p
