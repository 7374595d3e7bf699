"""Speed of ``lipoclass synth``: particles/s and total time for a data set (default: the
full 14,169-particle lamellarity set). Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_synth.py [--problem lamellarity] [--n N] [--workers W]

The wall time depends on what else runs on the machine: the CPU time of this process and
its workers is printed too, and the machine load average before and after.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from lipoclass.synth import DEFAULT_N, synthesize


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", default="lamellarity", choices=sorted(DEFAULT_N))
    ap.add_argument("--n", type=int, default=None, help="default: the thesis size")
    ap.add_argument("--workers", type=int, default=None, help="default: all CPUs")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n = args.n or DEFAULT_N[args.problem]
    tmp = Path(tempfile.mkdtemp(prefix="bench-synth-"))
    try:
        load0 = os.getloadavg()[0]
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        ds = synthesize(args.problem, tmp / "ds", n=n, seed=args.seed, workers=args.workers)
        wall = time.perf_counter() - t0
        cpu = _cpu_seconds() - cpu0
        size_mb = sum(p.stat().st_size for p in (tmp / "ds").rglob("*") if p.is_file()) / 1e6
        print(f"problem        {args.problem}")
        print(f"particles      {len(ds)}  {ds.class_counts()}")
        print(f"workers        {args.workers or len(os.sched_getaffinity(0))}")
        print(f"total time     {wall:.1f} s (wall)")
        print(f"particles/s    {len(ds) / wall:.0f}")
        print(f"cpu time       {cpu:.1f} s ({1000 * cpu / len(ds):.2f} ms per particle)")
        print(f"dataset size   {size_mb:.0f} MB")
        print(f"load average   {load0:.1f} before, {os.getloadavg()[0]:.1f} after (shared CPU)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
