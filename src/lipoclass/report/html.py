"""``build_report(study_dir)``: one self-contained ``report.html`` (inline CSS, PNG figures
as base64 data URIs, no JavaScript, no network) from stored results only: study.json and
each run's metrics.json, oof.csv, config.json, run.json, error.txt."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from lipoclass import metrics as M
from lipoclass.errors import LipoclassError
from lipoclass.report import figures as F

__all__ = ["GALLERY_PER_CLASS", "RunRecord", "build_report", "load_runs"]

GALLERY_PER_CLASS = 6  # thumbnails per class and kind (misclassified, least confident)
_METRICS = M.CLASS_METRICS
# the summary metrics, the ones that weigh classes equally first (the study table shows 4)
_SUMMARY = tuple(sorted(M.SUMMARY_METRICS, key=("balanced_accuracy", "macro_f1", "mcc",
                                                "log_loss", "accuracy").index))  # fmt: skip

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;
max-width:1200px;padding:1em 1.5em;color:#1d2330;background:#fff;line-height:1.4}
h1{margin:.2em 0;font-size:1.7em}h2{border-bottom:2px solid #dde3ee;padding-bottom:.2em;
margin-top:1.6em}h3{margin-top:1.2em}
.meta{color:#5a6275;font-size:.9em}
table{border-collapse:collapse;margin:.5em 0;font-size:.86em}
th,td{border:1px solid #d6dbe6;padding:3px 7px;text-align:right}
th{background:#f1f4f9}td.l,th.l{text-align:left}
.ok{color:#176d2c;font-weight:600}.failed{color:#b3261e;font-weight:600}
.pending{color:#8a6d00;font-weight:600}
pre{background:#f6f7fa;border:1px solid #e0e4ec;padding:.6em;overflow-x:auto;font-size:.8em}
img.fig{max-width:100%;border:1px solid #eceff5;margin:.4em 0}
details{border:1px solid #dde3ee;border-radius:6px;padding:.3em .8em;margin:.6em 0}
summary{cursor:pointer;font-weight:600}
.gallery{display:flex;flex-wrap:wrap;gap:6px;margin:.3em 0 .8em}
.thumb{width:96px;font-size:.7em;text-align:center;border:1px solid #e3e6ee;padding:2px}
.thumb img{width:88px;height:88px;image-rendering:pixelated;object-fit:contain;
background:#000}
.small{font-size:.75em;color:#6b7285}.cm td{min-width:3.2em}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.4em .8em}
"""


@dataclass
class RunRecord:
    """One (run, dataset) entry of a study with whatever its folder holds."""

    key: str
    label: str
    dataset: int
    settings: dict[str, Any]
    folder: Path
    status: str = "not run"  # done | failed | not run
    metrics: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LipoclassError(f"{path}: invalid JSON ({exc})") from None


def _load_meta(d: Path) -> dict[str, Any]:
    """study.json, or a one-run study made up for a plain ``lipoclass cv`` folder."""
    if (d / "study.json").is_file():
        meta = _read_json(d / "study.json")
        if not isinstance(meta, dict) or "runs" not in meta or "study" not in meta:
            raise LipoclassError(f"{d / 'study.json'}: not a lipoclass study file")
        return meta
    if (d / "metrics.json").is_file():
        m = _read_json(d / "metrics.json")
        cfg = _read_json(d / "config.json") if (d / "config.json").is_file() else {}
        root = cfg.get("dataset", {}).get("root", "")
        return {
            "study": {
                "name": d.name,
                "description": "a single cross-validation run",
                "folds": m.get("folds"),
                "seed": m.get("seed"),
                "plots": ["compare"],
                "varying": [],
                "source": str(d),
            },
            "datasets": [
                {
                    "path": root,
                    "name": cfg.get("dataset", {}).get("name", root),
                    "classes": m.get("classes", []),
                }
            ],
            "runs": [
                {
                    "key": ".",
                    "label": m.get("model", "run"),
                    "dataset": 0,
                    "settings": {"model": m.get("model")},
                }
            ],
            "versions": cfg.get("versions", {}),
        }
    if not d.exists():
        raise LipoclassError(f"{d}: folder not found")
    raise LipoclassError(f"{d}: not a study folder (no study.json) nor a cv run (no metrics.json)")


