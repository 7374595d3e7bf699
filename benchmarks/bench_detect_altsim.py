"""Detector check on micrographs from an independent simulator (benchmarks/altsim.py: physical
image formation, bilayer leaflets, ice particles sized in nm, carbon film, protein
aggregates; nothing shared with lipoclass.synth). Since the eighth round the default verifier
is trained on altsim too (seeds 10000-10079, scripts/train_detect_verifier.py) and its choices
used altsim check seeds 7000+ (scripts/tune_detect_verifier.py): this benchmark's seeds
(50000+) are still unseen, but the figures are in-domain, not a generalisation check.

Per condition (one setting changed at a time around a reference: 1024 px, 1 nm/px, 300 kV,
40 e/A^2, defocus 1.5-3 um, density 0.2, touching 0.3, 1.5 ice particles and 8 protein
aggregates per um^2, carbon edge in half, illumination 0.15), ``--count`` micrographs (seeds
50000 + 1000 k + i): precision / recall at mask IoU >= 0.5 of the raw candidates and of the
packaged verifier (default ``DetectConfig()``), F1, mean IoU, pooled row. ``--diagnose DIR``
classifies every false detection and miss and draws crops of them into DIR; ``--cli`` runs
``lipoclass detect`` end to end on one MRC written by the simulator.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_detect_altsim.py [--count 8]
        [--diagnose /tmp/altdiag] [--cli]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from altsim import AltConfig, AltMicrograph, render, write_mrc
from bench_detect import _mark, _score
from lipoclass.choices import CANDIDATE_FINDERS
from lipoclass.micrograph import DetectConfig, match_instances
from lipoclass.micrograph.detect import detect_candidates, paint_outlines
from lipoclass.micrograph.match import pool_matches

REF = AltConfig()
CONDITIONS: list[tuple[str, dict[str, object]]] = [
    ("reference", {}),
    ("pixel 0.5 nm", {"pixel_nm": 0.5}),
    ("pixel 2 nm", {"pixel_nm": 2.0}),
    ("pixel 3 nm", {"pixel_nm": 3.0}),
    ("dose 20", {"dose": 20.0}),
    ("dose 60", {"dose": 60.0}),
    ("density 0.07", {"density": 0.07}),
    ("density 0.4", {"density": 0.4}),
    ("no distractors", {"ice": 0.0, "debris": 0.0, "carbon": 0.0, "illumination": 0.0}),
    ("heavy distractors", {"ice": 5.0, "debris": 30.0, "carbon": 1.0, "illumination": 0.4,
                           "touching": 0.6}),
    ("defocus 0.8-1.2 um", {"defocus_um": (0.8, 1.2)}),
    ("defocus 3.5-4.5 um", {"defocus_um": (3.5, 4.5)}),
    ("200 kV", {"kv": 200.0}),
    ("round (aspect 1)", {"max_aspect": 1.0}),
    ("unilamellar, no cores", {"multilamellar": 0.0, "cores": 0.0}),
]  # fmt: skip
SEED = 50000


def _ious(truth: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Mask IoU (T+1, F+1) of every truth and found instance (row / column 0: background)."""
    t, f = truth.ravel().astype(np.int64), found.ravel().astype(np.int64)
    nt, nf = int(t.max(initial=0)) + 1, int(f.max(initial=0)) + 1
    inter = np.bincount(t * nf + f, minlength=nt * nf).reshape(nt, nf)
    return inter / np.maximum(inter.sum(1)[:, None] + inter.sum(0)[None, :] - inter, 1)


def _false_kind(m: AltMicrograph, mask: np.ndarray, row: np.ndarray) -> str:
    """Why a detection (its mask, its IoU with every truth instance) is false."""
    area = mask.sum()
    on = {k: float((mask & getattr(m, k)).sum()) / area for k in ("ice", "carbon", "debris")}
    j = int(np.argmax(row[1:])) + 1 if len(row) > 1 else 0
    best = float(row[j]) if j else 0.0
    if on["ice"] > 0.1:
        return "ice particle"
    if on["carbon"] > 0.9:
        return "carbon film texture"
    if on["carbon"] > 0.1:
        return "carbon edge"
    if best >= 0.5:
        return "duplicate of a found liposome"
    cover = float((m.labels[mask] > 0).mean())
    if best >= 0.2:
        v, t_area = m.vesicles[j - 1], float((m.labels == j).sum())
        if area < t_area and (v["lamellae"] > 1 or v["core"] > 0):
            return "inner shell or core of a liposome"
        return "outline too large (spans neighbours)" if area > t_area else "outline too small"
    if cover > 0.6:
        return "inside a liposome"
    if on["debris"] > 0.005:
        return "protein aggregate"
    return "empty background" if cover < 0.1 else "partly on a liposome"


