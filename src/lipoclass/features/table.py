"""``FeatureTable``: per-particle handcrafted features with CSV I/O and the feature sets the
SVM uses (thesis sections 4.1 and 8.4)."""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lipoclass.choices import COMPUTED_FEATURE_SETS as FEATURE_SETS
from lipoclass.errors import LipoclassError

if TYPE_CHECKING:
    from lipoclass.data import ParticleDataset

__all__ = ["FEATURE_SETS", "FeatureTable", "precomputed_table", "vironova_names"]

# The Vironova SVM features (thesis 4.1 / 8.4): area, circularity, image moments mu20, mu02,
# mu30, mu03, the edge density profile, the histogram and internal segmentation variance.
_VIRONOVA_FIXED = ("area", "circularity", "mu20", "mu02", "mu30", "mu03")
_VIRONOVA_PREFIXES = ("edge_", "hist_")
_VIRONOVA_TAIL = ("internal_variance",)
_PROFILE_RE = re.compile(r"^(edge|hist)_\d+$")


def vironova_names(names: Sequence[str]) -> list[str]:
    """The names of ``names`` that belong to the Vironova set, in a fixed order."""
    out = [n for n in _VIRONOVA_FIXED if n in names]
    for prefix in _VIRONOVA_PREFIXES:
        out += [n for n in names if n.startswith(prefix) and _PROFILE_RE.match(n)]
    out += [n for n in _VIRONOVA_TAIL if n in names]
    return out


