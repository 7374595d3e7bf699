"""The self-configuring recipe (``--recipe auto``): fingerprint, plan rules, the empirical
choice on the same folds, the cross-fitted stack, the model folder through predict, nested
CV and bad input. Tiny data, the ``tiny`` CNN and 1-2 epochs (seconds)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import draw_particle
from lipoclass.cli import main
from lipoclass.data import DatasetWriter, Fingerprint, fingerprint, load_dataset
from lipoclass.data.survey import Quantiles
from lipoclass.evaluate import CVConfig
from lipoclass.recipe import RecipeConfig, cross_fit, fit_auto, nested_optimism, plan_recipe
from lipoclass.recipe import auto as auto_mod
from lipoclass.recipe.plan import CANDIDATE_OVERHEAD_S, PLAN_MARGIN, RUN_OVERHEAD_S

FAST = RecipeConfig(
    base_model="tiny", hybrid_model=None, max_epochs=2, min_epochs=1, device="cpu",
    precision="fp32", max_cnn_seeds=1,
)  # fmt: skip


@pytest.fixture(autouse=True)
def _no_quantifiers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Class-share quantifiers are crossfit's (tested there) and slow: left out here."""
    monkeypatch.setattr(auto_mod, "fit_folder_quantifiers", lambda *a, **k: None)


def _size_only(root: Path, n: int = 12) -> Path:
    """Two classes of identical-looking particles that differ only in size (24 vs 44 px
    crops, same pixel size): a box-resized CNN input cannot see it, the SVM's area can."""
    rng = np.random.default_rng(0)
    with DatasetWriter(root, name="size", classes=["small", "large"], pixel_size_nm=0.8) as w:
        for i in range(2 * n):
            side = 24 if i % 2 == 0 else 44
            img, mask = draw_particle(0, side, side, rng)
            w.add(
                f"p{i:03d}",
                image=img,
                mask=mask,
                label=("small", "large")[i % 2],
                sample=f"s{i % 2}",
            )
    return root


def _predict_rows(model: Path, ds_dir: Path, out: Path) -> list[dict[str, str]]:
    """``lipoclass predict MODEL DATASET`` through the CLI; the rows of its predictions CSV."""
    assert main(["predict", str(model), str(ds_dir), "--out", str(out), "--device", "cpu"]) == 0
    with out.open() as fh:
        return list(csv.DictReader(fh))


def test_fingerprint_measures_sizes_counts_pixel_sizes_and_grey_levels(tmp_path: Path) -> None:
    with DatasetWriter(tmp_path / "d", name="fp", classes=["a", "b"]) as w:
        for i in range(6):  # class a: 10 px squares at 0.5 nm/px; b: 30 px at 1.0 nm/px
            a = i < 4
            img = np.full((40, 40), 100, dtype=np.uint8)
            side = 10 if a else 30
            mask = np.zeros((40, 40), dtype=bool)
            mask[5 : 5 + side, 2 : 2 + side] = True
            img[mask] = 200
            w.add(
                f"p{i}",
                image=img,
                mask=mask,
                label="a" if a else "b",
                pixel_size_nm=0.5 if a else 1.0,
            )
    fp = fingerprint(load_dataset(tmp_path / "d"))
    assert fp.class_counts == (4, 2) and fp.imbalance == 2.0 and fp.masks == 6
    assert fp.size_source == "mask" and fp.class_particle_px == (10.0, 30.0)
    assert fp.particle_px is not None and fp.particle_px.median == 10.0
    assert fp.particle_nm is not None and fp.particle_nm.median == 5.0  # 10 px x 0.5 nm
    assert fp.crop_px == Quantiles(40.0, 40.0, 40.0)
    assert fp.pixel_size_nm == (0.5, 0.5, 1.0) and fp.pixel_sizes_differ
    assert fp.grey["p1"] == 100.0 and fp.grey["p99"] == 200.0
    d = fp.to_dict()
    assert d["class_counts"] == {"a": 4, "b": 2} and json.dumps(d)


