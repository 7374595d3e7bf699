"""The human audit: a seeded random sample of a measured sample's particles that a person labels.

Defined once here because two stages use it: ``lipoclass review`` (its "audit" queue) draws the
sample, and ``predict --audit`` turns the person's labels into audit-corrected class shares.
The decisions file (``reviews.csv``) that the review page appends to has the columns
:data:`REVIEW_COLUMNS`; its ``new_label`` is a class name or one of :data:`REVIEW_SPECIAL`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "AUDIT_QUEUE",
    "NOT_A_PARTICLE",
    "REVIEW_COLUMNS",
    "REVIEW_SPECIAL",
    "UNSURE",
    "check_audit_file",
    "draw_audit",
    "read_audit",
]

#: columns of reviews.csv, in order (one row per decision, appended and flushed at once)
REVIEW_COLUMNS: tuple[str, ...] = (
    "id",
    "micrograph",
    "queue",
    "old_label",
    "new_label",
    "reviewer",
    "time",
)
#: ``new_label`` of a candidate that is not a particle (goes back to detection as a negative)
NOT_A_PARTICLE = "not_a_particle"
#: ``new_label`` when the reviewer cannot tell
UNSURE = "unsure"
REVIEW_SPECIAL: tuple[str, ...] = (NOT_A_PARTICLE, UNSURE)


def draw_audit(
    ids: Sequence[str], micrographs: Sequence[str] | None, k: int, *, seed: int = 0
) -> list[str]:
    """A seeded random sample of ``k`` of ``ids`` without replacement, stratified by micrograph
    (proportional allocation, largest remainders), in a random order.

    Stratifying spreads the audit over the micrographs a sample was imaged on, so an audit
    never sees only one grid square; with proportional allocation every particle still has
    (up to rounding) the same inclusion probability k/N, which the prediction-powered share
    estimate assumes. ``micrographs`` None treats all particles as one stratum.
    """
    n = len(ids)
    if k < 1:
        raise ValueError(f"audit size must be at least 1, got {k}")
    if len(set(ids)) != n:
        raise ValueError("particle ids must be unique")
    rng = np.random.default_rng(seed)
    if k >= n:
        return [ids[i] for i in rng.permutation(n)]
    groups = np.asarray(micrographs if micrographs is not None else [""] * n, dtype=object)
    if len(groups) != n:
        raise ValueError("one micrograph per particle id expected")
    names, inverse = np.unique(groups.astype(str), return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(names))
    quota = sizes * k / n
    take = np.floor(quota).astype(int)
    short = k - int(take.sum())
    if short:
        order = np.lexsort((rng.random(len(names)), -(quota - take)))
        take[order[:short]] += 1
    picked: list[int] = []
    for g in range(len(names)):
        members = np.flatnonzero(inverse == g)
        picked.extend(rng.choice(members, size=int(take[g]), replace=False).tolist())
    return [ids[i] for i in rng.permutation(np.asarray(picked))]


AUDIT_QUEUE = "audit"
"""``queue`` of reviews.csv rows that belong to the audit sample (the review page's audit
queue); decisions from other queues (uncertain particles, ...) are not a random sample."""


def _audit_rows(p: Path) -> tuple[list[dict[str, str]], bool]:
    """(rows, is the review page's reviews.csv) of the audit file ``p``; LipoclassError when
    it cannot be read or lacks the id/label (or reviews.csv) columns."""
    from lipoclass.errors import LipoclassError

    try:
        with p.open(newline="") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LipoclassError(f"{p}: cannot read the audit file ({exc})") from None
    review = all(col in header for col in REVIEW_COLUMNS)
    col = "new_label" if review else "label"
    if "id" not in header or col not in header:
        raise LipoclassError(
            f"{p}: an audit file needs the columns id,label (or the review page's "
            f"reviews.csv: {','.join(REVIEW_COLUMNS)}); found {','.join(header) or 'none'}"
        )
    return rows, review


def check_audit_file(path: str | os.PathLike[str]) -> None:
    """LipoclassError (one line naming the file) unless ``path`` is a readable audit file
    with the columns :func:`read_audit` needs; the ids and labels are checked by
    :func:`read_audit` once the particles are known (so before any expensive work)."""
    from lipoclass.errors import LipoclassError

    if not Path(path).is_file():
        raise LipoclassError(f"--audit {path}: no such file")
    _audit_rows(Path(path))


def read_audit(
    path: str | os.PathLike[str], ids: Sequence[str], classes: Sequence[str]
) -> tuple[dict[str, int], dict[str, int]]:
    """The person's labels of an audit: ``path`` is the review page's decisions (reviews.csv,
    header :data:`REVIEW_COLUMNS`; only rows of the :data:`AUDIT_QUEUE` queue; a later
    decision for the same id replaces an earlier one, as the log is append-only) or a CSV with
    columns ``id`` and ``label`` (other columns ignored; an empty label is a particle not yet
    labelled). Returns (id -> outcome index: a class's index in ``classes``, or
    ``len(classes)`` for :data:`NOT_A_PARTICLE`; counts of what was skipped: ``unsure``,
    ``unlabelled``). Raises LipoclassError naming the file and row for an unknown id, an
    unknown label, a duplicate id (id,label files), a missing column or no usable row."""
    from lipoclass.errors import LipoclassError

    p = Path(path)
    rows, review = _audit_rows(p)
    col = "new_label" if review else "label"
    known = set(ids)
    index = {c: i for i, c in enumerate(classes)}
    index[NOT_A_PARTICLE] = len(classes)
    out: dict[str, int] = {}
    skipped = {"unsure": 0, "unlabelled": 0, "other_queues": 0}
    for line, r in enumerate(rows, start=2):
        pid, lab = (r.get("id") or "").strip(), (r.get(col) or "").strip()
        if review and (r.get("queue") or "").strip() != AUDIT_QUEUE:
            skipped["other_queues"] += 1
            continue
        if pid not in known:
            raise LipoclassError(f"{p} row {line}: id {pid!r} is not a particle of this input")
        if not review and pid in out:
            raise LipoclassError(f"{p} row {line}: id {pid!r} appears twice")
        if not lab:
            skipped["unlabelled"] += 1
            out.pop(pid, None)
            continue
        if lab == UNSURE:
            skipped["unsure"] += 1
            out.pop(pid, None)
            continue
        if lab not in index:
            raise LipoclassError(
                f"{p} row {line}: label {lab!r} is not a class of the model "
                f"({', '.join(classes)}) nor {NOT_A_PARTICLE!r} / {UNSURE!r}"
            )
        out[pid] = index[lab]
    if not out:
        what = f"no audit-queue ('{AUDIT_QUEUE}') decisions" if review else "no labelled rows"
        raise LipoclassError(f"{p}: {what}; nothing to correct the shares with")
    return out, skipped
