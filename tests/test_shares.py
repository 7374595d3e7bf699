"""Class shares per sample (lipoclass.predict.shares on lipoclass.quantify): every method on a
simulated classifier with fixed error rates, the CSV layout, a missing class, and predict's
accounting of the particles the model cannot predict."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from lipoclass.predict import (
    PredictConfig,
    ShareConfig,
    class_shares,
    predict,
    share_columns,
    write_shares,
)
from lipoclass.quantify import METHODS, QuantifierConfig, fit_quantifiers, save_quantifiers
from test_predict import CLASSES, write_model_folder

# posteriors of a particle of true class k ~ Dirichlet(A[k]): fixed class-dependent errors
A = np.array([[6.0, 1.5, 1.0], [1.5, 4.0, 1.5], [1.0, 1.5, 4.0]])
CAL_PRIOR = (0.9, 0.07, 0.03)
FAST = QuantifierConfig(n_boot=50, n_cal_boot=10, seed=0)
SCFG = ShareConfig(n_boot=50)


def draw(rng: np.random.Generator, prior, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Posteriors (n, 3) and labels (n,) of n particles at ``prior``."""
    y = rng.choice(3, size=n, p=np.asarray(prior, dtype=float))
    p = np.empty((n, 3))
    for k in range(3):
        p[y == k] = rng.dirichlet(A[k], size=int((y == k).sum()))
    return p, y


@pytest.fixture(scope="module")
def quants():
    return fit_quantifiers(*draw(np.random.default_rng(3), CAL_PRIOR, 2500), FAST)


def test_every_method_reported_and_adjusted_ones_recover_shares(quants, tmp_path):
    rng = np.random.default_rng(4)
    truth = np.array([0.3, 0.3, 0.4])
    p1, y1 = draw(rng, truth, 8000)
    p2, y2 = draw(rng, (0.6, 0.3, 0.1), 3000)
    probs, labels = np.vstack([p1, p2]), np.concatenate([y1, y2])
    groups = ["a"] * len(y1) + ["b"] * len(y2)
    rows = class_shares(probs, groups, CLASSES, quants, SCFG, labels=labels)
    a = [r for r in rows if r.sample == "a"]
    assert [r.cls for r in a] == list(CLASSES) and all(r.n == 8000 for r in a)
    est = {m: np.array([r.methods[m][0] for r in a]) for m in METHODS}
    err = {m: np.abs(est[m] - truth).max() for m in METHODS}
    for m in ("acc", "pacc", "emq"):  # (EM trusts these uncalibrated posteriors: looser)
        assert err[m] < (0.05 if m == "emq" else 0.03), (m, est[m])
    # unadjusted: pulled towards the 90 % calibration class, worse than ACC and PACC
    assert min(err["cc"], err["pcc"]) > max(0.025, err["acc"], err["pacc"]), err
    for r in rows:
        assert r.recommended == QuantifierConfig().recommended
        assert (r.share, r.share_lo, r.share_hi) == r.methods[r.recommended]
        assert all(lo <= s <= hi for s, lo, hi in r.methods.values())
    assert [r.true_share for r in a] == pytest.approx(np.bincount(y1, minlength=3) / len(y1))
    path = write_shares(rows, tmp_path / "shares.csv")
    with path.open(newline="") as fh:
        got = list(csv.DictReader(fh))
    assert list(got[0]) == share_columns(True)
    assert list(got[0])[4:7] == ["cc", "cc_lo", "cc_hi"] and "emq_hi" in got[0]
    for s in ("a", "b"):
        assert sum(float(r["share"]) for r in got if r["sample"] == s) == pytest.approx(1, abs=1e-3)


def test_missing_class_interval_includes_zero_with_width(quants):
    """A class absent from the sample: every interval has positive width, the adjusted ones
    stay narrow and include 0 in most samples. ACC/PACC are checked with a calibration set
    rich in that class too (one small calibration set biases all samples alike)."""
    rng = np.random.default_rng(8)
    rich = fit_quantifiers(*draw(rng, (0.5, 0.3, 0.2), 4000),
                           QuantifierConfig(methods=("cc", "pcc", "acc", "pacc"), n_boot=50,
                                            n_cal_boot=10, recommended="acc"))  # fmt: skip
    zero = {m: 0 for m in METHODS}
    for _ in range(4):
        p, _ = draw(rng, (0.8, 0.2, 0.0), 1500)
        for q in (quants, rich, None):  # None: CC/PCC without calibration data
            r = class_shares(p, ["s"] * len(p), CLASSES, q, SCFG)[2]
            want = {"cc", "pcc"} if q is None else set(q.config.methods)
            assert set(r.methods) == want
            for m, (_s, lo, hi) in r.methods.items():
                assert hi > lo, m  # never collapses to a point
                if m in ("acc", "pacc", "emq"):
                    assert hi < 0.06, (m, r.methods[m])  # but stays informative
                zero[m] += q is rich and lo == 0.0
    # a 95 % interval may miss 0 now and then; ACC/PACC must include it mostly
    assert zero["acc"] >= 3 and zero["pacc"] >= 3, zero


