"""Twenty-third round, step 1: the learned finder fine-tuned on a lab's own annotated
micrographs (docs/micrographs.md, "Twenty-third round"). Not shipped: it failed its rule.

The packaged finder (``lipoclass.micrograph.finder``) is fine-tuned on the thirdsim lab's 8
annotated micrographs (seeds 9900 + i, conditions drawn as ``scripts/lab_detect_threshold.py``
draws them; 1500 steps, batch 32, strong augmentation, Adam one-cycle at most 1e-3, network
seed ``--seed``), a lab verifier is trained beside it (``detect-train``'s defaults), and the
variants are scored on thirdsim's exploratory micrographs (9000 + 50 k + i, 16 x 3): shipped,
"either" with the packaged finder, "either" with the lab finder (packaged or lab verifier),
and the lab finder alone at several heat thresholds.

    OMP_NUM_THREADS=2 PYTHONPATH=src:benchmarks:scripts .venv/bin/python \\
        benchmarks/lab_finder.py /tmp/n23 [--steps 1500] [--seed 0]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from lab_detect_threshold import check_micrographs, lab_micrographs, load
from lab_detect_threshold import train as lab_train

import lipoclass.micrograph.finder as F
from learned_finder import _patches, focal, octaves, targets, truth_circles
from lipoclass.micrograph import DetectConfig, match_instances
from lipoclass.micrograph.detect import detect_candidates
from lipoclass.micrograph.match import pool_matches
from lipoclass.micrograph.verify import load_verifier


def lab_maps(lab: list[Any]) -> list[list[tuple[np.ndarray, ...]]]:
    """Octave maps and targets of the lab's micrographs (``learned_finder.build``'s)."""
    maps = []
    for _name, img, truth, px in lab:
        factor, work, rmax = octaves(np.asarray(img, np.float32), px)
        mps = F.octave_maps(work, rmax)
        circ = truth_circles(truth)
        per = []
        for o, mp in enumerate(mps):
            h, w, r = targets(mp.shape, circ, factor * 2**o, o == 0, o == len(mps) - 1)
            per.append((mp, h, w, r, np.argwhere(h > 0.99)))
        maps.append(per)
    return maps


def finetune(maps: list[Any], steps: int, seed: int, lr: float = 1e-3) -> F.LearnedFinder:
    """The packaged finder trained further on ``maps`` (as ``learned_finder.train``)."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = copy.deepcopy(F.load_finder().net)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    t0 = time.time()
    for step in range(steps):
        x, h, w, r = (
            torch.from_numpy(np.ascontiguousarray(a))[:, None]
            for a in _patches(maps, rng, 32, True)
        )
        y = net(x)
        lh = focal(y[:, :1], h, w)
        m = (h > 0.3).float() * w
        loss = lh + ((y[:, 1:] - r).abs() * m).sum() / m.sum().clamp(min=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == steps - 1:
            print(f"step {step} loss {loss.item():.3f} {time.time() - t0:.0f} s", flush=True)
    net.eval()
    return F.LearnedFinder(net, {**F.load_finder().info, "fine_tuned_on": "thirdsim lab 9900+"})


class RejectAll:
    """A verifier that rejects every ring candidate (the finder alone)."""

    threshold = 1.0

    def score(self, feats: np.ndarray) -> np.ndarray:
        return np.zeros(len(feats))

    def reasons(self, feats: np.ndarray) -> list[str]:
        return ["finder alone"] * len(feats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print("start", time.strftime("%H:%M:%S UTC", time.gmtime()), load(), flush=True)
    lab = lab_micrographs("thirdsim", 8)
    fpath = args.out / f"labfinder_{args.steps}_{args.seed}.npz"
    if not fpath.exists():
        t0 = time.time()
        finetune(lab_maps(lab), args.steps, args.seed).save(fpath)
        print(f"fine-tune {time.time() - t0:.0f} s", flush=True)
    labver = args.out / "labver"
    if not labver.exists():
        (args.out / "lab").mkdir(parents=True, exist_ok=True)
        lab_train(lab, args.out / "lab", "v0", None)
        (args.out / "lab" / "v0").rename(labver)
    mine, packaged = F.load_finder(fpath), F.load_finder()
    vpack, vlab = load_verifier("default"), load_verifier(str(labver))
    either = DetectConfig(finder="ring+learned")
    variants: dict[str, tuple[Any, Any, DetectConfig]] = {
        "shipped": (packaged, vpack, DetectConfig()),
        "either, packaged finder": (packaged, vpack, either),
        "either, lab finder": (mine, vpack, either),
        "either, lab finder and verifier": (mine, vlab, DetectConfig(verifier=str(labver),
                                                                     finder="ring+learned")),
        "packaged finder alone 0.45": (packaged, RejectAll(), either),
    }  # fmt: skip
    for t in (0.3, 0.45, 0.6, 0.75):
        cfg = DetectConfig(finder="ring+learned", finder_threshold=t)
        variants[f"lab finder alone {t}"] = (mine, RejectAll(), cfg)
    ms: dict[str, list[Any]] = {k: [] for k in variants}
    orig = F.load_finder
    try:
        for img, truth, px in check_micrographs("thirdsim"):
            for k, (fin, ver, cfg) in variants.items():
                F.load_finder = lambda path=None, fin=fin: fin  # type: ignore[misc]
                ms[k].append(
                    match_instances(truth, detect_candidates(img, cfg, px, "", ver).labels)
                )
    finally:
        F.load_finder = orig  # type: ignore[misc]
    res = {}
    for k, m in ms.items():
        a = pool_matches(m)
        p, r = len(a.pairs) / max(a.n_found, 1), len(a.pairs) / max(a.n_truth, 1)
        res[k] = (p, r, 2 * p * r / max(p + r, 1e-9))
        print(f"{k:34s} P {p:.4f} R {r:.4f} F1 {res[k][2]:.4f}", flush=True)
    (args.out / f"lab_finder_{args.steps}_{args.seed}.json").write_text(json.dumps(res))


if __name__ == "__main__":
    main()
