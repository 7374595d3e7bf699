"""The particle-dataset layout: a folder with ``particles.csv``, the images it names and an
optional ``dataset.toml``. Loading validates the table; ``DatasetWriter`` writes the layout
atomically (staging folder, then rename)."""

from __future__ import annotations

import csv
import math
import os
import shutil
import tomllib
import uuid
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lipoclass.data.io import write_image
from lipoclass.errors import LipoclassError, finite_number

__all__ = [
    "KNOWN_COLUMNS",
    "DatasetWriter",
    "Particle",
    "ParticleDataset",
    "check_folds",
    "empty_class_messages",
    "load_dataset",
    "publish_folder",
    "warn_empty_classes",
]

KNOWN_COLUMNS = ("id", "image", "mask", "label", "pixel_size_nm", "sample", "micrograph")


@dataclass(frozen=True)
class Particle:
    """One row of ``particles.csv`` with paths resolved against the dataset folder."""

    id: str
    image: Path
    mask: Path | None
    label: str | None
    pixel_size_nm: float | None
    sample: str | None
    row: int  # 1-based data row in particles.csv (header is row 0), for messages
    features: Mapping[str, float] = field(default_factory=dict)
    micrograph: str | None = None  # the micrograph it was picked from, when known


@dataclass(frozen=True)
class ParticleDataset:
    """A validated particle dataset. ``classes`` fixes the class order everywhere."""

    root: Path
    particles: tuple[Particle, ...]
    classes: tuple[str, ...]
    name: str
    description: str = ""
    feature_columns: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.particles)

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.particles]

    @property
    def labels(self) -> np.ndarray:
        """Class index per particle, -1 where unlabelled. Shape (N,), int64."""
        lookup = {c: i for i, c in enumerate(self.classes)}
        return np.array(
            [lookup[p.label] if p.label is not None else -1 for p in self.particles],
            dtype=np.int64,
        )

    @property
    def samples(self) -> list[str | None]:
        return [p.sample for p in self.particles]

    def micrographs_of(self, ids: Sequence[str]) -> list[str] | None:
        """The imaging unit of each particle ``ids`` names: its ``micrograph``, else its
        ``sample`` ("" where it has neither), or None when none has either. Particles of one
        micrograph share its dose, defocus and contrast, so class-share intervals redraw
        whole micrographs (lipoclass.quantify)."""
        by_id = {p.id: p.micrograph or p.sample for p in self.particles}
        groups = [by_id.get(i) or "" for i in ids]
        return groups if any(groups) else None

    def class_counts(self) -> dict[str, int]:
        counts = Counter(p.label for p in self.particles if p.label is not None)
        return {c: counts.get(c, 0) for c in self.classes}

    def feature_matrix(self, columns: Sequence[str] | None = None) -> np.ndarray:
        """Precomputed feature columns from particles.csv as (N, F) float64."""
        cols = list(self.feature_columns if columns is None else columns)
        return np.array(
            [[p.features.get(c, math.nan) for c in cols] for p in self.particles],
            dtype=np.float64,
        ).reshape(len(self.particles), len(cols))

    def subset(self, indices: Sequence[int] | np.ndarray) -> ParticleDataset:
        """A dataset with only the given particles (same classes, same root)."""
        parts = tuple(self.particles[int(i)] for i in indices)
        return ParticleDataset(
            self.root, parts, self.classes, self.name, self.description,
            self.feature_columns, self.meta,
        )  # fmt: skip

    def labelled(self) -> ParticleDataset:
        return self.subset([i for i, p in enumerate(self.particles) if p.label is not None])

    def require_labels(self) -> None:
        if not any(p.label is not None for p in self.particles):
            raise LipoclassError(f"{self.root / 'particles.csv'}: dataset has no labels")


def _float_or_none(text: str, what: str, where: str) -> float | None:
    text = text.strip()
    return None if text == "" else finite_number(text, what, where)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise LipoclassError(f"{path}: invalid TOML ({exc})") from None


_DELIMITERS = (",", ";", "\t")


def _delimiter(first_line: str) -> str:
    """The column separator of particles.csv: ',' (standard), ';' (spreadsheets with a decimal
    comma) or tab, whichever makes 'id' and 'image' header columns; else csv.Sniffer's guess."""
    for d in _DELIMITERS:
        names = {h.strip().strip('"') for h in first_line.split(d)}
        if {"id", "image"} <= names:
            return d
    try:
        return csv.Sniffer().sniff(first_line, delimiters="".join(_DELIMITERS)).delimiter
    except csv.Error:
        return ","


