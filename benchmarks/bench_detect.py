"""Detector benchmark: precision, recall and mean mask IoU of ``lipoclass detect`` against
the known truth of synthetic micrographs (``lipoclass.synth.render_micrograph``), at two
noise levels and two particle densities, touching/overlapping liposomes (30 % placed against
another), ice contamination and carbon edges included.

A detection matches a true liposome when their masks have IoU >= 0.5 (one-to-one: at that
threshold a match is unique). Precision = matched / detections, recall = matched / truth,
mean IoU over matched pairs. Truth liposomes cut by the micrograph edge count like the others.

    .venv/bin/python benchmarks/bench_detect.py [--size 1024] [--count 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from lipoclass.micrograph import DetectConfig, detect_particles
from lipoclass.synth import MicrographConfig, render_micrograph


def match(truth: np.ndarray, pred: np.ndarray) -> tuple[int, int, int, list[float]]:
    """(matched, n_truth, n_pred, IoUs of matched pairs) at IoU >= 0.5; labels (H, W)."""
    t = truth.ravel().astype(np.int64)
    p = pred.ravel().astype(np.int64)
    nt, npr = int(t.max()) + 1, int(p.max()) + 1
    inter = np.bincount(t * npr + p, minlength=nt * npr).reshape(nt, npr)  # (T+1, P+1)
    area_t, area_p = inter.sum(1), inter.sum(0)
    iou = inter / np.maximum(area_t[:, None] + area_p[None, :] - inter, 1)
    iou[0, :] = 0
    iou[:, 0] = 0
    best = iou.max(axis=1)[1:]  # IoU >= 0.5 pairs are unique on both sides
    ious = [float(v) for v in best if v >= 0.5]
    return len(ious), nt - 1, npr - 1, ious


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--count", type=int, default=3, help="micrographs per condition")
    ap.add_argument("--problem", default="lamellarity")
    args = ap.parse_args()
    cfg_det = DetectConfig()
    rows = []
    for noise in (1.0, 2.0):
        for density in (0.15, 0.35):
            cfg = MicrographConfig(problem=args.problem, size=args.size, density=density,
                                   noise=noise, seed=11, count=args.count)  # fmt: skip
            tp = nt = npr = 0
            ious: list[float] = []
            secs = 0.0
            for i in range(args.count):
                mic = render_micrograph(cfg, i)
                t0 = time.perf_counter()
                lab = detect_particles(mic.image, cfg_det, mic.sample.pixel_size_nm)
                secs += time.perf_counter() - t0
                a, b, c, d = match(mic.labels, lab)
                tp, nt, npr = tp + a, nt + b, npr + c
                ious += d
            rows.append((noise, density, nt, npr, tp / max(npr, 1), tp / max(nt, 1),
                         float(np.mean(ious)) if ious else 0.0, secs / args.count))  # fmt: skip
    print(f"{args.problem}, {args.count} micrograph(s) of {args.size} px per row, "
          f"threshold {cfg_det.threshold}")  # fmt: skip
    print("| noise | density | truth | detected | precision | recall | mean IoU | s/micrograph |")
    print("|---|---|---|---|---|---|---|---|")
    for noise, density, nt, npr, prec, rec, miou, sec in rows:
        print(f"| {noise:g} | {density:g} | {nt} | {npr} | {prec:.2f} | {rec:.2f} | {miou:.2f} "
              f"| {sec:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
