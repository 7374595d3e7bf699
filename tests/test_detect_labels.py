"""How the verifier's training candidates are labelled (``verify.candidate_truth``):
"painted" (all outlines painted together) against "alone" (each outline on its own, the best
candidate of each annotated liposome)."""

from __future__ import annotations

import numpy as np
import pytest

from lipoclass.choices import DETECT_TRAIN_LABELS, VERIFIER_LABELS
from lipoclass.micrograph.detect import alone_overlaps, paint_outlines
from lipoclass.micrograph.verify import candidate_truth, check_labels_rule


class _Det:
    """Circular candidates (the part of ``detect.Detections`` that labelling reads)."""

    def __init__(self, cy: list[float], cx: list[float], r: list[float]) -> None:
        self.cy = np.asarray(cy, np.float64)
        self.cx = np.asarray(cx, np.float64)
        self.radii = np.repeat(np.asarray(r, np.float64)[:, None], 48, axis=1)

    def __len__(self) -> int:
        return len(self.cy)


def _disks(shape: tuple[int, int], disks: list[tuple[float, float, float]]) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros(shape, np.int64)
    for k, (cy, cx, r) in enumerate(disks, start=1):
        out[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = k
    return out


def test_rules_are_defined_once_and_checked() -> None:
    assert VERIFIER_LABELS == ("painted", "alone") and DETECT_TRAIN_LABELS in VERIFIER_LABELS
    assert check_labels_rule("alone") == "alone"
    truth = _disks((64, 64), [(30, 30, 10)])
    with pytest.raises(ValueError, match="labels rule"):
        candidate_truth(_Det([30], [30], [10]), truth, rule="together")


@pytest.mark.parametrize("shift", [8.0, 12.0, 15.0])
def test_overlapping_spurious_ring_spoils_painted_not_alone(shift: float) -> None:
    """A true liposome's exact candidate under a larger spurious ring: painted together it
    loses its pixels (0), alone it matches (1); the spurious ring is 0 either way."""
    truth = _disks((128, 128), [(50, 50, 20)])
    det = _Det([50, 50], [50, 50 + shift], [20, 40])
    assert candidate_truth(det, truth).tolist() == [0, 0]
    assert candidate_truth(det, truth, rule="alone").tolist() == [1, 0]


def test_alone_keeps_only_the_best_near_duplicate() -> None:
    """Near-duplicate rings of one liposome: only the best-matching one is 1 under "alone";
    a second liposome's own candidate is 1 too, a ring on empty ground 0."""
    truth = _disks((128, 160), [(50, 50, 20), (60, 120, 15)])
    det = _Det([51, 50, 50, 60, 110], [50, 53, 50, 120, 20], [20, 19, 20, 15, 12])
    assert candidate_truth(det, truth, rule="alone").tolist() == [0, 0, 1, 1, 0]
    # painted together the duplicates share the liposome and none of them matches it
    assert candidate_truth(det, truth).tolist() == [0, 0, 0, 1, 0]


def test_alone_overlaps_equal_each_outline_painted_by_itself() -> None:
    rng = np.random.default_rng(5)
    truth = _disks((96, 96), [(30, 30, 12), (60, 62, 16), (80, 20, 9)])
    n = 12
    cy, cx = rng.uniform(5, 91, n), rng.uniform(5, 91, n)
    radii = rng.uniform(6, 20, (n, 48))
    pairs, iou = alone_overlaps(truth, cy, cx, radii)
    got = {(int(c), int(t)): v for (c, t, _), v in zip(pairs, iou)}
    for i in range(n):
        lab, _ = paint_outlines(truth.shape, cy[i : i + 1], cx[i : i + 1], radii[i : i + 1])
        mask = lab == 1
        for t in range(1, 4):
            inter = np.count_nonzero(mask & (truth == t))
            want = inter / np.count_nonzero(mask | (truth == t))
            assert got.get((i, t), 0.0) == pytest.approx(want)
    empty = alone_overlaps(np.zeros((32, 32), np.int64), cy[:2], cx[:2], radii[:2])
    assert empty[0].shape == (0, 3) and empty[1].shape == (0,)