def _alone_iou(m: AltMicrograph, k: int, det) -> tuple[float, int]:
    """Best mask IoU of truth liposome ``k`` with a single candidate (painted alone, so that
    neighbours take none of its pixels) centred within half its radius; and that candidate
    (-1: none)."""
    v = m.vesicles[k - 1]
    r = v["r_nm"] / m.pixel_nm
    near = np.flatnonzero(np.hypot(det.cy - v["cy"], det.cx - v["cx"]) < 0.5 * r)
    best, arg = 0.0, -1
    for i in near:
        ext = max(float(det.radii[i].max()), 1.2 * r) + 3
        y0, x0 = max(0, int(v["cy"] - ext)), max(0, int(v["cx"] - ext))
        win = np.s_[y0 : int(v["cy"] + ext) + 1, x0 : int(v["cx"] + ext) + 1]
        tm = m.labels[win] == k
        lab, _ = paint_outlines(tm.shape, det.cy[i : i + 1] - y0, det.cx[i : i + 1] - x0,
                                det.radii[i : i + 1])  # fmt: skip
        fm = lab > 0
        iou = float((tm & fm).sum()) / max(float((tm | fm).sum()), 1.0)
        if iou > best:
            best, arg = iou, int(i)
    return best, arg


def _miss_kind(m: AltMicrograph, k: int, det) -> str:
    """Why truth liposome ``k`` was not matched."""
    iou, i = _alone_iou(m, k, det)
    v, p = m.vesicles[k - 1], m.pixel_nm
    if i >= 0 and iou >= 0.5:
        if det.accepted[i]:
            return "accepted, lost its pixels to overlapping detections"
        why = det.reason[i].replace("low liposome score: ", "")
        return f"rejected by the verifier ({why})"
    if i >= 0 and iou >= 0.1:
        small = det.radii[i].mean() < 0.8 * v["r_nm"] / p
        if small and (v["lamellae"] > 1 or v["core"] > 0):
            return "candidate on an inner shell or the core"
        return "candidate outline IoU < 0.5"
    if v["r_nm"] < 25:
        return "no candidate: small (< 50 nm)"
    others = [u for j, u in enumerate(m.vesicles) if j != k - 1]
    if any(np.hypot(u["cy"] - v["cy"], u["cx"] - v["cx"]) * p < 1.02 * (u["r_nm"] + v["r_nm"])
           for u in others):  # fmt: skip
        return "no candidate: touching another"
    edge = min(v["cy"], v["cx"], m.labels.shape[0] - v["cy"], m.labels.shape[1] - v["cx"])
    if edge * p < v["r_nm"]:
        return "no candidate: cut by the image edge"
    return "no candidate: other"


def _crop(m: AltMicrograph, cy: float, cx: float, r: float, truth: int, found: np.ndarray) -> Any:
    """128 x 128 RGB crop (2.6 radii) around (cy, cx): truth outline green, found red."""
    h = max(8, int(1.3 * r))
    y0, x0 = int(cy) - h, int(cx) - h
    sl = np.s_[max(0, y0) : y0 + 2 * h, max(0, x0) : x0 + 2 * h]
    img = m.image[sl].astype(np.float64)
    lo, hi = np.percentile(img, [1, 99]) if img.size else (0, 1)
    g = np.clip((img - lo) / max(hi - lo, 1e-9), 0, 1)
    rgb = np.stack([g, g, g], -1)
    for lab, col in ((m.labels[sl] == truth, (0, 1, 0)), (found[sl], (1, 0, 0))):
        edge = lab & ~ndimage.binary_erosion(lab)
        rgb[edge] = col
    z = 128 / max(rgb.shape[:2])
    out = np.zeros((128, 128, 3))
    small = ndimage.zoom(rgb, (z, z, 1), order=0)[:128, :128]
    out[: small.shape[0], : small.shape[1]] = small
    return out


def _diagnose(m: AltMicrograph, det, counts: dict, crops: dict) -> None:
    """Classify the false detections and misses of one micrograph; keep up to 48 crops each."""
    truth = m.labels
    acc = det.labels
    ia = _ious(truth, acc)
    mt = match_instances(truth, acc)
    matched_t, matched_f = set(mt.pairs[:, 0].tolist()), set(mt.pairs[:, 1].tolist())
    for f in range(1, ia.shape[1]):
        if f in matched_f:
            continue
        mask = acc == f
        if not mask.any():
            continue
        kind = _false_kind(m, mask, ia[:, f])
        counts["false"][kind] += 1
        ys, xs = np.nonzero(mask)
        if len(crops["false"]) < 48:
            r = 0.5 * max(np.ptp(ys), np.ptp(xs)) + 1
            crops["false"].append((kind, _crop(m, ys.mean(), xs.mean(), r, -1, mask)))
    for k in range(1, ia.shape[0]):
        if k in matched_t or not (truth == k).any():
            continue
        kind = _miss_kind(m, k, det)
        counts["miss"][kind] += 1
        v = m.vesicles[k - 1]
        if len(crops["miss"]) < 48:
            crops["miss"].append(
                (kind, _crop(m, v["cy"], v["cx"], v["r_nm"] / m.pixel_nm, k, acc > 0))
            )