def load_runs(d: Path, meta: Mapping[str, Any]) -> list[RunRecord]:
    """A record per study.json run entry, filled from its folder."""
    out = []
    for e in meta["runs"]:
        folder = d if e["key"] == "." else d / "runs" / e["key"]
        r = RunRecord(e["key"], e["label"], int(e.get("dataset", 0)), e.get("settings", {}), folder)
        if (folder / "run.json").is_file():
            r.info = _read_json(folder / "run.json")
        if (folder / "metrics.json").is_file():
            r.status = "done"
            r.metrics = _read_json(folder / "metrics.json")
            if (folder / "config.json").is_file():
                r.config = _read_json(folder / "config.json")
        elif (folder / "error.txt").is_file():
            r.status = "failed"
            r.error = (folder / "error.txt").read_text(encoding="utf-8", errors="replace")
        out.append(r)
    return out


# --------------------------------------------------------------------------- html helpers


def _e(x: Any) -> str:
    return html.escape(str(x))


def _img(png: bytes, alt: str, cls: str = "fig") -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="{cls}" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _num(v: Any, digits: int = 3) -> str:
    return f"{v:.{digits}f}" if isinstance(v, int | float) and v == v else "–"


def _pm(d: Mapping[str, Any], key: str) -> str:
    s = _num(d.get(key))
    if isinstance(d.get(f"{key}_std"), int | float):
        s += f" ± {_num(d[f'{key}_std'])}"
    return s


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """HTML table; the first ``left`` columns are left-aligned; cells are already HTML."""
    th = "".join(f'<th class="{"l" if i < left else ""}">{h}</th>' for i, h in enumerate(head))
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def _confusion_html(cm: Sequence[Sequence[float]], classes: Sequence[str], normalized: bool) -> str:
    a = np.asarray(cm, dtype=float)  # (C, C) rows true
    scale = a / a.sum(axis=1, keepdims=True).clip(min=1e-12) if not normalized else a
    head = "<th class='l'>true \\ predicted</th>" + "".join(f"<th>{_e(c)}</th>" for c in classes)
    rows = []
    for i, c in enumerate(classes):
        cells = []
        for j in range(len(classes)):
            alpha = float(np.clip(scale[i, j], 0, 1))
            txt = f"{a[i, j]:.2f}" if normalized else f"{int(a[i, j])}"
            fg = "#fff" if alpha > 0.55 else "#111"
            cells.append(
                f'<td style="background:rgba(31,84,170,{alpha:.2f});color:{fg}">{txt}</td>'
            )
        rows.append(f"<tr><th class='l'>{_e(c)}</th>{''.join(cells)}</tr>")
    return f"<table class='cm'><tr>{head}</tr>{''.join(rows)}</table>"


def _class_table(m: Mapping[str, Any], classes: Sequence[str]) -> str:
    rows = []
    for c in classes:
        pc = m.get("per_class", {}).get(c, {})
        cells = [f"<b>{_e(c)}</b>", str(pc.get("support", "–"))]
        for k in _METRICS:
            ci = pc.get(f"{k}_ci")
            ci_s = f"<br><span class='small'>[{_num(ci[0])}, {_num(ci[1])}]</span>" if ci else ""
            cells.append(_pm(pc, k) + ci_s)
        rows.append(cells)
    head = ["class", "n"] + [M.metric_label(k) for k in _METRICS]
    return _table(head, rows)


def _baseline_table(m: Mapping[str, Any], classes: Sequence[str]) -> str:
    rows = []
    for name, b in m.get("baselines", {}).items():
        for c in classes:
            pc = b.get("per_class", {}).get(c, {})
            rows.append([_e(name.replace("_", " ")), _e(c)] + [_num(pc.get(k)) for k in _METRICS])
    if not rows:
        return ""
    return _table(["baseline", "class"] + [M.metric_label(k) for k in _METRICS], rows, left=2)


# --------------------------------------------------------------------------- gallery


