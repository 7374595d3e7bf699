"""Prediction throughput on CPU: LipNet-4 at 28 px from prepared arrays (PyTorch and
onnxruntime, particles/s; goal >= 5000/s, ORT >= torch) and end-to-end ``predict`` from
image files (goal >= 1000/s). Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_predict.py [--n 20000] [--files 3000] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
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


def _rate(fn, n: int, repeat: int = 3) -> float:
    fn()  # warm-up
    best = min(_timed(fn) for _ in range(repeat))
    return n / best


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="prepared particles (default 20000)")
    ap.add_argument("--files", type=int, default=3000, help="image files end-to-end")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=None, help="torch / ORT threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from lipoclass.export import export_onnx, load_onnx
    from lipoclass.predict import predict
    from lipoclass.train import load_model

    classes = ("unilamellar", "multilamellar", "uncertain")
    rng = np.random.default_rng(0)
    print(f"CPU: {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads)")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _model_folder(root / "m", classes)
        export_onnx(root / "m", root / "m.onnx")
        loaded = load_model(root / "m")
        om = load_onnx(root / "m.onnx", threads=args.threads)
        x = rng.standard_normal((args.n, 1, 28, 28)).astype(np.float32)  # (N,1,28,28)
        bs = args.batch_size
        r_t = _rate(lambda: loaded.predict_proba_arrays(x, batch_size=bs), args.n)
        r_o = _rate(lambda: om.predict_proba_arrays(x, batch_size=bs), args.n)
        print(f"prepared arrays, LipNet-4 28 px, batch {bs}:")
        print(f"  PyTorch      {r_t:10.0f} particles/s  (goal >= 5000)")
        print(f"  onnxruntime  {r_o:10.0f} particles/s  (ORT/torch {r_o / r_t:.2f})")

        from lipoclass.data import write_image

        folder = root / "imgs"
        (folder / "masks").mkdir(parents=True)
        yy, xx = np.mgrid[:48, :48]
        for i in range(args.files):
            img = rng.integers(100, 200, size=(48, 48)).astype(np.uint8)
            mask = ((yy - 24) ** 2 + (xx - 24) ** 2 < rng.integers(100, 400)).astype(np.uint8)
            write_image(folder / f"p{i:05d}.png", img)
            write_image(folder / "masks" / f"p{i:05d}.png", mask * 255)
        runs = (("PyTorch", {"model_dir": root / "m"}),
                ("onnxruntime", {"model_dir": None, "onnx_path": root / "m.onnx"}))  # fmt: skip
        for name, kw in runs:
            t = _timed(lambda kw=kw: predict(input=folder, out=root / "p.csv", device="cpu",
                                             verbose=False, **kw))  # fmt: skip
            print(f"end-to-end from {args.files} PNG files (48x48 + masks, decode, mask, "
                  f"normalise, resize, predict, shares), {name}: "
                  f"{args.files / t:8.0f} particles/s (goal >= 1000)")  # fmt: skip


if __name__ == "__main__":
    main()
