"""The detector's liposome verifier: distractors rejected with a reason and kept in
detections.csv, scores against a truth (detect --truth), training a verifier from a lab's
annotations (detect-train, with review negatives), and the synthetic distractors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from lipoclass.choices import CANDIDATE_FINDERS
from lipoclass.cli import main
from lipoclass.errors import LipoclassError
from lipoclass.micrograph import match_instances, read_label_image
from lipoclass.micrograph.detect import DetectConfig, detect_candidates
from lipoclass.micrograph.verify import (
    DETECT_TRAIN_ENSEMBLE,
    DETECT_TRAIN_LABELS,
    PRIOR_SHIFT,
    Verifier,
    check_ensemble,
    load_verifier,
)
from lipoclass.synth import MicrographConfig, render_micrograph, synthesize_micrographs

PX = 1.5


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small micrographs with many distractors (seeds unused in verifier training)."""
    out = tmp_path_factory.mktemp("messy") / "syn"
    synthesize_micrographs("lamellarity", out, count=3, size=384, density=0.25, seed=777,
                           pixel_size_nm=PX, ice=12.0, debris=20.0, carbon=1.0,
                           gradient=0.4, touching=0.5)  # fmt: skip
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_verifier_raises_precision_on_distractors() -> None:
    cfg = MicrographConfig(size=512, density=0.2, seed=4242, pixel_size_nm=1.2, ice=10.0,
                           debris=15.0, carbon=1.0, touching=0.5, gradient=0.3)  # fmt: skip
    mic = render_micrograph(cfg, 0)
    truth = mic.labels.astype(np.int64)
    raw = detect_candidates(mic.image, DetectConfig(verifier="none"), 1.2)
    ver = detect_candidates(mic.image, DetectConfig(), 1.2)
    assert raw.accepted.all() and len(ver) == len(raw)
    assert (~ver.accepted).sum() >= 3  # distractors rejected ...
    assert all(r.startswith("low liposome score") for r, a in zip(ver.reason, ver.accepted)
               if not a)  # fmt: skip
    assert np.all(ver.score[~ver.accepted] < ver.score[ver.accepted].min() + 1e-9)
    m_raw, m_ver = match_instances(truth, raw.labels), match_instances(truth, ver.labels)
    assert m_ver.precision > m_raw.precision  # ... so precision rises
    assert m_ver.recall >= m_raw.recall - 0.1  # and few liposomes are lost


