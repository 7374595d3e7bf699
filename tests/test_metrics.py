"""Metrics against hand-computed confusion matrices and scikit-learn; bootstrap CIs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from lipoclass import metrics as M

# rows true, columns predicted; class 2 is never predicted
CM = np.array([[5, 1, 0], [2, 3, 0], [1, 0, 0]])


def _labels(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t, p = [], []
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            t += [i] * int(cm[i, j])
            p += [j] * int(cm[i, j])
    return np.array(t), np.array(p)


def test_confusion_matrix_counts() -> None:
    t, p = _labels(CM)
    assert np.array_equal(M.confusion_matrix(t, p, 3), CM)
    with pytest.raises(ValueError):
        M.confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)


def test_class_metrics_by_hand() -> None:
    m = M.class_metrics(CM)
    # class 0: TP 5, FN 1, FP 3, TN 3
    assert m["tpr"][0] == pytest.approx(5 / 6)
    assert m["tnr"][0] == pytest.approx(3 / 6)
    assert m["ppv"][0] == pytest.approx(5 / 8)
    assert m["npv"][0] == pytest.approx(3 / 4)
    assert m["f1"][0] == pytest.approx(2 * (5 / 8) * (5 / 6) / (5 / 8 + 5 / 6))
    assert m["f1_tpr_tnr"][0] == pytest.approx(0.625)
    # class 1: TP 3, FN 2, FP 1, TN 6
    assert m["tpr"][1] == pytest.approx(0.6)
    assert m["tnr"][1] == pytest.approx(6 / 7)
    assert m["ppv"][1] == pytest.approx(0.75)
    assert m["npv"][1] == pytest.approx(0.75)
    assert m["f1"][1] == pytest.approx(2 / 3)
    assert m["f1_tpr_tnr"][1] == pytest.approx(7.2 / 10.2)
    # class 2 never predicted: TP 0, FN 1, FP 0, TN 11 -> ppv 0/0 = 0 (zero_division=0)
    assert m["tpr"][2] == 0.0
    assert m["tnr"][2] == 1.0
    assert m["ppv"][2] == 0.0
    assert m["npv"][2] == pytest.approx(11 / 12)
    assert m["f1"][2] == 0.0
    assert m["f1_tpr_tnr"][2] == 0.0


def test_summary_by_hand_and_sklearn() -> None:
    t, p = _labels(CM)
    assert float(M.accuracy(CM)) == pytest.approx(8 / 12)
    assert float(M.balanced_accuracy(CM)) == pytest.approx((5 / 6 + 0.6 + 0) / 3)
    f1_0 = 2 * (5 / 8) * (5 / 6) / (5 / 8 + 5 / 6)
    assert float(M.macro_f1(CM)) == pytest.approx((f1_0 + 2 / 3 + 0) / 3)
    assert float(M.mcc(CM)) == pytest.approx(skm.matthews_corrcoef(t, p))
    assert float(M.macro_f1(CM)) == pytest.approx(
        skm.f1_score(t, p, average="macro", zero_division=0)
    )
    ppv = M.class_metrics(CM)["ppv"]
    assert np.allclose(ppv, skm.precision_score(t, p, average=None, zero_division=0))


def test_agrees_with_sklearn_on_random_labels() -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        t = rng.integers(0, 4, 200)
        p = np.where(rng.random(200) < 0.6, t, rng.integers(0, 4, 200))
        cm = M.confusion_matrix(t, p, 4)
        assert np.array_equal(cm, skm.confusion_matrix(t, p, labels=range(4)))
        assert float(M.balanced_accuracy(cm)) == pytest.approx(skm.balanced_accuracy_score(t, p))
        assert float(M.mcc(cm)) == pytest.approx(skm.matthews_corrcoef(t, p))
        assert float(M.macro_f1(cm)) == pytest.approx(skm.f1_score(t, p, average="macro"))
        assert np.allclose(M.class_metrics(cm)["tpr"], skm.recall_score(t, p, average=None))


def test_degenerate_matrices_give_zero_not_nan() -> None:
    one_col = np.array([[10, 0], [3, 0]])  # majority classifier
    assert float(M.mcc(one_col)) == 0.0
    assert float(M.balanced_accuracy(one_col)) == pytest.approx(0.5)
    empty = np.zeros((3, 3), dtype=int)
    for v in {**M.class_metrics(empty), **M.summary_metrics(empty)}.values():
        assert np.all(np.isfinite(v)) and np.all(v == 0)


def test_batched_matches_single() -> None:
    batch = np.stack([CM, CM.T, np.eye(3, dtype=int) * 4])  # (3, C, C)
    got = M.class_metrics(batch)["f1"]
    assert got.shape == (3, 3)
    for i in range(3):
        assert np.allclose(got[i], M.class_metrics(batch[i])["f1"])
    assert np.allclose(M.mcc(batch), [float(M.mcc(b)) for b in batch])


def test_log_loss_matches_sklearn_and_thesis_example() -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=50)
    y = rng.integers(0, 3, 50)
    assert M.log_loss(y, p) == pytest.approx(skm.log_loss(y, p, labels=[0, 1, 2]))
    # thesis 4.7: equal probabilities on two classes -> -log(0.5)
    assert M.log_loss(np.array([0]), np.array([[0.5, 0.5]])) == pytest.approx(0.6931, abs=1e-4)
    assert np.isfinite(M.log_loss(np.array([0]), np.array([[0.0, 1.0]])))


def test_normalize_rows() -> None:
    n = M.normalize_rows(np.array([[2, 2], [0, 0]]))
    assert np.allclose(n, [[0.5, 0.5], [0.0, 0.0]])


def test_bootstrap_ci_contains_estimate_and_is_seeded() -> None:
    cm = np.array([[80, 5, 3], [6, 40, 4], [2, 3, 9]])
    a = M.bootstrap_ci(cm, seed=3)
    b = M.bootstrap_ci(cm, seed=3)
    c = M.bootstrap_ci(cm, seed=4)
    for k in a:
        assert np.array_equal(a[k], b[k])
    assert any(not np.array_equal(a[k], c[k]) for k in a)
    point = {**M.class_metrics(cm), **M.summary_metrics(cm)}
    for k, (lo, hi) in a.items():
        assert np.all(lo <= point[k] + 1e-12) and np.all(point[k] <= hi + 1e-12), k
        assert np.all(lo < hi), k


def test_bootstrap_matches_explicit_particle_resampling() -> None:
    """The multinomial shortcut is the particle bootstrap: compare with resampling rows."""
    cm = np.array([[60, 10], [15, 15]])
    t, p = _labels(cm)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(t), size=(4000, len(t)))  # (B, n)
    acc = (t[idx] == p[idx]).mean(axis=1)
    lo, hi = np.percentile(acc, [2.5, 97.5])
    ci = M.bootstrap_ci(cm, n_resamples=4000, seed=1)["accuracy"]
    assert ci[0] == pytest.approx(lo, abs=0.015)
    assert ci[1] == pytest.approx(hi, abs=0.015)