@dataclass
class FeatureTable:
    """Features of the particles that have them.

    ``ids`` (n,) and ``index`` (n,) int64 positions in ``dataset.particles``; ``values``
    (n, F) float64, always finite; ``names`` (F,); ``failed`` lists ``(id, reason)`` for
    particles without features (never NaN rows); ``auto_masked`` counts particles whose mask
    came from ``lipoclass.data.auto_mask``."""

    ids: list[str]
    index: np.ndarray
    names: list[str]
    values: np.ndarray
    failed: list[tuple[str, str]] = field(default_factory=list)
    auto_masked: int = 0
    from_cache: bool = False

    def __post_init__(self) -> None:
        self.index = np.asarray(self.index, dtype=np.int64).reshape(-1)
        self.values = np.asarray(self.values, dtype=np.float64).reshape(
            len(self.ids), len(self.names)
        )
        if len(self.index) != len(self.ids):
            raise ValueError(f"{len(self.ids)} ids but {len(self.index)} index entries")

    def __len__(self) -> int:
        return len(self.ids)

    def column(self, name: str) -> np.ndarray:
        """One feature as (n,) float64."""
        try:
            return self.values[:, self.names.index(name)]
        except ValueError:
            raise LipoclassError(f"no feature column {name!r}") from None

    def select(self, feature_set: str) -> FeatureTable:
        """The columns of a feature set: ``"vironova"`` (thesis 8.4) or ``"all"``."""
        if feature_set == "all":
            cols = list(self.names)
        elif feature_set == "vironova":
            cols = vironova_names(self.names)
            missing = [n for n in (*_VIRONOVA_FIXED, *_VIRONOVA_TAIL) if n not in cols]
            for prefix in _VIRONOVA_PREFIXES:
                if not any(n.startswith(prefix) for n in cols):
                    missing.append(prefix + "*")
            if missing:
                raise LipoclassError(
                    f"feature set 'vironova' needs columns missing from this table: "
                    f"{', '.join(missing)} (compute them with 'lipoclass features')"
                )
        else:
            raise LipoclassError(
                f"unknown feature set {feature_set!r}; choose from {', '.join(FEATURE_SETS)}"
            )
        pos = [self.names.index(c) for c in cols]
        return FeatureTable(
            ids=list(self.ids),
            index=self.index.copy(),
            names=cols,
            values=self.values[:, pos],
            failed=list(self.failed),
            auto_masked=self.auto_masked,
            from_cache=self.from_cache,
        )

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write ``id`` + one column per feature (written atomically). Failed particles get a
        row with empty feature cells, so the file covers the whole dataset."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
        try:
            with tmp.open("w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(["id", *self.names])
                for pid, row in zip(self.ids, self.values.tolist()):
                    w.writerow([pid, *(repr(v) for v in row)])
                empty = [""] * len(self.names)
                for pid, _reason in self.failed:
                    w.writerow([pid, *empty])
            os.replace(tmp, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return out

    @classmethod
    def from_csv(cls, path: str | os.PathLike[str], dataset: ParticleDataset) -> FeatureTable:
        """Read a CSV written by ``to_csv`` and match it to ``dataset``.

        Every id must be a particle of ``dataset`` and every particle must have a row; a row
        whose feature cells are all empty is a particle without features (``failed``); any
        other empty, non-numeric or non-finite cell raises ``LipoclassError`` naming the row
        and column."""
        p = Path(path)
        if not p.is_file():
            raise LipoclassError(f"{p}: features file not found")
        with p.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                raise LipoclassError(f"{p}: empty file") from None
            rows = list(reader)
        if not header or header[0] != "id":
            raise LipoclassError(f"{p}: first column must be 'id'")
        names = header[1:]
        if not names:
            raise LipoclassError(f"{p}: no feature columns")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise LipoclassError(f"{p}: column {dup[0]!r} appears twice in the header")
        pos = {pid: i for i, pid in enumerate(dataset.ids)}
        ids: list[str] = []
        index: list[int] = []
        values: list[list[float]] = []
        failed: list[tuple[str, str]] = []
        seen: dict[str, int] = {}
        for r, cells in enumerate(rows, start=1):
            if not cells or all(c.strip() == "" for c in cells):
                continue
            if len(cells) != len(header):
                raise LipoclassError(f"{p} row {r}: {len(cells)} fields, header has {len(header)}")
            pid = cells[0].strip()
            if pid not in pos:
                raise LipoclassError(
                    f"{p} row {r}: id {pid!r} is not a particle of {dataset.root} "
                    "(features computed for another dataset?)"
                )
            if pid in seen:
                raise LipoclassError(f"{p} row {r}: duplicate id {pid!r}, first in row {seen[pid]}")
            seen[pid] = r
            feats = [c.strip() for c in cells[1:]]
            if all(c == "" for c in feats):
                failed.append((pid, f"no features in {p.name}"))
                continue
            row: list[float] = []
            for name, text in zip(names, feats):
                try:
                    v = float(text)
                except ValueError:
                    v = math.nan
                if not math.isfinite(v):
                    raise LipoclassError(
                        f"{p} row {r} (id {pid}), column {name!r}: {text!r} is not a finite number"
                    )
                row.append(v)
            ids.append(pid)
            index.append(pos[pid])
            values.append(row)
        missing = [pid for pid in dataset.ids if pid not in seen]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise LipoclassError(
                f"{p}: no row for particle(s) {', '.join(missing[:3])}{more} of {dataset.root} "
                "(recompute with 'lipoclass features')"
            )
        return cls(
            ids=ids,
            index=np.asarray(index, dtype=np.int64),
            names=names,
            values=np.asarray(values, dtype=np.float64).reshape(len(ids), len(names)),
            failed=failed,
        )


def precomputed_table(dataset: ParticleDataset) -> FeatureTable:
    """The numeric feature columns of ``particles.csv`` (e.g. from ``import-export``)."""
    cols = list(dataset.feature_columns)
    if not cols:
        raise LipoclassError(
            f"{Path(dataset.root) / 'particles.csv'}: no numeric feature columns "
            "(precomputed features need extra numeric columns in particles.csv)"
        )
    values = dataset.feature_matrix(cols)  # (N, F) float64, finite (checked by the loader)
    return FeatureTable(
        ids=list(dataset.ids),
        index=np.arange(len(dataset), dtype=np.int64),
        names=cols,
        values=values,
    )
