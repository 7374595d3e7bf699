"""The decisions file ``reviews.csv`` (columns ``lipoclass.quantify.REVIEW_COLUMNS``): one row
per decision, appended, flushed and fsync'ed before the page is told "saved", so a killed
server loses nothing that was confirmed. The current decision of a particle in a queue is its
last row; a row with an empty ``new_label`` retracts the earlier one (the page's undo).

Two tabs (or two people) deciding the same particle differently both keep their row; the
second is also logged to ``conflicts.csv`` beside reviews.csv (``CONFLICT_COLUMNS``)."""

from __future__ import annotations

import csv
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lipoclass.errors import LipoclassError
from lipoclass.quantify import REVIEW_COLUMNS, REVIEW_SPECIAL

__all__ = ["CONFLICT_COLUMNS", "Decision", "ReviewLog", "read_decisions"]

#: columns of conflicts.csv: the decision that was there and the one that replaced it
CONFLICT_COLUMNS: tuple[str, ...] = (
    "id",
    "queue",
    "earlier_label",
    "earlier_reviewer",
    "earlier_time",
    "new_label",
    "reviewer",
    "time",
)


@dataclass(frozen=True)
class Decision:
    """One row of reviews.csv."""

    id: str
    micrograph: str
    queue: str
    old_label: str
    new_label: str
    reviewer: str
    time: str

    def row(self) -> list[str]:
        return [
            self.id,
            self.micrograph,
            self.queue,
            self.old_label,
            self.new_label,
            self.reviewer,
            self.time,
        ]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_decisions(
    path: str | os.PathLike[str],
    *,
    ids: set[str] | None = None,
    labels: set[str] | None = None,
) -> list[Decision]:
    """Every row of a reviews.csv, checked: the header is ``REVIEW_COLUMNS``; with ``ids`` /
    ``labels`` an unknown particle id or label (not a class, not ``not_a_particle`` /
    ``unsure``, not empty) is a LipoclassError naming the row."""
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LipoclassError(f"{p}: unreadable ({exc})") from None
    if header is None:
        return []
    if tuple(header) != REVIEW_COLUMNS:
        raise LipoclassError(
            f"{p}: header must be {','.join(REVIEW_COLUMNS)}, got {','.join(header)}"
        )
    allowed = None if labels is None else set(labels) | set(REVIEW_SPECIAL) | {""}
    out = []
    for r, row in enumerate(rows, start=1):
        if not row:
            continue
        if len(row) != len(REVIEW_COLUMNS):
            raise LipoclassError(f"{p} row {r}: {len(row)} fields, expected {len(REVIEW_COLUMNS)}")
        d = Decision(*row)
        if ids is not None and d.id not in ids:
            raise LipoclassError(f"{p} row {r}: particle id {d.id!r} is not under review here")
        if allowed is not None and d.new_label not in allowed:
            raise LipoclassError(
                f"{p} row {r}: label {d.new_label!r} is not a class, {' or '.join(REVIEW_SPECIAL)}"
            )
        out.append(d)
    return out


class ReviewLog:
    """Append-only, crash-safe decisions file, safe for concurrent requests (a lock)."""

    def __init__(self, path: str | os.PathLike[str], *, ids: set[str], labels: set[str]) -> None:
        self.path = Path(path)
        self.conflicts_path = self.path.with_name("conflicts.csv")
        self.ids, self.labels = ids, labels
        self._lock = threading.Lock()
        folder = self.path.parent if str(self.path.parent) else Path(".")
        if not folder.is_dir():
            raise LipoclassError(f"cannot write {self.path}: folder {folder} does not exist")
        if self.path.is_dir():
            raise LipoclassError(f"cannot write {self.path}: it is a folder")
        existing = self.path.is_file() and self.path.stat().st_size > 0
        rows = read_decisions(self.path, ids=ids, labels=labels) if existing else []
        self.current: dict[tuple[str, str], Decision] = {}
        for d in rows:
            self._set(d)
        self.n_rows = len(rows)
        try:
            self._fh = self.path.open("a", newline="", encoding="utf-8")
        except OSError as exc:
            raise LipoclassError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        if not existing:
            self._append(self._fh, list(REVIEW_COLUMNS))
            _fsync_dir(folder)

    def _set(self, d: Decision) -> None:
        key = (d.queue, d.id)
        if d.new_label:
            self.current[key] = d
        else:
            self.current.pop(key, None)

    @staticmethod
    def _append(fh: object, row: list[str]) -> None:
        w = csv.writer(fh, lineterminator="\n")  # type: ignore[arg-type]
        w.writerow(row)
        fh.flush()  # type: ignore[attr-defined]
        os.fsync(fh.fileno())  # type: ignore[attr-defined]

    def decide(
        self,
        pid: str,
        micrograph: str,
        queue: str,
        old_label: str,
        new_label: str,
        reviewer: str,
        expect: str | None = None,
    ) -> tuple[Decision, Decision | None]:
        """Append one decision (``new_label`` "" = retract) and return it with the decision it
        replaced when that is a conflict: the caller expected ``expect`` (what its page showed)
        but another tab had decided otherwise meanwhile."""
        if pid not in self.ids:
            raise LipoclassError(f"particle id {pid!r} is not under review here")
        if new_label and new_label not in self.labels and new_label not in REVIEW_SPECIAL:
            raise LipoclassError(
                f"label {new_label!r} is not a class or {'/'.join(REVIEW_SPECIAL)}"
            )
        with self._lock:
            before = self.current.get((queue, pid))
            d = Decision(pid, micrograph, queue, old_label, new_label, reviewer, _now())
            self._append(self._fh, d.row())
            self.n_rows += 1
            self._set(d)
            conflict = None
            shown = expect if expect is not None else (before.new_label if before else "")
            if before is not None and before.new_label != shown and before.new_label != new_label:
                conflict = before
                self._log_conflict(before, d)
            return d, conflict

    def _log_conflict(self, before: Decision, d: Decision) -> None:
        new = not self.conflicts_path.is_file()
        with self.conflicts_path.open("a", newline="", encoding="utf-8") as fh:
            if new:
                csv.writer(fh, lineterminator="\n").writerow(CONFLICT_COLUMNS)
            self._append(
                fh,
                [
                    d.id,
                    d.queue,
                    before.new_label,
                    before.reviewer,
                    before.time,
                    d.new_label,
                    d.reviewer,
                    d.time,
                ],
            )

    def close(self) -> None:
        self._fh.close()