def _fp(**kw: Any) -> Fingerprint:
    base: dict[str, Any] = dict(
        n_particles=600,
        n_labelled=600,
        classes=("a", "b", "c"),
        class_counts=(200, 200, 200),
        imbalance=1.0,
        masks=600,
        size_source="mask",
        particle_px=Quantiles(24, 20, 30),
        particle_nm=None,
        crop_px=Quantiles(40, 35, 50),
        class_particle_px=(24, 24, 24),
        pixel_size_nm=(0.8, 0.8, 0.8),
        pixel_sizes_differ=False,
        grey={},
        measured=600,
    )
    base.update(kw)
    return Fingerprint(**base)


COUNTS = [np.array([160, 160, 160])] * 5


def test_plan_rules_follow_the_fingerprint() -> None:
    small = plan_recipe(_fp(), COUNTS)
    assert small.rule("input size").value == 28 and small.rule("balance").value == "none"
    assert small.rule("input mode").value == "masked" and small.rule("rescale").value == "no"
    names = [c.name for c in small.candidates]
    assert names == ["lipnet4_28", "lipnet_hybrid_28", "svm", "stack", "mean"]
    # large particles -> a larger input, and the old 28 px as the second size
    big = plan_recipe(_fp(particle_px=Quantiles(150, 50, 280)), COUNTS)
    assert big.rule("input size").value == 64
    assert [c.name for c in big.models][:2] == ["lipnet4_64", "lipnet4_28"]
    assert big.models[0].spec is not None and big.models[0].spec.prep.size == 64
    assert (
        plan_recipe(_fp(particle_px=Quantiles(60, 50, 70)), COUNTS).rule("input size").value == 48
    )
    # no masks -> surround, sized by the crop
    nomask = plan_recipe(_fp(masks=0, crop_px=Quantiles(31, 31, 31)), COUNTS)
    assert nomask.rule("input mode").value == "surround"
    assert nomask.rule("input size").value == 28
    # ... and crops of one size: size features would be constant, so no hybrid CNN
    # (and a second seed member of it with the budget left: test_seed_rule_... below)
    assert [c.name for c in nomask.models if not c.member_of] == ["lipnet4_28", "svm"]
    # unequal pixel sizes -> a common scale (tests/test_rescale.py), and the size in nm
    # reaches the CNN (hybrid) and the stack as features too
    mixed = plan_recipe(
        _fp(pixel_size_nm=(1.2, 0.8, 1.6), pixel_sizes_differ=True,
            particle_nm=Quantiles(19.2, 16, 24)), COUNTS,
    )  # fmt: skip
    assert mixed.rule("rescale").value == "1.6 nm/px"
    assert mixed.models[0].name.startswith("lipnet_hybrid")
    # every CNN candidate predicts with TTA (out of fold too); the rule says why
    assert all(c.spec is not None and c.spec.config.tta for c in mixed.models[:-1])
    assert "flips" in mixed.rule("test-time augmentation").reason
    # heavy imbalance -> balance
    skew = plan_recipe(_fp(class_counts=(580, 15, 5), imbalance=116.0), COUNTS)
    assert skew.rule("balance").value == "oversample"
    assert skew.models[0].spec is not None and skew.models[0].spec.config.balance == "oversample"
    # the cost bound: every plan within 3x one fixed-recipe CV (by the same estimate)
    for p in (small, big, mixed, skew):
        assert p.seconds <= 3.0 * p.fixed_seconds + 1e-6, p.text()
        assert "time: about" in p.text()


