"""Prediction-powered inference (lipoclass.quantify.ppi) against the formulas of Angelopoulos
et al. (Science 2023; PPI++ 2024), its coverage under shift, and the audit file reader."""

from __future__ import annotations

import numpy as np
import pytest

from lipoclass.errors import LipoclassError
from lipoclass.quantify import (
    NOT_A_PARTICLE,
    REVIEW_COLUMNS,
    UNSURE,
    labels_only_interval,
    ppi_mean,
    ppi_shares,
    read_audit,
)


def test_ppi_mean_matches_the_papers_formulas():
    rng = np.random.default_rng(0)
    n, nu = 80, 2000
    f_lab = rng.random(n)
    y = (rng.random(n) < 0.8 * f_lab + 0.1).astype(float)
    f_unl = rng.random(nu)
    # PPI (Angelopoulos et al. 2023, mean estimation): theta = mean(f~) - mean(f - Y),
    # sigma^2 = Var(f~)/N + Var(f - Y)/n
    est, sd, lam = ppi_mean(y, f_lab, f_unl, lam=1.0)
    assert lam == 1.0
    assert est == pytest.approx(f_unl.mean() - (f_lab - y).mean())
    assert sd**2 == pytest.approx(f_unl.var(ddof=1) / nu + (f_lab - y).var(ddof=1) / n)
    # lambda = 0: the classical estimate on the labels alone
    est0, sd0, _ = ppi_mean(y, f_lab, f_unl, lam=0.0)
    assert est0 == pytest.approx(y.mean()) and sd0**2 == pytest.approx(y.var(ddof=1) / n)
    # PPI++ power tuning (Angelopoulos, Duchi, Zrnic 2024, mean): lambda = Cov(Y, f) /
    # ((1 + n/N) Var(f)), Var over all predictions; estimate lambda mean(f~) + mean(Y - lambda f)
    f_all = np.concatenate([f_lab, f_unl])
    lam_star = np.cov(y, f_lab, ddof=1)[0, 1] / ((1 + n / nu) * f_all.var(ddof=1))
    est2, sd2, lam2 = ppi_mean(y, f_lab, f_unl)
    assert lam2 == pytest.approx(np.clip(lam_star, 0, 1))
    assert est2 == pytest.approx(lam2 * f_unl.mean() + (y - lam2 * f_lab).mean())
    want = lam2**2 * f_unl.var(ddof=1) / nu + (y - lam2 * f_lab).var(ddof=1) / n
    assert sd2**2 == pytest.approx(want)
    # the tuned variance is never (much) above either end
    assert sd2 <= min(sd, sd0) * 1.02


def _shifted_sample(rng, n_total, prior):
    """A 3-class sample whose model is biased (its posteriors favour class 0) at ``prior``."""
    y = rng.choice(3, size=n_total, p=prior)
    a = np.array([[8.0, 1.0, 1.0], [3.0, 4.0, 1.0], [3.0, 1.0, 4.0]])
    p = np.stack([rng.dirichlet(a[k]) for k in y])
    return p, y


def test_ppi_shares_cover_under_shift_and_beat_labels_alone():
    rng = np.random.default_rng(1)
    prior = np.array([0.5, 0.3, 0.2])
    cover, w_ppi, w_lab, cover_lab = [], [], [], []
    for _ in range(150):
        p, y = _shifted_sample(rng, 1500, prior)
        aud = np.zeros(len(y), dtype=bool)
        aud[rng.choice(len(y), size=150, replace=False)] = True
        r = ppi_shares(p, aud, y, 0.95)
        truth = np.bincount(y, minlength=3) / len(y)
        cover.append((r.lo <= truth) & (truth <= r.hi))
        w_ppi.append(r.hi - r.lo)
        _s, lo, hi = labels_only_interval(np.bincount(y[aud], minlength=3), 150)
        w_lab.append(hi - lo)
        cover_lab.append((lo <= truth) & (truth <= hi))
        assert r.n == 150 and np.all(r.ess > 0)
    cover = np.mean(cover)
    assert cover >= 0.91, cover
    # informative predictions: narrower than the labels alone (ESS above the audit size)
    assert np.mean(w_ppi) < 0.9 * np.mean(w_lab)
    # the model alone (PCC) is biased here: the audit corrects that
    pcc = p.mean(axis=0)
    assert abs(pcc[0] - prior[0]) > 0.05


