"""CNN training speed and memory (figures are printed, never asserted).

CPU comparison (the requirement: beat the thesis' Keras/TensorFlow stack on the same machine):
LipNet-4, 28 px, all augmentations, label smoothing, input noise, Adam, one epoch over 8192
random images at batch 32 and 128, timed like ``shared/bench/keras_lipnet4.py`` (a warm-up
fit first). With ``--keras-python`` that script runs beside it in its own virtualenv
(``python3 -m venv /tmp/kerasvenv && /tmp/kerasvenv/bin/pip install tensorflow-cpu``; never a
project dependency) and the ratio is printed. Then the peak resident memory (maxrss) of a
child process training LipNet-4 for ``--mem-epochs`` epochs on a 14,169-particle set
(random arrays of the thesis' lamellarity size).

``--cv-gpu``: the GPU goal, 5-fold CV of LipNet-4 on the synthetic lamellarity set (thesis
size), 30 epochs, oversampling, all augmentations, on CUDA; prints the wall time.

    .venv/bin/python benchmarks/bench_train.py --keras-python /tmp/kerasvenv/bin/python
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

KERAS_SCRIPT = Path(__file__).resolve().parents[2] / "shared" / "bench" / "keras_lipnet4.py"


def torch_speed(n: int, batch: int, threads: int | None) -> float:
    """Training images/s of one LipNet-4 epoch (after a 4-batch warm-up fit)."""
    from lipoclass.models import create_model
    from lipoclass.train import TrainConfig, Trainer

    rng = np.random.default_rng(0)
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 3, n)
    cfg = TrainConfig(
        epochs=1, batch_size=batch, balance="none", early_stopping=False, progress=False,
        schedule="none", device="cpu", threads=threads,
    )  # fmt: skip
    trainer = Trainer(cfg)
    model = create_model("lipnet4", 3)
    trainer.fit(model, x[: batch * 4], y[: batch * 4], seed=0)
    t = time.perf_counter()
    trainer.fit(model, x, y, seed=1)
    return n / (time.perf_counter() - t)


def keras_speed(python: str, n: int, batch: int) -> float | None:
    if not KERAS_SCRIPT.is_file():
        print(f"keras: {KERAS_SCRIPT} not found, skipped")
        return None
    res = subprocess.run(
        [python, str(KERAS_SCRIPT), str(n), str(batch)], capture_output=True, text=True, check=False
    )
    m = re.search(r"train: (\d+) img/s", res.stdout)
    if not m:
        print(f"keras failed (exit {res.returncode}): {res.stderr.strip()[-400:]}")
        return None
    print("  " + res.stdout.strip().splitlines()[-1])
    return float(m.group(1))


def memory_child(n: int, epochs: int) -> None:
    """Run inside a child process: train LipNet-4 on n random 28 px images, print maxrss."""
    from lipoclass.models import create_model
    from lipoclass.train import TrainConfig, Trainer

    rng = np.random.default_rng(0)
    y = rng.choice(3, size=n, p=[0.87, 0.12, 0.01])  # thesis lamellarity shares
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    nv = n // 10
    cfg = TrainConfig(epochs=epochs, progress=False, device="cpu")
    t = time.perf_counter()
    Trainer(cfg).fit(create_model("lipnet4", 3), x[nv:], y[nv:], x[:nv], y[:nv], seed=0)
    dt = time.perf_counter() - t
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(f"peak RSS {rss_mb:.0f} MiB; {epochs} epoch(s) oversampled on {n - nv} particles "
          f"took {dt:.1f} s")  # fmt: skip


def cv_gpu(out: Path, epochs: int, n: int | None) -> None:
    import torch

    from lipoclass.evaluate import CVConfig, build_spec, cross_validate
    from lipoclass.synth import synthesize

    if not torch.cuda.is_available():
        sys.exit("--cv-gpu needs a CUDA device")
    data = out / "lamellarity"
    if not (data / "particles.csv").is_file():
        t = time.perf_counter()
        synthesize("lamellarity", data, n=n, seed=0)
        print(f"synthesised {data} in {time.perf_counter() - t:.0f} s")
    from lipoclass.data import load_dataset

    ds = load_dataset(data)
    spec = build_spec("lipnet4", epochs=epochs, balance="oversample", device="cuda")
    t = time.perf_counter()
    res = cross_validate(ds, spec, CVConfig(folds=5, seed=0), out=out / "cv", progress=True)
    dt = time.perf_counter() - t
    print(res.table())
    print(f"5-fold CV, LipNet-4, {epochs} epochs, {len(ds)} particles on "
          f"{torch.cuda.get_device_name()}: {dt:.0f} s")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=8192, help="images per timed epoch (default 8192)")
    ap.add_argument("--batches", default="32,128")
    ap.add_argument("--threads", default="0,1",
                    help="comma list of torch thread counts to time, 0 = torch's default "
                    "(default: 0,1)")  # fmt: skip
    ap.add_argument("--repeat", type=int, default=2, help="alternating runs, best reported")
    ap.add_argument("--keras-python", default=None, help="python of a tensorflow-cpu virtualenv")
    ap.add_argument("--mem-n", type=int, default=14169)
    ap.add_argument("--mem-epochs", type=int, default=1)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--cv-gpu", action="store_true", help="5-fold CV of LipNet-4 on CUDA")
    ap.add_argument("--cv-epochs", type=int, default=30)
    ap.add_argument("--cv-n", type=int, default=None, help="synthetic set size (default thesis)")
    ap.add_argument("--out", default=None, help="--cv-gpu work folder (default: a temp folder)")
    ap.add_argument("--_memory-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._memory_child:
        memory_child(args.mem_n, args.mem_epochs)
        return
    if args.cv_gpu:
        cv_gpu(Path(args.out or tempfile.mkdtemp(prefix="lipoclass-cvgpu-")), args.cv_epochs,
               args.cv_n)  # fmt: skip
        return

    import torch

    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {load:.1f} (CPU may be shared)")  # fmt: skip
    settings = [int(t) or None for t in args.threads.split(",")]  # 0 -> torch's default
    for batch in (int(b) for b in args.batches.split(",")):
        ours: dict[int | None, list[float]] = {t: [] for t in settings}
        theirs: list[float] = []
        for _ in range(args.repeat):  # alternate, so all see similar load from other jobs
            for t in settings:
                ours[t].append(torch_speed(args.n, batch, t))
                print(f"  lipoclass (PyTorch) LipNet-4 train: {ours[t][-1]:.0f} img/s "
                      f"(batch {batch}, threads {t or torch.get_num_threads()})")  # fmt: skip
            if args.keras_python:
                k = keras_speed(args.keras_python, args.n, batch)
                if k:
                    theirs.append(k)
        for t in settings:
            best = max(ours[t])
            line = (
                f"batch {batch}, threads {t or torch.get_num_threads()}: lipoclass {best:.0f} img/s"
            )
            if theirs:
                line += f", keras {max(theirs):.0f} img/s, ratio {best / max(theirs):.2f}"
            print(line + f" (best of {args.repeat})")
    if not args.no_memory:
        res = subprocess.run(
            [sys.executable, __file__, "--_memory-child", "--mem-n", str(args.mem_n),
             "--mem-epochs", str(args.mem_epochs)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        print("memory: " + (res.stdout.strip() or res.stderr.strip()[-400:]))


if __name__ == "__main__":
    main()
