"""CNN training speed and memory (figures are printed, never asserted).

CPU comparison (the requirement: beat the thesis' Keras/TensorFlow stack on the same machine):
LipNet-4, 28 px, all augmentations, label smoothing, input noise, Adam, one epoch over 8192
random images at batch 32 and 128, timed like ``shared/bench/keras_lipnet4.py`` (a warm-up
fit first). Every lipoclass measurement runs in a fresh child process, like every Keras one,
so no state (allocator, oneDNN primitive cache, thread pools) carries from run to run.
lipoclass runs with its defaults (``precision="auto"``: bf16 on CPUs with AVX-512 BF16 / AMX;
threads chosen by ``lipoclass.threads.pick_threads``) unless ``--precisions`` /
``--threads`` say otherwise. With ``--keras-python`` the Keras script runs beside it in its
own virtualenv (``python3.11 -m venv /work/kerasenv && /work/kerasenv/bin/pip install
tensorflow-cpu``; never a project dependency), in fp32 and with mixed_bfloat16
(``--keras-precisions``); runs alternate, every run is printed with the load average, and the
best of ``--repeat`` runs of each setting gives the ratios. Then the peak resident memory
(maxrss) of a child process training LipNet-4 for ``--mem-epochs`` epochs on a
14,169-particle set (random arrays of the thesis' lamellarity size).

``--scaling``: one epoch of LipNet-4 (defaults, no oversampling) on 1k, 4k, 16k and 64k random
particles, each in a fresh child process: wall time, peak RSS and the bytes per particle of
the RSS growth between sizes (a lab planning 100k-particle runs).

``--cv-gpu``: the GPU goal, 5-fold CV of LipNet-4 on the synthetic lamellarity set (thesis
size), 30 epochs, oversampling, all augmentations, data and augmentation on the device, bf16
(``precision="auto"``), ``--cv-workers`` folds at once (processes sharing the device).
Device-agnostic (``--cv-device``): the tests run it on CPU with a tiny set.

    .venv/bin/python benchmarks/bench_train.py --keras-python /work/kerasenv/bin/python
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

KERAS_SCRIPT = Path(__file__).resolve().parents[2] / "shared" / "bench" / "keras_lipnet4.py"


def _load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return f"{os.getloadavg()[0]:.2f}"


def torch_speed(
    n: int, batch: int, threads: int | None = None, precision: str = "auto"
) -> tuple[float, str, int | None]:
    """(training images/s of one LipNet-4 epoch after a 4-batch warm-up fit, resolved
    precision, threads used)."""
    from lipoclass.models import create_model
    from lipoclass.train import TrainConfig, Trainer

    rng = np.random.default_rng(0)
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 3, n)
    cfg = TrainConfig(
        epochs=1, batch_size=batch, balance="none", early_stopping=False, progress=False,
        schedule="none", device="cpu", threads=threads, precision=precision,  # type: ignore[arg-type]
    )  # fmt: skip
    trainer = Trainer(cfg)
    model = create_model("lipnet4", 3)
    trainer.fit(model, x[: batch * 4], y[: batch * 4], seed=0)
    t = time.perf_counter()
    hist = trainer.fit(model, x, y, seed=1)
    return n / (time.perf_counter() - t), hist.precision, hist.threads


def torch_speed_child(n: int, batch: int, threads: int | None, precision: str) -> tuple:
    """``torch_speed`` in a fresh process: (img/s, precision, threads) or None."""
    cmd = [sys.executable, __file__, "--_speed-child", "--n", str(n), "--batches", str(batch),
           "--threads", str(threads or 0), "--precisions", precision]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    m = re.search(r"speed (\S+) (\S+) (\S+)", res.stdout)
    if not m:
        print(f"lipoclass child failed (exit {res.returncode}): {res.stderr.strip()[-400:]}")
        return None
    return float(m.group(1)), m.group(2), int(m.group(3)) if m.group(3) != "None" else None


def keras_speed(python: str, n: int, batch: int, precision: str = "fp32") -> float | None:
    if not KERAS_SCRIPT.is_file():
        print(f"keras: {KERAS_SCRIPT} not found, skipped")
        return None
    res = subprocess.run(
        [python, str(KERAS_SCRIPT), str(n), str(batch), precision],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    m = re.search(r"train: (\d+) img/s", res.stdout)
    if not m:
        print(f"keras failed (exit {res.returncode}): {res.stderr.strip()[-400:]}")
        return None
    return float(m.group(1))


def memory_child(n: int, epochs: int, oversample: bool = True) -> None:
    """Run inside a child process: train LipNet-4 on n random 28 px images, print maxrss."""
    from lipoclass.models import create_model
    from lipoclass.train import TrainConfig, Trainer

    rng = np.random.default_rng(0)
    y = rng.choice(3, size=n, p=[0.87, 0.12, 0.01])  # thesis lamellarity shares
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    nv = n // 10
    cfg = TrainConfig(epochs=epochs, progress=False, device="cpu",
                      balance="oversample" if oversample else "none")  # fmt: skip
    t = time.perf_counter()
    hist = Trainer(cfg).fit(create_model("lipnet4", 3), x[nv:], y[nv:], x[:nv], y[:nv], seed=0)
    dt = time.perf_counter() - t
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    seen = round(hist.images_per_s * sum(e["seconds"] for e in hist.epochs))
    print(f"peak RSS {rss_mb:.0f} MiB; {epochs} epoch(s) on {n - nv} particles "
          f"({seen} images seen, {hist.precision}, {hist.threads} threads) took {dt:.1f} s; "
          f"wall {dt:.3f} rss_mib {rss_mb:.1f}")  # fmt: skip


def scaling(sizes: list[int]) -> None:
    """Wall time and peak RSS of one epoch (fresh process each) for every size in ``sizes``."""
    print(f"scaling: one epoch of LipNet-4 (no oversampling: every training particle once; "
          f"10% validation, defaults otherwise), load {_load()}")  # fmt: skip
    rows = []
    for n in sizes:
        res = subprocess.run(
            [sys.executable, __file__, "--_memory-child", "--mem-n", str(n), "--mem-epochs", "1",
             "--mem-balance", "none"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        m = re.search(r"wall (\S+) rss_mib (\S+)", res.stdout)
        if not m:
            print(f"  {n}: failed {res.stderr.strip()[-300:]}")
            continue
        wall, rss = float(m.group(1)), float(m.group(2))
        rows.append((n, wall, rss))
        print(f"  {n:>6} particles: {wall:7.1f} s, peak RSS {rss:7.0f} MiB  "
              f"({res.stdout.strip().split(';')[1].strip()}; load {_load()})")  # fmt: skip
    for (n0, _, r0), (n1, _, r1) in itertools.pairwise(rows):
        per = (r1 - r0) * 2**20 / (n1 - n0)
        print(f"  {n0} -> {n1}: {per:,.0f} bytes of peak RSS per added particle")
    if rows:
        print(f"  (one 28x28 float32 image is {28 * 28 * 4:,} bytes)")


def cv_gpu(
    out: Path, epochs: int, n: int | None, device: str = "cuda", workers: int = 1,
    folds: int = 5, precision: str = "auto",
) -> Any:  # fmt: skip
    """5-fold CV of LipNet-4 on a synthetic lamellarity set on ``device`` ("cuda"; "cpu" in
    tests): the prepared images and the augmentation stay on the device (``Trainer``), bf16
    autocast where supported, ``workers`` folds at once in processes sharing the device.
    Returns the ``CVResult``."""
    import torch

    from lipoclass.data import load_dataset
    from lipoclass.evaluate import CVConfig, ExecutorConfig, build_spec, cross_validate
    from lipoclass.synth import synthesize

    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("--cv-gpu needs a CUDA device (or --cv-device cpu)")
    data = out / "lamellarity"
    if not (data / "particles.csv").is_file():
        t = time.perf_counter()
        synthesize("lamellarity", data, n=n, seed=0)
        print(f"synthesised {data} in {time.perf_counter() - t:.0f} s")
    ds = load_dataset(data)
    spec = build_spec("lipnet4", epochs=epochs, balance="oversample", device=device,
                      precision=precision)  # fmt: skip
    ex = ExecutorConfig(workers=workers)
    t = time.perf_counter()
    res = cross_validate(ds, spec, CVConfig(folds=folds, seed=0), out=out / "cv", progress=False,
                         executor=ex)  # fmt: skip
    dt = time.perf_counter() - t
    print(res.table())
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"{folds}-fold CV, LipNet-4, {epochs} epochs, {len(ds)} particles on {name}, "
          f"{workers} fold(s) at once: {dt:.0f} s")  # fmt: skip
    return res


def paired(args: argparse.Namespace) -> None:
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, capability "
          f"{torch.backends.cpu.get_cpu_capability()}, load average {_load()} (CPU may be "
          f"shared); each run in a fresh process")  # fmt: skip
    settings = [(int(t) or None, p) for t in args.threads.split(",")
                for p in args.precisions.split(",")]  # fmt: skip
    kprec = args.keras_precisions.split(",") if args.keras_python else []
    summary = []
    for batch in (int(b) for b in args.batches.split(",")):
        ours: dict[tuple[int | None, str], list[float]] = {s: [] for s in settings}
        info: dict[tuple[int | None, str], str] = {}
        theirs: dict[str, list[float]] = {k: [] for k in kprec}
        for r in range(args.repeat):  # alternate, so all see similar load from other jobs
            for st in settings:
                got = torch_speed_child(args.n, batch, *st)
                if got is None:
                    continue
                ours[st].append(got[0])
                info[st] = f"{got[1]}, threads {got[2]}"
                print(f"  run {r + 1} batch {batch}: lipoclass (precision {st[1]} -> {got[1]}, "
                      f"threads {got[2]}) {got[0]:.0f} img/s  [load {_load()}]")  # fmt: skip
            for k in kprec:
                v = keras_speed(args.keras_python, args.n, batch, k)
                if v:
                    theirs[k].append(v)
                    print(f"  run {r + 1} batch {batch}: keras {k} {v:.0f} img/s  "
                          f"[load {_load()}]")  # fmt: skip
        for st in settings:
            if not ours[st]:
                continue
            best = max(ours[st])
            line = f"batch {batch}, lipoclass {st[1]} ({info[st]}): {best:.0f} img/s"
            for k, v in theirs.items():
                if v:
                    line += f"; keras {k} {max(v):.0f} img/s, ratio {best / max(v):.2f}"
            summary.append(line + f" (best of {len(ours[st])})")
    print("\n".join(["summary:", *summary]))
    if not args.no_memory:
        res = subprocess.run(
            [sys.executable, __file__, "--_memory-child", "--mem-n", str(args.mem_n),
             "--mem-epochs", str(args.mem_epochs)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        out = res.stdout.strip() or res.stderr.strip()[-400:]
        print("memory: " + out.split("; wall")[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=8192, help="images per timed epoch (default 8192)")
    ap.add_argument("--batches", default="32,128")
    ap.add_argument("--threads", default="0",
                    help="comma list of torch thread counts to time, 0 = lipoclass' choice "
                    "(default: 0)")  # fmt: skip
    ap.add_argument("--precisions", default="auto",
                    help="comma list of lipoclass precisions to time (auto,fp32,bf16; "
                    "default: auto)")  # fmt: skip
    ap.add_argument("--repeat", type=int, default=3, help="alternating runs, best reported")
    ap.add_argument("--keras-python", default=None, help="python of a tensorflow-cpu virtualenv")
    ap.add_argument("--keras-precisions", default="fp32,bf16")
    ap.add_argument("--mem-n", type=int, default=14169)
    ap.add_argument("--mem-epochs", type=int, default=1)
    ap.add_argument("--mem-balance", default="oversample", choices=("oversample", "none"))
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--scaling", action="store_true", help="one epoch at 1k/4k/16k/64k particles")
    ap.add_argument("--scaling-sizes", default="1000,4000,16000,64000")
    ap.add_argument("--cv-gpu", action="store_true", help="5-fold CV of LipNet-4 on CUDA")
    ap.add_argument("--cv-device", default="cuda")
    ap.add_argument("--cv-workers", type=int, default=1, help="folds trained at once")
    ap.add_argument("--cv-epochs", type=int, default=30)
    ap.add_argument("--cv-n", type=int, default=None, help="synthetic set size (default thesis)")
    ap.add_argument("--out", default=None, help="--cv-gpu work folder (default: a temp folder)")
    ap.add_argument("--_memory-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_speed-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._memory_child:
        memory_child(args.mem_n, args.mem_epochs, args.mem_balance == "oversample")
        return
    if args._speed_child:
        v, prec, th = torch_speed(args.n, int(args.batches), int(args.threads) or None,
                                  args.precisions)  # fmt: skip
        print(f"speed {v} {prec} {th}")
        return
    if args.cv_gpu:
        cv_gpu(Path(args.out or tempfile.mkdtemp(prefix="lipoclass-cvgpu-")), args.cv_epochs,
               args.cv_n, args.cv_device, args.cv_workers)  # fmt: skip
        return
    if args.scaling:
        scaling([int(v) for v in args.scaling_sizes.split(",")])
        return
    paired(args)


if __name__ == "__main__":
    main()
