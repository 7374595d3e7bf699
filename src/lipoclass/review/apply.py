"""``lipoclass review apply``: the decisions of a reviews.csv become a new dataset version.

The final decision of each particle is its last non-retracted row (any queue):

- a class: the particle's label becomes it ("relabelled" or "confirmed");
- ``not_a_particle``: the particle is left out of the new dataset and written to
  ``detection_negatives.csv`` (``micrograph,x,y,diameter_px,id``) for the detector;
- ``unsure``: the particle is kept as it was.

A dataset source (a training dataset, or a predictions CSV with its dataset) gives a new
dataset folder (images copied, ``dataset.toml`` with ``version`` + 1 and where it came from,
``history.csv``: the source's history, if any, plus one row per decision applied). A
micrograph prediction folder gives a folder with ``coords.csv`` (micrograph,x,y,w,h,label of
every particle given a class: ``lipoclass crop MICROGRAPH... --coords coords.csv`` turns it
into a labelled dataset), ``detection_negatives.csv``, ``history.csv`` and ``provenance.json``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lipoclass.errors import LipoclassError
from lipoclass.quantify import NOT_A_PARTICLE, UNSURE
from lipoclass.review.source import ReviewSource, open_source
from lipoclass.review.store import Decision, read_decisions

__all__ = [
    "HISTORY_COLUMNS",
    "NEGATIVE_COLUMNS",
    "ApplyResult",
    "apply_reviews",
    "final_decisions",
]

#: columns of history.csv (what changed, by whom, from which queue)
HISTORY_COLUMNS: tuple[str, ...] = (
    "id",
    "micrograph",
    "queue",
    "old_label",
    "new_label",
    "action",
    "reviewer",
    "time",
    "reviews",
)
#: columns of detection_negatives.csv (shared with the detector's verifier training)
NEGATIVE_COLUMNS: tuple[str, ...] = ("micrograph", "x", "y", "diameter_px", "id")


@dataclass
class ApplyResult:
    """What ``apply_reviews`` wrote and how many particles each action touched."""

    out: Path
    counts: dict[str, int] = field(default_factory=dict)
    negatives: int = 0
    negatives_without_place: int = 0

    def text(self) -> str:
        parts = ", ".join(f"{v} {k}" for k, v in self.counts.items() if v) or "no decision"
        line = f"{self.out}: {parts}"
        if self.negatives:
            line += f"; {self.negatives} detection negative(s) in detection_negatives.csv"
        if self.negatives_without_place:
            line += (
                f"; {self.negatives_without_place} not-a-particle decision(s) without a "
                "place on a micrograph (no crops.csv) not written as negatives"
            )
        return line


def final_decisions(rows: list[Decision]) -> dict[str, Decision]:
    """The last row of each particle (any queue), retractions (empty label) dropped."""
    last: dict[str, Decision] = {}
    for d in rows:
        last[d.id] = d
    return {k: d for k, d in last.items() if d.new_label}


def _action(old: str, new: str) -> str:
    if new == NOT_A_PARTICLE:
        return "removed"
    if new == UNSURE:
        return "kept (unsure)"
    return "confirmed" if new == old else "relabelled"


def _write_csv(path: Path, header: tuple[str, ...] | list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def apply_reviews(
    source: str | os.PathLike[str],
    reviews: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    dataset: str | os.PathLike[str] | None = None,
) -> ApplyResult:
    """Apply the decisions in ``reviews`` to ``source`` (what was reviewed: a dataset, a
    predictions CSV with ``dataset``, or a micrograph prediction folder) and write ``out``
    (a new folder, written atomically). Unknown ids or labels in ``reviews`` are refused."""
    from lipoclass.outputs import check_output_folder

    out = Path(out)
    if out.exists():
        raise LipoclassError(f"{out}: already exists (choose another --out)")
    check_output_folder(out)
    src = _open_for_apply(Path(source), dataset)
    rows = read_decisions(reviews, ids={it.id for it in src.items}, labels=set(src.classes))
    if not rows:
        raise LipoclassError(f"{reviews}: no decision to apply")
    final = final_decisions(rows)
    if src.kind == "micrographs":
        return _apply_micrographs(src, final, Path(reviews), out)
    return _apply_dataset(src, final, Path(reviews), out)


def _open_for_apply(path: Path, dataset: str | os.PathLike[str] | None) -> ReviewSource:
    """Like ``open_source`` but a training dataset needs no model (every particle)."""
    if (
        path.is_dir()
        and (path / "particles.csv").is_file()
        and not (path / "summary.json").is_file()
    ):
        if dataset is not None:
            raise LipoclassError(
                f"{path}: is a dataset itself; --dataset goes with a predictions CSV"
            )
        from lipoclass.data import load_dataset
        from lipoclass.review.source import ReviewItem, _dataset_source

        ds = load_dataset(path)
        items = [ReviewItem(p.id, p.micrograph or "", p.label or "") for p in ds.particles]
        return _dataset_source(
            "dataset", path, path, ds, items, None, ds.classes, list(range(len(ds)))
        )
    return open_source(path, dataset=dataset)


def _negative_diameter(src: ReviewSource, i: int) -> float:
    g = src.geometry[i]
    assert g is not None
    if src.dataset is not None:
        p = src.dataset.particles[src.positions[i]]
        if p.mask is not None:
            from lipoclass.data import read_image

            area = float((read_image(p.mask) > 0).sum())
            if area:
                return round(2.0 * math.sqrt(area / math.pi), 2)
    return g.diameter_px


def _negatives(src: ReviewSource, final: dict[str, Decision]) -> tuple[list[list[Any]], int]:
    pos = src.index()
    rows, missing = [], 0
    for pid, d in final.items():
        if d.new_label != NOT_A_PARTICLE:
            continue
        g = src.geometry[pos[pid]] if src.geometry else None
        if g is None:
            missing += 1
            continue
        rows.append([g.recorded or str(g.path), g.x, g.y, _negative_diameter(src, pos[pid]), pid])
    return rows, missing


def _history_rows(final: dict[str, Decision], reviews: Path) -> list[list[Any]]:
    return [
        [
            d.id,
            d.micrograph,
            d.queue,
            d.old_label,
            d.new_label,
            _action(d.old_label, d.new_label),
            d.reviewer,
            d.time,
            str(reviews),
        ]
        for d in final.values()
    ]


def _previous_history(root: Path) -> list[list[str]]:
    path = root / "history.csv"
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows or tuple(rows[0]) != HISTORY_COLUMNS:
        raise LipoclassError(f"{path}: header must be {','.join(HISTORY_COLUMNS)}")
    return rows[1:]


def _apply_dataset(
    src: ReviewSource, final: dict[str, Decision], reviews: Path, out: Path
) -> ApplyResult:
    from lipoclass.data import DatasetWriter

    ds = src.dataset
    res = ApplyResult(out, {"relabelled": 0, "confirmed": 0, "removed": 0, "kept (unsure)": 0})
    for dec in final.values():
        res.counts[_action(dec.old_label, dec.new_label)] += 1
    negatives, res.negatives_without_place = _negatives(src, final)
    res.negatives = len(negatives)
    meta = dict(ds.meta or {})
    skip = {"name", "description", "classes", "pixel_size_nm", "source", "licence"}
    extra = {k: v for k, v in meta.items() if k not in skip and not isinstance(v, dict)}
    extra.update(
        {
            "version": int(meta.get("version", 1)) + 1,
            "derived_from": str(Path(ds.root).resolve()),
            "review_file": str(reviews.resolve()),
            "review_applied": datetime.now(UTC).isoformat(timespec="seconds"),
            "review_summary": ", ".join(f"{v} {k}" for k, v in res.counts.items()),
        }
    )
    from lipoclass import __version__

    extra["lipoclass_version"] = __version__
    kept_ids: set[str] = set()
    with DatasetWriter(
        out,
        name=str(meta.get("name", ds.name)),
        classes=list(ds.classes),
        description=str(meta.get("description", "")),
        pixel_size_nm=meta.get("pixel_size_nm"),
        source=str(meta.get("source", "")),
        licence=str(meta.get("licence", "")),
        extra=extra,
    ) as w:
        for p in ds.particles:
            d = final.get(p.id)
            if d is not None and d.new_label == NOT_A_PARTICLE:
                continue
            label = p.label
            if d is not None and d.new_label != UNSURE:
                label = d.new_label
            img_rel = _copy(p.image, ds.root, w.staging, "images")
            mask_rel = _copy(p.mask, ds.root, w.staging, "masks") if p.mask is not None else ""
            w.add_row(
                p.id,
                img_rel,
                mask_rel,
                label,
                p.pixel_size_nm,
                p.sample,
                dict(p.features),
                p.micrograph,
            )
            kept_ids.add(p.id)
        history = _previous_history(Path(ds.root)) + _history_rows(final, reviews)
        _write_csv(w.staging / "history.csv", HISTORY_COLUMNS, history)
        if negatives:
            _write_csv(w.staging / "detection_negatives.csv", NEGATIVE_COLUMNS, negatives)
        crops = Path(ds.root) / "crops.csv"
        if crops.is_file():  # where each crop lies on its micrograph, for the kept ones
            with crops.open(newline="", encoding="utf-8") as fh:
                table = list(csv.reader(fh))
            if table and "id" in table[0]:
                k = table[0].index("id")
                _write_csv(
                    w.staging / "crops.csv",
                    table[0],
                    [r for r in table[1:] if len(r) > k and r[k] in kept_ids],
                )
    return res


def _copy(path: Path, root: Path, staging: Path, folder: str) -> str:
    """Copy one image into the new dataset, at its place relative to the old one."""
    try:
        rel = Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:  # an image outside the dataset folder: brought inside
        rel = f"{folder}/{Path(path).name}"
    dest = staging / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        shutil.copy2(path, dest)
    return rel


def _apply_micrographs(
    src: ReviewSource, final: dict[str, Decision], reviews: Path, out: Path
) -> ApplyResult:
    res = ApplyResult(out, {"relabelled": 0, "confirmed": 0, "removed": 0, "kept (unsure)": 0})
    pos = src.index()
    coords = []
    for pid, d in final.items():
        res.counts[_action(d.old_label, d.new_label)] += 1
        g = src.geometry[pos[pid]]
        if d.new_label in src.classes and g is not None:
            x0, y0, x1, y1 = g.box
            coords.append([g.recorded or str(g.path), g.x, g.y, x1 - x0, y1 - y0, d.new_label])
    negatives, res.negatives_without_place = _negatives(src, final)
    res.negatives = len(negatives)
    staging = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir(parents=True)
        _write_csv(staging / "coords.csv", ("micrograph", "x", "y", "w", "h", "label"), coords)
        _write_csv(staging / "detection_negatives.csv", NEGATIVE_COLUMNS, negatives)
        _write_csv(staging / "history.csv", HISTORY_COLUMNS, _history_rows(final, reviews))
        from lipoclass import __version__

        prov = {
            "derived_from": str(src.path.resolve()),
            "review_file": str(reviews.resolve()),
            "review_applied": datetime.now(UTC).isoformat(timespec="seconds"),
            "counts": res.counts,
            "classes": list(src.classes),
            "lipoclass_version": __version__,
        }
        (staging / "provenance.json").write_text(json.dumps(prov, indent=2) + "\n")
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return res
