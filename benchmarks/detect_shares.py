"""How much detection alone moves a lab's class shares (docs/micrographs.md, "Twenty-fifth
round"), for each candidate finder.

A missed liposome biases the shares when misses are not at random (faint unilamellar empty
liposomes missed more often than multilamellar ones); a false find adds a particle of no
class. Per condition (its micrographs pooled, one lab sample) and per property, with the true
instance masks matched one-to-one at IoU >= 0.5:

- ``true``: the property's share among all truth liposomes;
- ``found``: its share among the matched ones (what a perfect classifier would report);
- ``bias`` = found - true (percentage points);
- ``bound`` = |bias| + 100 (1 - precision): the most a perfect classifier's share can be off
  when every false find lands in one class.

Properties: on the third simulator (never trained on; ``benchmarks/thirdsim.py``)
multilamellar (2-3 lamellae) and with content (dense lumen, drug rod or nested vesicle); on
our simulator (``lipoclass.synth``) each class but the condition's most common one.

    OMP_NUM_THREADS=2 PYTHONPATH=src:benchmarks .venv/bin/python benchmarks/detect_shares.py \\
        thirdsim --seed 190000 --count 8
    ... benchmarks/detect_shares.py ours --count 8
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from lipoclass.choices import CANDIDATE_FINDERS
from lipoclass.micrograph import DetectConfig, match_instances
from lipoclass.micrograph.detect import detect_candidates

Sample = tuple[np.ndarray, np.ndarray, float, dict[str, np.ndarray]]  # image, labels, px, props


def thirdsim_samples(k: int, count: int, seed: int, first: int = 0) -> Iterator[Sample]:
    """Condition ``k`` of ``bench_detect_thirdsim.py``, seeds seed + 1000 k + i."""
    from bench_detect_thirdsim import _cfg
    from thirdsim import render

    for i in range(first, first + count):
        m = render(_cfg(k), seed + 1000 * k + i)
        props = {
            "multilamellar": np.array([v["lamellae"] > 1 for v in m.vesicles]),
            "with content": np.array([v["content"] != "" for v in m.vesicles]),
        }
        yield m.image, m.labels, m.pixel_nm, props


def ours_samples(k: int, count: int, seed: int, first: int = 0) -> Iterator[Sample]:
    """Condition ``k`` of ``bench_detect.py`` (its report seeds unless ``seed``),
    micrographs ``first`` to ``first + count - 1``."""
    from bench_detect import CONDITIONS, REF
    from lipoclass.synth import render_micrograph
    from lipoclass.synth.scenes import PROBLEMS

    base = REF.seed if seed < 0 else seed
    cfg = replace(REF, seed=base + 100 * k, **CONDITIONS[k][1])  # type: ignore[arg-type]
    for i in range(first, first + count):
        m = render_micrograph(cfg, i)
        names = np.array([str(p["label"]) for p in m.particles])
        props = {c: names == c for c in PROBLEMS[cfg.problem][0]}  # every class of the problem
        yield m.image, m.labels, m.sample.pixel_size_nm, props


def score_condition(
    samples: Iterator[Sample], finders: tuple[str, ...]
) -> dict[str, dict[str, float]]:
    """Per finder: precision, recall and each property's true / found share (pooled)."""
    from lipoclass.micrograph.match import class_shares

    tot: dict[str, dict[str, float]] = {f: {"tp": 0, "det": 0, "truth": 0} for f in finders}
    truth_n: dict[str, float] = {}
    mats: dict[str, list[Any]] = {f: [] for f in finders}  # per micrograph, for intervals
    tables: dict[str, list[dict[int, str]]] = {}
    for image, labels, px, props in samples:
        present = np.unique(labels)[1:] - 1  # liposomes with pixels (none wholly hidden)
        for name, flags in props.items():
            truth_n[name] = truth_n.get(name, 0) + float(flags[present].sum())
            tables.setdefault(name, []).append(
                {int(i) + 1: "yes" if flags[i] else "no" for i in present}
            )
        for f in finders:
            det = detect_candidates(image, DetectConfig(finder=f), px)
            mt = match_instances(labels, det.labels)
            mats[f].append(mt)
            found = mt.pairs[:, 0] - 1  # truth instance index of each match
            t = tot[f]
            t["tp"] += len(found)
            t["det"] += mt.n_found
            t["truth"] += mt.n_truth
            for name, flags in props.items():
                t[f"found {name}"] = t.get(f"found {name}", 0) + float(flags[found].sum())
    out: dict[str, dict[str, float]] = {}
    for f, t in tot.items():
        row = {"precision": t["tp"] / max(t["det"], 1), "recall": t["tp"] / max(t["truth"], 1)}
        for name, n in truth_n.items():
            row[f"true {name}"] = 100 * n / max(t["truth"], 1)
            row[f"found {name}"] = 100 * t.get(f"found {name}", 0) / max(t["tp"], 1)
            row[f"recall {name}"] = t.get(f"found {name}", 0) / max(n, 1)
            row[f"recall not {name}"] = (t["tp"] - t.get(f"found {name}", 0)) / max(
                t["truth"] - n, 1
            )
            # detect --truth --classes' verdict: the change's 95 % interval excludes 0
            yes = [c for c in class_shares(mats[f], tables[name]) if c.label == "yes"]
            row[f"clear {name}"] = float(bool(yes) and (yes[0].low > 0 or yes[0].high < 0))
        out[f] = row
    return out


