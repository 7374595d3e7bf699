"""lipoclass.quantify: QuaPy quantifiers on precomputed posteriors, bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest

from lipoclass.errors import LipoclassError
from lipoclass.quantify import METHODS, QuantifierConfig, Quantifiers, fit_quantifiers

# a deliberately mediocre 3-class classifier: posteriors of class k ~ Dirichlet(A[k])
A = np.array([[4.0, 1.5, 1.0], [1.5, 3.0, 1.5], [1.0, 1.5, 3.0]])
CAL_PRIOR = (0.97, 0.02, 0.01)
FAST = QuantifierConfig(n_boot=50, n_cal_boot=10, seed=0)


def draw(rng: np.random.Generator, prior, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Posteriors (n, 3) and labels (n,) of n particles drawn at ``prior``."""
    y = rng.choice(3, size=n, p=np.asarray(prior, dtype=float))
    proba = np.empty((n, 3))
    for k in range(3):
        sel = y == k
        proba[sel] = rng.dirichlet(A[k], size=int(sel.sum()))
    return proba, y


@pytest.fixture(scope="module")
def quants() -> Quantifiers:
    rng = np.random.default_rng(11)
    return fit_quantifiers(*draw(rng, CAL_PRIOR, 3000), FAST)


def test_recovers_shifted_shares(quants: Quantifiers) -> None:
    rng = np.random.default_rng(1)
    truth = np.array([0.8, 0.1, 0.1])  # (at 50/25/25 this classifier's CC errors cancel)
    proba, _ = draw(rng, truth, 20000)
    est = quants.estimate(proba)
    err = {m: np.abs(est.share[m] - truth).max() for m in METHODS}
    for m in ("acc", "pacc"):
        assert err[m] < 0.04, (m, est.share[m])
    # EMQ assumes calibrated posteriors; these Dirichlet ones are not (BCTS only partly fixes
    # it), so EMQ is only required to beat the unadjusted methods by a clear margin
    assert err["emq"] < 0.5 * min(err["cc"], err["pcc"]), est.share["emq"]
    assert err["cc"] > 0.08 and err["pcc"] > 0.08  # unadjusted: biased towards the 97 % class
    for m in METHODS:
        s, lo, hi = est.share[m], est.lo[m], est.hi[m]
        assert s.shape == lo.shape == hi.shape == (3,)
        assert np.isclose(s.sum(), 1.0)
        assert np.all((lo <= s) & (s <= hi) & (lo >= 0) & (hi <= 1))
        assert np.all(hi - lo > 0)
    for m in ("acc", "pacc"):
        assert np.all((est.lo[m] <= truth) & (truth <= est.hi[m])), m
    assert not np.all((est.lo["cc"] <= truth) & (truth <= est.hi["cc"]))
    assert est.best[0] is est.share[FAST.recommended]


def test_estimate_is_seeded_and_leaves_global_rng(quants: Quantifiers) -> None:
    proba, _ = draw(np.random.default_rng(2), (0.8, 0.1, 0.1), 300)
    np.random.seed(123)  # noqa: NPY002 (checks the global RNG is left alone)
    before = np.random.random()  # noqa: NPY002
    np.random.seed(123)  # noqa: NPY002 (checks the global RNG is left alone)
    e1, e2 = quants.estimate(proba), quants.estimate(proba)
    assert np.random.random() == before  # noqa: NPY002
    for m in METHODS:
        assert np.array_equal(e1.lo[m], e2.lo[m]) and np.array_equal(e1.hi[m], e2.hi[m])


