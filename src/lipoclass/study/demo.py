"""``lipoclass demo``: synthesise the default lamellarity set, run the ``benchmark`` study
(LipNet-4 vs SVM, identical 5 folds) and print this run's per-class metrics
(``metrics.CLASS_METRICS``) of both models and the baselines in the layout of the thesis'
Figure 22. The numbers are measured here, on synthetic data (quick by default: a stratified
subset of ``DEMO_N_QUICK`` particles, ``DEMO_QUICK_EPOCHS`` CNN epochs); they are not the
thesis' figures."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from lipoclass import metrics as M
from lipoclass.study.config import load_study
from lipoclass.study.runner import check_study_folder, run_study

__all__ = ["DEMO_N_QUICK", "benchmark_table", "run_demo"]

DEMO_N_QUICK = 2000  # stratified subset the quick study evaluates (thesis class shares kept)
DEMO_QUICK_EPOCHS = 8
_METRICS = M.CLASS_METRICS


def benchmark_table(study_dir: str | os.PathLike[str]) -> str:
    """Per-class metrics (``metrics.CLASS_METRICS``) of every finished run and the
    baselines, as text."""
    study_dir = Path(study_dir)
    meta = json.loads((study_dir / "study.json").read_text())
    rows: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for entry in meta["runs"]:
        mpath = study_dir / "runs" / entry["key"] / "metrics.json"
        if entry["key"] in seen or not mpath.is_file():
            continue
        seen.add(entry["key"])
        m = json.loads(mpath.read_text())
        rows.append((entry["label"], m))
    if not rows:
        return "no finished runs"
    base = rows[0][1].get("baselines", {})
    for name in ("majority", "stratified_random"):
        if name in base:
            rows.append((f"baseline: {name}", base[name]))
    classes = list(rows[0][1].get("classes", []))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':{width}}  {'class':<14}" + "".join(f"{M.metric_label(m):>12}" for m in _METRICS)]
    for label, m in rows:
        for c in classes:
            pc = m.get("per_class", {}).get(c, {})
            vals = "".join(
                f"{pc[k]:12.3f}" if isinstance(pc.get(k), int | float) else f"{'-':>12}"
                for k in _METRICS
            )
            lines.append(f"{label:{width}}  {c:<14}{vals}")
        extra = ", ".join(
            f"{k} {m[k]:.3f}"
            for k in ("balanced_accuracy", "macro_f1", "mcc")
            if isinstance(m.get(k), int | float)
        )
        if extra:
            lines.append(f"{label:{width}}  {extra}")
    return "\n".join(lines)


def run_demo(out: str | os.PathLike[str], quick: bool = True, seed: int = 0) -> Path:
    """Synthesise (or reuse) ``out/data``, run the benchmark study into ``out`` and print
    the per-class comparison; returns the report path. The data is always the default
    (thesis-sized, 14,169 particles) lamellarity set; quick evaluates a stratified subset of
    ``DEMO_N_QUICK`` particles with ``DEMO_QUICK_EPOCHS`` CNN epochs (minutes on 2 cores)."""
    out = check_study_folder(out)  # before minutes of synthesis
    data = out / "data"
    if not (data / "particles.csv").is_file():
        from lipoclass.synth import synthesize

        print(f"synthesising the default lamellarity set (thesis size) -> {data}")
        synthesize("lamellarity", data, seed=seed)
    study = dataclasses.replace(load_study("benchmark"), seed=int(seed))
    report = run_study(
        study, [data], out, quick=quick, quick_n=DEMO_N_QUICK, quick_epochs=DEMO_QUICK_EPOCHS
    )
    print(benchmark_table(out))
    return report
