"""What a review works over: ``open_source(path, dataset=, model=)`` reads one of

- a **micrograph prediction folder** (``lipoclass predict MODEL MICROGRAPH... --out DIR``:
  ``particles.csv`` + ``summary.json``); particle id ``<micrograph>_<particle>`` (the id
  ``lipoclass crop`` gives the same particle), crops cut from the micrographs;
- a **predictions CSV** (``lipoclass predict MODEL DATASET --out predictions.csv``) with the
  dataset it was predicted from (``dataset=``, required: the CSV does not name it);
- a **particle dataset** (training data) with its model folder (``model=``): probabilities
  are the out-of-fold ones of ``oof.csv`` (the label-issue queue needs them).

Everything is checked here, before a server starts: unknown ids, a folder that is neither,
missing micrographs. ``model=`` also gives the fold models' probabilities for BALD where the
model can recompute them (a dataset and a CNN or SVM model folder)."""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lipoclass.errors import LipoclassError, finite_number

__all__ = ["SOURCE_KINDS", "Geometry", "ReviewItem", "ReviewSource", "open_source"]

#: what ``open_source`` recognises
SOURCE_KINDS: tuple[str, ...] = ("micrographs", "predictions", "dataset")


@dataclass(frozen=True)
class Geometry:
    """Where a particle lies on its micrograph (px): centre, box (x0, y0, x1, y1), diameter;
    ``path`` the micrograph file found, ``recorded`` its path as the prediction recorded it."""

    path: Path
    x: float
    y: float
    box: tuple[float, float, float, float]
    diameter_px: float
    recorded: str = ""


@dataclass(frozen=True)
class ReviewItem:
    """One particle under review: id, micrograph name ("" unknown), current label ("" none),
    predicted class and its probability (NaN unknown), flagged for review by predict."""

    id: str
    micrograph: str = ""
    label: str = ""
    pred: str = ""
    prob: float = math.nan
    flagged: bool = False


@dataclass
class ReviewSource:
    """Particles under review, in file order. ``probs`` (N, C) the model's probabilities
    (out-of-fold ones for a training dataset; None without a model), ``members`` (K, N, C)
    per-fold-model probabilities (BALD) or None, ``positions`` the particle's position in
    ``dataset`` (dataset kinds), ``geometry`` its place on a micrograph when known."""

    kind: str
    path: Path
    root: Path
    classes: tuple[str, ...]
    items: list[ReviewItem]
    probs: np.ndarray | None = None
    members: np.ndarray | None = None
    dataset: Any = None
    positions: list[int] = field(default_factory=list)
    geometry: list[Geometry | None] = field(default_factory=list)
    model: Path | None = None

    def index(self) -> dict[str, int]:
        return {it.id: i for i, it in enumerate(self.items)}


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            return list(reader.fieldnames or []), rows
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LipoclassError(f"{path}: unreadable ({exc})") from None


def _float(v: str, where: str, col: str) -> float:
    return finite_number(v, f"column {col}", where)


def _prob_table(
    path: Path, header: list[str], rows: list[dict[str, str]]
) -> tuple[tuple[str, ...], np.ndarray]:
    classes = tuple(h[2:] for h in header if h.startswith("p_"))
    if len(classes) < 2:
        raise LipoclassError(f"{path}: no p_<class> columns (not written by lipoclass predict)")
    probs = np.array(
        [
            [_float(r[f"p_{c}"], f"{path} row {i + 1}", f"p_{c}") for c in classes]
            for i, r in enumerate(rows)
        ]
    ).reshape(len(rows), len(classes))
    return classes, probs


def _kind_of(path: Path) -> str:
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise LipoclassError(f"{path}: not a predictions CSV, prediction folder or dataset")
        return "predictions"
    if not path.is_dir():
        raise LipoclassError(f"{path}: not found")
    if (path / "summary.json").is_file() and (path / "particles.csv").is_file():
        return "micrographs"
    if (path / "particles.csv").is_file():
        return "dataset"
    if (path / "predictions.csv").is_file():
        return "predictions"
    raise LipoclassError(
        f"{path}: not a prediction folder (particles.csv + summary.json), a predictions CSV "
        f"or a particle dataset (particles.csv)"
    )


