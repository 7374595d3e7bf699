"""The method chosen per model (lipoclass.quantify.select), honest "not determinable" shares,
and predict's audit options (--audit, --audit-draw) through the CLI."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from lipoclass.cli import main
from lipoclass.predict import ShareConfig, class_shares, write_shares
from lipoclass.quantify import (
    BOUND_METHOD,
    MAX_WIDTH,
    QuantifierConfig,
    SelectConfig,
    fit_quantifiers,
    select_method,
)
from lipoclass.quantify.select import BOUNDED_KEY, _verdict
from test_predict import CLASSES, read_csv, write_model_folder
from test_shares import draw

FAST_SEL = SelectConfig(repeats=1, n_prevalences=3, n_natural=2, sample_size=300, n_boot=50,
                        n_cal_boot=10)  # fmt: skip


def test_verdict_rule():
    def t(mae, cov):
        return {"mae": mae, "coverage": cov, "width": 0.1}

    table = {"cc": t(0.05, 0.5), "acc": t(0.02, 0.93), "pacc": t(0.01, 0.85), "emq": t(0.03, 0.95)}
    meths = tuple(table)
    chosen, why = _verdict(table, meths, 0.90, 40, 0.95)
    assert chosen == "acc" and "lowest error" in why and "CC 5.0" in why
    table["acc"]["coverage"] = 0.5
    table["emq"]["coverage"] = 0.5
    chosen, why = _verdict(table, meths, 0.90, 40, 0.95)
    assert chosen == "cc" and "no method" in why and "PACC 85%" in why
    assert "not the bias" in why and "covered 50%" in why and "--audit" in why
    table["cc"]["coverage"] = 0.96  # CC qualifies and is the only one: chosen on merit
    assert _verdict(table, meths, 0.90, 40, 0.95)[0] == "cc"
    table["cc"]["coverage"] = 0.5
    table["acc"] = {"mae": 0.02, "coverage": 0.95, "width": 0.4}  # covers, but too wide
    chosen, why = _verdict(table, meths, 0.90, 40, 0.95)
    assert chosen == "cc" and "too wide" in why and "ACC 40" in why
    table[BOUNDED_KEY] = {"mae": 0.05, "coverage": 0.97, "width": 0.42}
    chosen, why = _verdict(table, meths, 0.90, 40, 0.95)
    assert chosen == "cc" and "widened to hold ACC's" in why and "covered 97%" in why


def test_fallback_interval_is_bias_bounded_and_covers_under_shift():
    # a classifier whose counts are biased under prior shift: CC's sampling interval misses,
    # the bounded one (hull with ACC's) holds the truth, and is reported as CC's interval
    rng = np.random.default_rng(4)
    p, y = draw(rng, (0.8, 0.15, 0.05), 2000)
    groups = rng.integers(0, 20, size=len(y)).astype(str)
    q = fit_quantifiers(p, y, QuantifierConfig(n_boot=100, n_cal_boot=20), groups=groups)
    sel = select_method(p, y, groups, q.config.methods, FAST_SEL)
    q.with_selection(type(sel)(**{**sel.to_dict(), "chosen": "cc", "bound": BOUND_METHOD}))
    pt, yt = draw(rng, (0.2, 0.4, 0.4), 1500)
    truth = np.bincount(yt, minlength=3) / len(yt)
    mics = rng.integers(0, 12, size=len(yt)).astype(str)
    rows = class_shares(pt, ["s"] * len(pt), CLASSES, q, ShareConfig(n_boot=100),
                        micrographs=mics)  # fmt: skip
    missed = 0
    for k, r in enumerate(rows):
        cc, acc = r.methods["cc"], r.methods["acc"]
        lo, hi = min(cc[1], acc[1]), max(cc[2], acc[2])
        assert r.determinable == (hi - lo <= MAX_WIDTH)
        if r.determinable:
            assert (r.share, r.share_lo, r.share_hi) == (cc[0], lo, hi)
        else:
            assert "bias bounded by ACC" in r.reason
            # the transfer term is in the intervals: more particles would not narrow them
            assert "more particles in the sample" not in r.reason
            assert "transfer term" in r.reason or "labelled particles of every" in r.reason
        missed += not (lo <= truth[k] <= hi)
        # CC alone is off by more than its interval for at least one class here
    assert missed == 0
    assert any(not (r.methods["cc"][1] <= truth[k] <= r.methods["cc"][2])
               for k, r in enumerate(rows))  # fmt: skip


def test_select_method_simulates_prior_shift_on_held_out_parts():
    rng = np.random.default_rng(0)
    p, y = draw(rng, (0.5, 0.3, 0.2), 1500)
    groups = rng.integers(0, 16, size=len(y)).astype(str)
    sel = select_method(p, y, groups, config=FAST_SEL)
    assert sel.split == "micrographs"
    # APP grid with 3 values per class (6 share vectors) + 2 natural samples, one repeat
    assert sel.n_samples == 8 and sel.sample_size == 300
    assert set(sel.table) == {"cc", "pcc", "acc", "pacc", "emq", BOUNDED_KEY}
    # CC bias-bounded by ACC: the hull of both intervals covers at least as often as each
    b = sel.table[BOUNDED_KEY]
    assert b["coverage"] >= max(sel.table["cc"]["coverage"], sel.table["acc"]["coverage"])
    assert b["width"] >= sel.table["acc"]["width"] and b["mae"] == sel.table["cc"]["mae"]
    assert sel.bound == ""  # an adjusted method qualified: no fallback, no bound
    for row in sel.table.values():
        assert (
            0 <= row["coverage"] <= 1 and row["width"] > 0 and len(row["coverage_per_class"]) == 3
        )
    # fixed error rates: the counts are biased at far priors, the adjusted methods are not
    assert sel.table["acc"]["mae"] < sel.table["cc"]["mae"]
    assert sel.chosen in {"acc", "pacc", "emq"} and sel.chosen.upper() in sel.reason
    assert sel.class_counts == np.bincount(y, minlength=3).tolist()
    # the same seed gives the same verdict; a class with one example: CC, no simulation
    assert select_method(p, y, groups, config=FAST_SEL).table == sel.table
    y1 = y.copy()
    y1[y1 == 2] = 1
    y1[0] = 2
    one = select_method(p, y1, None, config=FAST_SEL)
    assert one.chosen == "cc" and one.n_samples == 0 and "fewer than 2" in one.reason


def test_wide_interval_is_not_determinable_with_reason_and_power(tmp_path):
    rng = np.random.default_rng(1)
    p, y = draw(rng, (0.95, 0.047, 0.003), 1600)  # 6 labelled particles of the last class
    p = 0.4 * p + 0.6 / 3  # a weak classifier
    q = fit_quantifiers(p, y, QuantifierConfig(n_boot=100, n_cal_boot=20))
    q.with_selection(select_method(p, y, None, q.config.methods, FAST_SEL))
    q.with_selection(type(q.selection)(**{**q.selection.to_dict(), "chosen": "acc"}))
    q.class_names = list(CLASSES)
    pt, _ = draw(rng, (0.4, 0.3, 0.3), 150)
    pt = 0.4 * pt + 0.6 / 3
    rows = class_shares(pt, ["s"] * len(pt), CLASSES, q, ShareConfig(n_boot=100))
    bad = [r for r in rows if not r.determinable]
    assert bad, [(r.cls, r.methods["acc"]) for r in rows]
    for r in rows:
        lo, hi = r.methods["acc"][1:]
        assert r.determinable == (hi - lo <= MAX_WIDTH)
        if not r.determinable:
            assert math.isnan(r.share) and "not determinable" in r.reason
            assert "+-" in r.reason and (
                "labelled particles of every class" in r.reason
                or "more particles in the sample" in r.reason
            )
    r = bad[0]
    write_shares(rows, tmp_path / "s.csv")
    got = {x["class"]: x for x in read_csv(tmp_path / "s.csv")}[r.cls]
    assert got["determinable"] == "no" and got["share"] == got["share_lo"] == ""
    assert got["acc_lo"] == "" and got["reason"] == r.reason  # never a [0, 100] as a result


def test_predict_audit_draw_then_audit_through_the_cli(tmp_path, tiny_dataset, capsys):
    rng = np.random.default_rng(3)
    ds_dir = tiny_dataset(counts=(14, 12, 10), samples=1, classes=CLASSES)
    y, p = draw(rng, (0.6, 0.25, 0.15), 600)[::-1]
    write_model_folder(tmp_path / "m", oof=(y, p))
    out = tmp_path / "p.csv"
    argv = ["predict", str(tmp_path / "m"), str(ds_dir), "--out", str(out), "--device", "cpu"]
    assert main([*argv, "--audit-draw", "20"]) == 0
    text = capsys.readouterr().out
    assert "method: " in text and "chosen for this model" in text
    sheet = read_csv(tmp_path / "p_audit.csv")
    assert len(sheet) == 20 and len({r["id"] for r in sheet}) == 20
    assert set(sheet[0]) == {"id", "sample", "micrograph", "label"}
    truth = {r["id"]: r["label"] for r in read_csv(ds_dir / "particles.csv")}
    with (tmp_path / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "label"])
        w.writerows([[r["id"], truth[r["id"]]] for r in sheet])
    out2 = tmp_path / "q.csv"
    argv2 = [*argv[:-4], "--out", str(out2), "--device", "cpu"]
    assert main([*argv2, "--audit", str(tmp_path / "labels.csv")]) == 0
    text = capsys.readouterr().out
    assert "audit-corrected" in text and "20 labels used" in text
    rows = read_csv(tmp_path / "q_shares.csv")
    for r in rows:
        assert r["audit_n"] == "20" and r["audit"] != "" and r["labels_only"] != ""
        assert float(r["audit_lo"]) <= float(r["audit"]) <= float(r["audit_hi"])
        assert float(r["audit_ess"]) > 0
    # bad input: one clear line, non-zero exit, nothing written
    with (tmp_path / "dup.csv").open("w") as fh:
        fh.write(f"id,label\n{sheet[0]['id']},{CLASSES[0]}\n{sheet[0]['id']},{CLASSES[1]}\n")
    out3 = tmp_path / "r.csv"
    assert main([*argv[:-4], "--out", str(out3), "--audit", str(tmp_path / "dup.csv")]) != 0
    err = capsys.readouterr().err
    assert "lipoclass: error:" in err and "appears twice" in err and not out3.exists()
    with (tmp_path / "small.csv").open("w") as fh:
        fh.write("id,label\n" + "".join(f"{r['id']},{truth[r['id']]}\n" for r in sheet[:4]))
    assert main([*argv[:-4], "--out", str(out3), "--audit", str(tmp_path / "small.csv")]) == 0
    text = capsys.readouterr().out
    assert "audit too small for an interval: 4 labelled particle(s)" in text
    assert all(r["audit"] == "" for r in read_csv(tmp_path / "r_shares.csv"))
    assert Path(tmp_path / "r_shares.csv").is_file()