def _inside(root: Path, rel: str, allow_outside: bool, where: str, what: str) -> Path:
    """``root / rel``; a relative path that resolves (symlinks followed) outside ``root`` is
    refused unless ``allow_outside``. Absolute paths are taken as given."""
    path = root / rel
    if allow_outside or Path(rel).is_absolute():
        return path
    base = root.resolve()
    if not path.resolve().is_relative_to(base):
        raise LipoclassError(
            f"{where}: {what} path {rel!r} points outside the dataset folder {root} "
            "(write an absolute path if that is intended)"
        )
    return path


def _read_meta(toml_path: Path) -> tuple[dict[str, Any], list[str] | None, float | None]:
    """dataset.toml (when present): (all of it, declared classes or None, default pixel
    size or None), each checked."""
    meta: dict[str, Any] = _read_toml(toml_path) if toml_path.is_file() else {}
    declared = meta.get("classes")
    if declared is not None and (
        not isinstance(declared, list) or not all(isinstance(c, str) for c in declared)
    ):
        raise LipoclassError(f"{toml_path}: 'classes' must be a list of class names")
    default_px = meta.get("pixel_size_nm")
    if default_px is not None and not (
        isinstance(default_px, int | float)
        and not isinstance(default_px, bool)
        and math.isfinite(default_px)
        and default_px > 0
    ):
        raise LipoclassError(f"{toml_path}: 'pixel_size_nm' must be a positive number")
    return meta, declared, default_px


