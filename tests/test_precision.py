"""Training precision (issue: speed): bf16 vs fp32 training, the resolution of ``auto``, the
recorded precision, the ``--precision`` flag, the CPU thread choice, the fused augmentation
and the device-agnostic CV benchmark. No timing is asserted."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import load_benchmark
from lipoclass import choices
from lipoclass import threads as T
from lipoclass.cli import main
from lipoclass.errors import LipoclassError
from lipoclass.models import create_model
from lipoclass.spec import build_spec
from lipoclass.train import TrainConfig, Trainer, build_augmentation
from lipoclass.train import precision as P

FAST = {"progress": False, "batch_size": 16, "device": "cpu", "threads": 1,
        "early_stopping": False, "schedule": "none"}  # fmt: skip


def _data(n: int = 96, size: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(0, 0.3, (n, 1, size, size)).astype(np.float32)
    x[:, 0, : size // 2] += y[:, None, None].astype(np.float32)
    return x, y


def _losses(precision: str, epochs: int = 4) -> tuple[list[float], str, torch.nn.Module]:
    x, y = _data()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create_model("tiny", 3, 12)
    hist = Trainer(TrainConfig(epochs=epochs, precision=precision, **FAST)).fit(model, x, y, seed=0)
    return [e["train_loss"] for e in hist.epochs], hist.precision, model


def test_bf16_and_fp32_training_give_similar_finite_losses() -> None:
    l32, p32, _ = _losses("fp32")
    l16, p16, m16 = _losses("bf16")
    assert (p32, p16) == ("fp32", "bf16")
    assert all(math.isfinite(v) for v in l32 + l16)
    for a, b in zip(l32, l16):
        assert abs(a - b) <= 0.1 * abs(a)  # within 10 % relative, epoch by epoch
    assert all(p.dtype == torch.float32 for p in m16.parameters())  # master weights stay fp32


def test_bf16_model_predicts_float32_finite_probabilities() -> None:
    _, _, model = _losses("bf16", epochs=2)
    x, _ = _data(20)
    trainer = Trainer(TrainConfig(epochs=1, precision="bf16", **FAST))
    logits = trainer.predict_logits(model, x)
    assert logits.dtype == np.float32 and np.isfinite(logits).all()
    with torch.no_grad():  # validation / prediction run in fp32: same as a plain fp32 pass
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(logits, ref, atol=1e-5)


def test_auto_resolves_to_bf16_only_with_the_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(P, "cpu_has_fast_bf16", lambda: True)
    assert P.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(P, "cpu_has_fast_bf16", lambda: False)
    assert P.resolve_precision("auto", cpu) == "fp32"
    assert P.resolve_precision("bf16", cpu) == "bf16"  # explicit choices are kept
    assert P.resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(ValueError, match="precision"):
        P.resolve_precision("fp16x", cpu)
    monkeypatch.setattr(P, "cpu_has_fast_bf16", lambda: True)
    cfg = TrainConfig(epochs=1, precision="auto", **FAST)
    assert Trainer(cfg).precision.name == "bf16"  # auto picks bf16 on such a CPU
    monkeypatch.setattr(P, "cpu_has_fast_bf16", lambda: False)
    assert Trainer(TrainConfig(epochs=1, **FAST)).precision.name == "fp32"


def test_cpu_flag_detection(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu avx512f avx512_bf16 amx_tile\n")
    assert {"avx512_bf16", "amx_tile"} <= P._cpuinfo_flags(str(info))
    P.cpu_has_fast_bf16.cache_clear()
    try:
        monkeypatch.setattr(P, "_cpuinfo_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
        assert P.cpu_has_fast_bf16()
        P.cpu_has_fast_bf16.cache_clear()
        monkeypatch.setattr(P, "_cpuinfo_flags", lambda: {"avx2", "amx_bf16"})
        assert P.cpu_has_fast_bf16()
        P.cpu_has_fast_bf16.cache_clear()
        monkeypatch.setattr(P, "_cpuinfo_flags", lambda: {"avx2", "avx512f"})
        assert not P.cpu_has_fast_bf16()
    finally:
        P.cpu_has_fast_bf16.cache_clear()


def test_precision_choices_are_defined_once() -> None:
    assert choices.PRECISIONS == ("auto", "fp32", "bf16")
    assert P.PRECISIONS is choices.PRECISIONS
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="half")  # type: ignore[arg-type]
    assert TrainConfig.from_dict(TrainConfig(precision="bf16").to_dict()).precision == "bf16"


def test_build_spec_threads_precision() -> None:
    spec = build_spec("tiny", precision="fp32")
    assert spec.config.precision == "fp32"
    assert build_spec("tiny").config.precision == "auto"
    with pytest.raises(LipoclassError, match="precision must be one of"):
        build_spec("tiny", precision="fp8")


def test_cli_precision_flag_validation(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["cv", str(tmp_path), "--model", "tiny", "--precision", "fp8", "--out",
              str(tmp_path / "m")])  # fmt: skip
    assert exc.value.code == 2
    assert "--precision" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    assert "--precision {auto,fp32,bf16}" in capsys.readouterr().out


def test_cli_precision_reaches_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from lipoclass.cli import _common as cli

    got = {}

    def fake_build_spec(model: str, **kw: object) -> None:
        got.update(kw)

    monkeypatch.setattr("lipoclass.evaluate.build_spec", fake_build_spec)
    ns = argparse.Namespace(model="tiny", mode="auto", size=None, epochs=1, batch_size=8,
                            optimizer="adam", lr=None, balance=None, augment=(),
                            device="cpu", features="vironova", precision="bf16")  # fmt: skip
    cli.spec_from_args(ns)
    assert got["precision"] == "bf16"


def test_fit_info_records_the_resolved_precision(tiny_dataset) -> None:
    from lipoclass.data import PrepConfig, load_dataset
    from lipoclass.train import CNNEstimator

    ds = load_dataset(tiny_dataset((8, 6, 4), size=(20, 30)))
    cfg = TrainConfig(epochs=1, precision="bf16", **{**FAST, "early_stopping": True})
    est = CNNEstimator("tiny", PrepConfig(size=16), cfg, seed=0).fit(ds, np.arange(len(ds)))
    info = est.fit_info()
    assert info["precision"] == "bf16" and info["threads"] == 1
    p = est.predict_proba(ds, np.arange(len(ds)))
    assert p.dtype in (np.float32, np.float64) and np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)


# ------------------------------------------------------------------ threads


def test_pick_threads_backs_off_under_load(monkeypatch: pytest.MonkeyPatch) -> None:
    b = T.busy_cores(window=0.01, max_age=0.0)  # the real probe: a share of the cores
    assert b is None or 0.0 <= b <= (T.os.cpu_count() or 1) + 1e-9
    assert T.pick_threads(cores=2, load=0.1) == 2
    assert T.pick_threads(cores=2, load=1.0) == 1
    assert T.pick_threads(cores=2, load=9.0) == 1
    assert T.pick_threads(cores=8, load=2.2) == 6
    monkeypatch.setattr(T, "busy_cores", lambda: 0.0)
    assert T.pick_threads(cores=4) == 4
    monkeypatch.setattr(T, "busy_cores", lambda: None)  # no /proc/stat: the load average
    monkeypatch.setattr(T.os, "getloadavg", lambda: (3.0, 0.0, 0.0))
    assert T.pick_threads(cores=4) == 1


def test_trainer_records_chosen_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    import lipoclass.train.trainer as tr

    monkeypatch.setattr(tr, "pick_threads", lambda: 1)
    x, y = _data(32)
    cfg = TrainConfig(epochs=1, precision="fp32", **{**FAST, "threads": None})
    hist = Trainer(cfg).fit(create_model("tiny", 3, 12), x, y)
    assert hist.threads == 1 and hist.to_dict()["threads"] == 1


# ------------------------------------------------------------------ fused augmentation


def test_fused_augmentation_is_one_warp_with_the_right_ranges() -> None:
    torch.manual_seed(0)
    x = torch.zeros(256, 1, 21, 21)
    x[:, :, 10, 10] = 1.0  # a dot at the centre: only shift moves it
    out = build_augmentation(("shift",))(x)
    ys, xs = np.unravel_index(out[:, 0].flatten(1).argmax(1).numpy(), (21, 21))
    assert 0 < np.abs(xs - 10).max() <= 3 and np.abs(ys - 10).max() <= 3  # 0.1 x 21 px
    y2 = build_augmentation(("zoom",), zoom=(0.8, 1.0))(torch.ones(64, 1, 21, 21))
    assert torch.allclose(y2[:, :, 5:16, 5:16], torch.ones(1))  # zoom-in: no padding inside
    full = build_augmentation(("rotate", "shift", "flip", "shear", "zoom"))
    assert full(torch.rand(0, 1, 8, 8)).shape == (0, 1, 8, 8)
    z = full(torch.rand(64, 1, 28, 28))
    assert z.shape == (64, 1, 28, 28) and torch.isfinite(z).all()


def test_fused_augmentation_is_reproducible_under_a_seed() -> None:
    x = torch.rand(16, 1, 12, 12)
    aug = build_augmentation(("rotate", "shift", "flip", "shear", "zoom"))
    torch.manual_seed(3)
    a = aug(x)
    torch.manual_seed(3)
    assert torch.equal(a, aug(x))


# ------------------------------------------------------------------ GPU CV benchmark on CPU


def _bench_train():
    return load_benchmark("bench_train")


def test_cv_gpu_benchmark_runs_device_agnostic_on_cpu(tmp_path: Path) -> None:
    bench = _bench_train()
    res = bench.cv_gpu(tmp_path, epochs=1, n=150, device="cpu", workers=1, folds=2,
                       precision="bf16")  # fmt: skip
    probs = np.asarray(res.proba)
    assert probs.dtype in (np.float32, np.float64) and np.isfinite(probs).all()
