"""Detector check on a simulator that no verifier was trained or tuned on
(benchmarks/thirdsim.py: Abel-projected smooth bilayer profiles, harmonic outlines, bimodal
gamma sizes, hexagonal ice crystals, frost, gold, a holey-carbon edge, a weak-object CTF with
coherence envelopes, counting or CCD detector; nothing shared with lipoclass.synth or
benchmarks/altsim.py). It measures how detection generalises to a simulator it has never
seen, the closest stand-in here for real EM data.

Per condition (one setting changed at a time around thirdsim's reference: 1024 px, 1 nm/px,
300 kV, 30 e/A^2, defocus 1-2.5 um, density 0.18 of the hole, overlap 0.25, 0.8 ice crystals,
6 frost clusters and 2 gold clusters per um^2, a carbon edge in 40 %, counting detector),
``--count`` micrographs (report seeds 60000 + 1000 k + i; exploratory seeds for looking at
the simulator: 9000+): precision / recall at mask IoU >= 0.5 of the raw candidates and of the
packaged verifier (default ``DetectConfig()``), F1, mean IoU, the pooled precision / recall
with a 95 % micrograph-bootstrap interval (``match.pooled_interval``). ``--lab 8,24``: the lab
path, ``detect-train``'s library function (``verify.train_detect_verifier``, its defaults) on
N annotated thirdsim micrographs (seeds 61000 + i, each with a condition drawn at random from
the table's; written as MRC + label TIFF) and the same report micrographs scored with that
lab verifier too.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_detect_thirdsim.py [--count 8]
        [--lab 8,24] [--crops /tmp/thirdcrops]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_detect import _score
from lipoclass.micrograph import DetectConfig, match_instances
from lipoclass.micrograph.detect import detect_candidates
from lipoclass.micrograph.match import pool_matches, pooled_interval
from thirdsim import ThirdConfig, ThirdMicrograph, render, write_mrc

REF = ThirdConfig()
HEAVY = {"crystals": 3.0, "frost": 25.0, "gold": 15.0, "carbon": 1.0, "ice_nm": (50.0, 250.0),
         "drift_nm": 5.0, "overlap": 0.5}  # fmt: skip
CONDITIONS: list[tuple[str, dict[str, object]]] = [
    ("reference", {}),
    ("pixel 0.5 nm", {"pixel_nm": 0.5}),
    ("pixel 2 nm", {"pixel_nm": 2.0}),
    ("pixel 3 nm", {"pixel_nm": 3.0}),
    ("dose 15", {"dose": 15.0}),
    ("dose 60", {"dose": 60.0}),
    ("defocus 0.5-1 um", {"defocus_um": (0.5, 1.0)}),
    ("defocus 3-5 um", {"defocus_um": (3.0, 5.0)}),
    ("density 0.06", {"density": 0.06}),
    ("density 0.35", {"density": 0.35}),
    ("no distractors", {"crystals": 0.0, "frost": 0.0, "gold": 0.0, "carbon": 0.0,
                        "drift_nm": 0.0}),
    ("heavy distractors", HEAVY),
    ("CCD detector", {"detector": "ccd"}),
    ("8-bit export", {"eight_bit": True}),
    ("200 kV", {"kv": 200.0}),
    ("round, unilamellar, empty", {"deform": 0.0, "lamellar": 0.0, "nested": 0.0, "dense": 0.0}),
]  # fmt: skip
SEED = 60000
LAB_SEED = 61000


def _cfg(k: int) -> ThirdConfig:
    return replace(REF, **CONDITIONS[k][1])  # type: ignore[arg-type]


def _ci(ms: list) -> str:
    if len(ms) < 2:
        return " | "
    ci = pooled_interval(ms)
    return f"{ci['precision'][0]:.3f}-{ci['precision'][1]:.3f} | {ci['recall'][0]:.3f}-" + (
        f"{ci['recall'][1]:.3f}"
    )


def lab_verifier(n: int, root: Path) -> str:
    """``detect-train`` (library function, defaults) on ``n`` annotated thirdsim micrographs
    (seeds LAB_SEED + i, conditions drawn at random); the verifier's folder."""
    from lipoclass.micrograph import LabelImageSource
    from lipoclass.micrograph.io import write_label_image
    from lipoclass.micrograph.verify import train_detect_verifier

    rng = np.random.default_rng(LAB_SEED)
    mics, lab_dir = [], root / f"labels{n}"
    lab_dir.mkdir()
    for i in range(n):
        m = render(_cfg(int(rng.integers(len(CONDITIONS)))), LAB_SEED + i)
        path = root / f"lab{n}_{i:03d}.mrc"
        write_mrc(str(path), m.image, m.pixel_nm)
        write_label_image(lab_dir / f"{path.stem}.tif", m.labels, m.pixel_nm)
        mics.append(path)
    out = root / f"verifier{n}"
    t0 = time.time()
    _, stats = train_detect_verifier(mics, LabelImageSource(lab_dir, mics), DetectConfig(), out)
    print(f"lab verifier on {n} micrographs: {int(stats['positives'])} liposomes, "
          f"{int(stats['negatives'])} other candidates, {time.time() - t0:.0f} s",
          flush=True)  # fmt: skip
    return str(out)