def test_emq_replicates_in_one_batch_equal_one_run_per_calibration_replicate(
    quants: Quantifiers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small samples run all EMQ replicates as one batch (each with its calibration
    replicate's posteriors and prior); large ones one run per calibration replicate. Both
    give the same replicates, so the same intervals."""
    from lipoclass.quantify import core

    proba, _ = draw(np.random.default_rng(5), (0.6, 0.3, 0.1), 400)
    batched = quants.estimate(proba)
    monkeypatch.setattr(core, "_EM_GATHER", 0)
    looped = quants.estimate(proba)
    for a, b in ((batched.share, looped.share), (batched.lo, looped.lo), (batched.hi, looped.hi)):
        np.testing.assert_allclose(a["emq"], b["emq"], atol=1e-9)
    assert batched.hi["emq"][2] - batched.lo["emq"][2] > 0.01  # replicates really vary


def test_interval_coverage() -> None:
    """Coverage of the population shares over 80 samples, calibration set redrawn 4 times."""
    rng = np.random.default_rng(5)
    cfg = QuantifierConfig(methods=("cc", "acc", "pacc"), n_boot=50, n_cal_boot=15, seed=3)
    truth = np.array([0.8, 0.12, 0.08])
    qs = [fit_quantifiers(*draw(rng, CAL_PRIOR, 2000), cfg) for _ in range(4)]
    hits = {m: [] for m in cfg.methods}
    for r in range(80):
        proba, _ = draw(rng, truth, 400)
        est = qs[r % 4].estimate(proba)
        for m in cfg.methods:
            hits[m].append((est.lo[m] <= truth) & (truth <= est.hi[m]))
    cov = {m: float(np.mean(hits[m])) for m in cfg.methods}
    assert cov["acc"] >= 0.85 and cov["pacc"] >= 0.85, cov
    assert cov["cc"] < 0.6, cov  # a biased method is caught by the same check


def test_missing_class_interval_includes_zero(quants: Quantifiers) -> None:
    rng = np.random.default_rng(7)
    includes = {name: 0 for name in METHODS}
    for m in (300, 300, 1000, 1000, 5000, 5000):
        proba, _ = draw(rng, (0.9, 0.1, 0.0), m)
        est = quants.estimate(proba)
        for name in METHODS:
            lo, hi = est.lo[name][2], est.hi[name][2]
            includes[name] += int(lo == 0.0)
            assert hi > lo, (name, m)  # never collapses to a point
            if name in ("acc", "pacc", "emq"):
                assert hi < (0.15 if m < 1000 else 0.05), (name, m, hi)  # informative
    # a 95 % interval may miss 0 now and then; ACC/PACC must include it mostly (EMQ is biased
    # on these miscalibrated posteriors and is not required to)
    for name in ("acc", "pacc"):
        assert includes[name] >= 5, includes


def test_all_one_class_sample(quants: Quantifiers) -> None:
    proba = np.tile([0.999, 0.0005, 0.0005], (50, 1))
    est = quants.estimate(proba)
    for m in METHODS:
        assert np.all(est.hi[m] - est.lo[m] > 0), m
        assert est.hi[m][0] == 1.0


def test_input_validation(quants: Quantifiers) -> None:
    rng = np.random.default_rng(0)
    proba, y = draw(rng, CAL_PRIOR, 300)
    bad = proba.copy()
    bad[3, 1] = np.nan
    with pytest.raises(LipoclassError, match="NaN"):
        fit_quantifiers(bad, y, FAST)
    with pytest.raises(LipoclassError, match="shape"):
        fit_quantifiers(proba[:, 0], y, FAST)
    with pytest.raises(LipoclassError, match="sum to 1"):
        fit_quantifiers(proba * 0.5, y, FAST)
    with pytest.raises(LipoclassError, match="labels"):
        fit_quantifiers(proba, y[:-1], FAST)
    with pytest.raises(LipoclassError, match=r"\[0, 3\)"):
        fit_quantifiers(proba, np.where(y == 0, 3, y), FAST)
    with pytest.raises(LipoclassError, match="no examples"):
        fit_quantifiers(proba, np.where(y == 2, 1, y), FAST)
    with pytest.raises(LipoclassError, match="2 classes"):
        quants.estimate(np.full((5, 2), 0.5))
    with pytest.raises(LipoclassError, match="no particles"):
        quants.estimate(np.zeros((0, 3)))
    with pytest.raises(LipoclassError, match="infinite"):
        quants.estimate(np.array([[np.inf, 0.0, 0.0]]))


def test_config_validation() -> None:
    assert QuantifierConfig(methods=["acc", "cc"], recommended="acc").methods == ("acc", "cc")
    for kw in (
        {"methods": ("cc", "svm")},
        {"methods": ()},
        {"methods": ("cc", "cc")},
        {"level": 1.0},
        {"n_boot": 10},
        {"n_cal_boot": 5},
        {"seed": -1},
        {"recommended": "emq", "methods": ("cc", "acc")},
        {"emq_calibration": "platt"},
    ):
        with pytest.raises(ValueError):
            QuantifierConfig(**kw)


def test_calibration_replicates_redraw_whole_samples() -> None:
    """With a sample per particle (micrographs whose conditions shift the classifier's error
    rates), the calibration replicates redraw whole samples and the adjusted intervals widen;
    with fewer than MIN_GROUPS samples particles are redrawn; bad shapes are refused."""
    from lipoclass.quantify import MIN_GROUPS

    rng = np.random.default_rng(5)
    probas, labels, groups = [], [], []
    for g in range(12):  # 12 micrographs, each blurring the posteriors by its own amount
        p, y = draw(rng, (0.5, 0.25, 0.25), 200)
        w = rng.uniform(0.0, 0.8)
        probas.append((1 - w) * p + w / 3)
        labels.append(y)
        groups += [f"mic{g}"] * len(y)
    proba, y = np.concatenate(probas), np.concatenate(labels)
    plain = fit_quantifiers(proba, y, FAST)
    clustered = fit_quantifiers(proba, y, FAST, groups=groups)
    assert plain.cal_resampling == "particles" and clustered.cal_resampling == "micrographs"
    test, _ = draw(np.random.default_rng(6), (0.8, 0.1, 0.1), 5000)
    width = {name: q.estimate(test).hi["pacc"] - q.estimate(test).lo["pacc"]
             for name, q in (("plain", plain), ("clustered", clustered))}  # fmt: skip
    assert width["clustered"].mean() > 1.2 * width["plain"].mean(), width
    few = [f"mic{i % (MIN_GROUPS - 1)}" for i in range(len(y))]
    assert fit_quantifiers(proba, y, FAST, groups=few).cal_resampling == "particles"
    with pytest.raises(LipoclassError, match="groups"):
        fit_quantifiers(proba, y, FAST, groups=groups[:-1])


def _micrographs(rng: np.random.Generator, prior, n_mic: int, per: int):
    """Posteriors, labels and micrograph names of ``n_mic`` micrographs of ``per`` particles,
    each blurring its posteriors by its own amount (a random effect on the error rates)."""
    probas, labels, names = [], [], []
    for g in range(n_mic):
        p, y = draw(rng, prior, per)
        w = rng.uniform(0.0, 0.8)
        probas.append((1 - w) * p + w / 3)
        labels.append(y)
        names += [f"m{g}"] * per
    return np.concatenate(probas), np.concatenate(labels), np.array(names)


def test_test_side_micrograph_resampling_covers_per_micrograph_error_rates() -> None:
    """A test sample of a few micrographs carries its micrographs' error rates: intervals
    that redraw whole micrographs cover the population shares at about the nominal rate, the
    particle-by-particle ones do not; too few micrographs fall back to particles."""
    from lipoclass.quantify import MIN_GROUPS, replicate_weights

    rng = np.random.default_rng(21)
    # the transfer term (shift_micrographs) off: this test isolates the sample's own redraw
    cfg = QuantifierConfig(methods=("cc", "pacc"), n_boot=60, n_cal_boot=20, seed=1,
                           shift_micrographs=0)  # fmt: skip
    p_cal, y_cal, g_cal = _micrographs(rng, (0.5, 0.25, 0.25), 40, 100)
    q = fit_quantifiers(p_cal, y_cal, cfg, groups=g_cal)
    truth = np.array([0.8, 0.1, 0.1])
    hits: dict[str, list[np.ndarray]] = {"micrographs": [], "particles": []}
    for _ in range(40):
        p, _, g = _micrographs(rng, truth, 8, 150)
        by_mic = q.estimate(p, groups=g)
        assert by_mic.resampling == "micrographs" and by_mic.n_groups == 8
        by_particle = q.estimate(p)
        assert by_particle.resampling == "particles" and by_particle.n_groups == 0
        for key, est in (("micrographs", by_mic), ("particles", by_particle)):
            hits[key].append((est.lo["pacc"] <= truth) & (truth <= est.hi["pacc"]))
    cov = {k: float(np.mean(v)) for k, v in hits.items()}
    assert cov["micrographs"] >= 0.85, cov
    assert cov["particles"] < cov["micrographs"] - 0.1, cov
    # one micrograph: nothing to redraw, so the replicates borrow the calibration
    # micrographs' rate deviations ("particles+rates")
    hits = {"particles+rates": [], "particles": []}
    for _ in range(30):
        p, _, g = _micrographs(rng, truth, 1, 500)
        borrowed, plain = q.estimate(p, groups=g), q.estimate(p)
        assert borrowed.resampling == "particles+rates" and borrowed.n_groups == 1
        for key, est in (("particles+rates", borrowed), ("particles", plain)):
            hits[key].append((est.lo["pacc"] <= truth) & (truth <= est.hi["pacc"]))
    cov = {k: float(np.mean(v)) for k, v in hits.items()}
    assert cov["particles+rates"] >= 0.85, cov
    assert cov["particles"] < cov["particles+rates"] - 0.2, cov
    no_groups = fit_quantifiers(p_cal, y_cal, cfg)  # calibration micrographs unknown
    assert no_groups.estimate(p, groups=g).resampling == "particles"
    # weights: constant within a micrograph, whole micrographs drawn; few -> particles
    g = np.repeat([f"m{i}" for i in range(MIN_GROUPS)], 7)
    w8, unit, n = replicate_weights(len(g), g, 30, np.random.default_rng(0))
    assert unit == "micrographs" and n == MIN_GROUPS and w8.shape == (30, len(g))
    assert np.all(w8.reshape(30, MIN_GROUPS, 7).std(axis=2) == 0)
    assert np.allclose(w8.sum(axis=1) % 7, 0)
    w8, unit, n = replicate_weights(len(g), g[: 7 * (MIN_GROUPS - 1)].tolist() + ["x"] * 7,
                                    30, np.random.default_rng(0))  # fmt: skip
    assert unit == "micrographs"  # still MIN_GROUPS distinct names
    few = np.repeat(["a", "b"], 10)
    w8, unit, n = replicate_weights(20, few, 30, np.random.default_rng(0))
    assert unit == "particles" and n == 2 and np.allclose(w8.sum(axis=1), 20)
    with pytest.raises(LipoclassError, match="micrograph names"):
        replicate_weights(20, few[:-1], 30, np.random.default_rng(0))


def test_transfer_term_widens_intervals_only_with_calibration_micrographs() -> None:
    """shift_micrographs: every replicate moves the sample's error rates as the mean of that
    many calibration micrographs deviates; fewer micrographs averaged, wider intervals."""
    rng = np.random.default_rng(5)
    p_cal, y_cal, g_cal = _micrographs(rng, (0.6, 0.2, 0.2), 30, 80)
    p, _, g = _micrographs(rng, (0.3, 0.4, 0.3), 10, 100)
    width = {}
    for n in (0, 8, 2):
        cfg = QuantifierConfig(methods=("cc", "acc"), n_boot=60, n_cal_boot=20, seed=1,
                               shift_micrographs=n)  # fmt: skip
        est = fit_quantifiers(p_cal, y_cal, cfg, groups=g_cal).estimate(p, groups=g)
        width[n] = float(np.mean(est.hi["acc"] - est.lo["acc"]))
    assert width[0] < width[8] < width[2], width
    plain = fit_quantifiers(p_cal, y_cal, QuantifierConfig(methods=("cc", "acc"), n_boot=60,
                                                           n_cal_boot=20, seed=1))  # fmt: skip
    again = fit_quantifiers(p_cal, y_cal, QuantifierConfig(methods=("cc", "acc"), n_boot=60,
                                                           n_cal_boot=20, seed=1,
                                                           shift_micrographs=0))  # fmt: skip
    a, b = plain.estimate(p, groups=g), again.estimate(p, groups=g)  # no calibration mics
    assert np.allclose(a.lo["acc"], b.lo["acc"]) and np.allclose(a.hi["acc"], b.hi["acc"])
    with pytest.raises(ValueError, match="shift_micrographs"):
        QuantifierConfig(shift_micrographs=-1)
