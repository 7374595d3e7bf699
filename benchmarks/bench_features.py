"""Benchmark ``lipoclass.features.compute_features``: particles/s for 80-250 px crops, with
``--workers`` processes and with 1, and the cached reload. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_features.py [--n 1000] [--workers 2] [--no-mask-every 0 10]

Synthesises ``--n`` particles (8-bit PNG image + 0/255 PNG mask drawn with numpy: a noisy
background with one or two dark rings) into a temporary folder, once per
``--no-mask-every`` value: 0, every particle has its mask (the input the features are
defined on); 10, every tenth particle has none, so ``auto_mask`` segments it first (~2.5 ms
each). Goal: >= 1000 particles/s on 2 cores (decode + features, cache off). Also prints CPU
ms per particle (this process + workers), steadier than wall time on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when imported from elsewhere
from _common import cpu_seconds, make_dataset
from lipoclass.data import load_dataset
from lipoclass.features import compute_features


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-mask-every", type=int, nargs="+", default=[0, 10])
    args = ap.parse_args()
    print(f"{args.n} particles, 80-250 px, cpu_count={os.cpu_count()}")
    for every in args.no_mask_every:
        tmp = Path(tempfile.mkdtemp(prefix="bench-features-"))
        try:
            make_dataset(tmp / "ds", args.n, no_mask_every=every)
            ds = load_dataset(tmp / "ds")
            print(f"no mask every {every} (0: all masked), load average {os.getloadavg()[0]:.1f}")
            for nw in sorted({args.workers, 1}, reverse=True):
                t, c = time.perf_counter(), cpu_seconds()
                table = compute_features(ds, cache=False, workers=nw)
                dt, dc = time.perf_counter() - t, cpu_seconds() - c
                print(
                    f"  workers={nw}: {args.n / dt:8.0f} particles/s ({dt:.2f} s; "
                    f"CPU {1000 * dc / args.n:.2f} ms/particle; {len(table)} ok, "
                    f"{len(table.failed)} failed, {table.auto_masked} auto-masked)"
                )
            cache = tmp / "cache"
            compute_features(ds, cache_dir=cache, workers=args.workers)
            t = time.perf_counter()
            table = compute_features(ds, cache_dir=cache)
            dt = time.perf_counter() - t
            print(f"  cached reload: {dt:.3f} s (from_cache={table.from_cache})")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