def corrected(found_pct: float, r_with: float, r_without: float) -> float:
    """A found share (%) corrected for unequal detection: each class weighted by 1 / its
    recall (measured on a lab's annotated micrographs); NaN where a recall is 0."""
    if r_with <= 0 or r_without <= 0:
        return float("nan")
    a, b = found_pct / 100 / r_with, (1 - found_pct / 100) / r_without
    return 100 * a / (a + b) if a + b > 0 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("simulator", choices=("thirdsim", "ours"))
    ap.add_argument("--count", type=int, default=8, help="micrographs a condition")
    ap.add_argument("--seed", type=int, default=-1, help="thirdsim: required; ours: report seeds")
    ap.add_argument("--lab-seed", type=int, default=None,
                    help="also correct the found shares by each class's recall on a 'lab' of "
                    "--count annotated micrographs a condition (thirdsim: seeds LAB_SEED + "
                    "1000 k + i; ours: the same seeds, the next --count micrographs)")  # fmt: skip
    args = ap.parse_args()
    if args.simulator == "thirdsim":
        from bench_detect_thirdsim import CONDITIONS

        if args.seed < 0:
            ap.error("thirdsim needs --seed (a range never used, e.g. 190000)")
        make: Callable[..., Iterator[Sample]] = thirdsim_samples
    else:
        from bench_detect import CONDITIONS  # type: ignore[no-redef]

        make = ours_samples
    finders = tuple(CANDIDATE_FINDERS)
    lab = args.lab_seed is not None
    print("| condition | finder | P | R | property | true % | found % | bias pp | bound pp |"
          + (" corrected % | corrected bias pp | bias, corrected where clear |" if lab
             else ""))  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|" + ("---|---|---|" if lab else ""))
    summary: dict[str, list[tuple[float, ...]]] = {f: [] for f in finders}
    t0 = time.time()
    for k, (cname, _change) in enumerate(CONDITIONS):
        res = score_condition(make(k, args.count, args.seed), finders)
        if lab:  # the lab's annotated micrographs of the same condition
            third = args.simulator == "thirdsim"
            ref = score_condition(make(k, args.count, args.lab_seed if third else args.seed,
                                       0 if third else args.count), finders)  # fmt: skip
        majority = max(
            (n[5:] for n in res[finders[0]] if n.startswith("true ")),
            key=lambda n: res[finders[0]][f"true {n}"],
        )
        for f in finders:
            r = res[f]
            for name in (n[5:] for n in r if n.startswith("true ")):
                if args.simulator == "ours" and name == majority:
                    continue
                true, found = r[f"true {name}"], r[f"found {name}"]
                bias = found - true
                bound = abs(bias) + 100 * (1 - r["precision"])
                row: tuple[float, ...] = (abs(bias), bound)
                cells = ""
                if lab:
                    rl = ref[f]  # a class absent from the lab: not correctable (NaN)
                    c = found if true == 0 else corrected(
                        found, rl.get(f"recall {name}", 0.0), rl.get(f"recall not {name}", 0.0)
                    )  # fmt: skip
                    # only where the lab's own micrographs show a clear change
                    cc = c if rl.get(f"clear {name}", 0.0) else found
                    row, cells = (
                        (*row, abs(c - true), abs(cc - true)),
                        (f" {c:.1f} | {c - true:+.1f} | {cc - true:+.1f} |"),
                    )
                summary[f].append(row)
                print(f"| {cname} | {f} | {r['precision']:.3f} | {r['recall']:.3f} | {name} | "
                      f"{true:.1f} | {found:.1f} | {bias:+.1f} | {bound:.1f} |{cells}",
                      flush=True)  # fmt: skip
    print(f"\n({time.time() - t0:.0f} s) mean over conditions and properties:")
    for f in finders:
        a = np.array(summary[f])
        print(f"{f}: mean |bias| {a[:, 0].mean():.2f} pp, mean bound {a[:, 1].mean():.2f} pp, "
              f"largest |bias| {a[:, 0].max():.1f} pp ({len(a)} condition-properties)")  # fmt: skip
        if lab:
            c = a[:, 2][np.isfinite(a[:, 2])]
            print(f"  corrected by the lab's recall: mean |bias| {c.mean():.2f} pp, largest "
                  f"{c.max():.1f} pp ({len(c)} of {len(a)} correctable)")  # fmt: skip
            c = a[:, 3][np.isfinite(a[:, 3])]
            print(f"  corrected only where the lab shows a clear change: mean |bias| "
                  f"{c.mean():.2f} pp, largest {c.max():.1f} pp "
                  f"({len(c)} of {len(a)})")  # fmt: skip


if __name__ == "__main__":
    main()
