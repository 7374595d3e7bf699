"""Bootstrap interval of pooled detection scores (``match.pooled_interval``)."""

from __future__ import annotations

import numpy as np
import pytest

from lipoclass.micrograph.match import InstanceMatch, pool_matches, pooled_interval


def _m(matched: int, truth: int, found: int) -> InstanceMatch:
    pairs = np.stack([np.arange(1, matched + 1)] * 2, axis=1).astype(np.int64)
    return InstanceMatch(pairs.reshape(-1, 2), np.full(matched, 0.8), truth, found)


def test_interval_holds_the_pooled_figure_and_narrows_with_more_micrographs() -> None:
    rng = np.random.default_rng(1)
    mics = [_m(int(t * 0.9), t, int(t * 0.9) + int(f)) for t, f in
            zip(rng.integers(20, 40, 48), rng.integers(0, 6, 48))]  # fmt: skip
    pooled = pool_matches(mics)
    few, many = pooled_interval(mics[:6], seed=0), pooled_interval(mics, seed=0)
    lo, hi = many["precision"]
    assert lo < pooled.precision < hi
    assert many["recall"][0] <= pooled.recall <= many["recall"][1]
    assert hi - lo < few["precision"][1] - few["precision"][0]
    assert pooled_interval(mics, seed=0) == many  # seeded, no global state
    same = [_m(9, 10, 10)] * 5  # every micrograph alike: no spread
    assert pooled_interval(same)["precision"] == pytest.approx((0.9, 0.9))


def test_interval_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="level"):
        pooled_interval([_m(1, 1, 1)] * 3, level=1.5)
    with pytest.raises(ValueError, match="2\\+ micrographs"):
        pooled_interval([_m(1, 1, 1)])