def test_detect_truth_scores_and_rejected_rows(messy: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "det"
    mics = [str(p) for p in sorted((messy / "micrographs").glob("*.tif"))]
    rc = main(["detect", *mics, "--truth", str(messy / "labels"), "--out", str(out),
               "--classes", str(messy / "annotations.csv")])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0
    assert "precision" in text.lower() or "prec" in text
    scores = _rows(out / "detection_scores.csv")
    assert [r["micrograph"] for r in scores] == ["mic0001", "mic0002", "mic0003", "all"]
    for r in scores[:3]:  # the figures agree with matching the written label images
        found = read_label_image(out / f"{r['micrograph']}.tif")
        truth = read_label_image(messy / "labels" / f"{r['micrograph']}.tif")
        m = match_instances(truth, found)
        assert int(r["matched"]) == len(m.pairs) and int(r["detected"]) == m.n_found
        assert float(r["f1"]) == pytest.approx(m.f1, abs=1e-4)
    assert float(scores[-1]["recall"]) >= 0.6
    lo, hi = float(scores[-1]["precision_low"]), float(scores[-1]["precision_high"])
    assert lo <= float(scores[-1]["precision"]) <= hi and "95 % interval" in text
    assert scores[0]["precision_low"] == ""  # a single micrograph's row has none
    rows = _rows(out / "detections.csv")
    rejected = [r for r in rows if r["status"] == "rejected"]
    accepted = [r for r in rows if r["status"] == "accepted"]
    assert rejected and all(r["reason"] and r["score"] and not r["instance"] for r in rejected)
    assert all(r["instance"] and not r["reason"] for r in accepted)
    n_lab = sum(int(read_label_image(out / f"mic000{k}.tif").max()) for k in (1, 2, 3))
    assert len([r for r in accepted if r["instance"]]) == n_lab
    assert all((out / "overlays" / f"mic000{k}.png").is_file() for k in (1, 2, 3))
    # the overlays draw the annotated particles that no detection matched in reddish purple
    import imagecodecs

    for r in scores[:3]:
        rgb = imagecodecs.png_decode((out / "overlays" / f"{r['micrograph']}.png").read_bytes())
        drawn = np.all(rgb.reshape(-1, 3) == (204, 121, 167), axis=1).any()
        assert drawn == (int(r["matched"]) < int(r["truth"]))
    assert any(int(r["matched"]) < int(r["truth"]) for r in scores[:3])
    # the other candidate finder scored on the same annotated micrographs, beside this run
    comp = {r["finder"]: r for r in _rows(out / "finder_comparison.csv")}
    assert set(comp) == set(CANDIDATE_FINDERS) and comp["ring"]["used"] == "yes"
    assert comp["ring+learned"]["used"] == "no"
    assert comp["ring"]["f1"] == scores[-1]["f1"] and comp["ring"]["truth"] == scores[-1]["truth"]
    other = comp["ring+learned"]
    line = next(t for t in text.splitlines() if "--finder ring+learned: precision" in t)
    assert float(line.split("precision ")[1][:5]) == pytest.approx(float(other["precision"]),
                                                                abs=1e-3)  # fmt: skip
    assert int(other["detected"]) >= int(comp["ring"]["detected"])  # it only adds detections
    diff = float(other["f1"]) - float(comp["ring"]["f1"])
    assert float(other["f1_difference"]) == pytest.approx(diff, abs=2e-4)
    assert float(other["f1_difference_low"]) <= float(other["f1_difference_high"])
    assert "3 annotated micrograph(s): too few to choose between finders" in text
    # the annotated classes' shares among all annotated and among the found liposomes
    table = {(r["micrograph"], int(r["instance"])): r["label"]
             for r in _rows(messy / "annotations.csv")}  # fmt: skip
    by_class = [r for r in _rows(out / "detection_by_class.csv") if r["used"] == "yes"]
    truth_n: dict[str, int] = {}
    found_n: dict[str, int] = {}
    for k in (1, 2, 3):
        name = f"mic000{k}"
        truth = read_label_image(messy / "labels" / f"{name}.tif")
        for inst in np.unique(truth)[1:]:
            truth_n[table[name, inst]] = truth_n.get(table[name, inst], 0) + 1
        m = match_instances(truth, read_label_image(out / f"{name}.tif"))
        for inst in m.pairs[:, 0]:
            found_n[table[name, inst]] = found_n.get(table[name, inst], 0) + 1
    assert {r["class"]: int(r["truth"]) for r in by_class} == truth_n
    assert {r["class"]: int(r["matched"]) for r in by_class if int(r["matched"])} == found_n
    assert sum(float(r["found_share"]) for r in by_class) == pytest.approx(100, abs=1e-2)
    for r in by_class:
        change = float(r["found_share"]) - float(r["true_share"])
        assert float(r["change"]) == pytest.approx(change, abs=2e-4)
    assert {r["finder"] for r in _rows(out / "detection_by_class.csv")} == set(CANDIDATE_FINDERS)
    assert "too few to say whether detection changes the shares" in text


def test_class_shares_show_a_detector_that_misses_one_class() -> None:
    from lipoclass.micrograph.detect import _class_lines
    from lipoclass.micrograph.match import InstanceMatch, class_shares

    rng = np.random.default_rng(0)
    classes = [{i: "multi" if i <= 3 else "uni" for i in range(1, 21)} for _ in range(8)]

    def found(keep: list[int]) -> InstanceMatch:
        pairs = np.stack([keep, keep], axis=1).astype(np.int64)
        return InstanceMatch(pairs, np.full(len(keep), 0.8), 20, len(keep))

    # half the unilamellar liposomes missed, every multilamellar one found
    biased = [found([1, 2, 3, *range(4 + k % 2, 21, 2)]) for k in range(8)]
    shares = {c.label: c for c in class_shares(biased, classes)}
    assert shares["multi"].true_share == pytest.approx(15.0)
    assert shares["multi"].recall == 1.0 and shares["uni"].recall == pytest.approx(0.5)
    assert shares["multi"].change > 10 and shares["multi"].low > 0
    assert shares["uni"].change == pytest.approx(-shares["multi"].change)
    text = "\n".join(_class_lines({"ring": list(shares.values())}, 8))
    assert "detection changes the shares (multi +11.1 pp, uni -11.1 pp)" in text
    # misses at random: the change's interval holds 0
    fair = [found(sorted(rng.choice(np.arange(1, 21), 12, replace=False).tolist()))
            for _ in range(8)]  # fmt: skip
    shares = {c.label: c for c in class_shares(fair, classes)}
    assert all(c.low <= 0 <= c.high for c in shares.values())
    assert "no clear change" in "\n".join(_class_lines({"ring": list(shares.values())}, 8))
    assert np.isnan(class_shares(fair[:1], classes[:1])[0].low)  # no interval from one
    with pytest.raises(ValueError, match="a class table per match"):
        class_shares(fair, classes[:3])


def test_detect_classes_bad_input(messy: Path, tmp_path: Path, capsys) -> None:
    mic = str(messy / "micrographs" / "mic0001.tif")
    rc = main(["detect", mic, "--out", str(tmp_path / "a"), "--classes", str(tmp_path / "c")])
    assert rc != 0 and "--classes goes with --truth" in capsys.readouterr().err
    other = tmp_path / "other.csv"
    other.write_text("micrograph,instance,label\nmic0099,1,unilamellar\n")
    rc = main(["detect", mic, "--out", str(tmp_path / "b"), "--truth",
               str(messy / "labels" / "mic0001.tif"), "--classes", str(other)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc != 0 and "other.csv: no row names one of the micrographs (mic0001.tif)" in err
    assert not (tmp_path / "b").exists()
    # several micrographs: every row must say which one (instance ids repeat across them)
    bare = tmp_path / "bare.csv"
    bare.write_text("instance,label\n1,unilamellar\n")
    mics = [mic, str(messy / "micrographs" / "mic0002.tif")]
    for cmd in (["detect", *mics, "--truth", str(messy / "labels")],
                ["crop", *mics, "--labels", str(messy / "labels")]):  # fmt: skip
        rc = main([*cmd, "--out", str(tmp_path / "c"), "--classes", str(bare)])
        err = capsys.readouterr().err
        assert rc != 0 and "bare.csv row 1: no micrograph given, but there are 2" in err
        assert not (tmp_path / "c").exists()


def test_finder_recommendation_needs_a_clear_gain_on_enough_micrographs(tmp_path: Path) -> None:
    from lipoclass.micrograph.detect import DetectResult
    from lipoclass.micrograph.match import InstanceMatch

    def m(matched: int, truth: int, found: int) -> InstanceMatch:
        pairs = np.stack([np.arange(1, matched + 1)] * 2, axis=1).astype(np.int64)
        return InstanceMatch(pairs, np.full(matched, 0.8), truth, found)

    scores = {f"m{k}": m(6, 10, 7) for k in range(6)}
    scores["all"] = m(36, 60, 42)
    other = m(48, 60, 52)

    def text(ci: tuple[float, float], n: int = 6) -> str:
        sc = {**{f"m{k}": scores[f"m{k}"] for k in range(n)}, "all": scores["all"]}
        res = DetectResult(tmp_path, {}, {}, sc, other_finders={"ring+learned": (other, ci)})
        return res.text()

    assert "clearly higher F1" in text((0.05, 0.2)) and "use --finder ring+learned" in text(
        (0.05, 0.2)
    )
    assert "no clear difference" in text((-0.02, 0.1))
    assert "clearly lower F1" in text((-0.2, -0.05))
    assert "too few to choose" in text((0.05, 0.2), n=4)  # a clear gain, but 4 micrographs


def test_detect_train_from_labels_and_negatives(messy: Path, tmp_path: Path, capsys) -> None:
    mics = [str(p) for p in sorted((messy / "micrographs").glob("*.tif"))]
    neg = tmp_path / "detection_negatives.csv"
    neg.write_text("micrograph,x,y,diameter_px,id\n"
                   f"{mics[0]},10,10,20,mic0001_9999\n")  # fmt: skip
    out = tmp_path / "ver"
    rc = main(["detect-train", *mics, "--labels", str(messy / "labels"), "--negatives",
               str(neg), "--out", str(out), "--ensemble", "2", "--prior-shift",
               "--blanks", "0"])  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "annotated liposome(s)" in cap.out and "2 networks" in cap.out
    ver = load_verifier(str(out))
    assert isinstance(ver, Verifier) and 0 < ver.threshold < 1
    doc = json.loads((out / "verifier.json").read_text())
    assert doc["info"]["positives"] > 10 and (out / "training.csv").is_file()
    # two networks stored as one of 2 x 32 hidden units, with the default verifier's shift
    assert len(ver.layers) == 1 and ver.layers[0][0].shape[1] == 2 * 32
    assert doc["info"]["ensemble"] == 2 and doc["info"]["prior_shift"] == PRIOR_SHIFT
    assert doc["info"]["labels_rule"] == DETECT_TRAIN_LABELS
    assert ver.prior is not None and ver.prior["pi_train"] == doc["info"]["positive_share"]
    det = tmp_path / "det"
    assert main(["detect", mics[0], "--verifier", str(out), "--out", str(det)]) == 0
    assert read_label_image(det / "mic0001.tif").max() >= 3


def test_detect_train_without_prior_shift_and_bad_ensembles(
    messy: Path, tmp_path: Path, capsys
) -> None:
    """--no-prior-shift stores no shift; the logistic regression defaults to one model;
    --labels-rule painted is recorded; a bad --ensemble is one error line before any work, and
    no output folder."""
    mics = [str(p) for p in sorted((messy / "micrographs").glob("*.tif"))]
    base = ["detect-train", *mics, "--labels", str(messy / "labels")]
    out = tmp_path / "ver"
    rc = main([*base, "--model", "logistic", "--no-prior-shift", "--blanks", "2",
               "--labels-rule", "painted", "--out", str(out)])  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "no prior shift" in cap.out and "2 blank" in cap.out
    ver = load_verifier(str(out))
    assert ver is not None and ver.model == "logistic" and ver.prior is None
    info = json.loads((out / "verifier.json").read_text())["info"]
    assert "prior_shift" not in info and info["blanks"] == 2 and info["labels_rule"] == "painted"
    # the blanks' candidates are extra negative rows of the training table
    with (out / "training.csv").open() as f:
        rows = list(csv.DictReader(f))
    blank_rows = [r for r in rows if r["micrograph"].startswith("blank-")]
    assert blank_rows and all(r["liposome"] == "0" for r in blank_rows)
    assert {r["micrograph"] for r in blank_rows} <= {"blank-0", "blank-1"}
    assert check_ensemble(None, "mlp") == DETECT_TRAIN_ENSEMBLE
    assert check_ensemble(None, "logistic") == 1
    bad_args = [(["--ensemble", "0"], "at least 1"),
                (["--ensemble", "3", "--model", "logistic"], "needs model 'mlp'"),
                (["--blanks", "-1"], ">= 0")]  # fmt: skip
    for bad, what in bad_args:
        bad_out = tmp_path / "bad"
        rc = main([*base, *bad, "--out", str(bad_out)])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("lipoclass: error:") and what in err
        assert bad[0] in err and len(err.strip().splitlines()) == 1
        assert not bad_out.exists()
    with pytest.raises(SystemExit):
        main([*base, "--labels-rule", "together", "--out", str(tmp_path / "bad")])
    assert "--labels-rule: invalid choice" in capsys.readouterr().err


def test_bad_verifier_is_one_error(messy: Path, tmp_path: Path, capsys) -> None:
    mic = str(messy / "micrographs" / "mic0001.tif")
    out = tmp_path / "o"
    rc = main(["detect", mic, "--verifier", str(tmp_path / "nothere"), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("lipoclass: error:") and "nothere" in err
    assert not out.exists()
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    rc = main(["detect", mic, "--verifier", str(bad), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "bad.json" in err and not out.exists()


def test_synth_distractors_deterministic_and_validated() -> None:
    base = MicrographConfig(size=256, seed=3, pixel_size_nm=1.0, carbon=0.0)
    with_d = MicrographConfig(size=256, seed=3, pixel_size_nm=1.0, carbon=0.0, debris=30.0,
                              gradient=0.5)  # fmt: skip
    a, b = render_micrograph(base, 0), render_micrograph(with_d, 0)
    assert np.array_equal(a.labels, b.labels)  # distractors never change the liposomes
    assert not np.allclose(a.image, b.image)
    assert np.array_equal(render_micrograph(with_d, 0).image, b.image)
    with pytest.raises(ValueError, match="gradient"):
        MicrographConfig(gradient=2.0)
    with pytest.raises(ValueError, match="debris"):
        MicrographConfig(debris=-1.0)


def test_detect_source_hands_over_rejected_candidates() -> None:
    """Micrograph predict draws the verifier's rejects (grey) from ``DetectSource.rejected``."""
    from lipoclass.micrograph import DetectSource, Micrograph

    cfg = MicrographConfig(size=384, density=0.2, seed=4243, pixel_size_nm=1.2, ice=10.0,
                           debris=15.0, carbon=1.0)  # fmt: skip
    m = render_micrograph(cfg, 0)
    mic = Micrograph(Path("m.tif"), m.image.astype(np.float32), 1.2)
    det = detect_candidates(mic.image, DetectConfig(), 1.2)
    src = DetectSource()
    kept = src.particles(mic)
    rejected = src.rejected(mic)
    assert len(kept) == int(det.labels.max())
    assert 0 < len(rejected) <= int((~det.accepted).sum())
    assert all(a.key.startswith("rejected") for a in rejected)
    assert src.rejected(mic) == []  # handed over once


def test_detect_train_help_lists_only_its_options(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["detect-train", "--help"])
    text = capsys.readouterr().out
    assert "--min-diameter" in text and "--threshold" in text and "--negatives" in text
    options = [line.split()[0] for line in text.splitlines() if line.startswith("  -")]
    assert "--verifier" not in options and "--min-score" not in options  # it makes one
    with pytest.raises(SystemExit):
        main(["detect", "--help"])
    assert "--verifier" in capsys.readouterr().out


def test_verifier_models_round_trip_and_reasons(tmp_path: Path) -> None:
    """Both verifier models fit, save to JSON and load back to the same scores; the reason
    of a rejection names the feature that pulls the score down."""
    from lipoclass.micrograph.detect import FEATURES
    from lipoclass.micrograph.verify import REASONS, TrainingSet, fit_verifier

    rng = np.random.default_rng(0)
    n, f = 300, len(FEATURES)
    x = rng.normal(size=(n, f))
    y = (x[:, 1] + 0.5 * x[:, 2] ** 2 > 0.5).astype(np.int64)  # a nonlinear rule
    ts = TrainingSet(x, y, [f"m{i % 6}" for i in range(n)])
    for model in ("mlp", "logistic"):
        ver, stats = fit_verifier(ts, model=model)
        assert ver.model == model and stats["oof_precision"] > 0.7
        ver.save(tmp_path / f"{model}.json")
        back = Verifier.load(tmp_path / f"{model}.json")
        assert back.model == model and len(back.layers) == len(ver.layers)
        assert np.allclose(back.score(x), ver.score(x), atol=1e-4)
        low = x[np.argsort(ver.score(x))[:5]]
        assert all(r.removeprefix("low liposome score: ") in REASONS.values()
                   for r in ver.reasons(low))  # fmt: skip
    probe = np.zeros((1, f))
    probe[0, 1] = -4.0  # the feature the rule depends on, far on the negative side
    assert ver.reasons(probe) == [f"low liposome score: {REASONS[FEATURES[1]]}"]
    doc = json.loads((tmp_path / "mlp.json").read_text())
    doc["layers"][0]["bias"] = doc["layers"][0]["bias"][:-1]  # wrong shape
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(LipoclassError, match="malformed"):
        Verifier.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="model"):
        fit_verifier(ts, model="forest")


def test_prior_shift_follows_the_micrographs_share() -> None:
    """The EM estimate of a micrograph's liposome share tracks the truth; with ``upper`` 0
    scores are only lowered, where the share is below the training share; few candidates
    hardly move; empty stays empty."""
    from lipoclass.micrograph.verify import prior_shift

    rng = np.random.default_rng(3)
    pt = 0.3

    def scores(share: float, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
        y = rng.random(n) < share
        v = np.where(y, rng.normal(1.5, 1.0, n), rng.normal(-1.5, 1.0, n))
        return 1 / (1 + np.exp(-(3 * v + np.log(pt / (1 - pt))))), y  # calibrated at pt

    for share in (0.05, 0.3, 0.7):
        p, _ = scores(share)
        q, pi = prior_shift(p, pt, clip=5.0)
        assert abs(pi - share) < 0.04
        assert np.all(q <= p) if share < pt else np.all(q >= p - 1e-12)
    p, y = scores(0.05)
    q, _ = prior_shift(p, pt, upper=0.0)
    assert np.all(q < p) and ((q >= 0.5) != y).sum() < ((p >= 0.5) != y).sum()
    hi, _ = scores(0.7)
    assert np.array_equal(prior_shift(hi, pt, upper=0.0)[0], hi)
    few, pi = prior_shift(np.array([0.02, 0.9]), pt, upper=0.0)
    assert abs(pi - pt) < 0.05 and few[1] > 0.85
    assert prior_shift(np.zeros(0), pt)[0].shape == (0,)
    with pytest.raises(ValueError, match="method"):
        prior_shift(p, pt, method="median")


def test_network_ensemble_is_one_network(tmp_path: Path) -> None:
    """``ensemble`` networks are stored as one (hidden layers side by side) whose logit is
    the mean of theirs; its prior shift (info) survives a save and load, and a malformed one
    is refused."""
    from lipoclass.micrograph.detect import FEATURES
    from lipoclass.micrograph.verify import TrainingSet, fit_verifier

    rng = np.random.default_rng(0)
    n, f = 300, len(FEATURES)
    x = rng.normal(size=(n, f))
    y = (x[:, 1] + 0.5 * x[:, 2] ** 2 > 0.5).astype(np.int64)
    ts = TrainingSet(x, y, [f"m{i % 6}" for i in range(n)])
    prior = {"method": "em", "damping": 1.0, "pseudo": 20.0, "clip": 2.0, "upper": 0.0}
    ens, _ = fit_verifier(ts, ensemble=3, oof=False, threshold=0.3, info={"prior_shift": prior})
    nets = [fit_verifier(ts, seed=s, oof=False, threshold=0.3)[0] for s in (0, 1000, 2000)]
    assert ens.layers[0][0].shape == (f, 3 * nets[0].layers[0][0].shape[1])
    logit = np.mean([np.log(v.score(x) / (1 - v.score(x))) for v in nets], axis=0)
    assert np.allclose(ens.score(x), 1 / (1 + np.exp(-logit)), atol=1e-9)
    assert ens.info["ensemble"] == 3 and ens.info["positive_share"] == round(y.mean(), 6)
    ens.save(tmp_path / "ens.json")
    back = Verifier.load(tmp_path / "ens.json")
    assert back.prior == {"pi_train": round(y.mean(), 6), **prior}
    shifted, raw = back.micrograph_scores(x[y == 0])  # a micrograph of negatives only
    assert np.all(shifted < raw) and np.allclose(raw, ens.score(x[y == 0]), atol=1e-4)
    doc = json.loads((tmp_path / "ens.json").read_text())
    doc["info"]["prior_shift"]["method"] = "median"
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(LipoclassError, match="prior shift"):
        Verifier.load(tmp_path / "bad.json")


def test_detect_explains_a_rejection_by_the_prior_shift() -> None:
    """A candidate whose score only the micrograph's low liposome share pushes below the
    threshold is rejected with that reason (not silently)."""
    cfg = MicrographConfig(size=384, density=0.1, seed=4243, pixel_size_nm=1.2, ice=10.0,
                           debris=15.0, carbon=1.0)  # fmt: skip
    mic = render_micrograph(cfg, 0)
    base = load_verifier("default")
    assert base is not None
    raw = detect_candidates(mic.image, DetectConfig(), 1.2, verifier=base)
    info = {**base.info, "prior_shift": {"method": "em", "damping": 1.0, "pseudo": 0.0,
                                         "clip": 8.0, "upper": 0.0},
            "positive_share": 0.99}  # fmt: skip
    strict = Verifier(base.features, base.mean, base.scale, base.coef, base.intercept,
                      base.threshold, info, base.layers)  # fmt: skip
    det = detect_candidates(mic.image, DetectConfig(), 1.2, verifier=strict)
    lowered = raw.accepted & ~det.accepted
    assert lowered.any() and not (det.accepted & ~raw.accepted).any()
    assert all("share of liposomes" in det.reason[i] for i in np.flatnonzero(lowered))
    assert np.all(det.score <= raw.score + 1e-12)


def test_ring_bank_threads_agree() -> None:
    """The ring filter bank gives the same candidates on one thread as on several."""
    from lipoclass.micrograph.detect import _bandpass, _ring_candidates

    m = render_micrograph(MicrographConfig(size=256, density=0.2, seed=11, pixel_size_nm=1.0), 0)
    z, _low = _bandpass(m.image.astype(np.float32), 1.2)
    one = _ring_candidates(z, 5.0, 60.0, 5.0, threads=1)
    two = _ring_candidates(z, 5.0, 60.0, 5.0, threads=3)
    assert len(one) > 3 and np.allclose(np.asarray(one), np.asarray(two))


def test_ring_significance_edge_correction() -> None:
    """A ring cut by the image edge keeps a z-score: its significance is divided by the
    square root of the share of the ring inside the image; far from the edges nothing
    changes."""
    from lipoclass.micrograph.detect import _edge_correct

    sig = np.ones((64, 80), dtype=np.float32)
    _edge_correct(sig, 10.0)
    assert np.all(sig[12:-12, 12:-12] == 1.0)
    assert sig[0, 40] == pytest.approx(1 / np.sqrt(1 - np.arccos(0.05) / np.pi), rel=1e-4)
    assert sig[0, 0] == pytest.approx(2.0)  # the share is floored at 1/4
    assert np.allclose(sig, sig[::-1]) and np.allclose(sig, sig[:, ::-1])


def test_features_tell_membrane_from_blob_and_film_edge() -> None:
    """A thin dark ring (membrane) and a solid dark disk of the same size differ in
    rim_side_balance (a blob's edge is dark inside, light outside) and rim_line; a straight
    film edge through a ring gives a one-sided interior step (inner_step)."""
    from scipy import ndimage as ndi

    from lipoclass.micrograph.detect import FEATURES

    yy, xx = np.mgrid[:160, :160]
    rho = np.hypot(yy - 80, xx - 80)
    rng = np.random.default_rng(0)

    def best(image: np.ndarray) -> dict[str, float]:
        img = ndi.gaussian_filter(image, 1.0) + rng.normal(0, 0.2, image.shape)
        det = detect_candidates(100.0 - img, DetectConfig(min_diameter=40, max_diameter=120,
                                unit="px", verifier="none"))  # fmt: skip
        i = int(np.argmin(np.hypot(det.cy - 80, det.cx - 80)))
        assert np.hypot(det.cy[i] - 80, det.cx[i] - 80) < 5
        return dict(zip(FEATURES, det.features[i]))

    ring = best((np.abs(rho - 30) < 1.5).astype(float))
    disk = best((rho < 30).astype(float))
    edge = best((np.abs(rho - 30) < 1.5) + 0.5 * (xx > 85))
    assert disk["rim_side_balance"] > ring["rim_side_balance"] + 1.0
    assert ring["rim_line"] > disk["rim_line"] + 1.0
    assert edge["inner_step"] > ring["inner_step"] + 0.1


def test_fullres_profile_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The twelfth round's full-resolution profile (an experiment): off by default (the
    features are FEATURES alone); switched on, its columns follow them unchanged, and a solid
    disk's interior is as dark as its edge while a membrane's is not (fr_inside)."""
    from scipy import ndimage as ndi

    from lipoclass.micrograph import detect as D

    assert D._FULLRES is False
    yy, xx = np.mgrid[:160, :160]
    rho = np.hypot(yy - 80, xx - 80)
    rng = np.random.default_rng(0)
    cfg = DetectConfig(min_diameter=40, max_diameter=120, unit="px", verifier="none")

    def both(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        img = 100.0 - (ndi.gaussian_filter(image, 1.0) + rng.normal(0, 0.2, image.shape))
        off = detect_candidates(img, cfg, verifier=False)
        monkeypatch.setattr(D, "_FULLRES", True)
        on = detect_candidates(img, cfg, verifier=False)
        monkeypatch.setattr(D, "_FULLRES", False)
        i = int(np.argmin(np.hypot(off.cy - 80, off.cx - 80)))
        return off.features, on.features, i

    fr = {}
    for name, shape in (("ring", np.abs(rho - 30) < 1.5), ("disk", rho < 30)):
        off, on, i = both(shape.astype(float))
        assert off.shape[1] == len(D.FEATURES)
        assert on.shape[1] == len(D.FEATURES) + len(D.FULLRES_FEATURES)
        np.testing.assert_array_equal(on[:, : off.shape[1]], off)
        fr[name] = dict(zip(D.FULLRES_FEATURES, on[i, off.shape[1] :]))
    assert fr["disk"]["fr_inside"] > fr["ring"]["fr_inside"] + 0.5
    assert fr["ring"]["fr_dip"] > 10


def test_suppression_keeps_the_outer_of_concentric_rings() -> None:
    from lipoclass.micrograph.detect import _CONCENTRIC_SIG, _suppress

    inner = (20.0, 100.0, 100.0, 20.0)  # (significance, cy, cx, radius): an inner lamella
    strong_outer = (0.8 * 20.0, 101.0, 100.0, 30.0)  # its liposome's outer membrane
    assert _suppress([inner, strong_outer]) == [strong_outer]
    weak_outer = (0.5 * _CONCENTRIC_SIG * 20.0, 101.0, 100.0, 30.0)  # e.g. a faint fringe
    assert _suppress([inner, weak_outer]) == [inner]
    off_centre = (0.8 * 20.0, 112.0, 100.0, 30.0)  # encloses it, but not concentric
    assert _suppress([inner, off_centre]) == [inner]
    apart = (15.0, 100.0, 160.0, 20.0)  # a neighbour touching it: both kept
    assert _suppress([inner, apart]) == [inner, apart]


def _ring_map(*rings: tuple[float, float, float]) -> np.ndarray:
    """A 200 x 200 px ring map with a dark membrane (peak 3 z, sigma 1.2 px) on each circle
    (cy, cx, r)."""
    yy, xx = np.mgrid[0:200, 0:200].astype(np.float32)
    return sum(
        3.0 * np.exp(-0.5 * ((np.hypot(yy - cy, xx - cx) - r) / 1.2) ** 2) for cy, cx, r in rings
    )


def test_suppression_by_arc_evidence() -> None:
    """Sixteenth round: a weaker ring replaces a stronger one that borrows its arc (here a
    small ring on its membrane, beside a touching neighbour), and not the other way round."""
    from lipoclass.micrograph.detect import _suppress

    left, right = (15.0, 100.0, 60.0, 20.0), (8.0, 100.0, 100.0, 20.0)  # two touching rings
    spurious = (12.0, 100.0, 86.0, 6.0)  # inside the right one, on its membrane at the contact
    z = _ring_map((100.0, 60.0, 20.0), (100.0, 100.0, 20.0))
    assert _suppress([left, right, spurious]) == [left, spurious]  # greedy: right one lost
    assert _suppress([left, right, spurious], z) == [left, right]
    # a weaker ring borrowing a true ring's arc stays dropped; the true one is kept
    true, borrower = (10.0, 100.0, 100.0, 20.0), (6.0, 100.0, 112.0, 14.0)
    z = _ring_map((100.0, 100.0, 20.0))
    assert _suppress([true, borrower], z) == [true]
    # a dark ring inside a stronger one with its own membrane (not borrowed): greedy as before
    outer, inner = (10.0, 100.0, 100.0, 40.0), (6.0, 100.0, 110.0, 12.0)
    z = _ring_map((100.0, 100.0, 40.0), (100.0, 110.0, 12.0))
    assert _suppress([outer, inner], z) == [outer]


def test_features_are_taken_at_the_scale_of_the_pixel_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Thirteenth round: a 1024 px micrograph at 0.5 nm/px is searched at 1 nm per working
    pixel (the 512 px floor) but its candidates are described at 2 nm, as on a 2048 px
    micrograph of the same sample: the same liposome gets the same features on both."""
    from lipoclass.micrograph import detect as D

    def ring_features(size: int) -> np.ndarray:
        rng = np.random.default_rng(size)
        img = rng.normal(100.0, 6.0, (size, size)).astype(np.float32)
        yy, xx = np.mgrid[:size, :size]
        c = size / 2
        img[np.abs(np.hypot(yy - c, xx - c) - 60) < 4] -= 12.0  # 60 nm membrane radius
        det = D.detect_candidates(img, DetectConfig(), 0.5, verifier=False)
        i = int(np.argmin(np.hypot(det.cy - c, det.cx - c) + 5 * np.abs(det.radii.mean(1) - 64)))
        return det.features[i]

    small, large = ring_features(1024), ring_features(2048)
    monkeypatch.setattr(D, "_NATURAL_FEATURES", False)
    floored = ring_features(1024)
    k = [D.FEATURES.index(f) for f in ("rim_z", "rim_minus_outer", "rim_line")]
    assert np.all(np.abs(small[k] - large[k]) < 0.25 * np.abs(floored[k] - large[k]))


def test_verifier_clips_features_to_the_training_range(tmp_path: Path) -> None:
    """``fit_verifier(clip=Q)`` stores the training quantiles as bounds: a feature beyond
    them scores as at the bound, in training, after a save and load, and in an ensemble; a
    file without bounds (before the fifteenth round) loads unclipped; bad bounds are refused."""
    from lipoclass.micrograph.detect import FEATURES
    from lipoclass.micrograph.verify import TrainingSet, fit_verifier

    rng = np.random.default_rng(1)
    n, f = 300, len(FEATURES)
    x = rng.normal(size=(n, f))
    y = (x[:, 1] + 0.5 * x[:, 2] ** 2 > 0.5).astype(np.int64)
    ts = TrainingSet(x, y, [f"m{i % 6}" for i in range(n)])
    ver, _ = fit_verifier(ts, ensemble=2, oof=False, threshold=0.3, clip=0.01)
    assert ver.bounds is not None and ver.info["clip"] == 0.01
    assert np.allclose(ver.bounds[0], np.quantile(x, 0.01, axis=0))
    assert np.allclose(ver.bounds[1], np.quantile(x, 0.99, axis=0))
    far = np.zeros((2, f))
    far[0, 1], far[1, 1] = ver.bounds[1][1] + 3.0, ver.bounds[1][1]  # beyond / at the bound
    s = ver.score(far)
    assert s[0] == pytest.approx(s[1], abs=1e-12)
    ver.save(tmp_path / "clip.json")
    back = Verifier.load(tmp_path / "clip.json")
    assert back.bounds is not None and np.allclose(back.score(x), ver.score(x), atol=1e-4)
    assert back.score(far)[0] == pytest.approx(back.score(far)[1], abs=1e-9)
    doc = json.loads((tmp_path / "clip.json").read_text())
    del doc["bounds"]
    (tmp_path / "old.json").write_text(json.dumps(doc))
    old = Verifier.load(tmp_path / "old.json")
    logit = np.log(old.score(far) / (1 - old.score(far)))
    assert old.bounds is None and logit[0] - logit[1] > 0.5  # unclipped: further is surer
    plain, _ = fit_verifier(ts, oof=False, threshold=0.3)
    assert plain.bounds is None and "bounds" not in json.dumps(plain.info)
    doc["bounds"] = {"low": [1.0] * f, "high": [0.0] * f}
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(LipoclassError, match="unreadable"):
        Verifier.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="clip"):
        fit_verifier(ts, oof=False, threshold=0.3, clip=0.6)


def test_verifier_on_some_features(tmp_path: Path) -> None:
    """A verifier fitted on some of ``FEATURES`` (fifteenth round: without the micrograph
    context) scores the detector's full feature matrix by its own columns, keeps them through
    a save and load, and one made for features out of order or unknown is refused."""
    from lipoclass.micrograph.detect import FEATURES
    from lipoclass.micrograph.verify import TrainingSet, fit_verifier

    rng = np.random.default_rng(2)
    n, f = 300, len(FEATURES)
    x = rng.normal(size=(n, f))
    y = (x[:, 1] + 0.5 * x[:, 2] ** 2 > 0.5).astype(np.int64)
    ts = TrainingSet(x, y, [f"m{i % 6}" for i in range(n)])
    some = tuple(q for q in FEATURES if q not in ("rim_z", "strong_share"))
    ver, _ = fit_verifier(ts, oof=False, threshold=0.3, features=some)
    cols = [FEATURES.index(q) for q in some]
    assert ver.features == some and ver.layers[0][0].shape[0] == len(some)
    assert np.array_equal(ver.score(x), ver.score(x[:, cols]))
    x2 = x.copy()
    x2[:, FEATURES.index("strong_share")] = 1e6  # a left-out feature does not matter
    assert np.array_equal(ver.score(x2), ver.score(x))
    assert len(ver.reasons(x[:3])) == 3
    ver.save(tmp_path / "some.json")
    back = Verifier.load(tmp_path / "some.json")
    assert back.features == some and np.allclose(back.score(x), ver.score(x), atol=1e-4)
    doc = json.loads((tmp_path / "some.json").read_text())
    doc["features"] = [doc["features"][1], doc["features"][0], *doc["features"][2:]]
    (tmp_path / "order.json").write_text(json.dumps(doc))
    with pytest.raises(LipoclassError, match="other features"):
        Verifier.load(tmp_path / "order.json")
    with pytest.raises(ValueError, match="features"):
        fit_verifier(ts, oof=False, threshold=0.3, features=("no_such_feature",))
