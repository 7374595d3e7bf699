"""The fast CPU engine of predict: traced/frozen graph equals eager ``model(x)``, and models
where a trace is not valid (any input size, extra inputs) or fails to match run eager."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lipoclass.models import AUX_FEATURES, create_model
from lipoclass.predict import CPUEngine, EngineConfig, PredictConfig, predict
from test_predict import TEMPERATURE, write_model_folder

CPU = PredictConfig(device="cpu")

# small chunks so a few hundred particles cover several chunks and a ragged last one
SMALL = {"chunk_pixels": 64 * 16 * 16, "min_trace": 0}


def _model(name: str, size: int = 16, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return create_model(name, 3, size).eval()


def _x(n: int, size: int = 16, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, size, size)).astype(np.float32)


def _eager(module: nn.Module, x: np.ndarray, aux: np.ndarray | None = None) -> np.ndarray:
    with torch.no_grad():
        xt = torch.from_numpy(x)
        return (module(xt) if aux is None else module(xt, torch.from_numpy(aux))).numpy()


def test_traced_graph_equals_eager_model():
    module = _model("lipnet4")
    x = _x(301)  # 4 full chunks of 64 and a ragged one
    eng = CPUEngine(module, temperature=1.7, config=EngineConfig(**SMALL))
    logits = eng.logits(x)
    assert eng.mode == "traced" and eng.reason == ""
    want = _eager(module, x)
    np.testing.assert_allclose(logits, want, atol=1e-5)
    probs = eng.predict_proba(x[:5])  # another batch size through the same graph
    ref = torch.softmax(torch.from_numpy(want[:5]) / 1.7, dim=1).numpy()
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs, ref, atol=1e-6)
    assert module.training is False and next(module.parameters()).is_contiguous()  # untouched


def test_small_inputs_run_eager_until_tracing_pays_off():
    module = _model("lipnet4")
    eng = CPUEngine(module, config=EngineConfig(chunk_pixels=64 * 16 * 16, min_trace=200))
    np.testing.assert_allclose(eng.logits(_x(20)), _eager(module, _x(20)), atol=1e-5)
    assert eng.mode == "eager"
    eng.logits(_x(250))
    assert eng.mode == "traced"


@pytest.mark.parametrize("name", ["lipnet_fcn", "tiny"])
def test_variable_size_models_run_eager_at_any_size(name):
    module = _model(name)
    eng = CPUEngine(module, config=EngineConfig(**SMALL))
    for size in (16, 24):  # a trace at 16 px would be specialised to 16 px
        x = _x(70, size)
        np.testing.assert_allclose(eng.logits(x), _eager(module, x), atol=1e-5)
    assert eng.mode == "eager" and "any input size" in eng.reason


def test_hybrid_with_size_features_runs_eager():
    module = _model("lipnet_hybrid")
    x = _x(70)
    aux = np.random.default_rng(2).standard_normal((70, len(AUX_FEATURES))).astype(np.float32)
    eng = CPUEngine(module, config=EngineConfig(**SMALL))
    np.testing.assert_allclose(eng.logits(x, aux), _eager(module, x, aux), atol=1e-5)
    assert eng.mode == "eager" and "extra inputs" in eng.reason
    with pytest.raises(ValueError, match="aux"):
        eng.logits(x)


class _Off(nn.Module):
    """Stands in for a traced graph that computes something else."""

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x) + 1e-3


def test_trace_that_differs_or_fails_falls_back_to_eager(monkeypatch):
    module = _model("lipnet4")
    x = _x(100)
    monkeypatch.setattr(torch.jit, "optimize_for_inference", lambda g: _Off(g))
    eng = CPUEngine(module, config=EngineConfig(**SMALL))
    np.testing.assert_allclose(eng.logits(x), _eager(module, x), atol=1e-5)
    assert eng.mode == "eager" and "differs from eager" in eng.reason

    def broken(*a, **k):
        raise RuntimeError("cannot trace")

    monkeypatch.setattr(torch.jit, "trace", broken)
    eng = CPUEngine(module, config=EngineConfig(**SMALL))
    np.testing.assert_allclose(eng.logits(x), _eager(module, x), atol=1e-5)
    assert eng.mode == "eager" and "tracing failed (RuntimeError)" in eng.reason


def test_engine_leaves_global_state_alone():
    threads = torch.get_num_threads()
    rng_state = torch.random.get_rng_state()
    eng = CPUEngine(_model("lipnet4"), config=EngineConfig(threads=1, **SMALL))
    eng.logits(_x(100))
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.random.get_rng_state(), rng_state)


BAD_CONFIGS = [{"batch_size": 0}, {"chunk_pixels": 0}, {"min_trace": -1}, {"threads": 0},
               {"tolerance": 0.0}]  # fmt: skip


@pytest.mark.parametrize("kw", BAD_CONFIGS)
def test_engine_config_rejects_bad_values(kw):
    with pytest.raises(ValueError):
        EngineConfig(**kw)


def test_predict_uses_the_engine_with_eager_results(tmp_path, tiny_dataset, monkeypatch):
    """predict on the CPU goes through CPUEngine (forced to trace here) and still gives
    softmax(model(x) / T) of the plain module."""
    from lipoclass.data import PrepConfig, load_dataset, prepare
    from lipoclass.models import engine as engine_mod

    ds_dir = tiny_dataset(counts=(6, 5, 4))
    write_model_folder(tmp_path / "m")
    made: list[CPUEngine] = []

    class Spy(CPUEngine):
        def __init__(self, module, temperature=1.0, config=None):
            super().__init__(module, temperature, EngineConfig(min_trace=0))
            made.append(self)

    monkeypatch.setattr("lipoclass.models.engine.CPUEngine", Spy)
    res = predict(tmp_path / "m", ds_dir, tmp_path / "p.csv", config=CPU, verbose=False)
    assert len(made) == 1 and made[0].mode == "eager"  # tiny: global pooling, any size
    module = made[0].eager
    prep = prepare(load_dataset(ds_dir), PrepConfig(size=16), cache=False)
    want = torch.softmax(torch.from_numpy(_eager(module, prep.x)) / TEMPERATURE, dim=1).numpy()
    np.testing.assert_allclose(res.probs, want, atol=1e-6)
    assert engine_mod.usable_cores() >= 1


def test_bf16_engine_is_close_to_fp32_and_validated() -> None:
    """The opt-in bf16 inference runs eager under autocast and stays close to float32."""
    module = _model("lipnet4")
    x = _x(200)
    fp32 = CPUEngine(module, temperature=1.3, config=EngineConfig(**SMALL)).predict_proba(x)
    eng = CPUEngine(module, temperature=1.3, config=EngineConfig(precision="bf16", **SMALL))
    got = eng.predict_proba(x)
    assert eng.mode == "eager" and "bf16" in eng.reason
    assert got.dtype == np.float32 and got.shape == fp32.shape
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)
    assert 0 < np.abs(got - fp32).max() < 0.05
    with pytest.raises(ValueError, match="precision"):
        EngineConfig(precision="fp16")


def test_cli_predict_precision_bf16(tmp_path, tiny_dataset, capsys) -> None:
    """`predict --precision bf16` reaches the engines and stays close to the fp32 run; a wrong
    value is refused by argparse."""
    import csv

    from lipoclass.cli import main

    ds_dir = tiny_dataset(counts=(6, 5, 4))
    write_model_folder(tmp_path / "m")
    outs = {}
    for prec in ("fp32", "bf16"):
        out = tmp_path / f"{prec}.csv"
        assert main(["predict", str(tmp_path / "m"), str(ds_dir), "--out", str(out),
                     "--device", "cpu", "--precision", prec]) == 0  # fmt: skip
        with out.open() as fh:
            rows = list(csv.DictReader(fh))
        cols = [c for c in rows[0] if c.startswith("p_")]
        outs[prec] = np.array([[float(r[c]) for c in cols] for r in rows])
    diff = np.abs(outs["bf16"] - outs["fp32"]).max()
    assert 0 < diff < 0.05
    with pytest.raises(SystemExit):
        main(["predict", str(tmp_path / "m"), str(ds_dir), "--out", str(tmp_path / "x.csv"),
              "--precision", "fp16"])  # fmt: skip
    assert "invalid choice" in capsys.readouterr().err
