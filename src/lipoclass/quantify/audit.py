"""The human audit: a seeded random sample of a measured sample's particles that a person labels.

Defined once here because two stages use it: ``lipoclass review`` (its "audit" queue) draws the
sample, and ``predict --audit`` turns the person's labels into audit-corrected class shares.
The decisions file (``reviews.csv``) that the review page appends to has the columns
:data:`REVIEW_COLUMNS`; its ``new_label`` is a class name or one of :data:`REVIEW_SPECIAL`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["NOT_A_PARTICLE", "REVIEW_COLUMNS", "REVIEW_SPECIAL", "UNSURE", "draw_audit"]

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
