"""Class shares per sample (lipoclass.predict.shares on lipoclass.quantify): every method on a
simulated classifier with fixed error rates, the CSV layout, a missing class, and predict's
accounting of the particles the model cannot predict."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from lipoclass.data import load_dataset
from lipoclass.predict import (
    PredictConfig,
    ShareConfig,
    class_shares,
    predict,
    share_columns,
    write_shares,
)
from lipoclass.quantify import (
    METHODS,
    QuantifierConfig,
    SelectConfig,
    fit_quantifiers,
    save_quantifiers,
    select_method,
)
from test_predict import CLASSES, CPU, read_csv, write_model_folder

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


def test_predict_cnn_empty_mask_gets_the_automatic_mask_fallback_and_uses_oof(
    tmp_path, tiny_dataset, capsys
):
    """An empty mask cannot be prepared for 'masked': the particle is predicted as if it had
    no mask file (automatic mask), named in the output, flagged in predictions.csv and counted
    in n and 'fallback' (not excluded); oof.csv present -> all five methods."""
    rng = np.random.default_rng(0)
    ds_dir = tiny_dataset(counts=(6, 5, 4), samples=2, empty_masks=1)
    y, p = draw(rng, CAL_PRIOR, 600)[::-1]
    write_model_folder(tmp_path / "m", oof=(y, p))
    res = predict(tmp_path / "m", ds_dir, tmp_path / "p.csv",
                  config=PredictConfig(device="cpu", n_boot=50))  # fmt: skip
    out = capsys.readouterr().out
    assert res.skipped == [] and "EXCLUDED" not in out
    assert res.fallback == [("p0000", "automatic mask (mask has no particle pixels)")]
    line = next(x for x in out.splitlines() if "fallback" in x and "p0000" in x)
    assert line.startswith("1 particle(s)") and "IN the shares" in line
    assert "quantifiers fitted now" in out
    rows = read_csv(tmp_path / "p_shares.csv")
    assert all(r["excluded"] == "0" for r in rows)
    assert sum(int(r["fallback"]) for r in rows) == len(CLASSES)  # one particle, per class row
    assert sum(int(r["n"]) for r in rows) == 15 * len(CLASSES)  # n per class row
    assert all({"emq", "acc"} <= set(r.methods) for r in res.share_rows)
    assert not (tmp_path / "p_excluded.csv").exists()
    pred = {r["id"]: r for r in read_csv(tmp_path / "p.csv")}
    assert len(pred) == 15 and pred["p0000"]["fallback"].startswith("automatic mask")
    assert sum(bool(r["fallback"]) for r in pred.values()) == 1
    # the fallback is exactly the prediction of the same particle without a mask file
    bare = predict(tmp_path / "m", tiny_dataset(counts=(6, 5, 4), samples=2, masks=False),
                   tmp_path / "q.csv", config=CPU, verbose=False)  # fmt: skip
    np.testing.assert_allclose(res.probs[0], bare.probs[bare.ids.index("p0000")], atol=1e-6)


def _svm_folder(tiny_dataset, out: Path) -> Path:
    from lipoclass.crossfit import fit_model
    from lipoclass.data import PrepConfig, load_dataset
    from lipoclass.evaluate import CVConfig
    from lipoclass.models.svm import SVMConfig
    from lipoclass.spec import ModelSpec

    ds = load_dataset(tiny_dataset((8, 6, 6), size=(24, 32), seed=5))
    spec = ModelSpec("svm", PrepConfig(), SVMConfig(inner_folds=2, importance=False))
    folder, _ = fit_model(ds, spec, CVConfig(folds=3), out, progress=False)
    return Path(folder)


def _particles(path: Path, extra: dict[str, tuple[np.ndarray, np.ndarray | None]]) -> Path:
    """A dataset of six drawn particles in samples s0/s1 plus ``extra`` (id -> image, mask)."""
    from conftest import draw_particle
    from lipoclass.data import DatasetWriter

    rng = np.random.default_rng(11)
    with DatasetWriter(path, name="x", classes=list(CLASSES), pixel_size_nm=0.8) as w:
        for i in range(6):
            img, mask = draw_particle(i % 3, 28, 30, rng)
            w.add(f"q{i}", image=img, mask=mask, label=CLASSES[i % 3], sample=f"s{i % 2}")
        for pid, (img, mask) in extra.items():
            w.add(pid, image=img, mask=mask, label=CLASSES[0], sample="s0")
    return path


def test_svm_particle_with_an_empty_mask_is_predicted_by_the_fallback(
    tmp_path, tiny_dataset, capsys
):
    """SVM: a particle whose own mask is empty gets features without it (automatic mask) and
    a prediction flagged 'fallback', counted in n; one too small for any mask (4 x 4 px)
    stays excluded, named with both reasons and counted in 'excluded'."""
    from conftest import draw_particle
    from lipoclass.ensemble import load_model

    model = _svm_folder(tiny_dataset, tmp_path / "svm")
    img, _mask = draw_particle(0, 28, 30, np.random.default_rng(12))
    tiny = np.random.default_rng(13).integers(0, 255, size=(4, 4)).astype(np.uint8)
    ds_dir = _particles(tmp_path / "d", {"empty": (img, np.zeros(img.shape, bool)),
                                         "tiny": (tiny, np.zeros((4, 4), bool))})  # fmt: skip
    res = predict(model, ds_dir, tmp_path / "p.csv", config=CPU)
    out = capsys.readouterr().out
    assert res.fallback == [("empty", "automatic mask (mask has no particle pixels)")]
    assert [pid for pid, _ in res.skipped] == ["tiny"]
    assert "mask has no particle pixels" in res.skipped[0][1]
    assert "without its mask" in res.skipped[0][1]
    fb_line = next(x for x in out.splitlines() if "fallback" in x and "IN the shares" in x)
    assert fb_line.startswith("1 particle(s)") and "empty: automatic mask (mask has no" in fb_line
    ex_line = next(x for x in out.splitlines() if "EXCLUDED" in x)
    assert ex_line.startswith("1 particle(s)") and "tiny (" in ex_line
    rows = {r["sample"]: r for r in read_csv(tmp_path / "p_shares.csv") if r["class"] == CLASSES[0]}
    assert int(rows["s0"]["n"]) == 4 and rows["s0"]["fallback"] == "1"  # q0 q2 q4 + empty
    assert rows["s0"]["excluded"] == "1" and rows["s1"]["fallback"] == "0"
    assert int(rows["s0"]["n"]) + int(rows["s1"]["n"]) == 7  # 8 particles, 1 excluded
    pred = {r["id"]: r for r in read_csv(tmp_path / "p.csv")}
    assert "tiny" not in pred and pred["empty"]["fallback"].startswith("automatic mask")
    assert [r["id"] for r in read_csv(tmp_path / "p_excluded.csv")] == ["tiny"]
    # the fallback is the SVM ensemble on the features of the particle without a mask file
    bare = _particles(tmp_path / "b", {"empty": (img, None)})
    lm = load_model(model)
    want, ids = lm.predict_proba(load_dataset(bare))
    np.testing.assert_allclose(res.probs[res.ids.index("empty")], want[ids.index("empty")],
                               atol=1e-9)  # fmt: skip


def test_predict_loads_stored_quantifiers(tmp_path, tiny_dataset, capsys):
    rng = np.random.default_rng(1)
    ds_dir = tiny_dataset(counts=(4, 3, 3), samples=0)
    y, p = draw(rng, CAL_PRIOR, 400)[::-1]
    write_model_folder(tmp_path / "m", extra={"quantifiers": {"file": "quantifiers.pkl"}})
    q = fit_quantifiers(p, y, FAST)
    save_quantifiers(q, tmp_path / "m" / "quantifiers.pkl")  # as trained before the choice
    res = predict(tmp_path / "m", ds_dir, tmp_path / "p.csv",
                  config=PredictConfig(device="cpu", n_boot=50))  # fmt: skip
    assert "predates the per-model choice" in res.quantifier_note
    assert all(r.recommended == "cc" for r in res.share_rows)  # no oof.csv: the fallback
    capsys.readouterr()
    sel = select_method(p, y, None, config=SelectConfig(repeats=1, n_prevalences=3,
                        n_natural=1, n_boot=50, n_cal_boot=10))  # fmt: skip
    save_quantifiers(q.with_selection(sel), tmp_path / "m" / "quantifiers.pkl")
    res = predict(tmp_path / "m", ds_dir, tmp_path / "p.csv",
                  config=PredictConfig(device="cpu", n_boot=50))  # fmt: skip
    out = capsys.readouterr().out
    assert all(r.recommended == sel.chosen for r in res.share_rows)
    assert f"method: {sel.chosen.upper()}, chosen for this model" in out
    assert res.quantifier_note == "" and "EXCLUDED" not in out
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "names no micrograph" in notes[0]  # only the resampling note
    assert {r.sample for r in res.share_rows} == {"all"}
    assert not (tmp_path / "p_shares.png").exists()  # one sample: no comparison plot
    assert all(not math.isnan(r.methods["pacc"][0]) for r in res.share_rows)
    info = json.loads((tmp_path / "m" / "model.json").read_text())
    assert info["quantifiers"]["file"] == "quantifiers.pkl"


def test_share_config_validation():
    for kw in ({"n_boot": 10}, {"level": 1.0}, {"seed": -1}):
        with pytest.raises(ValueError):
            ShareConfig(**kw)


def test_shares_redraw_micrographs_named_in_particles_csv(tmp_path, tiny_dataset):
    """A ``micrograph`` column: a sample of MIN_GROUPS or more micrographs gets intervals
    that redraw whole micrographs, and shares.csv says so (micrographs, resampling); the
    data layer reads the column, and the imaging unit falls back to the sample without it."""
    from lipoclass.quantify import MIN_GROUPS

    rng = np.random.default_rng(2)
    ds_dir = tiny_dataset(counts=(8, 6, 6), samples=0)
    path = ds_dir / "particles.csv"
    rows = read_csv(path)
    for i, r in enumerate(rows):
        r["sample"], r["micrograph"] = ("lotA" if i < 14 else "lotB"), f"mic{i % 7}"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    ds = load_dataset(ds_dir)
    assert [p.micrograph for p in ds.particles[:3]] == ["mic0", "mic1", "mic2"]
    assert ds.micrographs_of([ds.particles[0].id]) == ["mic0"]
    y, p = draw(rng, CAL_PRIOR, 400)[::-1]
    write_model_folder(tmp_path / "m", extra={"quantifiers": {"file": "quantifiers.pkl"}})
    save_quantifiers(fit_quantifiers(p, y, FAST), tmp_path / "m" / "quantifiers.pkl")
    res = predict(tmp_path / "m", ds_dir, tmp_path / "p.csv",
                  config=PredictConfig(device="cpu", n_boot=50), verbose=False)  # fmt: skip
    got = {(r["sample"], r["class"]): r for r in read_csv(tmp_path / "p_shares.csv")}
    assert 7 >= MIN_GROUPS
    assert got[("lotA", CLASSES[0])]["micrographs"] == "7"
    assert got[("lotA", CLASSES[0])]["resampling"] == "micrographs"
    assert {r.resampling for r in res.share_rows} == {"micrographs"}
    # without the column: the micrograph is not known, particles are redrawn
    plain = tiny_dataset(counts=(8, 6, 6), samples=2)
    ds2 = load_dataset(plain)
    assert ds2.micrographs_of([q.id for q in ds2.particles]) == [q.sample for q in ds2.particles]
    res = predict(tmp_path / "m", plain, tmp_path / "q.csv",
                  config=PredictConfig(device="cpu", n_boot=50), verbose=False)  # fmt: skip
    assert {(r.micrographs, r.resampling) for r in res.share_rows} == {(0, "particles")}