def test_auto_keeps_the_best_candidate_and_its_folder_predicts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds_dir = _size_only(tmp_path / "ds")
    ds = load_dataset(ds_dir)
    res = fit_auto(ds, CVConfig(folds=3, seed=0), tmp_path / "m", config=FAST, progress=False)
    by = {r["name"]: r for r in res.table}
    assert set(by) == {"tiny_28", "svm", "stack", "mean"}
    assert by["svm"]["macro_f1"] >= 0.9 and by["tiny_28"]["macro_f1"] <= by["svm"]["macro_f1"] - 0.2
    best = max(r["macro_f1"] for r in res.table)
    assert res.chosen == next(r["name"] for r in res.table if r["macro_f1"] == best)
    info = json.loads((tmp_path / "m" / "model.json").read_text())
    recipe = json.loads((tmp_path / "m" / "recipe.json").read_text())
    assert info["recipe"]["chosen"] == res.chosen and len(recipe["table"]) == 4
    assert recipe["plan"]["rules"] and recipe["fingerprint"]["class_counts"]["small"] == 12
    rows = _predict_rows(tmp_path / "m", ds_dir, tmp_path / "p.csv")
    assert len(rows) == 24


def test_stack_folder_predicts_through_its_bases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lipoclass.ensemble import load_model
    from lipoclass.kinds.stack import _size_rows, combine

    monkeypatch.setattr(auto_mod, "_choose", lambda table: "stack")
    ds_dir = _size_only(tmp_path / "ds", n=9)
    ds = load_dataset(ds_dir)
    rc = main(
        [
            "train",
            str(ds_dir),
            "--recipe",
            "auto",
            "-o",
            str(tmp_path / "m"),
            "--folds",
            "3",
            "--epochs",
            "1",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0  # the CLI's own plan (lipnet4, lipnet_hybrid, svm), capped at 1 epoch
    said = capsys.readouterr()
    out = said.out
    assert "<- chosen" in out and "stack" in out
    # cost: the plan with its time estimate first, then progress per candidate and fold
    err = said.err
    assert err.index("time: about") < err.index("candidate 1/") < err.index("chose ")
    assert "fold 1/3" in err
    model = load_model(tmp_path / "m")
    assert model.kind.name == "stack" and model.info["recipe"]["chosen"] == "stack"
    member = model.members[0]
    bases = [b.predict_proba(ds)[0] for b in member.bases]
    want = combine(member.stacker, bases, _size_rows(ds, model.prep, np.arange(len(ds))))
    got, ids = model.predict_proba(ds)
    assert ids == ds.ids and np.allclose(got, want)
    assert len(_predict_rows(tmp_path / "m", ds_dir, tmp_path / "p.csv")) == 18


def test_stack_cross_fitting_never_sees_its_own_fold() -> None:
    """Pure noise: a combiner that saw the rows it predicts would score far above chance."""
    rng = np.random.default_rng(1)
    n, c = 90, 3
    y = np.arange(n) % c
    fold = rng.permutation(n) % 3
    bases = [rng.dirichlet(np.ones(c), size=n) for _ in range(2)]
    size = rng.normal(size=(n, 30))
    oof = cross_fit("logistic", bases, size, y, fold, c, seed=0)
    assert (oof.argmax(axis=1) == y).mean() < 0.55
    leaky = np.zeros_like(oof)  # the same fits, predicting their own training rows
    from lipoclass.kinds.stack import combine
    from lipoclass.recipe import fit_combiner

    for k in range(3):
        tr = fold != k
        rec = fit_combiner("logistic", [b[tr] for b in bases], size[tr], y[tr], c)
        leaky[tr] += combine(rec, [b[tr] for b in bases], size[tr])
    assert (leaky.argmax(axis=1) == y).mean() > 0.8  # what a leak would look like


def test_nested_optimism_reports_inner_and_outer(tmp_path: Path) -> None:
    ds = load_dataset(_size_only(tmp_path / "ds", n=9))
    cfg = RecipeConfig(
        base_model="tiny",
        hybrid_model=None,
        max_epochs=1,
        min_epochs=1,
        two_sizes=False,
        device="cpu",
        precision="fp32",
        max_cnn_seeds=1,
    )
    res = nested_optimism(
        ds, outer_folds=2, inner_folds=2, config=cfg, progress=False, work=tmp_path
    )
    assert len(res.rows) == 2
    for r in res.rows:
        assert 0 <= r["inner"] <= 1 and 0 <= r["outer"] <= 1 and r["n_test"] == 9
    d = res.to_dict()
    assert abs(d["optimism"] - (d["inner_mean"] - d["outer_mean"])) < 1e-3
    assert not any(tmp_path.glob("lipoclass-nested-*"))


def test_bad_recipe_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_dataset: Any
) -> None:
    ds = str(tiny_dataset())
    with pytest.raises(SystemExit) as exc:
        main(["cv", ds, "--recipe", "best", "--out", str(tmp_path / "m")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--recipe" in err and "auto" in err
    assert main(["cv", ds, "--recipe", "auto", "--model", "svm", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "lipoclass: error: --model does not go with --recipe auto (the recipe plans "
        "the models, input preparation, training and balance itself; --recipe fixed takes "
        "them as given)"
    )
    # an option auto would otherwise ignore is refused too (never silently dropped)
    assert main(["cv", ds, "--recipe", "auto", "--mode", "masked", "--out", str(tmp_path / "m")])
    assert "--mode does not go with --recipe auto" in capsys.readouterr().err
    assert main(["cv", ds, "--recipe", "fixed", "--out", str(tmp_path / "m")]) == 2
    assert "--recipe fixed needs --model" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_auto_is_the_default_unless_a_model_option_is_given() -> None:
    from lipoclass.cli import build_parser
    from lipoclass.cli.fit import _recipe

    parser = build_parser()
    for cmd in ("cv", "train"):
        base = [cmd, "DS", "--out", "M"]
        assert _recipe(parser.parse_args(base)) == "auto"
        assert _recipe(parser.parse_args([*base, "--epochs", "5", "--seed", "2"])) == "auto"
        for extra in (["--model", "svm"], ["--size", "48"], ["--mode", "masked"],
                      ["--balance", "none"], ["--augment", "none"], ["--tta"]):  # fmt: skip
            assert _recipe(parser.parse_args([*base, *extra])) == "fixed", extra
        assert _recipe(parser.parse_args([*base, "--recipe", "fixed"])) == "fixed"
        assert _recipe(parser.parse_args([*base, "--recipe", "auto", "--size", "9"])) == "auto"


def test_an_earlier_model_folder_may_be_replaced(tmp_path: Path) -> None:
    from lipoclass.crossfit import check_model_out
    from lipoclass.errors import LipoclassError

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.json").write_text("{}")
    check_model_out(tmp_path / "m")  # an earlier model folder: replaced by the new run
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(LipoclassError, match="not a model folder"):
        check_model_out(tmp_path / "x")


def test_tta_out_of_fold_predictions_average_the_eight_views(tmp_path: Path) -> None:
    """``TrainConfig.tta``: a fold model's predictions are the mean softmax over the 8 flips /
    quarter turns (what the model folder then predicts), and fit_model records it."""
    import torch

    from lipoclass.crossfit import fit_model
    from lipoclass.data import prepare
    from lipoclass.ensemble import load_model
    from lipoclass.models.inference import predict_logits, softmax
    from lipoclass.spec import build_spec

    ds = load_dataset(_size_only(tmp_path / "ds", n=6))
    spec = build_spec("tiny", mode="masked", epochs=1, device="cpu", precision="fp32")
    est = spec.with_config(tta=True).make_estimator(seed=0, classes=tuple(ds.classes))
    est.fit(ds, np.arange(8))
    test = np.arange(8, 12)
    x = prepare(ds, spec.prep).x[test]
    views = [np.rot90(v, k, axes=(-2, -1)) for v in (x, x[..., ::-1]) for k in range(4)]
    logits = [predict_logits(est.model, np.ascontiguousarray(v), None, torch.device("cpu"))
              for v in views]  # fmt: skip
    assert np.allclose(est.predict_proba(ds, test), np.mean([softmax(z) for z in logits], axis=0),
                       atol=1e-5)  # fmt: skip
    assert not np.allclose(softmax(logits[0]), softmax(logits[1]), atol=1e-6)  # views differ
    out, _ = fit_model(ds, spec.with_config(tta=True), CVConfig(folds=2, seed=0), tmp_path / "m",
                       progress=False, quantify=False)  # fmt: skip
    assert load_model(out).tta


def test_seed_rule_spends_the_budget_left_on_cnn_seed_members() -> None:
    """Vesicle-like crops (one 28 px CNN at 30 epochs): the budget left goes to more
    trainings of that CNN on the same folds; sets whose CNNs fill the budget get none."""
    fp = _fp(masks=0, crop_px=Quantiles(31, 31, 31))
    on = RecipeConfig(max_cnn_seeds=4)  # (the rule's cap, whatever the default)
    plan = plan_recipe(fp, COUNTS, on)
    seeds = plan.rule("CNN seeds")
    assert seeds.value == 2 and "Lakshminarayanan" in seeds.reason
    assert "CNN seeds: 2" in plan.text() and "seed member 2 of lipnet4_28" in plan.text()
    names = [c.name for c in plan.candidates]
    assert names == ["lipnet4_28", "lipnet4_28_seed1", "svm", "lipnet4_28_x2", "stack", "mean"]
    by = {c.name: c for c in plan.candidates}
    first, member = by["lipnet4_28"].spec, by["lipnet4_28_seed1"].spec
    assert first is not None and member is not None
    assert first.config.member_seed == 0 and member.config.member_seed == 1
    assert member.with_config(member_seed=0) == first  # the same configuration otherwise
    assert by["lipnet4_28_seed1"].member_of == "lipnet4_28" and by["lipnet4_28"].member_of is None
    assert by["lipnet4_28_x2"].groups == (("lipnet4_28", "lipnet4_28_seed1"),)
    assert by["mean"].groups == by["stack"].groups == (("lipnet4_28", "lipnet4_28_seed1"), ("svm",))
    assert plan.to_dict()["candidates"][1]["member_of"] == "lipnet4_28"
    assert plan.seconds <= 3.0 * plan.fixed_seconds + 1e-6
    # a larger budget: more members, up to the cap; the knob shrinks it; 1 switches it off
    ten = RecipeConfig(budget_factor=10, max_cnn_seeds=4)
    assert plan_recipe(fp, COUNTS, ten).rule("CNN seeds").value == 4
    three = plan_recipe(fp, COUNTS, RecipeConfig(budget_factor=10, max_cnn_seeds=3))
    assert three.rule("CNN seeds").value == 3 and len(three.models) == 4
    assert three.seconds <= 10 * three.fixed_seconds + 1e-6
    off = plan_recipe(fp, COUNTS, RecipeConfig(max_cnn_seeds=1))
    assert [c.name for c in off.candidates] == ["lipnet4_28", "svm", "stack", "mean"]
    assert "max_cnn_seeds 1" in off.rule("CNN seeds").reason and not off.stacks[0].groups
    # --epochs caps the budget the members may use: a quick run stays quick (within 3x the
    # fixed recipe's CV at those epochs, whose training is 5/30 of the 30-epoch one's)
    quick = plan_recipe(fp, COUNTS, RecipeConfig(max_epochs=5, min_epochs=5, max_cnn_seeds=4))
    quick_fixed = (quick.fixed_seconds - RUN_OVERHEAD_S) * 5 / 30 + RUN_OVERHEAD_S
    assert 1 < quick.rule("CNN seeds").value < 4 and quick.rule("epochs").value == 5
    assert quick.seconds <= 0.9 * 3 * quick_fixed + 1e-6 < plan.seconds
    # large particles: two CNN sizes at cut epochs fill the budget, no member is added
    big = plan_recipe(_fp(particle_px=Quantiles(150, 50, 280)), COUNTS, on)
    assert big.rule("CNN seeds").value == 1 and "no budget left" in big.rule("CNN seeds").reason
    assert not any(c.member_of for c in big.candidates)
    for bad in (0, 17, True):
        with pytest.raises(ValueError, match="max_cnn_seeds"):
            RecipeConfig(max_cnn_seeds=bad)


def test_member_seed_changes_the_training_seed_only() -> None:
    from lipoclass.data import PrepConfig
    from lipoclass.train import CNNEstimator, TrainConfig

    prep = PrepConfig(mode="masked", size=28)
    seeds = [CNNEstimator("tiny", prep, TrainConfig(member_seed=k), seed=7).train_seed
             for k in (0, 1, 2)]  # fmt: skip
    assert seeds[0] == 7 and len(set(seeds)) == 3
    again = CNNEstimator("tiny", prep, TrainConfig(member_seed=1), seed=7).train_seed
    other = CNNEstimator("tiny", prep, TrainConfig(member_seed=1), seed=8).train_seed
    assert again == seeds[1] and other != seeds[1]
    with pytest.raises(ValueError, match="member_seed"):
        TrainConfig(member_seed=-1)


def test_seed_members_share_the_folds_and_their_mean_is_a_stack_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two seed members of the tiny CNN: same folds, different training seeds, listed but
    never chosen alone; the ``_x2`` candidate is a stack folder averaging them, and the
    ``mean`` over all bases weighs the CNN's members as one base."""
    from lipoclass.ensemble import load_model
    from lipoclass.kinds.stack import combine

    chosen: list[str] = []
    real_choose = auto_mod._choose

    def choose_x2(table: list[dict[str, Any]]) -> str:
        chosen.append(real_choose(table))
        return "tiny_28_x2"

    monkeypatch.setattr(auto_mod, "_choose", choose_x2)
    ds_dir = _size_only(tmp_path / "ds", n=9)
    ds = load_dataset(ds_dir)
    cfg = RecipeConfig(**{**FAST.__dict__, "max_cnn_seeds": 2})
    res = fit_auto(ds, CVConfig(folds=3, seed=0), tmp_path / "m", config=cfg, progress=False)
    by = {r["name"]: r for r in res.table}
    assert [r["name"] for r in res.table] == ["tiny_28", "tiny_28_seed1", "svm", "tiny_28_x2",
                                              "stack", "mean"]  # fmt: skip
    assert by["tiny_28_seed1"]["kind"] == "member" and by["tiny_28"]["kind"] == "model"
    assert chosen[0] != "tiny_28_seed1" and "seed member" in res.text()
    model = load_model(tmp_path / "m")
    assert model.kind.name == "stack" and model.info["stack"]["groups"] == [
        ["tiny_28", "tiny_28_seed1"]
    ]
    a, b = (load_model(tmp_path / "m" / "candidates" / n) for n in ("tiny_28", "tiny_28_seed1"))
    assert [m.info["spec"]["train"]["member_seed"] for m in (a, b)] == [0, 1]
    (ia, fa, _, pa), (ib, fb, _, pb) = a.oof(), b.oof()
    assert list(ia) == list(ib) and np.array_equal(fa, fb)  # the same folds
    assert not np.allclose(pa, pb)  # different trainings
    got, ids = model.predict_proba(ds)
    pa_new, pb_new = a.predict_proba(ds)[0], b.predict_proba(ds)[0]
    assert ids == ds.ids and np.allclose(got, (pa_new + pb_new) / 2)
    rec = model.members[0].stacker
    assert rec["groups"] == [[0, 1]]
    # the grouped mean: each group averaged first, so the CNN's two members count once
    p3 = [np.array([x]) for x in ([0.2, 0.8], [0.4, 0.6], [1.0, 0.0])]
    grouped = combine({"combiner": "mean", "groups": [[0, 1], [2]]}, p3, None)
    assert np.allclose(grouped, [[0.65, 0.35]])
    recipe = json.loads((tmp_path / "m" / "recipe.json").read_text())
    assert recipe["plan"]["candidates"][1]["member_of"] == "tiny_28"
    assert any(r["name"] == "CNN seeds" and r["value"] == 2 for r in recipe["plan"]["rules"])


def _lam0_plan(config: RecipeConfig | None = None) -> Any:
    """The plan of synthetic lamellarity seed 0 (500 masked particles ~100 px, pixel sizes
    differing, 61 / 25 / 414; its 5 folds' training counts), as measured in docs/cnn.md."""
    fp = _fp(
        n_particles=500, n_labelled=500, masks=500, class_counts=(61, 25, 414), imbalance=16.6,
        particle_px=Quantiles(98.5, 39.95, 158), particle_nm=Quantiles(61.7, 37.9, 114.3),
        crop_px=Quantiles(204, 129, 265), pixel_size_nm=(0.85, 0.4031, 1.1424),
        pixel_sizes_differ=True, class_particle_px=(98.5, 98.5, 98.5), measured=500,
    )  # fmt: skip
    counts = [np.array([48, 20, 332])] + [np.array([49, 20, 331])] * 4
    return plan_recipe(fp, counts, config)


def test_time_estimate_matches_the_measured_cost() -> None:
    """The plan's estimate against what was measured (docs/cnn.md, Cost: estimate against the
    wall clock; CPU seconds, one torch thread, synthetic lamellarity seed 0): the fixed
    LipNet-4 CV 50 s; ``lipnet_hybrid`` at 14 epochs 110-118 s at 64 px and 21-22 s at 28 px
    (64 px: 5.1-5.5x the 28 px cost, the input area's 5.2x); the SVM candidate 3.3-4.7 s.
    Each estimate within 15 % of them; the whole plan within 90 % of the budget."""
    from lipoclass.train.config import TrainConfig
    from lipoclass.train.plan import training_seconds

    counts = [np.array([48, 20, 332])] + [np.array([49, 20, 331])] * 4
    cfg = TrainConfig(epochs=14, balance="oversample")
    ratio = training_seconds(counts, cfg, 64) / training_seconds(counts, cfg, 28)
    assert 5.0 <= ratio <= 5.7  # measured 5.1-5.5 (lamellarity), 5.5-5.7 (encapsulation)
    plan = _lam0_plan(RecipeConfig(max_epochs=14, margin=1.0))  # as measured: 14 epochs
    est = {c.name: c.seconds for c in plan.models}
    assert set(est) == {"lipnet_hybrid_64", "lipnet_hybrid_28", "svm"}
    for name, measured in (("lipnet_hybrid_64", 113.1), ("lipnet_hybrid_28", 21.6), ("svm", 4.0)):
        assert abs(est[name] / measured - 1) <= 0.15, (name, est[name])
    assert abs(plan.fixed_seconds / 50.4 - 1) <= 0.15, plan.fixed_seconds
    # what the estimate adds besides training: each candidate and the run once
    assert plan.seconds == pytest.approx(RUN_OVERHEAD_S + sum(est.values()))
    assert est["svm"] > CANDIDATE_OVERHEAD_S
    # at 14 epochs the estimate (2.8x) is above 90 % of the 3x budget (measured 2.85-3.2x):
    # the planner cuts the epochs until the plan fills at most 90 % of it
    assert plan.seconds > PLAN_MARGIN * 3 * plan.fixed_seconds
    auto = _lam0_plan()
    assert auto.rule("epochs").value == 13 and auto.margin == PLAN_MARGIN
    assert auto.seconds <= PLAN_MARGIN * 3 * auto.fixed_seconds + 1e-6
    assert "at most 90% of it" in auto.text() and "90% of 3x" in auto.rule("epochs").reason
    # without the margin the same estimate plans 14 epochs, as before the correction
    assert _lam0_plan(RecipeConfig(margin=1.0)).rule("epochs").value == 14
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="margin"):
            RecipeConfig(margin=bad)
