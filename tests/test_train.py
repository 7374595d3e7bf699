"""CNN training: config validation, imbalance samplers, losses, augmentation, the trainer's
seeding, the estimator, calibration and model folders, and the CLI commands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lipoclass.data import PrepConfig, load_dataset
from lipoclass.errors import LipoclassError
from lipoclass.models import create_model
from lipoclass.train import (
    CNNEstimator,
    FocalLoss,
    NoSampler,
    OversampleSampler,
    SmoteSampler,
    TrainConfig,
    Trainer,
    UndersampleSampler,
    build_augmentation,
    make_loss,
    seeded_torch,
    stratified_split,
)
from lipoclass.train.calibration import (
    expected_calibration_error,
    fit_temperature,
    review_threshold,
    softmax,
)

FAST = {"epochs": 2, "progress": False, "batch_size": 16}
Y = np.array([0] * 20 + [1] * 6 + [2] * 3)


# ------------------------------------------------------------------ config


def test_config_defaults_and_lr() -> None:
    c = TrainConfig()
    assert c.balance == "oversample" and c.augment == ("rotate", "shift", "flip", "shear", "zoom")
    assert c.learning_rate == 1e-3 and TrainConfig(optimizer="sgd").learning_rate == 1e-2
    assert TrainConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize(
    "kw",
    [{"epochs": 0}, {"balance": "magic"}, {"augment": ("warp",)}, {"optimizer": "lbfgs"},
     {"val_fraction": 0.7}, {"label_smoothing": 1.0}, {"lr": -1.0}, {"device": "tpu"},
     {"zoom": (1.2, 1.0)}, {"schedule": "exp"}],
)  # fmt: skip
def test_config_rejects_bad_values(kw: dict) -> None:
    with pytest.raises(ValueError):
        TrainConfig(**kw)


# ------------------------------------------------------------------ samplers


def test_oversample_balances_to_majority() -> None:
    idx = OversampleSampler().epoch_indices(Y, np.random.default_rng(0))
    assert np.bincount(Y[idx]).tolist() == [20, 20, 20]
    assert set(np.flatnonzero(Y == 2)) <= set(idx)  # every minority member is used


def test_undersample_drops_20_percent_of_majority_each_epoch() -> None:
    rng = np.random.default_rng(0)
    s = UndersampleSampler(0.2)
    a, b = s.epoch_indices(Y, rng), s.epoch_indices(Y, rng)
    assert np.bincount(Y[a]).tolist() == [16, 6, 3]
    assert len(set(a.tolist())) == len(a)  # no repeats
    assert set(a[Y[a] == 0]) != set(b[Y[b] == 0])  # fresh draw per epoch


def test_no_sampler_is_a_permutation() -> None:
    idx = NoSampler().epoch_indices(Y, np.random.default_rng(0))
    assert sorted(idx.tolist()) == list(range(len(Y)))


def test_smote_balances_in_pixel_space() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((len(Y), 1, 6, 6), dtype=np.float32)
    xs, ys = SmoteSampler().setup(x, Y, rng)
    assert xs.shape[1:] == (1, 6, 6) and xs.dtype == np.float32
    assert np.bincount(ys).tolist() == [20, 20, 20]
    np.testing.assert_array_equal(xs[: len(Y)], x)  # originals kept, synthetic appended
    new = xs[len(Y) :][ys[len(Y) :] == 2]
    lo, hi = x[Y == 2].min(0), x[Y == 2].max(0)
    assert np.all(new >= lo - 1e-6) and np.all(new <= hi + 1e-6)  # interpolations


def test_smote_single_member_class_is_repeated() -> None:
    y = np.array([0] * 6 + [1])
    x = np.arange(7 * 4, dtype=np.float32).reshape(7, 1, 2, 2)
    with pytest.warns(UserWarning, match="one training example"):
        xs, ys = SmoteSampler().setup(x, y, np.random.default_rng(0))
    assert np.bincount(ys).tolist() == [6, 6]
    np.testing.assert_array_equal(xs[ys == 1], np.repeat(x[6:], 6, axis=0))


# ------------------------------------------------------------------ losses


def test_losses() -> None:
    logits = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 0, 0, 0, 0, 1, 1, 2])
    ce = torch.nn.functional.cross_entropy(logits, y)
    torch.testing.assert_close(FocalLoss(gamma=0.0)(logits, y), ce)
    assert FocalLoss(gamma=2.0)(logits, y) < ce  # down-weights easy examples
    wl = make_loss(TrainConfig(balance="weights", label_smoothing=0.0), y.numpy(), 3)
    w = torch.tensor([8 / 15, 8 / 6, 8 / 3])
    torch.testing.assert_close(
        wl(logits, y), torch.nn.functional.cross_entropy(logits, y, weight=w)
    )
    plain = make_loss(TrainConfig(label_smoothing=0.1), y.numpy(), 3)
    assert plain.label_smoothing == 0.1 and plain.weight is None


# ------------------------------------------------------------------ augmentation


def test_augmentation_keeps_shape_and_dtype() -> None:
    x = torch.rand(64, 1, 28, 28)
    out = build_augmentation(("rotate", "shift", "flip", "shear", "zoom"))(x)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert not torch.allclose(out, x)


def test_augmentation_off_is_identity() -> None:
    x = torch.rand(4, 1, 16, 16)
    assert torch.equal(build_augmentation(())(x), x)


def test_flip_only_gives_flips() -> None:
    x = torch.rand(32, 1, 9, 9)
    out = build_augmentation(("flip",))(x)
    for a, b in zip(x, out):
        cands = [a, a.flip(-1), a.flip(-2), a.flip(-1).flip(-2)]
        assert any(torch.allclose(b, c) for c in cands)


def test_rotation_keeps_a_centred_disk() -> None:
    yy, xx = torch.meshgrid(torch.arange(21.0), torch.arange(21.0), indexing="ij")
    disk = ((yy - 10) ** 2 + (xx - 10) ** 2 <= 36).float()[None, None].repeat(8, 1, 1, 1)
    out = build_augmentation(("rotate",))(disk)
    assert (out - disk).abs().mean() < 0.05  # rotation-invariant image barely changes


# ------------------------------------------------------------------ trainer


def _toy(n: int = 48, size: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(0, 0.3, (n, 1, size, size)).astype(np.float32)
    x[:, 0, : size // 2] += y[:, None, None].astype(np.float32)  # class shows in the top half
    return x, y


def test_stratified_split_keeps_every_class() -> None:
    tr, va = stratified_split(Y, 0.1, np.random.default_rng(0))
    assert np.bincount(Y[va]).tolist() == [2, 1, 1]
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(len(Y)))


def test_trainer_same_seed_same_weights_and_global_rng_untouched() -> None:
    x, y = _toy()
    state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()  # noqa: NPY002 (checking it is untouched)

    def run(seed: int) -> torch.Tensor:
        with seeded_torch(0):  # identical initial weights
            m = create_model("tiny", 3, 12)
        Trainer(TrainConfig(**FAST)).fit(m, x[:40], y[:40], x[40:], y[40:], seed=seed)
        return torch.cat([p.detach().flatten() for p in m.parameters()])

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)
    assert np.array_equal(np.random.get_state()[1], np_state)  # noqa: NPY002


@pytest.mark.parametrize("balance", ["weights", "focal", "none"])
def test_micro_batches_give_the_same_update(balance: str) -> None:
    x, y = _toy(40)
    y[:20] = 0  # imbalanced, so class weights matter

    def run(micro: int | None) -> torch.Tensor:
        with seeded_torch(0):
            m = create_model("tiny", 3, 12)
        cfg = TrainConfig(
            epochs=2, batch_size=16, micro_batch=micro, balance=balance, augment=(),
            noise_std=0.0, progress=False, early_stopping=False,
        )  # fmt: skip
        Trainer(cfg).fit(m, x, y, seed=0)
        return torch.cat([p.detach().flatten() for p in m.parameters()])

    with seeded_torch(0):
        init = torch.cat([p.detach().flatten() for p in create_model("tiny", 3, 12).parameters()])
    whole, micro = run(None), run(5)
    assert (whole - init).abs().max() > 1e-3  # it trained
    torch.testing.assert_close(micro, whole, rtol=1e-4, atol=1e-5)


def test_trainer_learns_and_reports_history() -> None:
    x, y = _toy(96)
    with seeded_torch(0):  # the initial weights must not depend on what ran before
        m = create_model("tiny", 3, 12)
    cfg = TrainConfig(epochs=8, lr=0.03, progress=False, augment=(), noise_std=0.0, patience=10)
    hist = Trainer(cfg).fit(m, x[:72], y[:72], x[72:], y[72:], seed=0)
    assert len(hist.epochs) == 8 and {"train_loss", "val_loss", "val_metric"} <= set(hist.epochs[0])
    assert hist.epochs[-1]["train_loss"] < hist.epochs[0]["train_loss"]
    assert max(r["val_metric"] for r in hist.epochs) > 0.6  # chance is 1/3
    assert not m.training


def test_early_stopping_restores_best_epoch() -> None:
    x, y = _toy()
    m = create_model("tiny", 3, 12)
    cfg = TrainConfig(epochs=30, patience=2, min_epochs=1, lr=0.5, progress=False,
                      early_stopping=True)  # unstable; early stopping is opt-in  # fmt: skip
    hist = Trainer(cfg).fit(m, x[:40], y[:40], x[40:], y[40:], seed=0)
    best = hist.epochs[hist.best_epoch - 1]
    from lipoclass.train.trainer import predict_logits

    logits = predict_logits(m, x[40:], None, torch.device("cpu"))
    from sklearn.metrics import balanced_accuracy_score

    assert balanced_accuracy_score(y[40:], logits.argmax(1)) == pytest.approx(best["val_metric"])
    if hist.stopped_early:
        assert len(hist.epochs) == hist.best_epoch + 2


def test_default_recipe_trains_fixed_epochs_on_all_data() -> None:
    """The default (docs/cnn.md, ablation): no early stopping, every epoch is run and no
    validation split is held back from the training part."""
    assert TrainConfig().early_stopping is False
    x, y = _toy()
    cfg = TrainConfig(epochs=3, progress=False)
    hist = Trainer(cfg).fit(create_model("tiny", 3, 12), x[:40], y[:40], seed=0)
    assert len(hist.epochs) == 3 and not hist.stopped_early


def test_early_stopping_waits_for_min_epochs() -> None:
    """A noisy validation split cannot end training before min_epochs."""
    x, y = _toy()
    cfg = TrainConfig(epochs=12, patience=1, min_epochs=9, lr=0.5, progress=False,
                      early_stopping=True)  # fmt: skip
    hist = Trainer(cfg).fit(create_model("tiny", 3, 12), x[:40], y[:40], x[40:], y[40:], seed=0)
    assert len(hist.epochs) >= 9


def test_callbacks_see_each_epoch_and_can_stop_training(tmp_path: Path) -> None:
    """Callbacks (minGPT style): a user callback sees every epoch's record and can end
    training; Checkpoint writes the model and optimizer state atomically."""
    from lipoclass.train.callbacks import Callback, Checkpoint

    class StopAfterTwo(Callback):
        def __init__(self) -> None:
            self.seen: list[int] = []

        def on_epoch_end(self, state) -> None:
            self.seen.append(state.epoch)
            state.stop = state.epoch == 2

    x, y = _toy()
    stopper, ckpt = StopAfterTwo(), Checkpoint(tmp_path / "ckpt.pt")
    m = create_model("tiny", 3, 12)
    hist = Trainer(TrainConfig(epochs=6, progress=False), [stopper, ckpt]).fit(
        m, x[:40], y[:40], seed=0
    )
    assert stopper.seen == [1, 2] and len(hist.epochs) == 2
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert saved["epoch"] == 2 and saved["optimizer"]["state"]
    for k, v in m.state_dict().items():
        assert torch.equal(saved["model"][k], v)
    assert not list(tmp_path.glob(".*.tmp"))


def test_trainer_does_not_branch_on_strategy_types() -> None:
    """The SMOTE-with-size-features refusal lives in the sampler, not in the trainer."""
    import inspect

    from lipoclass.train import trainer

    assert "SmoteSampler" not in inspect.getsource(trainer)
    x, y = _toy()
    with pytest.raises(LipoclassError, match="smote"):
        SmoteSampler().setup(x, y, np.random.default_rng(0), aux=np.zeros((len(y), 2)))


# ------------------------------------------------------------------ calibration


def test_temperature_recovers_scaling() -> None:
    rng = np.random.default_rng(0)
    true = rng.normal(0, 2, (2000, 3))
    y = np.array([rng.choice(3, p=p) for p in softmax(true)])
    t = fit_temperature(true * 3.0, y)  # overconfident logits: T close to 3
    assert 2.5 < t < 3.6
    over = softmax(true * 3.0)
    assert expected_calibration_error(softmax(true * 3.0, t), y) < expected_calibration_error(
        over, y
    )


def test_review_threshold_reaches_the_stated_target() -> None:
    probs = np.array([[0.95, 0.05], [0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45]])
    y = np.array([0, 0, 0, 1, 1])  # the two least confident are wrong
    r = review_threshold(probs, y, target=0.95)
    assert r["threshold"] == pytest.approx(0.8) and r["reached"]
    assert r["flagged_share"] == pytest.approx(0.4) and r["expected_accuracy"] == 1.0
    r = review_threshold(probs, y, target=0.75)  # 3 of the top 4 right: flag one
    assert r["threshold"] == pytest.approx(0.6) and r["flagged_share"] == pytest.approx(0.2)
    none = review_threshold(probs, np.array([1, 1, 1, 1, 1]))
    assert not none["reached"] and none["flagged_share"] == 1.0
    assert (probs.max(1) < none["threshold"]).all()  # everything is flagged
    tied = review_threshold(np.array([[0.7, 0.3], [0.7, 0.3]]), np.array([0, 1]), 0.9)
    assert not tied["reached"]  # a cut cannot split tied confidences


# ------------------------------------------------------------------ estimator + folders


@pytest.fixture
def ds_dir(tiny_dataset) -> Path:
    return tiny_dataset((10, 8, 6), size=(20, 30))


def _spec(model: str = "tiny", size: int = 16, **kw):
    from lipoclass.spec import ModelSpec

    return ModelSpec(model, PrepConfig(size=size), TrainConfig(**{**FAST, **kw}))


def test_cnn_estimator_protocol(ds_dir: Path) -> None:
    ds = load_dataset(ds_dir)
    est = CNNEstimator("tiny", PrepConfig(size=16), TrainConfig(**FAST), seed=0)
    ok = est.usable(ds)
    assert ok.shape == (len(ds),) and ok.all()
    est.fit(ds, np.arange(0, len(ds), 2))
    assert est.classes == ds.classes
    p = est.predict_proba(ds, np.arange(1, len(ds), 2))
    assert p.shape == (len(ds) // 2, 3)
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-6)


def test_cnn_estimator_rejects_unusable(tiny_dataset) -> None:
    ds = load_dataset(tiny_dataset((6, 4, 4), empty_masks=1, size=(20, 24)))
    est = CNNEstimator("tiny", PrepConfig(size=16), TrainConfig(**FAST), seed=0)
    with pytest.warns(UserWarning):
        ok = est.usable(ds)
    assert ok.sum() == len(ds) - 1
    with pytest.raises(LipoclassError, match="cannot be used"):
        est.fit(ds, np.arange(len(ds)))


def test_hybrid_with_synthetic_training_data(tiny_dataset) -> None:
    ds = load_dataset(tiny_dataset((8, 6, 4), size=(20, 28)))
    syn = tiny_dataset((4, 4, 4), size=(20, 28), seed=5, name="syn")
    cfg = TrainConfig(**FAST, synthetic=str(syn))
    est = CNNEstimator("lipnet_hybrid", PrepConfig(size=16), cfg, seed=0).fit(ds, np.arange(18))
    assert est.model is not None
    assert float(est.model.aux_std[0]) != 1.0  # size statistics were fitted
    assert est.predict_proba(ds, np.arange(18)).shape == (18, 3)


# ------------------------------------------------------------------ CLI


def test_cli_train_bad_model(
    ds_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lipoclass.cli import main

    rc = main(["train", str(ds_dir), "--model", "nope", "--out", str(tmp_path / "m")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "nope" in err and "lipnet4" in err and len(err.strip().splitlines()) == 1


def test_fused_augmentation_keeps_a_centred_disk_and_shape() -> None:
    """The experimental one-warp augmentation (not the default): same shape and dtype, exact
    flips when only flipping, and a centred disk stays a centred disk under rotation."""
    from lipoclass.train.strategies import fused_augmentation

    yy, xx = np.mgrid[:24, :24]
    disk = ((yy - 11.5) ** 2 + (xx - 11.5) ** 2 < 36).astype(np.float32)
    x = torch.from_numpy(np.repeat(disk[None, None], 8, axis=0))
    with seeded_torch(0):
        out = fused_augmentation(("rotate",))(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float((out - x).abs().mean()) < 0.05
    with seeded_torch(1):
        flipped = fused_augmentation(("flip",))(
            torch.arange(16.0).view(1, 1, 4, 4).repeat(6, 1, 1, 1)
        )
    base = torch.arange(16.0).view(4, 4)
    options = [base, base.flip(-1), base.flip(-2), base.flip(-1).flip(-2)]
    assert all(any(torch.equal(f[0], o) for o in options) for f in flipped)


def test_cv_and_study_time_estimates_agree() -> None:
    """One estimate (lipoclass.train.plan) behind the cv/train plan line and the study's:
    on imbalanced data (9000/500/500, 5 folds, oversampling) both say 18 min."""
    from lipoclass.data import PrepConfig
    from lipoclass.evaluate.cv import _plan as cv_plan
    from lipoclass.spec import ModelSpec
    from lipoclass.study.runner import RunJob
    from lipoclass.study.runner import _plan as study_plan

    spec = ModelSpec("lipnet4", PrepConfig(size=28), TrainConfig(epochs=30))
    y = np.repeat([0, 1, 2], [9000, 500, 500])
    fold = np.arange(len(y)) % 5
    tasks = [(None, spec, (), k, 0, np.flatnonzero(fold != k)) for k in range(5)]
    assert "about 18 min" in cv_plan(spec, tasks, y, 3)
    job = RunJob("k", "l", "d", None, spec, 5, 0, None, "r")
    assert "~18 min" in study_plan([job], {"k": np.array([9000, 500, 500])}, 5, 1)
