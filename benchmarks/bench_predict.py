"""Prediction throughput on CPU: LipNet-4 at 28 px from prepared arrays (PyTorch eager,
PyTorch optimised = predict's CPUEngine, onnxruntime; particles/s; goal >= 5000/s, ORT >=
torch) and end-to-end ``predict`` from image files (goal >= 1000/s). The machine is shared,
so every figure is repeated (variants interleaved) and printed as best and median. Prints
figures; asserts nothing.

    .venv/bin/python benchmarks/bench_predict.py [--n 20000] [--files 3000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def _model_folder(path: Path, classes: tuple[str, ...]) -> None:
    """A LipNet-4 model folder (random weights: speed does not depend on them)."""
    from lipoclass.models import create_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        m = create_model("lipnet4", len(classes), 28).eval()
    path.mkdir(parents=True)
    torch.save({"state_dict": m.state_dict(), "model_kwargs": m.lipo_config}, path / "weights.pt")
    info = {"format_version": 1, "kind": "cnn", "model": "lipnet4", "classes": list(classes),
            "prep": {"mode": "masked", "size": 28, "aspect": "pad", "normalize": "zscore"},
            "calibration": {"method": "temperature", "temperature": 1.3},
            "review_threshold": 0.6, "confusion": [[50, 5, 5], [5, 40, 5], [5, 5, 30]]}  # fmt: skip
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


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="prepared particles (default 20000)")
    ap.add_argument("--files", type=int, default=3000, help="image files end-to-end")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=5, help="rounds per figure (default 5)")
    ap.add_argument("--threads", type=int, default=None, help="torch / ORT threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from lipoclass.export import export_onnx, load_onnx
    from lipoclass.predict import CPUEngine, EngineConfig, predict, usable_cores
    from lipoclass.train import load_model

    classes = ("unilamellar", "multilamellar", "uncertain")
    rng = np.random.default_rng(0)
    print(f"CPU: {usable_cores()} usable cores, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}; {args.repeat} interleaved rounds")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _model_folder(root / "m", classes)
        with contextlib.redirect_stdout(io.StringIO()):
            export_onnx(root / "m", root / "m.onnx")
        loaded = load_model(root / "m")
        om = load_onnx(root / "m.onnx", threads=args.threads)
        x = rng.standard_normal((args.n, 1, 28, 28)).astype(np.float32)  # (N,1,28,28)
        bs = args.batch_size
        ecfg = EngineConfig(batch_size=bs, threads=args.threads)
        t_cold = _timed(lambda: CPUEngine(loaded.module, loaded.temperature, ecfg)
                        .predict_proba(x))  # fmt: skip
        engine = CPUEngine(loaded.module, loaded.temperature, ecfg)
        module = loaded.module
        assert module is not None

        def plain() -> None:  # the textbook loop: model(x) in batches, softmax
            with torch.inference_mode():
                for b0 in range(0, len(x), bs):
                    torch.softmax(module(torch.from_numpy(x[b0 : b0 + bs])) / 1.3, dim=1)

        r = _rates({
            "plain": plain,
            "eager": lambda: loaded.predict_proba_arrays(x, batch_size=bs),
            "engine": lambda: engine.predict_proba(x),
            "ort": lambda: om.predict_proba_arrays(x, batch_size=bs),
        }, args.n, args.repeat)  # fmt: skip
        diff = float(np.abs(engine.predict_proba(x) - loaded.predict_proba_arrays(x)).max())
        med = {k: statistics.median(v) for k, v in r.items()}
        print(f"prepared arrays, LipNet-4 28 px, {args.n} particles, batch {bs}:")
        print(_line("PyTorch plain model(x) loop", r["plain"]))
        print(_line("PyTorch eager (LoadedModel)", r["eager"]))
        print(_line(f"PyTorch optimised ({engine.mode})", r["engine"], "  (goal >= 5000)"))
        print(f"  {'':<34} first call incl. setup/tracing {args.n / t_cold:7.0f} particles/s; "
              f"max |diff| vs eager {diff:.1e}")  # fmt: skip
        ratio = med["ort"] / med["engine"]
        print(_line("onnxruntime", r["ort"], f"  (ORT / optimised torch, medians: {ratio:.2f})"))

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
        e2e = _rates({name: (lambda kw=kw: predict(input=folder, out=root / "p.csv",
                                                   device="cpu", verbose=False, **kw))
                      for name, kw in runs.items()},
                     args.files, max(1, args.repeat // 2))  # fmt: skip
        print(f"end to end from {args.files} PNG files (48x48 + masks: decode, mask, normalise, "
              "resize, predict, shares):")  # fmt: skip
        for name, rates in e2e.items():
            print(_line(name, rates, "  (goal >= 1000)"))


if __name__ == "__main__":
    main()