def _read_table(csv_path: Path) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of particles.csv with ',', ';' or tab columns; the header must hold
    ``id`` and ``image`` and no column twice."""
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        delimiter = _delimiter(fh.readline())
        fh.seek(0)  # the utf-8-sig decoder drops a BOM again after the seek
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise LipoclassError(f"{csv_path}: empty file") from None
        rows = list(reader)
    for req in ("id", "image"):
        if req not in header:
            found = ", ".join(repr(h) for h in header[:6]) + (" ..." if len(header) > 6 else "")
            raise LipoclassError(
                f"{csv_path}: required column '{req}' is missing (header columns found: "
                f"{found}; separate columns with ',', ';' or tab)"
            )
    dup_cols = [c for c, n in Counter(header).items() if n > 1]
    if dup_cols:
        raise LipoclassError(f"{csv_path}: column '{dup_cols[0]}' appears twice in the header")
    return header, rows


@dataclass(frozen=True)
class _RowContext:
    """What checking one row of particles.csv needs."""

    root: Path
    csv_path: Path
    header: list[str]
    col: dict[str, int]
    feature_cols: tuple[str, ...]
    declared: list[str] | None
    default_px: float | None
    allow_outside: bool
    check_files: bool


def _parse_row(ctx: _RowContext, r: int, values: list[str], seen: dict[str, int]) -> Particle:
    """Row ``r`` of particles.csv as a checked ``Particle`` (``seen``: id -> first row)."""
    where = f"{ctx.csv_path} row {r}"
    if len(values) != len(ctx.header):
        raise LipoclassError(f"{where}: {len(values)} fields, header has {len(ctx.header)}")

    def get(name: str) -> str:
        return values[ctx.col[name]].strip() if name in ctx.col else ""

    pid = get("id")
    if pid == "":
        raise LipoclassError(f"{where}: empty id")
    where = f"{ctx.csv_path} row {r} (id {pid})"
    if pid in seen:
        raise LipoclassError(f"{where}: duplicate id, first used in row {seen[pid]}")
    seen[pid] = r
    image_rel = get("image")
    if image_rel == "":
        raise LipoclassError(f"{where}: empty image path")
    image = _inside(ctx.root, image_rel, ctx.allow_outside, where, "image")
    if ctx.check_files and not image.is_file():
        raise LipoclassError(f"{where}: image file {image_rel} not found")
    mask_rel = get("mask")
    mask = _inside(ctx.root, mask_rel, ctx.allow_outside, where, "mask") if mask_rel else None
    if ctx.check_files and mask is not None and not mask.is_file():
        raise LipoclassError(f"{where}: mask file {mask_rel} not found")
    label = get("label") or None
    if label is not None and ctx.declared is not None and label not in ctx.declared:
        raise LipoclassError(
            f"{where}: unknown class {label!r} (dataset.toml lists {', '.join(ctx.declared)})"
        )
    px = _float_or_none(get("pixel_size_nm"), "pixel_size_nm", where)
    if px is not None and px <= 0:
        raise LipoclassError(f"{where}: pixel_size_nm must be positive, got {px}")
    if px is None and ctx.default_px is not None:
        px = float(ctx.default_px)
    feats = {fc: _feature_value(values[ctx.col[fc]].strip(), fc, where) for fc in ctx.feature_cols}
    return Particle(pid, image, mask, label, px, get("sample") or None, r, feats,
                    get("micrograph") or None)  # fmt: skip


def _feature_value(text: str, fc: str, where: str) -> float:
    """A feature cell as a finite float; LipoclassError naming the row and column."""
    if text == "":
        raise LipoclassError(f"{where}: column '{fc}' is empty (feature values needed)")
    try:
        v = float(text)
    except ValueError:
        raise LipoclassError(
            f"{where}: column '{fc}' is not a known column and {text!r} is not a "
            f"number (extra columns must be numeric features)"
        ) from None
    if not math.isfinite(v):
        raise LipoclassError(f"{where}: feature '{fc}' is {text!r}, not a finite number")
    return v


def load_dataset(
    path: str | os.PathLike[str], *, check_files: bool = True, allow_outside: bool = False
) -> ParticleDataset:
    """Load and validate a particle dataset folder (or its ``particles.csv``).

    Checks: required columns, duplicate ids, image/mask files exist, numbers parse, labels
    belong to the classes of ``dataset.toml`` (when it lists them), unknown columns are
    numeric. Every problem raises ``LipoclassError`` naming the file and row.

    Columns may be separated by ',', ';' or tab (detected from the header). Image and mask
    paths are relative to the dataset folder and must stay inside it (``../`` or a symlink
    leading out is refused) unless ``allow_outside=True``; absolute paths are always allowed.
    """
    root = Path(path)
    if root.is_file() and root.name == "particles.csv":
        root = root.parent
    csv_path = root / "particles.csv"
    if not root.exists():
        raise LipoclassError(f"{root}: dataset folder not found")
    if not csv_path.is_file():
        raise LipoclassError(f"{root}: not a particle dataset (no particles.csv)")

    meta, declared, default_px = _read_meta(root / "dataset.toml")
    header, rows = _read_table(csv_path)
    col = {name: i for i, name in enumerate(header)}
    feature_cols = tuple(h for h in header if h not in KNOWN_COLUMNS)
    ctx = _RowContext(root, csv_path, header, col, feature_cols, declared, default_px,
                      allow_outside, check_files)  # fmt: skip
    particles: list[Particle] = []
    seen: dict[str, int] = {}
    for r, values in enumerate(rows, start=1):
        if values and any(v.strip() != "" for v in values):
            particles.append(_parse_row(ctx, r, values, seen))
    if not particles:
        raise LipoclassError(f"{csv_path}: no particles")

    if declared is not None:
        classes = tuple(declared)
    else:
        classes = tuple(sorted({p.label for p in particles if p.label is not None}))
    return ParticleDataset(
        root=root,
        particles=tuple(particles),
        classes=classes,
        name=str(meta.get("name", root.name)),
        description=str(meta.get("description", "")),
        feature_columns=feature_cols,
        meta=meta,
    )


def empty_class_messages(dataset: ParticleDataset) -> list[str]:
    """One message per class of ``dataset.classes`` (dataset.toml) without labelled particles."""
    return [
        f"{dataset.root}: class {cls!r} is listed in dataset.toml but has no labelled "
        "particles (a model will never predict it)"
        for cls, n in dataset.class_counts().items()
        if n == 0
    ]


def warn_empty_classes(dataset: ParticleDataset, stacklevel: int = 2) -> None:
    """``warnings.warn`` each of ``empty_class_messages(dataset)``."""
    for msg in empty_class_messages(dataset):
        warnings.warn(msg, stacklevel=stacklevel + 1)


def check_folds(dataset: ParticleDataset, folds: int) -> None:
    """Every class must have at least ``folds`` labelled particles for stratified k-fold; a
    declared class with no labelled particle is warned about (``warn_empty_classes``)."""
    if folds < 2:
        raise LipoclassError(f"--folds must be at least 2, got {folds}")
    dataset.require_labels()
    warn_empty_classes(dataset, stacklevel=3)
    for cls, n in dataset.class_counts().items():
        if 0 < n < folds:
            raise LipoclassError(
                f"{dataset.root}: class {cls!r} has {n} labelled particles, fewer than the "
                f"{folds} folds requested (use fewer folds or drop the class)"
            )


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{s}"'


def publish_folder(staging: Path, out: Path) -> None:
    """Move a finished ``staging`` folder to ``out`` (same parent folder), replacing an earlier
    ``out``: the old one is renamed aside first and removed last, so ``out`` is never half
    written and an earlier result is only lost once the new one is in place."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class DatasetWriter:
    """Write a particle dataset atomically: everything goes to a staging folder beside
    ``out`` that is renamed to ``out`` only when the ``with`` block succeeds.

    >>> with DatasetWriter(out, name="x", classes=["a", "b"]) as w:  # doctest: +SKIP
    ...     w.add("1", image=img_u8, mask=mask_u8, label="a", pixel_size_nm=0.5)
    """

    def __init__(
        self,
        out: str | os.PathLike[str],
        *,
        name: str,
        classes: Sequence[str],
        description: str = "",
        pixel_size_nm: float | None = None,
        source: str = "",
        licence: str = "",
        extra: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise LipoclassError(f"{self.out}: already exists (choose another --out)")
        self.meta: dict[str, Any] = {"name": name, "description": description}
        self.meta["classes"] = list(classes)
        if pixel_size_nm is not None:
            self.meta["pixel_size_nm"] = float(pixel_size_nm)
        if source:
            self.meta["source"] = source
        if licence:
            self.meta["licence"] = licence
        self.meta.update(extra or {})
        self.staging = self.out.parent / f".{self.out.name}.tmp-{uuid.uuid4().hex[:8]}"
        self.rows: list[dict[str, Any]] = []
        self.feature_names: list[str] = []

    def __enter__(self) -> DatasetWriter:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        (self.staging / "images").mkdir(parents=True)
        (self.staging / "masks").mkdir()
        return self

    def add(
        self,
        pid: str,
        *,
        image: np.ndarray,
        mask: np.ndarray | None = None,
        label: str | None = None,
        pixel_size_nm: float | None = None,
        sample: str | None = None,
        features: Mapping[str, float] | None = None,
        suffix: str = ".png",
        micrograph: str | None = None,
    ) -> None:
        """Write one particle's image (and mask, as 0/255 PNG) and queue its row."""
        img_rel = f"images/{pid}{suffix}"
        write_image(self.staging / img_rel, image)
        mask_rel = ""
        if mask is not None:
            mask_rel = f"masks/{pid}.png"
            write_image(self.staging / mask_rel, (np.asarray(mask) > 0).astype(np.uint8) * 255)
        self.add_row(pid, img_rel, mask_rel, label, pixel_size_nm, sample, features, micrograph)

    def add_row(
        self,
        pid: str,
        image_rel: str,
        mask_rel: str = "",
        label: str | None = None,
        pixel_size_nm: float | None = None,
        sample: str | None = None,
        features: Mapping[str, float] | None = None,
        micrograph: str | None = None,
    ) -> None:
        """Queue a row whose files the caller already wrote under ``self.staging``."""
        feats = dict(features or {})
        for k in feats:
            if k not in self.feature_names:
                self.feature_names.append(k)
        self.rows.append(
            {
                "id": pid,
                "image": image_rel,
                "mask": mask_rel,
                "label": label or "",
                "pixel_size_nm": "" if pixel_size_nm is None else f"{pixel_size_nm:.6g}",
                "sample": sample or "",
                "micrograph": micrograph or "",
                **{k: repr(float(v)) for k, v in feats.items()},
            }
        )

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            return
        try:
            cols = ["id", "image", "mask", "label", "pixel_size_nm", "sample"]
            rows = self.rows
            if any(r["micrograph"] for r in rows):  # the column only when known
                cols.append("micrograph")
            else:
                rows = [{k: v for k, v in r.items() if k != "micrograph"} for r in rows]
            cols += self.feature_names
            with (self.staging / "particles.csv").open("w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=cols, restval="")
                w.writeheader()
                w.writerows(rows)
            lines = [f"{k} = {_toml_value(v)}" for k, v in self.meta.items()]
            (self.staging / "dataset.toml").write_text("\n".join(lines) + "\n")
            publish_folder(self.staging, self.out)
        except BaseException:
            shutil.rmtree(self.staging, ignore_errors=True)
            raise
