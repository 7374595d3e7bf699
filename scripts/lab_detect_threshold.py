"""``lipoclass detect-train --threshold auto`` against the fixed candidate threshold 4 on a
lab-sized scenario (docs/micrographs.md, "Choosing the candidate threshold from the lab's
annotations"): ``detect-train``'s library function (``verify.train_detect_verifier``, its
defaults: 5 networks, network seed 0, 128 blanks, no prior shift) on ``--lab`` annotated
micrographs written as MRC + label TIFF, once at threshold 4 and once choosing among
``DETECT_TRAIN_THRESHOLDS`` (both timed), then both verifiers scored at detection level (mask
IoU >= 0.5, pooled) on check micrographs, each at the candidate threshold it was trained
with:

- ``--sim altsim``: lab seeds 11100 + i (``scripts/train_detect_verifier.py``'s
  ``alt_micrographs``, as ``scripts/lab_detect_verifier.py``), check micrographs the altsim
  check set (15 conditions x 3, seeds 7000 + 1000 k + i);
- ``--sim thirdsim``: lab seeds 9900 + i (thirdsim exploratory range, clear of the check
  seeds; each condition drawn at random from bench_detect_thirdsim.py's table by a generator
  seeded 9900, as its lab path draws them from 61000), check micrographs the thirdsim
  exploratory ones (16 conditions x 3, seeds 9000 + 50 k + i).

Report seeds (50000+) are never used.

    OMP_NUM_THREADS=1 PYTHONPATH=src:benchmarks:scripts python scripts/lab_detect_threshold.py \\
        --sim thirdsim
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from lipoclass.micrograph import DetectConfig, LabelImageSource, match_instances
from lipoclass.micrograph.detect import detect_candidates
from lipoclass.micrograph.io import write_label_image
from lipoclass.micrograph.match import pool_matches
from lipoclass.micrograph.verify import (
    DETECT_TRAIN_THRESHOLDS,
    load_verifier,
    train_detect_verifier,
)
from thirdsim import write_mrc

Mic = tuple[str, np.ndarray, np.ndarray, float]  # name, image, truth labels, pixel size nm


def lab_micrographs(sim: str, n: int) -> list[Mic]:
    """The lab's ``n`` annotated micrographs of ``sim``."""
    if sim == "altsim":
        from train_detect_verifier import alt_micrographs

        return alt_micrographs(11100, n)
    from bench_detect_thirdsim import CONDITIONS, _cfg
    from thirdsim import render

    rng = np.random.default_rng(9900)
    out = []
    for i in range(n):
        m = render(_cfg(int(rng.integers(len(CONDITIONS)))), 9900 + i)
        out.append((f"lab{9900 + i}", m.image, m.labels.astype(np.int64), float(m.pixel_nm)))
    return out


def check_micrographs(sim: str) -> Any:
    """The check micrographs of ``sim``, one at a time."""
    if sim == "altsim":
        from altsim import AltConfig, render
        from bench_detect_altsim import CONDITIONS as ALT

        for k, (_, change) in enumerate(ALT):
            for i in range(3):
                m = render(replace(AltConfig(), **change), 7000 + 1000 * k + i)  # type: ignore[arg-type]
                yield m.image.astype(np.float32), m.labels.astype(np.int64), float(m.pixel_nm)
        return
    from bench_detect_thirdsim import CONDITIONS, _cfg
    from thirdsim import render as render3

    for k in range(len(CONDITIONS)):
        for i in range(3):
            m3 = render3(_cfg(k), 9000 + 50 * k + i)
            yield m3.image, m3.labels.astype(np.int64), float(m3.pixel_nm)


def train(lab: list[Mic], root: Path, name: str, thresholds: Any) -> tuple[str, float]:
    """``detect-train`` on the lab's micrographs; (verifier folder, seconds)."""
    mics, lab_dir = [], root / "labels"
    lab_dir.mkdir(exist_ok=True)
    for mname, img, truth, px in lab:
        path = root / f"{mname}.mrc"
        if not path.exists():
            write_mrc(str(path), img, px)
            write_label_image(lab_dir / f"{mname}.tif", truth, px)
        mics.append(path)
    out = root / name
    t0 = time.time()
    train_detect_verifier(mics, LabelImageSource(lab_dir, mics), DetectConfig(), out,
                          thresholds=thresholds)  # fmt: skip
    return str(out), time.time() - t0


def load() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sim", choices=("altsim", "thirdsim"), required=True)
    ap.add_argument("--lab", type=int, default=8, help="annotated micrographs of the lab")
    args = ap.parse_args()
    print(f"{args.sim}: start {time.strftime('%H:%M UTC', time.gmtime())}, load {load()}")
    lab = lab_micrographs(args.sim, args.lab)
    with tempfile.TemporaryDirectory() as tmp:
        fixed, t_fixed = train(lab, Path(tmp), "fixed", None)
        print(f"detect-train --threshold 4: {t_fixed:.0f} s (load {load()})", flush=True)
        auto, t_auto = train(lab, Path(tmp), "auto", DETECT_TRAIN_THRESHOLDS)
        print(f"detect-train --threshold auto: {t_auto:.0f} s (load {load()})", flush=True)
        vers = {k: load_verifier(p) for k, p in (("4", fixed), ("auto", auto))}
        info = vers["auto"].info  # type: ignore[union-attr]
        chosen = float(info["candidate_threshold"])
        print(f"auto chose {chosen:g}; out-of-fold per threshold: "
              f"{json.dumps(info['candidate_thresholds'])}", flush=True)  # fmt: skip
        cfgs = {"4": DetectConfig(verifier=fixed),
                "auto": DetectConfig(threshold=chosen, verifier=auto)}  # fmt: skip
        ms: dict[str, list[Any]] = {"4": [], "auto": []}
        secs = {"4": 0.0, "auto": 0.0}
        for img, truth, px in check_micrographs(args.sim):
            for k in ms:
                t0 = time.time()
                det = detect_candidates(img, cfgs[k], px, "", vers[k])
                secs[k] += time.time() - t0
                ms[k].append(match_instances(truth, det.labels))
        for k in ms:
            a = pool_matches(ms[k])
            print(f"| {args.sim} | {k} | {a.n_truth} | {a.precision:.3f} | {a.recall:.3f} | "
                  f"{a.f1:.4f} | {secs[k] / len(ms[k]):.2f} s |")  # fmt: skip
    print(f"end {time.strftime('%H:%M UTC', time.gmtime())}, load {load()}")


if __name__ == "__main__":
    main()
