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
lab verifier too. ``--verifier NAME=PATH`` (repeatable) scores the same micrographs with
further verifier files as well (fifteenth round: two verifiers on one fresh seed range,
``--seed 90000``).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_detect_thirdsim.py [--count 8]
        [--lab 8,24] [--crops /tmp/thirdcrops]
    PYTHONPATH=src .venv/bin/python benchmarks/bench_detect_thirdsim.py --diagnose \\
        --count 3 --seed 9000   # failures by kind, exploratory seeds 9000 + 50 k + i
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
from bench_detect import _interval, _score
from lipoclass.choices import CANDIDATE_FINDERS
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
    """The pooled precision and recall intervals as two table cells (empty for 1)."""
    ci = pooled_interval(ms) if len(ms) > 1 else None
    return f"{_interval(ci, 'precision')} | {_interval(ci, 'recall')}"


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


def accuracy(
    count: int, seed: int, labs: dict[str, str], crops: Path | None, finder: str = "ring"
) -> None:
    """The table: default verifier (and each lab verifier) per condition and pooled."""
    from lipoclass.micrograph.verify import load_verifier

    names = ["default", *labs]
    cfgs = {
        "default": DetectConfig(finder=finder),
        **{k: DetectConfig(verifier=v) for k, v in labs.items()},
    }
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


def _false_kind(m: ThirdMicrograph, mask: np.ndarray, row: np.ndarray) -> str:
    """What an accepted detection matching no liposome lies on (``row``: its IoU with each
    truth instance, 0 the background)."""
    area = float(mask.sum())
    if (mask & m.absorbers).sum() > 0.1 * area:
        return "ice crystal, frost or gold"
    on_c = float((mask & m.carbon).sum()) / area
    if on_c > 0.1:
        return "carbon film" if on_c > 0.9 else "carbon edge"
    j = int(np.argmax(row[1:])) + 1 if len(row) > 1 else 0
    if j and row[j] >= 0.2:
        v = m.vesicles[j - 1]
        small = area < float((m.labels == j).sum())
        if small and (v["lamellae"] > 1 or v["content"]):
            return "inner lamella or content of a liposome"
        return "outline too small" if small else "outline too large (spans neighbours)"
    cover = float((m.labels[mask] > 0).mean())
    return "inside a liposome" if cover > 0.6 else "background or partly on liposomes"


def _miss_kind(m: ThirdMicrograph, k: int, det) -> str:
    """Why truth liposome ``k`` is unmatched: the best candidate centred within half its
    radius, painted alone, decides."""
    from lipoclass.micrograph.detect import paint_outlines

    v, p = m.vesicles[k - 1], m.pixel_nm
    r = v["r_nm"] / p
    best, arg = 0.0, -1
    for i in np.flatnonzero(np.hypot(det.cy - v["cy"], det.cx - v["cx"]) < 0.5 * r):
        lab, _ = paint_outlines(m.labels.shape, det.cy[i : i + 1], det.cx[i : i + 1],
                                det.radii[i : i + 1])  # fmt: skip
        t, f = m.labels == k, lab > 0
        iou = float((t & f).sum()) / max(float((t | f).sum()), 1.0)
        best, arg = (iou, int(i)) if iou > best else (best, arg)
    if arg >= 0 and best >= 0.5:
        if det.accepted[arg]:
            return "accepted, lost pixels to overlapping detections"
        why = det.reason[arg].replace("low liposome score: ", "")
        if why.startswith("lowered from"):
            why = "score lowered by the micrograph's low share of liposomes"
        return f"rejected ({why})"
    if arg >= 0 and best >= 0.1:
        return "candidate outline IoU 0.1-0.5"
    if 2 * v["r_nm"] < 50:
        return "no candidate: small (< 50 nm)"
    if v["lamellae"] > 1 or v["content"]:
        return "no candidate: multilamellar or with content"
    return "no candidate: unilamellar, empty, >= 50 nm"


def diagnose(count: int, seed: int) -> None:
    """Counts of the default verifier's false detections and misses by kind."""
    from collections import Counter

    counts: dict[str, Counter] = {"false": Counter(), "miss": Counter()}
    for c in range(len(CONDITIONS)):
        for i in range(count):
            m = render(_cfg(c), seed + 50 * c + i)
            det = detect_candidates(m.image, DetectConfig(), m.pixel_nm)
            mt = match_instances(m.labels, det.labels)
            t = m.labels.ravel().astype(np.int64)
            f = det.labels.ravel().astype(np.int64)
            nf = int(f.max(initial=0)) + 1
            inter = np.bincount(t * nf + f, minlength=(int(t.max(initial=0)) + 1) * nf)
            inter = inter.reshape(-1, nf)
            iou = inter / np.maximum(inter.sum(1)[:, None] + inter.sum(0)[None] - inter, 1)
            for fi in set(range(1, nf)) - set(mt.pairs[:, 1].tolist()):
                if (det.labels == fi).any():
                    counts["false"][_false_kind(m, det.labels == fi, iou[:, fi])] += 1
            for k in set(range(1, len(m.vesicles) + 1)) - set(mt.pairs[:, 0].tolist()):
                if (m.labels == k).any():
                    counts["miss"][_miss_kind(m, k, det)] += 1
    for key, title in (("false", "false detections"), ("miss", "misses")):
        print(f"\n{title} ({sum(counts[key].values())}):")
        for kind, n in counts[key].most_common():
            print(f"- {kind}: {n}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=8, help="micrographs per condition")
    ap.add_argument("--seed", type=int, default=SEED, help="first seed (report: 60000)")
    ap.add_argument("--lab", default="", help="lab training set sizes, comma-separated")
    ap.add_argument("--crops", default=None, help="folder for one overlay PNG per condition")
    ap.add_argument("--verifier", action="append", default=[], metavar="NAME=PATH",
                    help="a further verifier file scored on the same micrographs")  # fmt: skip
    ap.add_argument("--diagnose", action="store_true",
                    help="only classify failures (seeds SEED + 50 k + i; use 9000)")  # fmt: skip
    ap.add_argument("--finder", choices=CANDIDATE_FINDERS, default="ring",
                    help="DetectConfig.finder of the default detector (default: ring)")  # fmt: skip
    args = ap.parse_args()
    if args.diagnose:
        diagnose(args.count, args.seed)
        return
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
        for spec in args.verifier:
            name, sep, path = spec.partition("=")
            if not sep or not name or name == "default" or not Path(path).is_file():
                ap.error(f"--verifier must be NAME=PATH of a verifier file, got {spec!r}")
            labs[name] = path
        accuracy(args.count, args.seed, labs, crops, args.finder)
    with open("/proc/loadavg") as fh:
        print("load average at end:", fh.read().strip(), time.strftime("%H:%M UTC", time.gmtime()))


if __name__ == "__main__":
    main()