def test_sampling_only_coverage_of_an_unbiased_setting():
    """Without calibration data CC is unbiased only when the sample's shares match the
    training ones; there its sampling interval must cover at about the nominal rate."""
    rng = np.random.default_rng(9)
    truth = np.asarray(CAL_PRIOR)
    # expected CC shares of this classifier at the calibration prior, from a big draw
    big, _ = draw(rng, truth, 200_000)
    target = np.bincount(big.argmax(1), minlength=3) / len(big)
    hits = []
    for _ in range(60):
        p, _ = draw(rng, truth, 400)
        r = class_shares(p, ["s"] * len(p), CLASSES, None, SCFG)
        hits += [r[k].methods["cc"][1] <= target[k] <= r[k].methods["cc"][2] for k in range(3)]
    assert 0.88 <= np.mean(hits) <= 1.0, np.mean(hits)


def test_predict_counts_skipped_particles_and_uses_oof(tmp_path, tiny_dataset, capsys):
    """An empty mask cannot be prepared for 'masked': the particle is named, counted in
    'excluded' and the shares say so; oof.csv present -> all five methods."""
    rng = np.random.default_rng(0)
    ds_dir = tiny_dataset(counts=(6, 5, 4), samples=2, empty_masks=1)
    y, p = draw(rng, CAL_PRIOR, 600)[::-1]
    write_model_folder(tmp_path / "m", oof=(y, p))
    res = predict(tmp_path / "m", ds_dir, tmp_path / "p.csv",
                  config=PredictConfig(device="cpu", n_boot=50))  # fmt: skip
    out = capsys.readouterr().out
    assert len(res.skipped) == 1 and "EXCLUDED" in out and res.skipped[0][0] in out
    assert "quantifiers fitted now" in out
    with (tmp_path / "p_shares.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sum(int(r["excluded"]) for r in rows) == len(CLASSES)  # one particle, per class row
    n_by = {r["sample"]: int(r["n"]) + int(r["excluded"]) for r in rows}
    assert sum(n_by.values()) == 15  # every particle counted: predicted or excluded
    assert all(r["emq"] != "" and r["acc"] != "" for r in rows)
    with (tmp_path / "p_excluded.csv").open(newline="") as fh:
        ex = list(csv.DictReader(fh))
    assert [e["id"] for e in ex] == [res.skipped[0][0]] and ex[0]["reason"]


def test_predict_loads_stored_quantifiers(tmp_path, tiny_dataset, capsys):
    rng = np.random.default_rng(1)
    ds_dir = tiny_dataset(counts=(4, 3, 3), samples=0)
    y, p = draw(rng, CAL_PRIOR, 400)[::-1]
    write_model_folder(tmp_path / "m", extra={"quantifiers": {"file": "quantifiers.pkl"}})
    save_quantifiers(fit_quantifiers(p, y, FAST), tmp_path / "m" / "quantifiers.pkl")
    res = predict(tmp_path / "m", ds_dir, tmp_path / "p.csv",
                  config=PredictConfig(device="cpu", n_boot=50))  # fmt: skip
    out = capsys.readouterr().out
    assert res.quantifier_note == "" and "note:" not in out and "EXCLUDED" not in out
    assert {r.sample for r in res.share_rows} == {"all"}
    assert not (tmp_path / "p_shares.png").exists()  # one sample: no comparison plot
    assert all(not math.isnan(r.methods["pacc"][0]) for r in res.share_rows)
    info = json.loads((tmp_path / "m" / "model.json").read_text())
    assert info["quantifiers"]["file"] == "quantifiers.pkl"


def test_share_config_validation():
    for kw in ({"n_boot": 10}, {"level": 1.0}, {"seed": -1}):
        with pytest.raises(ValueError):
            ShareConfig(**kw)