def _crop_png(path: Path, m: ThirdMicrograph, found: np.ndarray) -> None:
    """The micrograph (up to 512 px from its top-left corner) with truth outlines green and
    accepted outlines red, for looking at failures."""
    import imagecodecs
    from scipy import ndimage

    s = np.s_[:512, :512]
    img = m.image[s].astype(np.float64)
    lo, hi = np.percentile(img, [1, 99])
    g = np.clip((img - lo) / max(hi - lo, 1e-9), 0, 1)
    rgb = np.stack([g, g, g], -1)
    for lab, col in ((m.labels[s], (0, 1, 0)), (found[s], (1, 0, 0))):
        rgb[(lab > 0) & (ndimage.grey_erosion(lab, 3) != lab)] = col
    path.write_bytes(imagecodecs.png_encode((rgb * 255).astype(np.uint8)))


def accuracy(count: int, seed: int, labs: dict[str, str], crops: Path | None) -> None:
    """The table: default verifier (and each lab verifier) per condition and pooled."""
    from lipoclass.micrograph.verify import load_verifier

    names = ["default", *labs]
    cfgs = {"default": DetectConfig(), **{k: DetectConfig(verifier=v) for k, v in labs.items()}}
    vers = {k: load_verifier(c.verifier) for k, c in cfgs.items()}
    allm: dict[str, list] = {k: [] for k in names}
    rows: dict[str, list[str]] = {k: [] for k in names}
    print(f"{count} micrograph(s) of 1024 px per row (thirdsim seeds {seed} + 1000 k + i)")
    for c, (name, _change) in enumerate(CONDITIONS):
        cand: list = []
        ms: dict[str, list] = {k: [] for k in names}
        for i in range(count):
            m = render(_cfg(c), seed + 1000 * c + i)
            for k in names:
                det = detect_candidates(m.image, cfgs[k], m.pixel_nm, "", vers[k])
                if k == "default":
                    cand.append(_score(m.labels, det, np.ones(len(det), bool)))
                    if crops is not None and i == 0:
                        _crop_png(crops / f"{name.replace(' ', '_')}.png", m, det.labels)
                ms[k].append(match_instances(m.labels, det.labels))
        ca = pool_matches(cand)
        for k in names:
            v = pool_matches(ms[k])
            allm[k] += ms[k]
            head = f"| {name} | {v.n_truth} | " + (
                f"{ca.precision:.3f} | {ca.recall:.3f} | " if k == "default" else ""
            )
            rows[k].append(f"{head}{v.precision:.3f} | {v.recall:.3f} | {v.f1:.3f} | "
                           f"{v.mean_iou:.3f} | {_ci(ms[k])} |")  # fmt: skip
            print(rows[k][-1], f"({k})", flush=True)
    for k in names:
        a = pool_matches(allm[k])
        pad = "| | " if k == "default" else ""
        print(f"\n{k} verifier:")
        print("| condition | truth | " + ("P cand. | R cand. | " if k == "default" else "")
              + "P | R | F1 | mean IoU | P 95 % interval | R 95 % interval |")  # fmt: skip
        print("|---|---|" + ("---|---|" if k == "default" else "") + "---|---|---|---|---|---|")
        print("\n".join(rows[k]))
        print(f"| all (pooled) | {a.n_truth} | {pad}{a.precision:.3f} | {a.recall:.3f} | "
              f"{a.f1:.3f} | {a.mean_iou:.3f} | {_ci(allm[k])} |", flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=8, help="micrographs per condition")
    ap.add_argument("--seed", type=int, default=SEED, help="first seed (report: 60000)")
    ap.add_argument("--lab", default="", help="lab training set sizes, comma-separated")
    ap.add_argument("--crops", default=None, help="folder for one overlay PNG per condition")
    args = ap.parse_args()
    with open("/proc/loadavg") as fh:
        print(
            "load average at start:", fh.read().strip(), time.strftime("%H:%M UTC", time.gmtime())
        )
    crops = Path(args.crops) if args.crops else None
    if crops is not None:
        crops.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        labs = {
            f"lab {n}": lab_verifier(int(n), Path(tmp)) for n in filter(None, args.lab.split(","))
        }
        accuracy(args.count, args.seed, labs, crops)
    with open("/proc/loadavg") as fh:
        print("load average at end:", fh.read().strip(), time.strftime("%H:%M UTC", time.gmtime()))


if __name__ == "__main__":
    main()
