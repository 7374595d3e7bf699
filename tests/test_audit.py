"""The audit sample: seeded, stratified by micrograph, proportional."""

from __future__ import annotations

import pytest

from lipoclass.quantify import draw_audit


def test_audit_is_seeded_stratified_and_proportional() -> None:
    ids = [f"p{i}" for i in range(300)]
    mics = ["a"] * 200 + ["b"] * 70 + ["c"] * 30
    got = draw_audit(ids, mics, 30, seed=3)
    assert got == draw_audit(ids, mics, 30, seed=3)
    assert got != draw_audit(ids, mics, 30, seed=4)
    assert len(set(got)) == 30
    per = {m: sum(mics[int(i[1:])] == m for i in got) for m in "abc"}
    assert per == {"a": 20, "b": 7, "c": 3}


def test_audit_larger_than_sample_takes_all_and_rejects_bad_input() -> None:
    assert sorted(draw_audit(["x", "y"], None, 5)) == ["x", "y"]
    with pytest.raises(ValueError, match="unique"):
        draw_audit(["x", "x"], None, 1)
    with pytest.raises(ValueError, match="at least 1"):
        draw_audit(["x"], None, 0)
