"""Benchmark ``lipoclass.data.prepare``: decode + crop + mask + resize throughput, and the
cached reload time of a large dataset. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_prepare.py [--n 3000] [--big 25000] [--workers 2]

Synthesises ``--n`` particles of 80-250 px (8-bit PNG image + 0/255 PNG mask, drawn with
numpy: a noisy background with one or two dark rings) into a temporary folder, then
 1. prepares them (mode masked, size 28, cache off) with ``--workers`` processes and with 1;
 2. writes a ``--big``-row table reusing those files, prepares it once to fill the cache and
    times the cached reload (goal < 2 s for 25,000 particles).
Goals: >= 2000 particles/s for step 1 on a 2-core machine.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when imported from elsewhere
from _common import cpu_seconds, make_dataset
from lipoclass.data import PrepConfig, load_dataset, prepare


def make_big(src: Path, out: Path, n: int) -> None:
    """A dataset of ``n`` rows that reuses ``src``'s files (symlinked folders)."""
    out.mkdir()
    for sub in ("images", "masks"):
        os.symlink(src / sub, out / sub)
    shutil.copy(src / "dataset.toml", out / "dataset.toml")
    with (src / "particles.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    with (out / "particles.csv").open("w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
        wr.writeheader()
        for i in range(n):
            row = dict(rows[i % len(rows)])
            row["id"] = f"b{i:06d}"
            wr.writerow(row)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--big", type=int, default=25000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPU(s)")
    tmp = Path(tempfile.mkdtemp(prefix="lipoclass-bench-"))
    os.environ["LIPOCLASS_CACHE"] = str(tmp / "cache")
    try:
        t = time.perf_counter()
        make_dataset(tmp / "ds", args.n)
        print(f"synthesised {args.n} particles (80-250 px PNG + mask) in "
              f"{time.perf_counter() - t:.1f} s")  # fmt: skip
        ds = load_dataset(tmp / "ds")
        cfg = PrepConfig(mode="masked", size=28)
        for workers in dict.fromkeys((args.workers, 1)):
            c0 = cpu_seconds()
            t = time.perf_counter()
            prep = prepare(ds, cfg, cache=False, workers=workers)
            dt = time.perf_counter() - t
            cpu = cpu_seconds() - c0
            print(
                f"prepare masked, cache off, {workers} worker(s): {len(prep)} particles in "
                f"{dt:.2f} s = {len(prep) / dt:.0f} particles/s (goal >= 2000); CPU "
                f"{cpu:.2f} s = {1e3 * cpu / len(prep):.2f} ms/particle, i.e. "
                f"{workers * len(prep) / cpu:.0f} particles/s on {workers} idle core(s)"
            )

        make_big(tmp / "ds", tmp / "big", args.big)
        t = time.perf_counter()
        big = load_dataset(tmp / "big", allow_outside=True)  # symlinked image folders
        t_load = time.perf_counter() - t
        t = time.perf_counter()
        prepare(big, cfg, workers=args.workers)
        t_fill = time.perf_counter() - t
        t = time.perf_counter()
        again = prepare(big, cfg, workers=args.workers)
        t_hit = time.perf_counter() - t
        assert again.from_cache
        print(f"{args.big} particles: load_dataset {t_load:.2f} s; first prepare (fills cache) "
              f"{t_fill:.1f} s; cached reload {t_hit:.2f} s (goal < 2 s), "
              f"load + cached reload {t_load + t_hit:.2f} s")  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
