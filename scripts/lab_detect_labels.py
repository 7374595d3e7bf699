"""``lipoclass detect-train --labels-rule painted`` against ``alone`` on a lab-sized scenario
(docs/micrographs.md, "Eighteenth round: verifier labels from each candidate alone"):
``detect-train``'s library function (``verify.train_detect_verifier``, its defaults: 5
networks, 128 blanks, no prior shift, candidate threshold 4) on ``--lab`` annotated
micrographs of ``scripts/lab_detect_threshold.py``'s labs (altsim: seeds 11100 + i;
thirdsim: seeds 9900 + i), once per rule and network seed of ``--seeds``, each fit timed.
The verifiers are written to OUT/RULE-SEED; score them on the check micrographs with
``benchmarks/verifier_labels.py --score`` (altsim check 7000 + 1000 k + i, thirdsim
exploratory 9000 + 50 k + i). Report seeds (50000+) are never used.

    OMP_NUM_THREADS=1 PYTHONPATH=src:benchmarks:scripts python scripts/lab_detect_labels.py \\
        --sim thirdsim OUT
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from lab_detect_threshold import lab_micrographs, load

from lipoclass.choices import VERIFIER_LABELS
from lipoclass.micrograph import DetectConfig, LabelImageSource
from lipoclass.micrograph.io import write_label_image
from lipoclass.micrograph.verify import train_detect_verifier
from thirdsim import write_mrc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder for the lab's files and verifiers")
    ap.add_argument("--sim", choices=("altsim", "thirdsim"), required=True)
    ap.add_argument("--lab", type=int, default=8, help="annotated micrographs of the lab")
    ap.add_argument("--seeds", default="0,1,2", help="network seeds, comma-separated")
    args = ap.parse_args()
    print(f"{args.sim}: start {time.strftime('%H:%M UTC', time.gmtime())}, load {load()}")
    root, lab_dir = args.out, args.out / "labels"
    lab_dir.mkdir(parents=True, exist_ok=True)
    mics = []
    for mname, img, truth, px in lab_micrographs(args.sim, args.lab):
        path = root / f"{mname}.mrc"
        if not path.exists():
            write_mrc(str(path), img, px)
            write_label_image(lab_dir / f"{mname}.tif", truth, px)
        mics.append(path)
    for seed in (int(s) for s in args.seeds.split(",")):
        for rule in VERIFIER_LABELS:
            out = root / f"{rule}-{seed}"
            if out.exists():
                continue
            t0 = time.time()
            src = LabelImageSource(lab_dir, mics)
            _, stats = train_detect_verifier(mics, src, DetectConfig(), out, seed=seed,
                                             labels=rule)  # fmt: skip
            print(f"{rule} seed {seed}: {time.time() - t0:.0f} s (load {load()}); out-of-fold "
                  f"P {stats['detection_precision']:.3f} R {stats['detection_recall']:.3f} "
                  f"F1 {stats['detection_f1']:.3f}", flush=True)  # fmt: skip
    print(f"end {time.strftime('%H:%M UTC', time.gmtime())}, load {load()}")


if __name__ == "__main__":
    main()
