"""Does the recipe's rescale rule help? (issue 20, deliverable 1: rescaling to a common nm
per pixel when pixel sizes differ; docs/cnn.md, Self-configuring recipe).

Builds a mixed-pixel-size set from the project's synthetic liposomes: ``lipoclass synth``
renders every particle at one pixel size; a seeded half of the crops is shrunk 2x with
scikit-image (antialiased; masks nearest-neighbour) and gets twice the pixel size, as if
imaged at half the magnification. Then cross-validates, on the same folds
(``make_folds(CVConfig(folds, seed))``), each network at the plan's input mode and size
with and without a common scale: ``rescaled`` = ``nm_per_px`` = ``common_nm_per_px(fp,
size)`` (what the rescale rule uses when it fires; printed: whether the plan's rule fires
here, it may decline by ``MAX_SHRINK``); ``boxed`` = each mask box resized to the input.
Prints pooled out-of-fold macro-F1, macro-F1 mean +- sd over folds, and wall seconds;
appends JSON records to ``--jsonl``.

Usage (repository root)::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_rescale.py \\
        --work /tmp/rescale --n 600 --seeds 0 --epochs 30 --models lipnet4 lipnet_hybrid
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def mixed_set(
    work: Path,
    kind: str,
    n: int,
    seed: int,
    shrink: float = 2.0,
    band: tuple[float, float] | None = None,
) -> Path:
    """A synthetic ``kind`` set of ``n`` particles, half of them (seeded) at ``shrink`` x
    the pixel size (image shrunk ``shrink`` x); with ``band`` only the particles whose mask
    box (longer side) spans ``band`` nm."""
    from skimage.transform import rescale

    from lipoclass.data import DatasetWriter, load_dataset
    from lipoclass.data.prepare import read_particle
    from lipoclass.synth import synthesize

    src = work / f"{kind}_{seed}_{n}"
    if not src.exists():
        synthesize(kind, src, n=n, seed=seed, ratios="balanced", workers=1)
    tag = f"_{shrink:g}" + ("" if band is None else f"_{band[0]:g}-{band[1]:g}nm")
    out = work / f"{kind}_{seed}_{n}_mixed{tag}"
    if out.exists():
        return out
    ds = load_dataset(src)
    rng = np.random.default_rng(seed)
    coarse = set(rng.choice(len(ds.particles), len(ds.particles) // 2, replace=False).tolist())
    with DatasetWriter(out, name=out.name, classes=list(ds.classes)) as w:
        for i, p in enumerate(ds.particles):
            img, mask = read_particle(p)
            px = p.pixel_size_nm
            assert px is not None and mask is not None
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            side_nm = px * max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
            if band is not None and not band[0] <= side_nm <= band[1]:
                continue
            if i in coarse:
                f = rescale(img.astype(np.float32), 1 / shrink, order=1, anti_aliasing=True,
                            preserve_range=True)  # fmt: skip
                img = np.clip(np.rint(f), 0, np.iinfo(img.dtype).max).astype(img.dtype)
                m = rescale(mask.astype(np.float32), 1 / shrink, order=0, anti_aliasing=False)
                mask = m > 0.5
                px = shrink * px
            w.add(p.id, image=img, mask=mask, label=p.label, pixel_size_nm=px, sample=p.sample)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--kind", default="lamellarity")
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--models", nargs="+", default=["lipnet4", "lipnet_hybrid"])
    ap.add_argument("--shrink", type=float, default=2.0, help="pixel size factor of half")
    ap.add_argument("--band", type=float, nargs=2, default=None, help="keep LO-HI nm boxes")
    ap.add_argument("--jsonl", type=Path, default=None)
    ap.add_argument("--clean", action="store_true", help="delete --work afterwards")
    a = ap.parse_args()

    import torch
    from sklearn.metrics import f1_score

    from lipoclass.data import fingerprint, load_dataset
    from lipoclass.evaluate import CVConfig, build_spec, cross_validate
    from lipoclass.recipe import plan_recipe
    from lipoclass.recipe.plan import common_nm_per_px

    torch.set_num_threads(1)
    a.work.mkdir(parents=True, exist_ok=True)
    for seed in a.seeds:
        band = None if a.band is None else (a.band[0], a.band[1])
        ds = load_dataset(mixed_set(a.work, a.kind, a.n, seed, a.shrink, band))
        fp = fingerprint(ds)
        counts = [np.bincount(ds.labels, minlength=len(ds.classes))] * a.folds
        plan = plan_recipe(fp, counts)
        rule, size_rule = plan.rule("rescale"), plan.rule("input size")
        print(f"seed {seed}: {fp.text()}\n  rescale: {rule.value} ({rule.reason})")
        print(f"  input size: {size_rule.value} ({size_rule.reason})")
        first = plan.models[0].spec
        assert first is not None
        for model in a.models:
            base = build_spec(model, mode=str(plan.rule("input mode").value),
                              size=first.prep.size, epochs=a.epochs, device="cpu")  # fmt: skip
            for arm in ("boxed", "rescaled"):
                nm = common_nm_per_px(fp, first.prep.size) if arm == "rescaled" else None
                spec = replace(base, prep=replace(base.prep, nm_per_px=nm))
                t0 = time.perf_counter()
                load0 = Path("/proc/loadavg").read_text().split()[0]
                res = cross_validate(ds, spec, CVConfig(folds=a.folds, seed=seed), progress=False)
                secs = time.perf_counter() - t0
                labels = range(len(res.classes))
                pooled = f1_score(res.y_true, res.y_pred, average="macro", labels=labels,
                                  zero_division=0)  # fmt: skip
                per = [f1_score(res.y_true[res.fold == k], res.y_pred[res.fold == k],
                                average="macro", labels=labels, zero_division=0)
                       for k in np.unique(res.fold)]  # fmt: skip
                rec = {"seed": seed, "set": ds.root.name, "rule": str(rule.value),
                       "n": len(ds.particles), "model": model, "arm": arm,
                       "size": spec.prep.size,
                       "nm_per_px": nm, "pooled_macro_f1": round(float(pooled), 4),
                       "fold_mean": round(float(np.mean(per)), 4),
                       "fold_sd": round(float(np.std(per, ddof=1)), 4),
                       "seconds": round(secs, 1), "load_before": load0,
                       "load_after": Path("/proc/loadavg").read_text().split()[0]}  # fmt: skip
                print(json.dumps(rec), flush=True)
                if a.jsonl is not None:
                    with a.jsonl.open("a") as fh:
                        fh.write(json.dumps(rec) + "\n")
    if a.clean:
        shutil.rmtree(a.work)


if __name__ == "__main__":
    main()
