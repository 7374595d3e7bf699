"""Design comparison of the detector's liposome verifier (docs/micrographs.md): every design
is fitted on the candidates of the training micrographs of scripts/train_detect_verifier.py
(seeds 1000-1079), its threshold maximises the F1 of 5-fold out-of-fold scores grouped by
micrograph, and it is scored at detection level (mask IoU >= 0.5 with the truth, accepted
candidates segmented together) on 20 validation micrographs drawn the same way from seeds
2000-2019 (never used for fitting or for a threshold).

Designs: the candidates unverified; fixed rules on the ring significance; a logistic
regression on the 13 features of the first verifier and on all features; the small neural
network (shipped); gradient boosting (scikit-learn HistGradientBoosting); with ``--cnn`` a
small CNN on candidate crops (torch; the crop is a box of 2.6 x the outline radius around
the candidate on the band-passed working-scale image, resized to 32 x 32; 8 epochs, fitted
once on all training candidates, threshold 0.5 as out-of-fold fits would take 6x as long).

    PYTHONPATH=src .venv/bin/python scripts/compare_detect_verifiers.py [--cnn]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from train_detect_verifier import conditions

from lipoclass.micrograph import match_instances
from lipoclass.micrograph.detect import DetectConfig, detect_candidates, paint_outlines
from lipoclass.micrograph.match import pool_matches
from lipoclass.micrograph.verify import _best_threshold, candidate_truth
from lipoclass.synth import MicrographConfig, render_micrograph


def _render(seed0: int, n: int) -> list[tuple[np.ndarray, np.ndarray, float]]:
    out = []
    for c in conditions(seed0, n):
        m = render_micrograph(MicrographConfig(**c), 0)  # type: ignore[arg-type]
        out.append((m.image.astype(np.float32), m.labels.astype(np.int64),
                    float(c["pixel_size_nm"])))  # type: ignore[arg-type]  # fmt: skip
    return out


def _crops(image: np.ndarray, px: float, det, size: int = 32) -> np.ndarray:
    """(N, 1, size, size) band-passed crops of 2.6 x radius around each candidate."""
    from scipy import ndimage as ndi

    from lipoclass.micrograph import detect as D

    dmin, _ = DetectConfig().diameters_px(px)
    f = D._work_factor(dmin, image.shape)
    z, _low = D._bandpass(D._working(image, f, False), D._sigma(DetectConfig(), px, f))
    cy, cx = (det.cy + 0.5) / f - 0.5, (det.cx + 0.5) / f - 0.5
    r = (det.radii.mean(axis=1)) / f
    t = (np.arange(size) + 0.5) / size * 2.0 - 1.0  # -1..1
    ys = cy[:, None, None] + 1.3 * r[:, None, None] * t[None, :, None]
    xs = cx[:, None, None] + 1.3 * r[:, None, None] * t[None, None, :]
    ys, xs = np.broadcast_arrays(ys, xs)
    v = ndi.map_coordinates(z, [ys.ravel(), xs.ravel()], order=1, mode="constant")
    return np.clip(v.reshape(len(cy), 1, size, size), -6, 6).astype(np.float32) / 3.0


def _collect(mics, crops: bool):
    xs, ys, gs, dets, cr = [], [], [], [], []
    for k, (img, truth, px) in enumerate(mics):
        det = detect_candidates(img, DetectConfig(verifier="none"), px, verifier=False)
        y = candidate_truth(det, truth)
        xs.append(det.features)
        ys.append(y)
        gs += [k] * len(y)
        dets.append(det)
        if crops:
            cr.append(_crops(img, px, det))
    return (np.concatenate(xs), np.concatenate(ys), np.asarray(gs), dets,
            np.concatenate(cr) if crops else None)  # fmt: skip


def _oof_fit(make, x, y, g, xv):
    from sklearn.model_selection import GroupKFold

    oof = np.zeros(len(y))
    for a, b in GroupKFold(5).split(x, y, g):
        oof[b] = make().fit(x[a], y[a]).predict_proba(x[b])[:, 1]
    return _best_threshold(y, oof), make().fit(x, y).predict_proba(xv)[:, 1]


class _CNN:
    """A small CNN on candidate crops (sklearn-like fit/predict_proba), seeded."""

    def __init__(self, epochs: int = 8, seed: int = 0) -> None:
        self.epochs, self.seed = epochs, seed

    def fit(self, x: np.ndarray, y: np.ndarray) -> _CNN:
        import torch
        from torch import nn

        torch.manual_seed(self.seed)
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
            nn.Flatten(), nn.Linear(32, 1),
        )  # fmt: skip
        opt = torch.optim.Adam(self.net.parameters(), lr=2e-3)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))
        gen = torch.Generator().manual_seed(self.seed)
        for _ in range(self.epochs):
            perm = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(xt), 128):
                idx = perm[i : i + 128]
                xb = xt[idx]
                if torch.rand(1, generator=gen) < 0.5:  # flips and 90 degree turns
                    xb = xb.flip(3)
                xb = torch.rot90(xb, int(torch.randint(4, (1,), generator=gen)), (2, 3))
                loss = nn.functional.binary_cross_entropy_with_logits(self.net(xb)[:, 0], yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            p = torch.sigmoid(self.net(torch.from_numpy(x))[:, 0]).numpy()
        return np.column_stack([1 - p, p])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cnn", action="store_true", help="also the small CNN on crops (torch)")
    ap.add_argument("--train", type=int, default=80)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, g, _d, cx = _collect(_render(1000, args.train), args.cnn)
    val = _render(2000, 20)
    xv, _yv, gv, dets, cxv = _collect(val, args.cnn)
    designs: dict[str, np.ndarray] = {"candidates, no verification": np.ones(len(xv), bool)}
    sig = np.exp(xv[:, 0])
    for s in (6, 7, 8):
        designs[f"fixed rule: significance >= {s}"] = sig >= s

    def lr() -> object:
        return make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced")
        )

    def mlp() -> object:
        return make_pipeline(
            StandardScaler(), MLPClassifier((16,), alpha=1e-3, max_iter=600, random_state=0)
        )

    def hgb() -> object:
        return HistGradientBoostingClassifier(max_iter=300, random_state=0)

    for name, make, cols in (
        ("logistic regression, 13 first features", lr, slice(0, 13)),
        ("logistic regression, all features", lr, slice(None)),
        ("small neural network (16 hidden), all features", mlp, slice(None)),
        ("gradient boosting (300 trees), all features", hgb, slice(None)),
    ):
        thr, p = _oof_fit(make, x[:, cols], y, g, xv[:, cols])
        designs[f"{name}, threshold {thr:.2f}"] = p >= thr
    if args.cnn:  # one fit (out-of-fold fits would take 6x as long): threshold 0.5
        p = _CNN().fit(cx, y).predict_proba(cxv)[:, 1]
        designs["small CNN on 32 x 32 candidate crops, threshold 0.50"] = p >= 0.5
    print(f"training candidates {len(y)} ({int(y.sum())} liposomes); validation {len(xv)}")
    print("| design | precision | recall | F1 | mean IoU |\n|---|---|---|---|---|")
    for name, keep in designs.items():
        ms = []
        for k, (_img, truth, _px) in enumerate(val):
            det, sel = dets[k], np.flatnonzero(keep[gv == k])
            lab, _ = paint_outlines(truth.shape, det.cy[sel], det.cx[sel], det.radii[sel])
            ms.append(match_instances(truth, lab))
        m = pool_matches(ms)
        print(f"| {name} | {m.precision:.3f} | {m.recall:.3f} | {m.f1:.3f} | {m.mean_iou:.3f} |")


if __name__ == "__main__":
    main()