def _montage(path: Path, crops: list) -> None:
    import imagecodecs

    if not crops:
        return
    cols = 8
    rows = (len(crops) + cols - 1) // cols
    sheet = np.ones((rows * 130, cols * 130, 3))
    for i, (_kind, c) in enumerate(crops):
        y, x = (i // cols) * 130, (i % cols) * 130
        sheet[y : y + 128, x : x + 128] = c
    path.write_bytes(imagecodecs.png_encode((sheet * 255).astype(np.uint8)))
    path.with_suffix(".txt").write_text(
        "\n".join(f"{i}: {k}" for i, (k, _c) in enumerate(crops)) + "\n"
    )


def accuracy(count: int, diag: Path | None, seed: int = SEED, finder: str = "ring") -> None:
    det_cfg = DetectConfig(finder=finder)
    print(f"{count} micrograph(s) of 1024 px per row (altsim seeds {seed} + 1000 k + i)")
    print("| condition | truth | P cand. | R cand. | P verifier | R verifier | F1 verifier | "
          "mean IoU |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    allm: list = []
    totals: dict = {"false": Counter(), "miss": Counter()}
    for c, (name, change) in enumerate(CONDITIONS):
        cfg = replace(REF, **change)  # type: ignore[arg-type]
        ms: dict[str, list] = {"cand": [], "ver": []}
        counts: dict = {"false": Counter(), "miss": Counter()}
        crops: dict = {"false": [], "miss": []}
        for i in range(count):
            m = render(cfg, seed + 1000 * c + i)
            det = detect_candidates(m.image, det_cfg, m.pixel_nm)
            ms["cand"].append(_score(m.labels, det, np.ones(len(det), bool)))
            ms["ver"].append(match_instances(m.labels, det.labels))
            if diag is not None:
                _diagnose(m, det, counts, crops)
        ca, v = pool_matches(ms["cand"]), pool_matches(ms["ver"])
        allm += ms["ver"]
        print(f"| {name} | {v.n_truth} | {ca.precision:.3f} | {ca.recall:.3f} | "
              f"{_mark(v.precision)} | {_mark(v.recall)} | {v.f1:.3f} | {v.mean_iou:.3f} |",
              flush=True)  # fmt: skip
        if diag is not None:
            slug = name.replace(" ", "_").replace(".", "")
            _montage(diag / f"{slug}_false.png", crops["false"])
            _montage(diag / f"{slug}_miss.png", crops["miss"])
            for key in counts:
                totals[key].update(counts[key])
            print(f"    false: {dict(counts['false'])}; misses: {dict(counts['miss'])}",
                  file=sys.stderr)  # fmt: skip
    a = pool_matches(allm)
    print(f"| all (pooled) | {a.n_truth} | | | {_mark(a.precision)} | {_mark(a.recall)} | "
          f"{a.f1:.3f} | {a.mean_iou:.3f} |")  # fmt: skip
    if diag is not None:
        for key, title in (("false", "false detections"), ("miss", "misses")):
            print(f"\n{title} ({sum(totals[key].values())}):")
            for kind, n in totals[key].most_common():
                print(f"- {kind}: {n}")


def cli_check() -> None:
    """``lipoclass detect`` on an MRC (pixel size in its header) with the truth labels."""
    import csv

    from lipoclass.cli import main as cli
    from lipoclass.micrograph.io import write_label_image

    m = render(replace(REF, size=768), SEED + 999)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_mrc(str(root / "alt.mrc"), m.image, m.pixel_nm)
        write_label_image(root / "alt_labels.tif", m.labels, m.pixel_nm)
        cli(["detect", str(root / "alt.mrc"), "--out", str(root / "det"), "--truth",
             str(root / "alt_labels.tif")])  # fmt: skip
        rows = list(csv.DictReader(open(root / "det" / "detection_scores.csv")))
        det = detect_candidates(m.image, DetectConfig(), m.pixel_nm)
        mem = match_instances(m.labels, det.labels)
        row = rows[-1]
        print(f"CLI on MRC: truth {row['truth']}, detected {row['detected']}, precision "
              f"{row['precision']}, recall {row['recall']} (in memory: {mem.precision:.3f}, "
              f"{mem.recall:.3f})")  # fmt: skip
        assert int(row["truth"]) == mem.n_truth and int(row["detected"]) == mem.n_found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=8, help="micrographs per condition")
    ap.add_argument("--diagnose", default=None, help="folder for crops of failures")
    ap.add_argument("--cli", action="store_true", help="also run lipoclass detect on an MRC")
    ap.add_argument("--seed", type=int, default=SEED, help="first seed (report: 50000)")
    ap.add_argument("--finder", choices=CANDIDATE_FINDERS, default="ring",
                    help="DetectConfig.finder of the default detector (default: ring)")  # fmt: skip
    args = ap.parse_args()
    with open("/proc/loadavg") as fh:
        print("load average at start:", fh.read().strip())
    diag = Path(args.diagnose) if args.diagnose else None
    if diag is not None:
        diag.mkdir(parents=True, exist_ok=True)
    accuracy(args.count, diag, args.seed, args.finder)
    if args.cli:
        cli_check()
    with open("/proc/loadavg") as fh:
        print("load average at end:", fh.read().strip())


if __name__ == "__main__":
    main()
