"""Bootstrap intervals of pooled detection scores (``match.pooled_interval``) and of the
difference in F1 of two detectors on the same micrographs (``match.paired_f1_interval``)."""

from __future__ import annotations

import numpy as np
import pytest

from lipoclass.micrograph.match import (
    InstanceMatch,
    paired_f1_interval,
    pool_matches,
    pooled_interval,
)


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


def test_paired_f1_interval_tells_a_better_detector_from_a_micrograph_effect() -> None:
    rng = np.random.default_rng(2)
    truth = rng.integers(20, 60, 12)
    a = [_m(int(t * 0.6), int(t), int(t * 0.65)) for t in truth]
    better = [_m(int(t * 0.8), int(t), int(t * 0.85)) for t in truth]  # every micrograph
    lo, hi = paired_f1_interval(a, better, seed=0)
    gain = pool_matches(better).f1 - pool_matches(a).f1
    assert 0 < lo <= gain <= hi
    assert paired_f1_interval(a, better, seed=0) == (lo, hi)  # seeded
    # one micrograph much better, the others a little worse: no clear gain
    mixed = [_m(int(t * 0.95), int(t), int(t)) if k == 0 else _m(int(t * 0.58), int(t),
             int(t * 0.65)) for k, t in enumerate(truth)]  # fmt: skip
    lo, hi = paired_f1_interval(a, mixed, seed=0)
    assert lo < 0 < hi
    assert paired_f1_interval(a, a) == pytest.approx((0.0, 0.0))
    with pytest.raises(ValueError, match="same micrographs"):
        paired_f1_interval(a, a[:5])
    with pytest.raises(ValueError, match="2\\+ micrographs"):
        paired_f1_interval(a[:1], a[:1])
