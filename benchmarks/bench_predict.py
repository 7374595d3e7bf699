"""Prediction throughput on CPU of a model folder holding a 5-member LipNet-4 ensemble at
28 px (a version-2 folder: ``members/fold{k}.pt`` + model.json, random weights: speed does
not depend on them): from prepared arrays (``LoadedModel.predict_proba_arrays``, which since
issue 19 runs through ``EnsemblePredictor``; PyTorch optimised = predict's one ``CPUEngine``
per member built here directly, onnxruntime with the whole ensemble in
one graph; particles/s of the ensemble and per member = ensemble rate x members; goal >=
5000/s per member) and end-to-end ``predict`` from image files (goal >= 2000 particles/s for
the ensemble on 2 cores). The machine is shared, so every figure is repeated (variants
interleaved) and printed as best and median, with the load average. Asserts nothing.

    .venv/bin/python benchmarks/bench_predict.py [--n 20000] [--files 3000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def _model_folder(path: Path, classes: tuple[str, ...], members: int = 5) -> None:
    """A version-2 LipNet-4 model folder of ``members`` fold models (random weights)."""
    from lipoclass.models import create_model

    (path / "members").mkdir(parents=True)
    rels = []
    for k in range(members):
        with torch.random.fork_rng():
            torch.manual_seed(k)
            m = create_model("lipnet4", len(classes), 28).eval()
        rel = f"members/fold{k}.pt"
        torch.save({"state_dict": m.state_dict(), "model_kwargs": dict(m.lipo_config)},
                   path / rel)  # fmt: skip
        rels.append(rel)
    info = {"format_version": 2, "kind": "cnn", "model": "lipnet4", "classes": list(classes),
            "prep": {"mode": "masked", "size": 28, "aspect": "pad", "normalize": "zscore"},
            "members": rels, "calibration": {"method": "temperature", "temperature": 1.3},
            "review": {"threshold": 0.6},
            "confusion": [[50, 5, 5], [5, 40, 5], [5, 5, 30]]}  # fmt: skip
    (path / "model.json").write_text(json.dumps(info))


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _rates(fns: dict[str, Callable[[], object]], n: int, repeat: int) -> dict[str, list[float]]:
    """particles/s of each variant, ``repeat`` rounds with the variants interleaved (so load
    from other users hits all of them alike), after one warm-up call each."""
    for fn in fns.values():
        fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            out[k].append(n / _timed(fn))
    return out


def _line(name: str, rates: list[float], extra: str = "") -> str:
    return (f"  {name:<34} best {max(rates):7.0f}  median {statistics.median(rates):7.0f} "
            f"particles/s{extra}")  # fmt: skip


def _load() -> str:
    return Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").is_file() else "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="prepared particles (default 20000)")
    ap.add_argument("--files", type=int, default=3000, help="image files end-to-end")
    ap.add_argument("--members", type=int, default=5, help="fold models (default 5)")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=5, help="rounds per figure (default 5)")
    ap.add_argument("--threads", type=int, default=None, help="torch / ORT threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from lipoclass.ensemble import load_model
    from lipoclass.export import ExportConfig, export_onnx, load_onnx
    from lipoclass.predict import CPUEngine, EngineConfig, PredictConfig, predict, usable_cores

    classes = ("unilamellar", "multilamellar", "uncertain")
    rng = np.random.default_rng(0)
    k = args.members
    print(f"CPU: {usable_cores()} usable cores, torch {torch.__version__}, "
          f"load average {_load()}; {args.repeat} interleaved rounds; {k}-member LipNet-4 "
          "ensemble")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _model_folder(root / "m", classes, k)
        with contextlib.redirect_stdout(io.StringIO()):
            export_onnx(root / "m", root / "m.onnx", ExportConfig(n_check=64))
        loaded = load_model(root / "m")
        assert loaded.n_members == k
        om = load_onnx(root / "m.onnx", threads=args.threads)
        x = rng.standard_normal((args.n, 1, 28, 28)).astype(np.float32)  # (N,1,28,28)
        bs = args.batch_size
        ecfg = EngineConfig(batch_size=bs, threads=args.threads)
        t_cold = _timed(lambda: [CPUEngine(m, loaded.temperature, ecfg).predict_proba(x)
                                 for m in loaded.modules])  # fmt: skip
        engines = [CPUEngine(m, loaded.temperature, ecfg) for m in loaded.modules]
        bcfg = EngineConfig(batch_size=bs, threads=args.threads, precision="bf16")
        engines_bf16 = [CPUEngine(m, loaded.temperature, bcfg) for m in loaded.modules]

        def ensemble(members: list[CPUEngine] = engines) -> np.ndarray:
            total = np.zeros((len(x), len(classes)))  # what predict runs: the member mean
            for e in members:
                total += e.predict_proba(x)
            return total / len(members)

        r = _rates({
            "eager": lambda: loaded.predict_proba_arrays(x, batch_size=bs),
            "engine": ensemble,
            "bf16": lambda: ensemble(engines_bf16),
            "ort": lambda: om.predict_proba_arrays(x, batch_size=bs),
        }, args.n, args.repeat)  # fmt: skip
        ref = loaded.predict_proba_arrays(x)
        d_eng = float(np.abs(ensemble() - ref).max())
        p_bf16 = ensemble(engines_bf16)
        d_bf16 = float(np.abs(p_bf16 - ref).max())
        agree = float(np.mean(p_bf16.argmax(1) == ref.argmax(1)))
        d_ort = float(np.abs(om.predict_proba_arrays(x) - ref).max())
        med = {n: statistics.median(v) for n, v in r.items()}
        print(f"prepared arrays, {k} x LipNet-4 28 px, {args.n} particles, batch {bs} "
              f"[load {_load()}]; ensemble particles/s (per member = x {k}):")  # fmt: skip
        print(_line("LoadedModel (EnsemblePredictor)", r["eager"],
                    f"; per member {max(r['eager']) * k:7.0f}"))  # fmt: skip
        print(_line(f"PyTorch optimised ({engines[0].mode})", r["engine"],
                    f"; per member {max(r['engine']) * k:7.0f} (goal >= 5000)"))  # fmt: skip
        print(f"  {'':<34} first call incl. setup/tracing {args.n / t_cold:7.0f} particles/s; "
              f"max |diff| vs eager {d_eng:.1e}")  # fmt: skip
        print(_line("PyTorch bf16 autocast (opt-in)", r["bf16"],
                    f"; per member {max(r['bf16']) * k:7.0f}; max |diff| vs fp32 eager "
                    f"{d_bf16:.1e}, same class for {100 * agree:.2f} %"))  # fmt: skip
        ratio = med["ort"] / med["engine"]
        print(_line("onnxruntime (one graph)", r["ort"],
                    f"; per member {max(r['ort']) * k:7.0f}; ORT / optimised torch (medians) "
                    f"{ratio:.2f}; max |diff| vs eager {d_ort:.1e}"))  # fmt: skip

        from lipoclass.data import write_image

        folder = root / "imgs"
        (folder / "masks").mkdir(parents=True)
        yy, xx = np.mgrid[:48, :48]
        for i in range(args.files):
            img = rng.integers(100, 200, size=(48, 48)).astype(np.uint8)
            mask = ((yy - 24) ** 2 + (xx - 24) ** 2 < rng.integers(100, 400)).astype(np.uint8)
            write_image(folder / f"p{i:05d}.png", img)
            write_image(folder / "masks" / f"p{i:05d}.png", mask * 255)
        runs = {
            "PyTorch": {"model_dir": root / "m"},
            "onnxruntime": {"model_dir": None, "onnx_path": root / "m.onnx"},
        }
        pcfg = PredictConfig(device="cpu")
        e2e = _rates({name: (lambda kw=kw: predict(input=folder, out=root / "p.csv",
                                                   config=pcfg, verbose=False, **kw))
                      for name, kw in runs.items()},
                     args.files, max(1, args.repeat // 2))  # fmt: skip
        print(f"end to end from {args.files} PNG files (48x48 + masks: decode, mask, normalise, "
              f"resize, {k}-member ensemble, shares) [load {_load()}]:")  # fmt: skip
        for name, rates in e2e.items():
            print(_line(name, rates, "  (goal >= 2000)"))


if __name__ == "__main__":
    main()