def open_source(
    path: str | os.PathLike[str],
    *,
    dataset: str | os.PathLike[str] | None = None,
    model: str | os.PathLike[str] | None = None,
) -> ReviewSource:
    """Read and check what is to be reviewed (see the module docstring); one-line
    LipoclassError for anything wrong, before any server starts."""
    p = Path(path)
    kind = _kind_of(p)
    if kind == "predictions" and p.is_dir():
        p = p / "predictions.csv"
    if kind == "micrographs":
        if dataset is not None:
            raise LipoclassError(f"{p}: a micrograph prediction folder needs no --dataset")
        src = _open_micrographs(p)
    elif kind == "predictions":
        if dataset is None:
            raise LipoclassError(
                f"{p}: give --dataset DATASET (the particle dataset that was predicted) so "
                "the particles can be shown"
            )
        src = _open_predictions(p, Path(dataset))
    else:
        if dataset is not None:
            raise LipoclassError(f"{p}: is a dataset itself; --dataset goes with a predictions CSV")
        if model is None:
            raise LipoclassError(
                f"{p}: a training dataset is reviewed with its model folder: give --model "
                "MODEL_DIR (its oof.csv finds the probably wrong labels)"
            )
        src = _open_training(p, Path(model))
    if model is not None and src.kind != "micrographs":
        src.model = Path(model)
        src.members = _member_probs(Path(model), src)
    return src


# --------------------------------------------------------------------------- micrographs