def test_ppi_shares_t_quantile_for_few_audited_positives():
    # a class with 10-40 audited positives: Student's t with min(pos, neg) - 1 df; the
    # normal quantile with t_small=False; a common class: practically the same
    from scipy.stats import norm, t

    rng = np.random.default_rng(3)
    p, y = _shifted_sample(rng, 1000, np.array([0.85, 0.1, 0.05]))
    aud = np.zeros(len(y), dtype=bool)
    aud[rng.choice(len(y), size=200, replace=False)] = True
    pos = np.bincount(y[aud], minlength=3)
    k = int(np.flatnonzero((pos >= 10) & (pos <= 40))[0])
    r, rz = ppi_shares(p, aud, y, 0.95), ppi_shares(p, aud, y, 0.95, t_small=False)
    assert r.share[k] == rz.share[k] and r.sd[k] == rz.sd[k]
    df = min(pos[k], 200 - pos[k]) - 1
    assert (r.hi[k] - r.lo[k]) == pytest.approx(2 * t.ppf(0.975, df) * r.sd[k], rel=1e-6)
    assert (rz.hi[k] - rz.lo[k]) == pytest.approx(2 * norm.ppf(0.975) * rz.sd[k], rel=1e-6)


def test_ppi_shares_not_a_particle_is_its_own_outcome():
    rng = np.random.default_rng(2)
    p, y = _shifted_sample(rng, 2000, np.array([0.6, 0.2, 0.2]))
    out = y.copy()
    junk = rng.random(len(y)) < 0.1  # 10 % of the candidates are not particles
    out[junk] = 3
    aud = np.zeros(len(y), dtype=bool)
    aud[rng.choice(len(y), size=400, replace=False)] = True
    r = ppi_shares(p, aud, out, 0.95)
    real = out < 3
    truth = np.bincount(out[real], minlength=3) / real.sum()
    assert r.share.sum() == pytest.approx(1.0, abs=0.05)
    assert np.all((r.lo <= truth) & (truth <= r.hi))
    assert r.n == int((aud & real).sum())


def _write(path, header, rows):
    import csv

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


CLS = ("full", "uncertain", "empty")
IDS = [f"p{i}" for i in range(20)]


def test_read_audit_id_label_and_reviews_csv(tmp_path):
    f = _write(tmp_path / "a.csv", ["id", "sample", "label"],
               [["p1", "s", "full"], ["p2", "s", ""], ["p3", "s", UNSURE],
                ["p4", "s", NOT_A_PARTICLE], ["p5", "s", "empty"]])  # fmt: skip
    lab, skipped = read_audit(f, IDS, CLS)
    assert lab == {"p1": 0, "p4": 3, "p5": 2}
    assert skipped["unsure"] == 1 and skipped["unlabelled"] == 1
    rows = [
        ["p1", "m", "audit", "full", "empty", "ann", "t"],
        ["p1", "m", "audit", "empty", "uncertain", "ann", "t2"],  # later decision wins
        ["p2", "m", "uncertain", "full", "empty", "ann", "t"],
    ]  # not the audit queue
    lab, skipped = read_audit(_write(tmp_path / "reviews.csv", REVIEW_COLUMNS, rows), IDS, CLS)
    assert lab == {"p1": 1} and skipped["other_queues"] == 1


@pytest.mark.parametrize(
    "rows, msg",
    [
        ([["p1", "full"], ["zz", "full"]], "row 3: id 'zz' is not a particle"),
        ([["p1", "full"], ["p2", "bogus"]], "row 3: label 'bogus' is not a class"),
        ([["p1", "full"], ["p1", "empty"]], "row 3: id 'p1' appears twice"),
        ([["p1", ""]], "no labelled rows"),
    ],
)
def test_read_audit_bad_input_one_clear_line(tmp_path, rows, msg):
    f = _write(tmp_path / "a.csv", ["id", "label"], rows)
    with pytest.raises(LipoclassError, match=msg):
        read_audit(f, IDS, CLS)
    with pytest.raises(LipoclassError, match="needs the columns id,label"):
        read_audit(_write(tmp_path / "b.csv", ["name", "cls"], [["p1", "full"]]), IDS, CLS)
