"""Import a particle export (the thesis' source layout: JSON particle records with a class
code, an image file name and precomputed features) into a particle dataset.

The export is either a stream of concatenated pretty-printed JSON objects (the raw export, not
a valid JSON document) or a JSON list. Every record becomes one row of ``particles.csv`` with
its image copied unchanged and its features as numeric columns (names in ``docs/data.md``).
Bad records are reported with their Id, never dropped silently; by default nothing is written
when any record is bad (``keep_going=True`` writes the good ones).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lipoclass.data.dataset import DatasetWriter, ParticleDataset, load_dataset
from lipoclass.data.io import read_image
from lipoclass.errors import LipoclassError

__all__ = [
    "CLASS_CODES",
    "ImportConfig",
    "ImportResult",
    "import_export",
    "parse_export",
]

# class code -> (problem, class name); classes are listed in dataset.toml in code order
CLASS_CODES: dict[int, tuple[str, str]] = {
    3: ("lamellarity", "unilamellar"),
    4: ("lamellarity", "multilamellar"),
    5: ("lamellarity", "uncertain"),
    7: ("encapsulation", "empty"),
    8: ("encapsulation", "full"),
    10: ("encapsulation", "uncertain"),
}
_NON_FEATURE_KEYS = ("Id", "Class", "Bmp", "Image", "Mask")
_VECTOR_KEYS = {
    "Moments": ("moment_", ("mu20", "mu02", "mu30", "mu03")),
    "Histogram": ("hist_", tuple(f"{i:02d}" for i in range(32))),
}
_PROFILE_KEYS = {"RadialDensityProfile": "rdp", "EdgeDensityProfile": "edp"}
# documented scalar features: must be numbers (other keys holding text are ignored, noted)
_SCALAR_KEYS = (
    "Area", "Perimeter", "Circularity", "Length", "MaximumWidth", "DiametersInPixels",
    "MembraneThickness", "SignalToNoise",
)  # fmt: skip


@dataclass(frozen=True)
class ImportConfig:
    """Importer settings. Every density profile (a variable-length list of [intensity,
    distance] pairs) is resampled to a fixed number of points by linear interpolation along
    the entry index, so all records get the same columns whatever their length:
    ``rdp_points`` for the radial profile, ``edp_points`` for the edge profile (7, the length
    of the export's edge profiles, keeps them unchanged)."""

    rdp_points: int = 16
    edp_points: int = 7

    def __post_init__(self) -> None:
        for name in ("rdp_points", "edp_points"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 2 <= v <= 256:
                raise ValueError(f"{name} must be an integer between 2 and 256, got {v!r}")


@dataclass
class ImportResult:
    """What an import did. ``dataset`` is None when nothing was written (bad records without
    ``keep_going``). ``errors`` lists (record Id, message); a record without an Id is named
    ``#<n>`` (its 1-based position in the export)."""

    export: Path
    out: Path
    problem: str | None
    n_records: int
    dataset: ParticleDataset | None
    errors: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def text(self, max_errors: int = 50) -> str:
        """Human summary: counts, columns, then every bad record (up to ``max_errors``)."""
        n_ok = self.n_records - len(self.errors)
        lines = [
            f"{self.export.name}: {self.n_records} record(s), {n_ok} good, "
            f"{len(self.errors)} bad (problem: {self.problem or 'unknown'})"
        ]
        if self.dataset is not None:
            ds = self.dataset
            counts = ", ".join(f"{c} {n}" for c, n in ds.class_counts().items())
            lines.append(f"wrote {len(ds)} particles to {self.out} ({counts})")
            lines.append(f"{len(ds.feature_columns)} feature columns")
        else:
            lines.append(
                f"nothing written to {self.out}: fix the records below or use --keep-going "
                f"to write the {n_ok} good one(s)"
            )
        lines += [f"note: {n}" for n in self.notes]
        for rid, msg in self.errors[:max_errors]:
            lines.append(f"error: record {rid}: {msg}")
        if len(self.errors) > max_errors:
            lines.append(f"... and {len(self.errors) - max_errors} more bad record(s)")
        return "\n".join(lines)


def _syntax_error(path: Path, text: str, exc: json.JSONDecodeError) -> LipoclassError:
    byte = len(text[: exc.pos].encode("utf-8"))
    return LipoclassError(
        f"{path}: JSON syntax error at line {exc.lineno} column {exc.colno} "
        f"(byte {byte}): {exc.msg}"
    )


def parse_export(path: str | os.PathLike[str]) -> list[Any]:
    """Read the records of an export: concatenated JSON values or one JSON list.

    A syntax error raises ``LipoclassError`` naming line, column and byte offset."""
    p = Path(path)
    if not p.is_file():
        raise LipoclassError(f"{p}: export file not found")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise LipoclassError(f"{p}: cannot read export ({exc})") from None
    dec = json.JSONDecoder()
    ws = re.compile(r"\s*")
    pos = ws.match(text, 0).end()  # type: ignore[union-attr]
    if pos == len(text):
        raise LipoclassError(f"{p}: export is empty")
    if text[pos] == "[":
        try:
            value, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise _syntax_error(p, text, exc) from None
        rest = ws.match(text, end).end()  # type: ignore[union-attr]
        if rest != len(text):
            extra = json.JSONDecodeError("extra data after the JSON list", text, rest)
            raise _syntax_error(p, text, extra)
        return list(value)
    records: list[Any] = []
    while pos < len(text):
        try:
            value, pos = dec.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise _syntax_error(p, text, exc) from None
        records.append(value)
        pos = ws.match(text, pos).end()  # type: ignore[union-attr]
    return records


def _snake(name: str) -> str:
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return re.sub(r"[^0-9a-zA-Z]+", "_", s).strip("_").lower()


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{what} is {json.dumps(v)[:40]}, not a number")
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"{what} is {v}, not a finite number")
    return f


def _resample(values: list[float], n: int) -> list[float]:
    """Linear interpolation of ``values`` (length m >= 1) at n evenly spaced index positions."""
    m = len(values)
    if m == 1:
        return values * n
    out = []
    for k in range(n):
        t = k * (m - 1) / (n - 1)
        i = min(int(t), m - 2)
        f = t - i
        out.append(values[i] * (1 - f) + values[i + 1] * f)
    return out


def _record_features(rec: dict[str, Any], cfg: ImportConfig) -> tuple[dict[str, float], list[str]]:
    """Feature columns of one record; raises ValueError for a malformed feature. Also returns
    the keys ignored (non-numeric values of unknown keys)."""
    feats: dict[str, float] = {}
    ignored: list[str] = []
    for key, v in rec.items():
        if key in _NON_FEATURE_KEYS:
            continue
        if key in _VECTOR_KEYS:
            prefix, names = _VECTOR_KEYS[key]
            if not isinstance(v, list) or len(v) != len(names):
                raise ValueError(f"{key} must be a list of {len(names)} numbers")
            for nm, x in zip(names, v):
                feats[prefix + nm] = _number(x, f"{key} entry {nm}")
        elif key in _PROFILE_KEYS:
            tag = _PROFILE_KEYS[key]
            if not isinstance(v, list) or not v:
                raise ValueError(f"{key} must be a non-empty list of [intensity, distance] pairs")
            ints, dists = [], []
            for j, pair in enumerate(v):
                if not isinstance(pair, list) or len(pair) != 2:
                    raise ValueError(f"{key} entry {j} is not an [intensity, distance] pair")
                ints.append(_number(pair[0], f"{key} entry {j} intensity"))
                dists.append(_number(pair[1], f"{key} entry {j} distance"))
            n = cfg.rdp_points if tag == "rdp" else cfg.edp_points
            for k, (a, b) in enumerate(zip(_resample(ints, n), _resample(dists, n))):
                feats[f"{tag}_int_{k:02d}"] = a
                feats[f"{tag}_dist_{k:02d}"] = b
        elif isinstance(v, bool) or not isinstance(v, int | float):
            if isinstance(v, list | dict) or v is None or key in _SCALAR_KEYS:
                raise ValueError(f"feature {key} is {json.dumps(v)[:40]}, not a number")
            ignored.append(key)  # e.g. a text field: not a feature
        else:
            feats[_snake(key)] = _number(v, f"feature {key}")
    return feats, ignored


def _class_code(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError(f"Class {v!r} is not an integer code")
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and v.strip().isdigit():
        return int(v.strip())
    raise ValueError(f"Class {json.dumps(v)[:40]} is not an integer code")


@dataclass
class _Good:
    rid: str
    label: str
    problem: str
    code: int
    image: Path
    mask: Path | None
    features: dict[str, float]
    pixel_size_nm: float | None


def import_export(
    export_json: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    keep_going: bool = False,
    config: ImportConfig | None = None,
) -> ImportResult:
    """Convert an export into a particle dataset at ``out`` (see the module docstring).

    Fatal problems (missing file or folder, JSON syntax error, both problems mixed in one
    export, ``out`` exists, no good record) raise ``LipoclassError``. Bad records are listed
    in ``ImportResult.errors``; then nothing is written unless ``keep_going``."""
    cfg = config or ImportConfig()
    export_json, images, out = Path(export_json), Path(images_dir), Path(out)
    if out.exists():
        raise LipoclassError(f"{out}: already exists (choose another --out)")
    if not images.is_dir():
        raise LipoclassError(f"{images}: images folder not found (--images)")
    records = parse_export(export_json)
    if not records:
        raise LipoclassError(f"{export_json}: no records")

    errors: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    ignored: Counter[str] = Counter()
    good: list[_Good] = []
    for n, rec in enumerate(records, start=1):
        g = _check_record(n, rec, images, cfg, seen, errors, ignored)
        if g is not None:
            good.append(g)
    problem = _one_problem(good, export_json)
    notes: list[str] = []
    if ignored:
        notes.append("ignored non-numeric keys: " + ", ".join(sorted(ignored)))
    columns, kept = _feature_columns(good, errors, notes)
    errors.sort(key=lambda e: _record_order(e[0], seen))

    result = ImportResult(export_json, out, problem, len(records), None, errors, notes)
    if errors and not keep_going:
        return result
    if not kept:
        raise LipoclassError(
            f"{export_json}: no good record to import (first problem: record "
            f"{errors[0][0]}: {errors[0][1]})"
        )
    assert problem is not None
    _write_dataset(export_json, out, problem, kept, columns, len(errors))
    result.dataset = load_dataset(out)
    return result


def _check_record(
    n: int, rec: Any, images: Path, cfg: ImportConfig, seen: dict[str, int],
    errors: list[tuple[str, str]], ignored: Counter[str],
) -> _Good | None:  # fmt: skip
    """Record ``n`` checked (id unique, class code known, image and mask readable and of one
    size, numeric features); None with an entry in ``errors`` when it is bad."""
    if not isinstance(rec, dict):
        errors.append((f"#{n}", f"not a JSON object but {type(rec).__name__}"))
        return None
    raw_id = rec.get("Id")
    if raw_id is None or isinstance(raw_id, bool | list | dict) or str(raw_id).strip() == "":
        errors.append((f"#{n}", "missing Id"))
        return None
    rid = str(raw_id).strip()
    if rid in seen:
        errors.append((rid, f"duplicate Id (first used by record #{seen[rid]})"))
        return None
    seen[rid] = n
    try:
        if "Class" not in rec:
            raise ValueError("missing Class")
        code = _class_code(rec["Class"])
        if code not in CLASS_CODES:
            known = ", ".join(f"{c} {p}/{nm}" for c, (p, nm) in CLASS_CODES.items())
            raise ValueError(f"unknown class code {code} (known: {known})")
        prob, label = CLASS_CODES[code]
        name = rec.get("Bmp", rec.get("Image"))
        if not isinstance(name, str) or not name.strip():
            raise ValueError("no image file name (key Bmp or Image)")
        image = images / name.strip()
        if not image.is_file():
            raise ValueError(f"image file {name} not found in {images}")
        read_image(image)  # decodable? raises LipoclassError naming the file
        mask = None
        if isinstance(rec.get("Mask"), str) and rec["Mask"].strip():
            mask = images / rec["Mask"].strip()
            if not mask.is_file():
                raise ValueError(f"mask file {rec['Mask']} not found in {images}")
            if read_image(mask).shape != read_image(image).shape:
                raise ValueError(f"mask {rec['Mask']} and image {name} differ in size")
        feats, ign = _record_features(rec, cfg)
        ignored.update(ign)
    except (ValueError, LipoclassError) as exc:
        errors.append((rid, str(exc)))
        return None
    px = None
    length, diam = feats.get("length"), feats.get("diameters_in_pixels")
    if length is not None and diam is not None and length > 0 and diam > 0:
        px = length / diam  # Length is the diameter in nm (thesis section 3)
    return _Good(rid, label, prob, code, image, mask, feats, px)


def _one_problem(good: list[_Good], export_json: Path) -> str | None:
    """The problem (lamellarity / encapsulation) of the good records; LipoclassError when
    an export mixes both."""
    problems: set[str] = {g.problem for g in good}
    if len(problems) > 1:
        first = {p: next(g for g in good if g.problem == p) for p in sorted(problems)}
        a, b = first["encapsulation"], first["lamellarity"]
        raise LipoclassError(
            f"{export_json}: mixes problems: record {b.rid} has class code {b.code} "
            f"(lamellarity) but record {a.rid} has code {a.code} (encapsulation); "
            f"split the export into one file per problem"
        )
    return problems.pop() if problems else None


def _feature_columns(
    good: list[_Good], errors: list[tuple[str, str]], notes: list[str]
) -> tuple[list[str], list[_Good]]:
    """Feature columns: those most records have (in first-seen order); a record lacking one
    is bad (into ``errors``), rarer columns are dropped (noted). Returns (columns, kept)."""
    col_count: Counter[str] = Counter(c for g in good for c in g.features)
    order: list[str] = []
    for g in good:
        order += [c for c in g.features if c not in order]
    columns = [c for c in order if col_count[c] * 2 > len(good)]
    dropped = [c for c in order if c not in columns]
    if dropped:
        notes.append(f"dropped features present in too few records: {', '.join(dropped[:10])}")
    kept: list[_Good] = []
    for g in good:
        missing = [c for c in columns if c not in g.features]
        if missing:
            errors.append((g.rid, f"missing feature {missing[0]} (others have it)"))
        else:
            kept.append(g)
    return columns, kept


def _write_dataset(
    export_json: Path, out: Path, problem: str, kept: list[_Good], columns: list[str],
    n_errors: int,
) -> None:  # fmt: skip
    """The dataset folder ``out``: copied images / masks (file names from the ids) and
    particles.csv with the kept feature columns."""
    classes = [nm for _, (p, nm) in sorted(CLASS_CODES.items()) if p == problem]
    with DatasetWriter(
        out,
        name=out.name,
        classes=classes,
        description=f"{problem} particles imported from {export_json.name}",
        source=str(export_json),
        extra={"problem": problem, "import_errors": n_errors},
    ) as w:
        used: set[str] = set()
        for g in kept:
            stem = re.sub(r"[^A-Za-z0-9._-]", "_", g.rid)
            while stem in used:
                stem += "_"
            used.add(stem)
            img_rel = f"images/{stem}{g.image.suffix.lower()}"
            shutil.copyfile(g.image, w.staging / img_rel)
            mask_rel = ""
            if g.mask is not None:
                mask_rel = f"masks/{stem}{g.mask.suffix.lower()}"
                shutil.copyfile(g.mask, w.staging / mask_rel)
            feats = {c: g.features[c] for c in columns}
            w.add_row(g.rid, img_rel, mask_rel, g.label, g.pixel_size_nm, None, feats)


def _record_order(rid: str, seen: dict[str, int]) -> int:
    if rid.startswith("#") and rid[1:].isdigit():
        return int(rid[1:])
    return seen.get(rid, 0)
