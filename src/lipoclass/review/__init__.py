"""Review in the browser: a person checks, relabels and audits particles (``lipoclass review``).

- ``open_source(path, dataset=, model=)``: what is reviewed (a micrograph prediction folder, a
  predictions CSV with its dataset, a training dataset with its model folder), checked;
- ``build_queues``: the uncertain (BALD or margin), audit (``draw_audit``) and label-issue
  (confident learning, cleanlab) queues;
- ``ReviewLog`` / ``read_decisions``: the crash-safe decisions file ``reviews.csv``;
- ``ReviewSession`` + ``create_app`` / ``serve``: the token-protected Starlette page;
- ``apply_reviews``: decisions -> a new dataset version + ``detection_negatives.csv``.

See docs/review.md. Starlette and uvicorn are imported only when a page is served."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from lipoclass.review.apply import (
    HISTORY_COLUMNS,
    NEGATIVE_COLUMNS,
    ApplyResult,
    apply_reviews,
    final_decisions,
)
from lipoclass.review.queues import (
    QUEUES,
    Queue,
    bald,
    build_queues,
    label_issues,
    margin_uncertainty,
)
from lipoclass.review.server import ReviewConfig, ReviewSession, create_app, serve
from lipoclass.review.source import SOURCE_KINDS, ReviewItem, ReviewSource, open_source
from lipoclass.review.store import CONFLICT_COLUMNS, Decision, ReviewLog, read_decisions

__all__ = [
    "CONFLICT_COLUMNS",
    "HISTORY_COLUMNS",
    "NEGATIVE_COLUMNS",
    "QUEUES",
    "SOURCE_KINDS",
    "ApplyResult",
    "Decision",
    "Queue",
    "ReviewConfig",
    "ReviewItem",
    "ReviewLog",
    "ReviewSession",
    "ReviewSource",
    "apply_reviews",
    "bald",
    "build_queues",
    "create_app",
    "final_decisions",
    "label_issues",
    "margin_uncertainty",
    "open_source",
    "read_decisions",
    "serve",
    "write_queue",
]


def write_queue(
    source: ReviewSource, queue: str, out: Path, *, audit_size: int = 200, seed: int = 0
) -> int:
    """Write one queue of ``source`` in review order to ``out`` (CSV: rank, id, micrograph,
    label, pred, prob, score); returns its length."""
    from lipoclass.errors import LipoclassError

    queues = build_queues(
        source.items,
        source.classes,
        source.probs,
        source.members,
        audit_size=audit_size,
        seed=seed,
        with_label_issues=source.kind == "dataset",
    )
    if queue not in queues:
        raise LipoclassError(
            f"{source.path}: no {queue} queue here (available: {', '.join(queues) or 'none'})"
        )
    q = queues[queue]
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["rank", "id", "micrograph", "label", "pred", "prob", "score"])
        for r, (i, s) in enumerate(zip(q.order, q.score), start=1):
            it = source.items[i]
            w.writerow(
                [
                    r,
                    it.id,
                    it.micrograph,
                    it.label,
                    it.pred,
                    "" if math.isnan(it.prob) else f"{it.prob:.6f}",
                    "" if math.isnan(s) else f"{s:.6f}",
                ]
            )
    tmp.replace(out)
    return len(q.order)
