"""The review queues: which particles a person looks at, in which order.

- ``uncertain``: the particles predict flagged, most uncertain first by ensemble disagreement
  (BALD, the mutual information between the class and the fold model: H(mean p) - mean H(p))
  when the fold models' probabilities are known, else by the margin between the two most
  probable classes; spread across micrographs (round robin over micrographs by rank).
- ``audit``: the seeded random sample ``lipoclass.quantify.draw_audit`` draws (stratified by
  micrograph), the one ``predict --audit`` turns into audit-corrected shares.
- ``label-issues``: labelled particles whose label is probably wrong by confident learning
  (Northcutt, Jiang & Chuang, JAIR 2021) on out-of-fold probabilities, via cleanlab
  (``find_label_issues``, ``filter_by="prune_by_noise_rate"``), most suspicious first
  (lowest self-confidence).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lipoclass.choices import REVIEW_QUEUES
from lipoclass.errors import LipoclassError

if TYPE_CHECKING:
    from lipoclass.review.source import ReviewItem

__all__ = [
    "QUEUES",
    "Queue",
    "bald",
    "build_queues",
    "label_issues",
    "margin_uncertainty",
    "spread_by_group",
]

#: queue names, in the order the page offers them (defined in lipoclass.choices)
QUEUES: tuple[str, ...] = REVIEW_QUEUES


@dataclass(frozen=True)
class Queue:
    """A queue: positions into the source's items in review order, a score per position
    (higher = reviewed sooner; NaN where none) and what the score is."""

    name: str
    order: tuple[int, ...]
    score: tuple[float, ...]
    score_name: str


def _entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=-1)


def bald(members: np.ndarray) -> np.ndarray:
    """BALD score per particle from (K, N, C) member probabilities: the entropy of the mean
    prediction minus the mean entropy of the members' predictions (nats, >= 0)."""
    m = np.asarray(members, dtype=np.float64)
    if m.ndim != 3:
        raise ValueError(f"member probabilities must be (K, N, C), got shape {m.shape}")
    return np.maximum(_entropy(m.mean(axis=0)) - _entropy(m).mean(axis=0), 0.0)


def margin_uncertainty(probs: np.ndarray) -> np.ndarray:
    """1 - (p_first - p_second) per particle for (N, C) probabilities: 1 = a tie."""
    p = np.sort(np.asarray(probs, dtype=np.float64), axis=1)
    return 1.0 - (p[:, -1] - p[:, -2])


def spread_by_group(
    candidates: Sequence[int], score: np.ndarray, groups: Sequence[str]
) -> list[int]:
    """Order ``candidates`` by score within each group, then take the groups in turns (the
    best of every group first, then the second best, ...), best score first within a turn."""
    rank: dict[int, int] = {}
    by: dict[str, list[int]] = {}
    for i in candidates:
        by.setdefault(groups[i], []).append(i)
    for members in by.values():
        members.sort(key=lambda i: (-score[i], i))
        rank.update({i: r for r, i in enumerate(members)})
    return sorted(candidates, key=lambda i: (rank[i], -score[i], i))


def label_issues(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Positions of the labelled particles (``labels`` >= 0) whose label is probably wrong,
    by confident learning on out-of-fold ``probs`` (cleanlab), most suspicious first."""
    labels = np.asarray(labels, dtype=np.int64)
    have = np.flatnonzero(labels >= 0)
    if len(have) == 0:
        return np.zeros(0, dtype=np.int64)
    try:
        from cleanlab.filter import find_label_issues
    except ImportError:
        raise LipoclassError(
            "the label-issue queue needs cleanlab>=2.8: pip install 'lipoclass[review]'"
        ) from None
    y = labels[have]
    p = np.asarray(probs, dtype=np.float64)[have]
    p = p / p.sum(axis=1, keepdims=True)
    present = np.unique(y)
    if len(present) < 2:
        return np.zeros(0, dtype=np.int64)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranked = find_label_issues(
            y, p, filter_by="prune_by_noise_rate", return_indices_ranked_by="self_confidence"
        )
    return have[np.asarray(ranked, dtype=np.int64)]


def build_queues(
    items: Sequence[ReviewItem],
    classes: Sequence[str],
    probs: np.ndarray | None,
    members: np.ndarray | None,
    *,
    audit_size: int = 200,
    seed: int = 0,
    with_label_issues: bool = False,
) -> dict[str, Queue]:
    """Every queue the source allows; ``label-issues`` only with ``with_label_issues``
    (``probs`` are then out-of-fold probabilities)."""
    from lipoclass.quantify import draw_audit

    n = len(items)
    ids = [str(it.id) for it in items]
    mics = [str(it.micrograph or "") for it in items]
    out: dict[str, Queue] = {}
    if probs is not None and n:
        if members is not None:
            score, name = bald(members), "BALD (nats)"
        else:
            score, name = margin_uncertainty(probs), "1 - margin"
        flagged = [i for i, it in enumerate(items) if it.flagged]
        cand = flagged if flagged else list(range(n))
        order = spread_by_group(cand, score, mics)
        out["uncertain"] = Queue(
            "uncertain", tuple(order), tuple(float(score[i]) for i in order), name
        )
    if n:
        pos = {pid: i for i, pid in enumerate(ids)}
        drawn = draw_audit(ids, mics if any(mics) else None, min(audit_size, n), seed=seed)
        order = [pos[d] for d in drawn]
        out["audit"] = Queue("audit", tuple(order), (float("nan"),) * len(order), "random")
    if with_label_issues and probs is not None:
        lookup = {c: k for k, c in enumerate(classes)}
        labels = np.array([lookup.get(str(it.label), -1) for it in items])
        order_a = label_issues(labels, probs)
        p = np.asarray(probs)
        conf = 1.0 - p[order_a, labels[order_a]] if len(order_a) else np.zeros(0)
        out["label-issues"] = Queue(
            "label-issues",
            tuple(int(i) for i in order_a),
            tuple(float(c) for c in conf),
            "1 - probability of the given label",
        )
    return out