def _open_micrographs(root: Path) -> ReviewSource:
    try:
        summary = json.loads((root / "summary.json").read_text())
        mics = {m["name"]: Path(m["path"]) for m in summary["micrographs"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LipoclassError(f"{root / 'summary.json'}: unreadable ({exc})") from None
    resolved: dict[str, Path] = {}
    for name, mp in mics.items():
        cands = [mp] if mp.is_absolute() else [mp, root.parent / mp, root / mp]
        hit = next((c for c in cands if c.is_file()), None)
        if hit is None:
            raise LipoclassError(
                f"{root / 'summary.json'}: micrograph {mp} not found (run review from the "
                "folder predict ran in, or keep the micrographs where they were)"
            )
        resolved[name] = hit.resolve()
    recorded = {name: str(mp) for name, mp in mics.items()}
    pcsv = root / "particles.csv"
    header, rows = _read_csv(pcsv)
    for col in (
        "micrograph",
        "particle",
        "x",
        "y",
        "bbox_x0",
        "bbox_y0",
        "bbox_x1",
        "bbox_y1",
        "diameter_px",
        "pred",
        "review",
    ):
        if col not in header:
            raise LipoclassError(f"{pcsv}: column {col} missing (not written by lipoclass predict)")
    classes, probs = _prob_table(pcsv, header, rows)
    items: list[ReviewItem] = []
    geo: list[Geometry | None] = []
    for i, r in enumerate(rows):
        where = f"{pcsv} row {i + 1}"
        if r["micrograph"] not in resolved:
            raise LipoclassError(f"{where}: micrograph {r['micrograph']!r} not in summary.json")
        box = tuple(_float(r[k], where, k) for k in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"))
        geo.append(
            Geometry(
                resolved[r["micrograph"]],
                _float(r["x"], where, "x"),
                _float(r["y"], where, "y"),
                box,  # type: ignore[arg-type]
                _float(r["diameter_px"], where, "diameter_px"),
                recorded[r["micrograph"]],
            )
        )
        items.append(
            ReviewItem(
                f"{r['micrograph']}_{r['particle']}",
                r["micrograph"],
                r.get("label") or "",
                r["pred"],
                float(probs[i].max()),
                r["review"] == "1",
            )
        )
    _check_unique(items, pcsv)
    return ReviewSource("micrographs", root, root, classes, items, probs, geometry=geo)


def _check_unique(items: list[ReviewItem], where: Path) -> None:
    seen: set[str] = set()
    for i, it in enumerate(items):
        if it.id in seen:
            raise LipoclassError(f"{where} row {i + 1}: particle id {it.id!r} appears twice")
        seen.add(it.id)


# --------------------------------------------------------------------------- datasets


def _crop_geometry(ds: Any) -> dict[str, Geometry]:
    """Where each crop of a ``lipoclass crop`` dataset lies on its micrograph (crops.csv),
    for the particles whose micrograph file is still there."""
    table = Path(ds.root) / "crops.csv"
    if not table.is_file():
        return {}
    _h, rows = _read_csv(table)
    from lipoclass.data import image_size

    by_id = {p.id: p for p in ds.particles}
    out: dict[str, Geometry] = {}
    for r in rows:
        p = by_id.get(r.get("id", ""))
        mp = Path(r.get("micrograph", ""))
        if p is None or not mp.is_file():
            continue
        try:
            x, y = float(r["x"]), float(r["y"])
            x0, y0 = float(r["crop_x0"]), float(r["crop_y0"])
            w, h = image_size(p.image)
        except (KeyError, ValueError, LipoclassError):
            continue
        d = 0.6 * min(w, h)  # rough (drawing only); apply measures the mask
        out[p.id] = Geometry(mp, x, y, (x0, y0, x0 + w, y0 + h), round(d, 2), r["micrograph"])
    return out


def _dataset_source(
    kind: str,
    path: Path,
    root: Path,
    ds: Any,
    items: list[ReviewItem],
    probs: np.ndarray | None,
    classes: tuple[str, ...],
    positions: list[int],
) -> ReviewSource:
    geo_by = _crop_geometry(ds)
    geo = [geo_by.get(it.id) for it in items]
    return ReviewSource(
        kind, path, root, classes, items, probs, dataset=ds, positions=positions, geometry=geo
    )


def _open_predictions(path: Path, dataset: Path) -> ReviewSource:
    from lipoclass.data import load_dataset

    header, rows = _read_csv(path)
    for col in ("id", "pred"):
        if col not in header:
            raise LipoclassError(f"{path}: column {col} missing (not written by lipoclass predict)")
    classes, probs = _prob_table(path, header, rows)
    ds = load_dataset(dataset)
    pos_of = {p.id: i for i, p in enumerate(ds.particles)}
    items, positions = [], []
    for i, r in enumerate(rows):
        if r["id"] not in pos_of:
            raise LipoclassError(
                f"{path} row {i + 1}: particle id {r['id']!r} is not in dataset {ds.root}"
            )
        part = ds.particles[pos_of[r["id"]]]
        items.append(
            ReviewItem(
                r["id"],
                part.micrograph or "",
                part.label or "",
                r["pred"],
                float(probs[i].max()),
                r.get("review") == "1",
            )
        )
        positions.append(pos_of[r["id"]])
    _check_unique(items, path)
    return _dataset_source("predictions", path, path.parent, ds, items, probs, classes, positions)


def _open_training(path: Path, model: Path) -> ReviewSource:
    from lipoclass.data import load_dataset

    mj = model / "model.json"
    try:
        info = json.loads(mj.read_text())
        info["classes"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LipoclassError(f"{model}: not a model folder (model.json: {exc})") from None
    ds = load_dataset(path)
    classes = tuple(str(c) for c in info["classes"])
    bad = sorted({p.label for p in ds.particles if p.label and p.label not in classes})
    if bad:
        raise LipoclassError(f"{ds.root}: label {bad[0]!r} is not a class of model {model}")
    oof = model / "oof.csv"
    if not oof.is_file():
        raise LipoclassError(f"{model}: no oof.csv (out-of-fold predictions); retrain it")
    header, rows = _read_csv(oof)
    if "id" not in header:
        raise LipoclassError(f"{oof}: column id missing")
    got_classes, oprobs = _prob_table(oof, header, rows)
    if got_classes != classes:
        raise LipoclassError(f"{oof}: classes {list(got_classes)} differ from model.json's")
    by_id = {r["id"]: k for k, r in enumerate(rows)}
    items, positions, probs = [], [], []
    for i, p in enumerate(ds.particles):
        k = by_id.get(p.id)
        if k is None:  # unlabelled, or skipped by prepare: no out-of-fold prediction
            continue
        pr = oprobs[k]
        items.append(
            ReviewItem(
                p.id,
                p.micrograph or "",
                p.label or "",
                classes[int(pr.argmax())],
                float(pr.max()),
                False,
            )
        )
        positions.append(i)
        probs.append(pr)
    known = {p.id for p in ds.particles}
    unknown = [r["id"] for r in rows if r["id"] not in known]
    if unknown:
        raise LipoclassError(
            f"{oof}: particle id {unknown[0]!r} is not in dataset {ds.root} (another dataset "
            f"than the model was trained on?)"
        )
    if not items:
        raise LipoclassError(f"{oof}: no particle of {ds.root} was predicted out of fold")
    arr = np.asarray(probs).reshape(len(items), len(classes))
    thr = (info.get("review") or {}).get("threshold")
    if thr is not None:
        items = [
            ReviewItem(it.id, it.micrograph, it.label, it.pred, it.prob, it.prob < thr)
            for it in items
        ]
    return _dataset_source("dataset", path, path, ds, items, arr, classes, positions)


def _member_probs(model: Path, src: ReviewSource) -> np.ndarray | None:
    """Per-fold-model probabilities (K, N, C) of the items, for BALD; None when the model
    cannot recompute them (classes differ, a particle it cannot prepare)."""
    from lipoclass.ensemble import load_model

    loaded = load_model(model)
    if tuple(loaded.classes) != src.classes or src.dataset is None or loaded.n_members < 2:
        return None
    return loaded.member_proba(src.dataset, np.asarray(src.positions, dtype=np.int64))