def _read_oof(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _thumb(image: Path, size: int = 88) -> bytes | None:
    """Particle image scaled to ``size`` px, contrast stretched (1-99th percentile)."""
    from PIL import Image

    from lipoclass.data import read_image

    try:
        a = read_image(image)  # (H, W) float32
    except LipoclassError:
        return None
    lo, hi = np.percentile(a, [1, 99])
    u8 = (np.clip((a - lo) / max(float(hi - lo), 1e-6), 0, 1) * 255).astype(np.uint8)
    im = Image.fromarray(u8)
    im.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _gallery(run: RunRecord, images: Mapping[str, Path] | None, classes: Sequence[str]) -> str:
    """Most confident mistakes and least confident predictions per true class."""
    rows = _read_oof(run.folder / "oof.csv")
    if not rows:
        return "<p class='small'>no oof.csv: no gallery</p>"
    if images is None:
        return "<p class='note'>dataset folder not found: thumbnails left out</p>"
    parts = [
        "<p class='small'>Per true class: misclassified particles with the most "
        "confident wrong prediction, then the particles whose top probability is lowest "
        "(out-of-fold predictions). Caption: id, true → predicted, p(predicted).</p>"
    ]
    for c in classes:
        mine = [r for r in rows if r["label"] == c]
        if not mine:
            continue

        def p_of(r: dict[str, str], cls: str) -> float:
            try:
                return float(r.get(f"p_{cls}", "nan"))
            except ValueError:
                return float("nan")

        wrong = sorted((r for r in mine if r["pred"] != c), key=lambda r: -p_of(r, r["pred"]))
        unsure = sorted(mine, key=lambda r: max(p_of(r, k) for k in classes))
        for title, sel in (("misclassified", wrong), ("least confident", unsure)):
            cards = []
            for r in sel[:GALLERY_PER_CLASS]:
                path = images.get(r["id"])
                png = _thumb(path) if path is not None else None
                pic = _img(png, r["id"], cls="") if png else "<i>image missing</i>"
                mark = "" if r["pred"] == c else " style='border-color:#b3261e'"
                cards.append(
                    f"<div class='thumb'{mark}>{pic}<br>{_e(r['id'])}<br>{_e(c)} → "
                    f"{_e(r['pred'])}<br>p={_num(p_of(r, r['pred']), 2)}</div>"
                )
            n = len(sel)
            body = "".join(cards) or "<span class='small'>none</span>"
            parts.append(
                f"<div><b>{_e(c)}</b> – {title} ({n})<div class='gallery'>{body}</div></div>"
            )
    return "".join(parts)


# --------------------------------------------------------------------------- sections


def _default_plots(meta: Mapping[str, Any], runs: Sequence[RunRecord]) -> list[str]:
    plots = list(meta["study"].get("plots") or [])
    if plots:
        return plots
    varying = meta["study"].get("varying", [])
    out = ["steps"] if "augment" in varying else []
    out.append("f1")
    if len(_kinds_of(r.settings.get("model") for r in runs)) > 1 or len(runs) <= 3:
        out.append("compare")  # models of different kinds (e.g. SVM beside CNNs), or few runs
    return out


def _kinds_of(models: Iterable[object]) -> set[str]:
    """The model kinds (``lipoclass.kinds``) of the runs' ``model`` settings; a name no
    registered kind builds counts as a kind of its own."""
    from lipoclass.kinds import kind_for_model

    out = set()
    for m in {str(m) for m in models}:
        try:
            out.add(kind_for_model(m).name)
        except LipoclassError:
            out.add(m)
    return out


def _dataset_images(info: Mapping[str, Any]) -> dict[str, Path] | None:
    from lipoclass.data import load_dataset

    path = info.get("path")
    if not path or not Path(path).is_dir():
        return None
    try:
        ds = load_dataset(path, check_files=False)
    except LipoclassError:
        return None
    return {p.id: p.image for p in ds.particles}


def _varying_title(meta: Mapping[str, Any]) -> str:
    v = [k for k in meta["study"].get("varying", []) if k != "label"]
    names = {
        "model": "architecture",
        "mode": "input mode",
        "augment": "augmentation",
        "balance": "imbalance handling",
    }
    return names.get(v[0], v[0]) if len(v) == 1 else "run"


def _dataset_section(i: int, info: Mapping[str, Any]) -> str:
    counts = info.get("class_counts", {})
    total = sum(counts.values()) or 1
    rows = [[_e(c), str(n), f"{100 * n / total:.2f}%"] for c, n in counts.items()]
    sub = ""
    if info.get("subset"):
        sub = (
            f"<p class='note'>quick mode: a seeded stratified subset of "
            f"{info.get('n_used')} of {info.get('n_particles')} particles was used.</p>"
        )
    fig = ""
    if counts:
        fig = _img(
            F.dataset_figure(str(info.get("name", i)), counts, info.get("image_sizes", {})),
            "dataset summary",
        )
    return (
        f"<h3>{_e(info.get('name', f'dataset {i}'))}</h3>"
        f"<p class='meta'>{_e(info.get('path', ''))} · fingerprint "
        f"{_e(info.get('fingerprint', '–'))} · {info.get('n_used', '–')} particles used</p>"
        f"{sub}{_table(['class', 'labelled', 'share'], rows)}{fig}"
    )


def _summary_table(runs: Sequence[RunRecord], classes: Sequence[str]) -> str:
    head = ["run", "model", "status"] + [k.replace("_", " ") for k in _SUMMARY[:4]]
    head += [f"F1 {_e(c)}" for c in classes] + ["wall time (s)", "folder"]
    rows = []
    first: Mapping[str, Any] | None = None
    for r in runs:
        m = r.metrics or {}
        first = first or r.metrics
        st = {"done": "ok", "failed": "failed"}.get(r.status, "pending")
        cells = [
            f"<a href='#run-{_e(r.key)}'>{_e(r.label)}</a>",
            _e(r.settings.get("model", "")),
            f"<span class='{st}'>{_e(r.status)}</span>",
        ]
        cells += [_pm(m, k) if m else "–" for k in _SUMMARY[:4]]
        cells += [_pm(m.get("per_class", {}).get(c, {}), "f1") if m else "–" for c in classes]
        wall = m.get("wall_time_s", r.info.get("wall_time_s"))
        cells += [_num(wall, 1), f"<code>runs/{_e(r.key)}</code>"]
        rows.append(cells)
    if first:
        for name, b in first.get("baselines", {}).items():
            cells = [f"<i>baseline: {_e(name.replace('_', ' '))}</i>", "–", "–"]
            cells += [_pm(b, k) for k in _SUMMARY[:4]]
            cells += [_pm(b.get("per_class", {}).get(c, {}), "f1") for c in classes]
            rows.append([*cells, "–", "–"])
    return _table(head, rows, left=3)


def _run_section(r: RunRecord, classes: Sequence[str], images: Mapping[str, Path] | None) -> str:
    st = {"done": "ok", "failed": "failed"}.get(r.status, "pending")
    opened = " open" if r.status == "failed" else ""
    head = (
        f"<details id='run-{_e(r.key)}'{opened}><summary>{_e(r.label)} · "
        f"<span class='{st}'>{_e(r.status)}</span> · <code>{_e(r.key)}</code></summary>"
    )
    settings = json.dumps(r.settings, sort_keys=True)
    spec = r.config.get("spec") or r.info.get("spec")
    parts = [head, f"<p><b>settings</b> <code>{_e(settings)}</code></p>"]
    if spec:
        parts.append(
            f"<details><summary>resolved spec</summary><pre>"
            f"{_e(json.dumps(spec, indent=1))}</pre></details>"
        )
    meta_bits = []
    for k in ("started", "finished", "host", "wall_time_s"):
        if k in r.info:
            meta_bits.append(f"{k.replace('_', ' ')}: {_e(r.info[k])}")
    if r.config.get("versions"):
        meta_bits.append(
            "versions: " + ", ".join(f"{k} {v}" for k, v in r.config["versions"].items())
        )
    if meta_bits:
        parts.append(f"<p class='meta'>{' · '.join(meta_bits)}</p>")
    if r.status == "failed":
        parts.append(f"<p class='failed'>This run failed; traceback:</p><pre>{_e(r.error)}</pre>")
    elif r.status != "done":
        parts.append("<p class='pending'>not run yet (interrupted or pending)</p>")
    else:
        m = r.metrics or {}
        cls = m.get("classes", classes)
        summ = " · ".join(f"{k.replace('_', ' ')} {_pm(m, k)}" for k in _SUMMARY if k in m)
        parts.append(
            f"<p>{summ}; {m.get('n_particles', '–')} particles evaluated, "
            f"{len(m.get('excluded', []))} excluded.</p>"
        )
        parts.append(
            "<p class='small'>Per-class metrics: mean ± std over folds, 95% "
            "bootstrap CI below.</p>" + _class_table(m, cls)
        )
        parts.append(
            "<div style='display:flex;gap:2em;flex-wrap:wrap'>"
            f"<div><b>confusion (summed over folds)</b>"
            f"{_confusion_html(m.get('confusion', []), cls, False)}</div>"
            f"<div><b>normalised (fold mean)</b>"
            f"{_confusion_html(m.get('confusion_normalized', []), cls, True)}</div>"
            f"<div><b>baselines, same folds</b>{_baseline_table(m, cls)}</div></div>"
        )
        imp = r.folder / "importance.png"  # SVM: permutation importance on held-out folds
        if imp.is_file():
            parts.append(
                "<details><summary>feature importance (permutation, held-out folds)"
                f"</summary>{_img(imp.read_bytes(), 'feature importance')}</details>"
            )
        parts.append("<h4>Particles to review</h4>" + _gallery(r, images, cls))
    parts.append("</details>")
    return "".join(parts)


def _study_figures(
    plots: Sequence[str],
    runs: Sequence[RunRecord],
    classes: Sequence[str],
    ds_name: str,
    varying: str,
) -> str:
    labels = [r.label for r in runs]
    metrics = [r.metrics for r in runs]
    out = []
    if not any(metrics):
        return "<p class='note'>no finished run yet: no figures</p>"
    for plot in plots:
        if plot == "steps":
            title = f"{ds_name}: per-class TPR by {varying}"
            out.append(_img(F.steps_figure(labels, metrics, classes, title), "TPR by step"))
        elif plot == "f1":
            title = f"{ds_name}: per-class F1 by {varying}"
            out.append(_img(F.f1_figure(labels, metrics, classes, title), "F1 per run"))
        elif plot == "compare":
            first = next(m for m in metrics if m)
            lab2, met2 = list(labels), list(metrics)
            for name, b in first.get("baselines", {}).items():
                lab2.append(f"baseline: {name.replace('_', ' ')}")
                met2.append(b)
            title = f"{ds_name}: TPR/TNR/PPV/NPV/F1 per class"
            out.append(_img(F.compare_figure(lab2, met2, classes, title), "comparison"))
    return "".join(out)


def build_report(study_dir: str | os.PathLike[str]) -> Path:
    """Write ``study_dir/report.html`` from the stored results (no training) and return it."""
    d = Path(study_dir)
    meta = _load_meta(d)
    runs = load_runs(d, meta)
    st = meta["study"]
    datasets = meta.get("datasets", [])
    plots = _default_plots(meta, runs)
    varying = _varying_title(meta)
    n_done = sum(r.status == "done" for r in runs)
    n_fail = sum(r.status == "failed" for r in runs)
    quick = " · <b>quick mode</b> (few epochs, data subset)" if meta.get("quick") else ""
    vers = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
    body = [
        f"<h1>Study: {_e(st.get('name', d.name))}</h1>",
        f"<p>{_e(st.get('description', ''))}</p>",
        f"<p class='meta'>{st.get('folds', '–')}-fold stratified cross-validation"
        f"{', grouped by ' + _e(st['group_by']) if st.get('group_by') else ''} · seed "
        f"{_e(st.get('seed', '–'))} · {len(runs)} run(s): {n_done} finished, {n_fail} failed"
        f"{quick}<br>source: {_e(st.get('source', ''))} · created {_e(meta.get('created', '–'))}"
        f" · report built {datetime.now(UTC).isoformat(timespec='seconds')}<br>versions: "
        f"{_e(vers)}</p>",
        "<p class='small'>All metrics are out-of-fold (test folds only). Baselines (majority "
        "class, stratified random) use the same folds.</p>",
    ]
    runs_html: list[str] = []
    for i, info in enumerate(datasets or [{}]):
        mine = [r for r in runs if r.dataset == i]
        classes = list(
            info.get("classes") or next((r.metrics["classes"] for r in mine if r.metrics), [])
        )
        name = str(info.get("name", d.name))
        title = f" – {_e(name)}" if len(datasets) > 1 else ""
        body.append(f"<h2>Results{title}</h2>")
        body.append(_summary_table(mine, classes))
        body.append(_study_figures(plots, mine, classes, name, varying))
        runs_html.append(f"<h2>Runs{title}</h2>")
        images = _dataset_images(info)
        runs_html += [_run_section(r, classes, images) for r in mine]
    body.append("<h2>Data</h2>")
    body += [_dataset_section(i, info) for i, info in enumerate(datasets)]
    body += runs_html
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>lipoclass study {_e(st.get('name', ''))}</title>"
        f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )
    out = d / "report.html"
    tmp = d / ".report.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out
