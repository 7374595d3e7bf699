"""``lipoclass predict MODEL MICROGRAPH... --out DIR``: classify every particle of whole
micrographs (annotated, or found by the detector) and write a per-particle table, class
shares per micrograph and per sample, one overlay PNG per micrograph and an ``index.html``.

Streaming: one micrograph is in memory at a time (per worker). Its particles are cut out and
prepared in memory with the same functions ``lipoclass crop`` and ``lipoclass.data.prepare``
use (``crop_particle``, then ``prepare_arrays`` on the crop and its mask), so the model sees
exactly the pixels it would see from a crop dataset, and are predicted in batches; no crop
dataset is written. Models that measure a dataset rather than read prepared images (the SVM,
the stack of ``--recipe auto``) get each micrograph's crops as a temporary crop dataset
(``predict_by_crops``), removed afterwards. With a task runner (``--executor ray``)
micrographs are spread over workers, each loading the model once and returning only rows,
probabilities and the overlay PNG (a few kB per particle). See docs/micrographs.md."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lipoclass.data import META_COLUMNS, PrepConfig, publish_folder
from lipoclass.data.prepare import no_pixel_size_error, prepare_arrays
from lipoclass.errors import LipoclassError
from lipoclass.micrograph.annotations import AnnotationSource, ParticleAnnotation
from lipoclass.micrograph.crop import _as_output, crop_particle
from lipoclass.micrograph.detect import micrograph_bar
from lipoclass.micrograph.io import (
    Micrograph,
    MicrographWarning,
    check_micrographs,
    read_micrograph,
)
from lipoclass.predict import PredictConfig, ShareConfig, ShareRow, class_shares, write_shares

__all__ = [
    "MicrographPredictConfig",
    "MicrographPredictResult",
    "TaskRunner",
    "particle_columns",
    "predict_by_crops",
    "predict_micrographs",
    "prepare_particles",
]

#: class colours of the overlays and the histogram (colour-blind friendly, Okabe-Ito)
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442")
_SKIPPED_COLOUR = "#9a9a9a"


@dataclass(frozen=True)
class MicrographPredictConfig:
    """How particles are cut from micrographs for prediction. ``surround``: px around the
    particle's box (None: the training crops' ``surround_px`` recorded in the model folder's
    model.json, ``LoadedModel.surround_px``; it only changes the pixels for the
    ``surround`` input mode);
    ``keep_edge``: also predict particles cut by the micrograph edge (for ``surround`` mode:
    whose crop leaves it, padded as in ``crop --keep-edge``); ``min_area``: smaller masks
    (px) are skipped as specks; ``overlay_px``: longest side of the overlay PNGs (bigger
    micrographs are block-averaged down)."""

    surround: int | None = None
    keep_edge: bool = False
    min_area: int = 20
    overlay_px: int = 1024

    def __post_init__(self) -> None:
        if self.surround is not None and not 0 <= self.surround <= 2000:
            raise ValueError(f"surround must be 0..2000 px, got {self.surround}")
        if self.min_area < 1:
            raise ValueError(f"min_area must be at least 1, got {self.min_area}")
        if not 128 <= self.overlay_px <= 8192:
            raise ValueError(f"overlay_px must be 128..8192, got {self.overlay_px}")


class TaskRunner(Protocol):
    """Runs ``[fn(*t) for t in tasks]`` somewhere (e.g. ``functools.partial(
    lipoclass.evaluate.run_tasks, config=ExecutorConfig("ray", workers=2))``), calling
    ``on_done(i, result)`` as each task finishes; returns the results in task order."""

    def __call__(
        self,
        fn: Callable[..., Any],
        tasks: Sequence[tuple[Any, ...]],
        *,
        on_done: Callable[[int, Any], None] | None = None,
    ) -> list[Any]: ...


@dataclass
class MicrographPredictResult:
    """What ``predict_micrographs`` wrote: ``out`` folder, ``classes``, per micrograph the
    particle count (``per_micrograph``), ``probs`` (N, C), ``pred`` (N,), ``review`` (N,)
    bool, ``labels`` (N,) true index or -1, ``micrograph`` (N,) names, share rows per sample
    and per micrograph, the particles left out (edge, specks), the ``method`` line (chosen
    method and why) and the ``audit_note``."""

    out: Path
    classes: tuple[str, ...]
    per_micrograph: dict[str, int]
    probs: np.ndarray
    pred: np.ndarray
    review: np.ndarray
    labels: np.ndarray
    micrograph: list[str]
    sample_shares: list[ShareRow]
    micrograph_shares: list[ShareRow]
    review_threshold: float | None
    edge_skipped: int = 0
    small_skipped: int = 0
    empty: list[str] = field(default_factory=list)
    method: str = ""  # which method the shares are reported with and why (one line)
    audit_note: str = ""  # what the audit file gave ("" without --audit)
    fallback: int = 0  # particles predicted by the model kind's fallback (SVM, stack)

    @property
    def n(self) -> int:
        return len(self.pred)


# --------------------------------------------------------------------------- one micrograph


def prepare_particles(
    mic: Micrograph,
    anns: Sequence[ParticleAnnotation],
    prep: PrepConfig,
    surround: int,
    keep_edge: bool = False,
    min_area: int = 20,
) -> tuple[np.ndarray, np.ndarray, list[int], dict[str, int]]:
    """Model input for the particles of one micrograph, in memory: (x (n, 1, S, S) float32,
    meta (n, len(META_COLUMNS)) float64 as ``prepare`` gives, positions in ``anns`` of the n
    prepared particles, counts of the skipped: ``edge``, ``small``, ``empty``).

    Same pixels as ``lipoclass crop`` followed by ``prepare``: the crop keeps the
    micrograph's values (float micrographs as float32, like the crop TIFFs)."""
    if prep.mode == "auto":
        prep = replace(prep, mode="masked")  # annotated particles always have a mask
    image = mic.image if mic.image.dtype.kind in "ui" else mic.image.astype(np.float32, copy=False)
    xs: list[np.ndarray] = []
    metas: list[np.ndarray] = []
    keep: list[int] = []
    skipped = {"edge": 0, "small": 0, "empty": 0}
    px = np.nan if mic.pixel_size_nm is None else float(mic.pixel_size_nm)
    if prep.nm_per_px is not None and mic.pixel_size_nm is None:
        raise no_pixel_size_error(str(mic.path), prep.nm_per_px)
    for i, ann in enumerate(anns):
        if int(np.count_nonzero(ann.mask)) < min_area:
            skipped["small"] += 1
            continue
        got = _cut(image, ann, prep.mode, surround, keep_edge)
        if got is None:
            skipped["edge"] += 1
            continue
        crop, mask, _ = got  # (hc, wc), (hc, wc) bool
        res = prepare_arrays(crop, mask, prep, None if np.isnan(px) else px)
        if isinstance(res, str):
            skipped["empty"] += 1
            continue
        arr, (bh, bw, area) = res  # (S, S) float32
        xs.append(arr)
        metas.append(np.array([crop.shape[1], crop.shape[0], bw, bh, area, px], np.float64))
        keep.append(i)
    s = prep.size
    x = np.stack(xs)[:, None] if xs else np.zeros((0, 1, s, s), np.float32)
    meta = np.stack(metas) if metas else np.zeros((0, len(META_COLUMNS)))
    return x.astype(np.float32, copy=False), meta, keep, skipped


def _cut(
    image: np.ndarray, ann: ParticleAnnotation, mode: str, surround: int, keep_edge: bool
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]] | None:
    """The particle's crop (``crop_particle``) or None when it is left out at the edge: in
    ``surround`` mode when the crop leaves the image; otherwise (the input is cut to the
    mask box) only when the particle itself is cut by the edge (its crop is padded)."""
    if mode == "surround":
        return crop_particle(image, ann, surround, keep_edge)
    h, w = image.shape
    mh, mw = ann.mask.shape
    cut = ann.top <= 0 or ann.left <= 0 or ann.top + mh >= h or ann.left + mw >= w
    return None if cut and not keep_edge else crop_particle(image, ann, surround, True)


def predict_by_crops(
    pred: Any,
    mic: Micrograph,
    anns: Sequence[ParticleAnnotation],
    surround: int,
    keep_edge: bool = False,
    min_area: int = 20,
) -> tuple[np.ndarray, list[int], dict[str, int], int]:
    """Predict the particles of one micrograph with a model whose kind measures a dataset
    (``Kind.reads_prepared`` False: the SVM, the stack of ``--recipe auto``): their crops
    are written as a temporary crop dataset, exactly what ``lipoclass crop`` writes (same
    crop, mask, dtype, pixel size, ``surround_px``), and predicted through ``pred``
    (``EnsemblePredictor``: the kind's dataset path, then its documented fallback for the
    particles it cannot handle as given). The folder is removed afterwards. Returns
    (probs (n, C), positions in ``anns`` of the n predicted particles, skipped counts
    ``edge`` / ``small`` / ``empty``, how many of the n came from the fallback)."""
    from lipoclass.data import DatasetWriter, load_dataset

    mode = "masked" if pred.prep.mode == "auto" else pred.prep.mode
    c = len(pred.classes)
    skipped = {"edge": 0, "small": 0, "empty": 0}
    pos_of: dict[str, int] = {}
    tmp = Path(tempfile.mkdtemp(prefix="lipoclass-mic-"))
    try:
        root = tmp / f"crops-{uuid.uuid4().hex[:8]}"  # unique: in-memory feature caches
        with DatasetWriter(root, name=mic.name, classes=pred.classes,
                           extra={"surround_px": int(surround)}) as wr:  # fmt: skip
            for i, ann in enumerate(anns):
                if int(np.count_nonzero(ann.mask)) < min_area:
                    skipped["small"] += 1
                    continue
                got = _cut(mic.image, ann, mode, surround, keep_edge)
                if got is None:
                    skipped["edge"] += 1
                    continue
                arr, suffix = _as_output(got[0])
                pid = f"{mic.name}_{ann.key}"
                wr.add(pid, image=arr, mask=got[1], pixel_size_nm=mic.pixel_size_nm,
                       suffix=suffix, micrograph=mic.name)  # fmt: skip
                pos_of[pid] = i
        if not pos_of:
            return np.zeros((0, c)), [], skipped, 0
        ds = load_dataset(root)
        probs, index, left = pred.predict_dataset(ds)
        n_fb = 0
        if left:
            row = {p.id: k for k, p in enumerate(ds.particles)}
            fb = pred.fallback(ds, np.array([row[pid] for pid, _ in left], dtype=np.int64))
            probs = np.concatenate([probs.reshape(-1, c), fb.probs.reshape(-1, c)])
            index = np.concatenate([index, np.asarray(fb.index, dtype=np.int64)])
            n_fb = len(fb.index)
            skipped["empty"] += len(left) - n_fb
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    where = np.array([pos_of[ds.particles[int(i)].id] for i in index], dtype=np.int64)
    order = np.argsort(where, kind="stable")  # annotation order, as prepare_particles
    return np.asarray(probs)[order], [int(i) for i in where[order]], skipped, n_fb


_PREDICTORS: dict[tuple[str, str], Any] = {}  # per worker process: load a model once


def _predictor(model_dir: Path, cfg: PredictConfig) -> Any:
    """The ensemble predictor (``lipoclass.ensemble.EnsemblePredictor``) of a model folder
    that predicts from prepared images, loaded once per process and config."""
    key = (str(Path(model_dir).resolve()), repr(cfg))
    if key not in _PREDICTORS:
        from lipoclass.ensemble import EnsemblePredictor, PredictorConfig, load_model

        loaded = load_model(model_dir)
        pred = EnsemblePredictor(
            loaded,
            config=PredictorConfig(device=cfg.device, batch_size=cfg.batch_size,
                                   precision=cfg.precision, tta=cfg.tta),
        )  # fmt: skip
        if loaded.kind.reads_prepared:
            pred.runners()  # build the members now (bad weights: an error before any pixel)
        _PREDICTORS.clear()
        _PREDICTORS[key] = pred
    return _PREDICTORS[key]


@dataclass(frozen=True)
class _Task:
    model_dir: Path
    path: Path
    pixel_size_nm: float | None
    sample: str
    source: AnnotationSource
    predict: PredictConfig
    mic: MicrographPredictConfig
    surround: int


@dataclass
class _MicResult:
    """One micrograph's outcome (small: no pixels but the overlay PNG)."""

    name: str
    path: str
    sample: str
    shape: tuple[int, int]
    pixel_size_nm: float | None
    rows: list[dict[str, Any]]
    probs: np.ndarray  # (n, C)
    labels: list[str | None]
    skipped: dict[str, int]
    overlay: bytes
    error: str | None = None
    label_image: bytes = b""  # instance label image (TIFF): value k = the k-th row of ``rows``
    fallback: int = 0  # rows predicted by the model kind's fallback (SVM, stack)


def _geometry(ann: ParticleAnnotation, px: float | None) -> dict[str, Any]:
    ys, xs = np.nonzero(ann.mask)
    area = int(ys.size)
    d_px = 2.0 * math.sqrt(area / math.pi)
    mh, mw = ann.mask.shape
    return {
        "particle": ann.key,
        "x": round(float(xs.mean()) + ann.left, 2),
        "y": round(float(ys.mean()) + ann.top, 2),
        "bbox_x0": ann.left,
        "bbox_y0": ann.top,
        "bbox_x1": ann.left + mw,
        "bbox_y1": ann.top + mh,
        "area_px": area,
        "diameter_px": round(d_px, 2),
        "diameter_nm": "" if px is None else round(d_px * px, 2),
    }


def _process(task: _Task) -> _MicResult:
    """Read, annotate, prepare, predict and draw one micrograph (runs in a worker)."""
    try:
        return _process_one(task)
    except LipoclassError as exc:  # handed back: a Ray error would wrap it in a traceback
        return _MicResult(
            task.path.stem,
            str(task.path),
            task.sample,
            (0, 0),
            None,
            [],
            np.zeros((0, 0)),
            [],
            {},
            b"",
            error=str(exc),
        )


def _process_one(task: _Task) -> _MicResult:
    pred = _predictor(task.model_dir, task.predict)
    mic = read_micrograph(task.path, pixel_size_nm=task.pixel_size_nm, require_pixel_size=False)
    anns = task.source.particles(mic)
    n_fb = 0
    if pred.model is not None and not pred.model.kind.reads_prepared:
        probs, keep, skipped, n_fb = predict_by_crops(
            pred, mic, anns, task.surround, task.mic.keep_edge, task.mic.min_area
        )
    else:
        x, meta, keep, skipped = prepare_particles(
            mic, anns, pred.prep, task.surround, task.mic.keep_edge, task.mic.min_area
        )
        probs = pred.proba_meta(x, meta)
    if not np.isfinite(probs).all():
        raise LipoclassError(f"{mic.path}: the model gave a non-finite probability")
    kept = [anns[i] for i in keep]
    rows = [_geometry(a, mic.pixel_size_nm) for a in kept]
    thr = pred.model.review_threshold
    review = probs.max(axis=1) < thr if thr is not None else np.zeros(len(probs), bool)
    kept_set = set(keep)
    others = [a for i, a in enumerate(anns) if i not in kept_set]
    others += getattr(task.source, "rejected", lambda m: [])(mic)  # detector's rejects
    png = _overlay_png(
        mic,
        kept,
        probs.argmax(axis=1) if len(probs) else np.zeros(0, int),
        review,
        others,
        pred.classes,
        task.mic.overlay_px,
    )
    return _MicResult(
        mic.name,
        str(mic.path),
        task.sample,
        mic.shape,
        mic.pixel_size_nm,
        rows,
        probs,
        [a.label for a in kept],
        skipped,
        png,
        label_image=_label_tiff(mic.shape, kept),
        fallback=n_fb,
    )


def _label_tiff(shape: tuple[int, int], kept: Sequence[ParticleAnnotation]) -> bytes:
    """The classified particles as an instance label image (TIFF bytes, zlib): value k is
    the micrograph's k-th row of particles.csv (1-based); where masks overlap, the later
    particle's pixels win. napari, Fiji and ``crop --labels`` read it."""
    import tifffile

    lab = np.zeros(shape, dtype=np.uint16 if len(kept) < 65535 else np.uint32)  # (H, W)
    for k, a in enumerate(kept, start=1):
        h, w = a.mask.shape
        t0, l0 = max(a.top, 0), max(a.left, 0)
        t1, l1 = min(a.top + h, shape[0]), min(a.left + w, shape[1])
        if t1 <= t0 or l1 <= l0:
            continue
        m = a.mask[t0 - a.top : t1 - a.top, l0 - a.left : l1 - a.left]  # (h', w') bool
        lab[t0:t1, l0:l1][m] = k
    buf = io.BytesIO()
    tifffile.imwrite(buf, lab, compression="zlib")
    return buf.getvalue()


# --------------------------------------------------------------------------- drawing


def _display(image: np.ndarray, factor: int) -> np.ndarray:
    """Block mean by ``factor``, light smoothing, contrast stretch (0.5-99.5 %) -> [0, 1]."""
    from scipy import ndimage as ndi

    img = image.astype(np.float32, copy=False)
    if factor > 1:
        h, w = (img.shape[0] // factor) * factor, (img.shape[1] // factor) * factor
        img = img[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))
    img = ndi.gaussian_filter(img, 0.8)
    lo, hi = np.percentile(img, [0.5, 99.5])
    return np.clip((img - lo) / max(float(hi - lo), 1e-6), 0, 1)


def _outline(ann: ParticleAnnotation, factor: int) -> list[np.ndarray]:
    """Outline(s) of a particle's mask as (k, 2) (x, y) display coordinates."""
    from skimage.measure import find_contours

    m = np.pad(ann.mask, 1)
    return [
        np.column_stack(
            [
                (c[:, 1] - 1 + ann.left + 0.5) / factor - 0.5,
                (c[:, 0] - 1 + ann.top + 0.5) / factor - 0.5,
            ]
        )
        for c in find_contours(m.astype(np.float32), 0.5)
    ]


def _scale_bar(width_px: float, px_nm: float | None) -> tuple[float, str]:
    """A round length (in the micrograph's px) near a fifth of the width and its label."""
    unit = px_nm if px_nm is not None else 1.0
    target = width_px * unit / 5
    mag = 10 ** math.floor(math.log10(target))
    length = max(v * mag for v in (1, 2, 5) if v * mag <= target)
    name = "nm" if px_nm is not None else "px"
    if px_nm is not None and length >= 1000:
        return length / unit, f"{length / 1000:g} µm"
    return length / unit, f"{length:g} {name}"


def _draw_scale_bar(
    ax: Any, width_px: int, px_nm: float | None, factor: int, dh: int, dw: int
) -> None:
    """A labelled scale bar at the lower left of the overlay (display ``dh`` x ``dw``, the
    micrograph binned by ``factor``)."""
    from matplotlib.patches import Rectangle

    bar, text = _scale_bar(width_px, px_nm)
    bar_d = bar / factor
    x0, y0 = dw * 0.04, dh * 0.95
    ax.add_patch(Rectangle((x0, y0 - dh * 0.012), bar_d, dh * 0.012, facecolor="white",
                           edgecolor="black", lw=0.8))  # fmt: skip
    ax.text(x0 + bar_d / 2, y0 - dh * 0.02, text, color="white", ha="center", va="bottom",
            fontsize=9, fontweight="bold",
            bbox={"facecolor": "black", "alpha": 0.5, "pad": 1.5, "lw": 0})  # fmt: skip


def _draw_legend(
    fig: Any, classes: Sequence[str], pred: np.ndarray, review: np.ndarray, n_others: int
) -> None:
    """The overlay's legend: each class with its count, flagged, not classified."""
    from matplotlib.lines import Line2D

    counts = np.bincount(np.asarray(pred, dtype=np.int64), minlength=len(classes))
    handles = [
        Line2D([], [], color=PALETTE[i % len(PALETTE)], lw=2, label=f"{c} ({counts[i]})")
        for i, c in enumerate(classes)
    ]
    handles.append(Line2D([], [], color="black", lw=1.5, ls="--",
                          label=f"flagged for review ({int(np.sum(review))})"))  # fmt: skip
    if n_others:
        handles.append(Line2D([], [], color=_SKIPPED_COLOUR, lw=1.5, ls=":",
                              label=f"not classified ({n_others})"))  # fmt: skip
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 3), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, 0.0))  # fmt: skip


def _overlay_png(
    mic: Micrograph,
    anns: Sequence[ParticleAnnotation],
    pred: np.ndarray,
    review: np.ndarray,
    others: Sequence[ParticleAnnotation],
    classes: Sequence[str],
    max_px: int,
) -> bytes:
    """The micrograph with each particle outlined in its class colour (dashed: flagged for
    review; grey dotted: not classified), a legend and a scale bar."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    h, w = mic.shape
    factor = max(1, math.ceil(max(h, w) / max_px))
    disp = _display(mic.image, factor)  # (h', w')
    dh, dw = disp.shape
    n_entries = len(classes) + 1 + bool(others)
    dpi = 100
    scale = max(1.0, 640 / dw)  # small micrographs drawn larger, so the legend fits
    legend_h = 0.1 + 0.2 * math.ceil(n_entries / 3)  # inch
    fig_h = dh * scale / dpi + legend_h
    fig = Figure(figsize=(dw * scale / dpi, fig_h), dpi=dpi)
    ax = fig.add_axes((0.0, legend_h / fig_h, 1.0, 1 - legend_h / fig_h))
    ax.imshow(disp, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xlim(-0.5, dw - 0.5)
    ax.set_ylim(dh - 0.5, -0.5)
    ax.set_axis_off()
    # one LineCollection per (colour, line style): one artist per particle takes seconds
    # on a 4k micrograph with ~900 particles
    groups: dict[tuple[str, str, float], list[np.ndarray]] = {}
    for ann, k, flag in zip(anns, pred, review):
        key = (PALETTE[int(k) % len(PALETTE)], "--" if flag else "-", 1.4)
        groups.setdefault(key, []).extend(_outline(ann, factor))
    for ann in others:
        groups.setdefault((_SKIPPED_COLOUR, ":", 0.9), []).extend(_outline(ann, factor))
    for (colour, ls, lw), segs in groups.items():
        ax.add_collection(LineCollection(segs, colors=colour, linewidths=lw, linestyles=ls))
    _draw_scale_bar(ax, w, mic.pixel_size_nm, factor, dh, dw)
    _draw_legend(fig, classes, pred, review, len(others))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _diameter_png(diam: np.ndarray, pred: np.ndarray, classes: Sequence[str], unit: str) -> bytes:
    """Histogram of particle diameter per predicted class (step outlines, one colour each)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.4), dpi=100)
    ax = fig.add_subplot()
    ok = np.isfinite(diam)
    if ok.any():
        lo, hi = float(diam[ok].min()), float(diam[ok].max())
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 25).tolist()
        for k, c in enumerate(classes):
            sel = ok & (pred == k)
            if sel.any():
                ax.hist(
                    diam[sel],
                    bins=bins,
                    histtype="step",
                    lw=1.8,
                    color=PALETTE[k % len(PALETTE)],
                    label=f"{c} (n={int(sel.sum())})",
                )
        ax.legend(fontsize=8, frameon=False)
    ax.set_xlabel(f"equivalent diameter ({unit})")
    ax.set_ylabel("particles")
    ax.set_title("particle diameter by predicted class", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# --------------------------------------------------------------------------- writing


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def _share_cells(rows: Sequence[ShareRow], by: str) -> tuple[list[str], list[list[str]]]:
    from lipoclass.report.html import _e

    def pct(v: float, lo: float, hi: float) -> str:
        return "–" if math.isnan(v) else f"{100 * v:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"

    with_true = any(not math.isnan(r.true_share) for r in rows)
    with_audit = any(r.audit_n or r.audit_note for r in rows)
    head = [by, "class", "n", "method", "share % [CI]"]
    head += ["audit-corrected % [CI]", "labels only % [CI]", "audited", "ESS"] * with_audit
    head += ["true %"] * with_true
    body = []
    for r in rows:
        cell = (pct(r.share, r.share_lo, r.share_hi) if r.determinable
                else f"not determinable: {_e(r.reason)}")  # fmt: skip
        line = [_e(r.sample), _e(r.cls), str(r.n), _e(r.recommended), cell]
        if with_audit:
            aud = pct(*r.audit) if not math.isnan(r.audit[0]) else _e(r.audit_note or "–")
            ess = "–" if math.isnan(r.audit_ess) else f"{r.audit_ess:.0f}"
            line += [aud, pct(*r.labels_only), str(r.audit_n), ess]
        if with_true:
            line.append("–" if math.isnan(r.true_share) else f"{100 * r.true_share:.1f}")
        body.append(line)
    return head, body


def _index_html(
    res: MicrographPredictResult,
    mics: Sequence[_MicResult],
    model: str,
    hist: str,
    level: float,
    shares_png: str = "",
) -> str:
    from lipoclass.report.html import _CSS, _e, _table

    n = res.n
    flagged = int(res.review.sum())
    thr = res.review_threshold
    thr_text = f"top probability below {thr:.3f}" if thr is not None else "no review rule"
    css = _CSS + "img.overlay{max-width:100%;border:1px solid #ccd;display:block}\n"
    body = [
        "<h1>Micrograph predictions</h1>",
        f"<p class='meta'>model {_e(model)} · {len(mics)} micrograph(s) · {n} particle(s) "
        f"classified · {flagged} ({100 * flagged / max(n, 1):.1f}%) flagged for review "
        f"({_e(thr_text)}) · {res.edge_skipped} cut by the micrograph edge and "
        f"{res.small_skipped} specks not classified</p>",
    ]
    if res.empty:
        body.append(f"<p class='note'>No particle on: {_e(', '.join(res.empty))}</p>")
    pct = f"{round(level * 100)}%"
    body.append(
        f"<h2>Class shares per sample</h2><p class='small'>the method chosen for this model "
        f"from its out-of-fold data (model folder: method_selection.png) with its {pct} "
        "interval; a share whose interval is wider than 25 points is not determinable (the "
        "reason says why and what would fix it); shares.csv has every method. Files: "
        "shares.csv, micrograph_shares.csv, particles.csv.</p>"
    )
    body.append(f"<p class='small'>{_e(res.method)}</p>")
    if res.audit_note:
        body.append(
            f"<p class='small'>{_e(res.audit_note)}. Audit-corrected: prediction-powered "
            "inference (PPI++) on the model's predictions of every particle and the person's "
            "labels of the audited ones; ESS: how many labels alone would give the same "
            "precision.</p>"
        )
    body.append(_table(*_share_cells(res.sample_shares, "sample"), left=2))
    if shares_png:
        body.append(f"<img class='fig' alt='class shares' src='{shares_png}'>")
    body.append("<h2>Particle diameter</h2>")
    body.append(f"<img class='fig' alt='diameter histogram' src='{hist}'>")
    body.append("<h2>Micrographs</h2>")
    head = ["micrograph", "sample", "particles", *map(_e, res.classes), "flagged", "px size (nm)"]
    rows = []
    for m in mics:
        sel = np.asarray([name == m.name for name in res.micrograph], dtype=bool)
        counts = np.bincount(res.pred[sel], minlength=len(res.classes))
        rows.append(
            [
                f"<a href='#{_e(m.name)}'>{_e(m.name)}</a>",
                _e(m.sample),
                str(len(m.rows)),
                *map(str, counts),
                str(int(res.review[sel].sum())),
                "–" if m.pixel_size_nm is None else f"{m.pixel_size_nm:.3g}",
            ]
        )
    body.append(_table(head, rows, left=2))
    body.append("<details><summary>Class shares per micrograph</summary>")
    body.append(_table(*_share_cells(res.micrograph_shares, "micrograph"), left=2))
    body.append("</details>")
    for m in mics:
        body.append(f"<h3 id='{_e(m.name)}'>{_e(m.name)} · {len(m.rows)} particle(s)</h3>")
        body.append(f"<p class='small'>{_e(m.path)} · {m.shape[1]} x {m.shape[0]} px</p>")
        body.append(
            f"<a href='overlays/{_e(m.name)}.png'><img class='overlay' loading='lazy' "
            f"alt='overlay {_e(m.name)}' src='overlays/{_e(m.name)}.png'></a>"
        )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<title>lipoclass micrograph predictions</title>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<style>{css}</style></head><body>{''.join(body)}</body></html>\n"
    )


# --------------------------------------------------------------------------- entry point


def _checked_model(
    model_dir: str | os.PathLike[str], cfg: PredictConfig, source: AnnotationSource
) -> Any:
    """The loaded model folder, checked before any pixel (and against the annotation
    source's classes)."""
    try:
        loaded = _predictor(Path(model_dir), cfg).model
    except LipoclassError as exc:
        raise LipoclassError(f"{model_dir}: predicting on micrographs: {exc}") from None
    classes = tuple(loaded.classes)
    unknown = sorted(set(getattr(source, "classes", ())) - set(classes))
    if unknown:
        raise LipoclassError(
            f"annotation class {unknown[0]!r} is not a class of model {model_dir} "
            f"({', '.join(classes)})"
        )
    return loaded


def _check_scale(loaded: Any, paths: Sequence[Path], pxs: dict[Path, float | None]) -> None:
    """Before any pixel: a model that reads inputs at a common scale (``prep.nm_per_px``)
    needs every micrograph's pixel size."""
    nm = getattr(getattr(loaded, "prep", None), "nm_per_px", None)
    missing = [p for p in paths if pxs[p] is None]
    if nm is not None and missing:
        raise no_pixel_size_error(str(missing[0]), nm)


def _process_all(
    tasks: list[tuple[_Task]],
    runner: TaskRunner | None,
    staging: Path,
    done: Callable[[int, _MicResult], None],
) -> list[_MicResult]:
    """Process every micrograph (here one after the other, or on ``runner``), writing its
    overlay and label image into ``staging`` as it comes; only rows and probabilities stay
    in memory."""
    (staging / "overlays").mkdir(parents=True)
    (staging / "labels").mkdir()

    def keep(r: _MicResult) -> _MicResult:
        if r.error:
            raise LipoclassError(r.error)
        (staging / "overlays" / f"{r.name}.png").write_bytes(r.overlay)
        (staging / "labels" / f"{r.name}.tif").write_bytes(r.label_image)
        r.overlay = r.label_image = b""  # streamed out
        return r

    if runner is not None:
        return [keep(r) for r in runner(_process, tasks, on_done=done)]
    results: list[_MicResult] = []
    for i, t in enumerate(tasks):
        results.append(keep(_process(*t)))
        done(i, results[-1])
    return results


def predict_micrographs(
    model_dir: str | os.PathLike[str],
    micrographs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    source: AnnotationSource,
    *,
    config: PredictConfig | None = None,
    mic_config: MicrographPredictConfig | None = None,
    pixel_size_nm: float | None = None,
    samples: dict[str, str] | None = None,
    require_pixel_size: bool = True,
    runner: TaskRunner | None = None,
    progress: bool | None = None,
    verbose: bool = True,
    audit: str | os.PathLike[str] | None = None,
) -> MicrographPredictResult:
    """Classify every particle of ``micrographs`` (from ``source``: annotations or
    ``DetectSource``) with the model folder ``model_dir`` (any kind: CNNs read prepared
    images in memory; the SVM and stacks predict temporary crops, ``predict_by_crops``)
    into ``out`` (particles.csv, shares.csv, micrograph_shares.csv, overlays/*.png,
    diameters.png, summary.json, index.html), atomically. Paths, headers, the sample table
    and ``out`` are checked first. ``runner``: where micrographs are processed (default: one
    after the other here); ``progress``: a tqdm bar (default: when stderr is a terminal).
    ``audit``: a person's labels of an audit sample of these particles (the review page's
    reviews.csv of an earlier report of the same micrographs, or a CSV id,label with ids
    ``<micrograph>_<particle>``): adds the audit-corrected shares (docs/deployment.md)."""
    from lipoclass.outputs import check_output_folder

    cfg = config or PredictConfig()
    if audit is not None:  # before any pixel: the file and its columns (ids come later)
        from lipoclass.quantify import check_audit_file

        check_audit_file(audit)
    mcfg = mic_config or MicrographPredictConfig()
    out = check_output_folder(out)
    paths, pxs = check_micrographs(
        micrographs, pixel_size_nm, require_pixel_size, samples, "overlays would clash"
    )
    stems = {p.stem: p for p in paths}
    loaded = _checked_model(model_dir, cfg, source)
    classes = tuple(loaded.classes)
    _check_scale(loaded, paths, pxs)
    # the training crops' surroundings, from the model folder's input record
    surround = mcfg.surround if mcfg.surround is not None else loaded.surround_px()
    tasks = [(_Task(Path(model_dir), p, pxs[p], samples[p.stem] if samples else p.stem,
                    source, cfg, mcfg, surround),) for p in paths]  # fmt: skip
    bar = micrograph_bar(len(tasks), progress, "predict micrographs")
    total = 0

    def done(i: int, r: _MicResult) -> None:
        nonlocal total
        total += len(r.rows)
        bar.update(1)
        bar.set_postfix(particles=total)

    staging = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        results = _process_all(tasks, runner, staging, done)
        bar.close()
        res = _collect(results, classes, loaded, cfg, out, audit)
        _write_outputs(staging, res, results, str(model_dir), cfg, mcfg, surround)
        publish_folder(staging, out)
    except BaseException:
        bar.close()  # a second close does nothing
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for name in res.empty:
        warnings.warn(MicrographWarning(f"{stems[name]}: no particle found on this micrograph"),
                      stacklevel=2)  # fmt: skip
    if verbose:
        _print_summary(res, len(results), out, cfg.level)
    return res


def _print_summary(res: MicrographPredictResult, n_mics: int, out: Path, level: float) -> None:
    """The console summary: counts, the share table, the method line, the audit note."""
    from lipoclass.predict import shares_table

    flagged = int(res.review.sum())
    edge = f"; {res.edge_skipped} cut by the micrograph edge not classified"
    print(f"{res.n} particle(s) on {n_mics} micrograph(s) classified; {flagged} "
          f"({100 * flagged / max(res.n, 1):.1f}%) flagged for review"
          f"{edge if res.edge_skipped else ''}")  # fmt: skip
    if res.fallback:
        print(f"{res.fallback} particle(s) predicted by the model's fallback (docs/deployment.md, "
              "Every particle counted; e.g. the stack's first model alone)")  # fmt: skip
    print(shares_table(res.sample_shares, level))
    print(f"{res.method} (docs/deployment.md; every method with its interval is in "
          f"{out / 'shares.csv'})")  # fmt: skip
    if res.audit_note:
        print(res.audit_note)
    print(f"report: {out / 'index.html'}")


def _collect(
    results: Sequence[_MicResult],
    classes: tuple[str, ...],
    loaded: Any,
    cfg: PredictConfig,
    out: Path,
    audit: str | os.PathLike[str] | None = None,
) -> MicrographPredictResult:
    """Shares per sample and per micrograph of the processed micrographs (with the audit's
    labels when given: ids ``<micrograph>_<particle>``, as the review page names them)."""
    c = len(classes)
    lookup = {k: i for i, k in enumerate(classes)}
    probs = (
        np.concatenate([r.probs.reshape(-1, c) for r in results]) if results else np.zeros((0, c))
    )
    labels = np.array(
        [lookup[lab] if lab is not None else -1 for r in results for lab in r.labels],
        dtype=np.int64,
    )
    names = [r.name for r in results for _ in r.rows]
    samples = [r.sample for r in results for _ in r.rows]
    if len(probs) == 0:
        raise LipoclassError("no particle found on any micrograph (nothing to classify)")
    pred = probs.argmax(axis=1)
    thr = loaded.review_threshold
    review = probs.max(axis=1) < thr if thr is not None else np.zeros(len(pred), dtype=bool)
    from lipoclass.predict import model_quantifiers
    from lipoclass.predict.shares import audit_positions, method_line

    quant, _note = model_quantifiers(loaded)
    audit_pos, audit_note = None, ""
    if audit is not None:
        ids = [f"{r.name}_{g['particle']}" for r in results for g in r.rows]
        audit_pos, audit_note = audit_positions(audit, ids, classes)
    scfg = ShareConfig(cfg.n_boot, cfg.level, cfg.seed)
    lab = labels if (labels >= 0).any() else None
    skipped = {r.name: sum(r.skipped.values()) for r in results}
    by_s: dict[str, int] = {}
    for r in results:
        by_s[r.sample] = by_s.get(r.sample, 0) + skipped[r.name]
    # the intervals redraw a sample's micrographs (one micrograph: borrowed rate spread)
    by_sample = class_shares(probs, samples, classes, quant, scfg, labels=lab,
                             excluded={k: v for k, v in by_s.items() if v},
                             micrographs=names, audit=audit_pos)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the same warnings as just given for the samples
        by_mic = class_shares(probs, names, classes, quant, scfg, labels=lab,
                              excluded={k: v for k, v in skipped.items() if v},
                              micrographs=names, audit=audit_pos)  # fmt: skip
    return MicrographPredictResult(
        out,
        classes,
        {r.name: len(r.rows) for r in results},
        probs,
        pred,
        review,
        labels,
        names,
        by_sample,
        by_mic,
        thr,
        edge_skipped=sum(r.skipped.get("edge", 0) for r in results),
        small_skipped=sum(r.skipped.get("small", 0) + r.skipped.get("empty", 0) for r in results),
        empty=[r.name for r in results if not r.rows],
        method=method_line(quant),
        audit_note=audit_note,
        fallback=sum(r.fallback for r in results),
    )


def particle_columns(classes: Sequence[str], with_label: bool = False) -> list[str]:
    """The header of a micrograph prediction's particles.csv (``label`` when true classes
    were given)."""
    return [
        "micrograph", "sample", "particle", "x", "y", "bbox_x0", "bbox_y0", "bbox_x1",
        "bbox_y1", "area_px", "diameter_px", "diameter_nm", *(f"p_{c}" for c in classes),
        "pred", "review", *(["label"] if with_label else []),
    ]  # fmt: skip


# long: the report's files written in one pass over the micrographs (rows, shares, summary,
# page); split, the column order and the summary keys would drift apart
def _write_outputs(
    staging: Path,
    res: MicrographPredictResult,
    mics: Sequence[_MicResult],
    model: str,
    cfg: PredictConfig,
    mcfg: MicrographPredictConfig,
    surround: int,
) -> None:
    import base64

    classes = res.classes
    with_label = bool((res.labels >= 0).any())
    header = particle_columns(classes, with_label)
    lines = []
    j = 0
    for m in mics:
        for g, lab in zip(m.rows, m.labels):
            pr = res.probs[j]
            line = [
                m.name,
                m.sample,
                g["particle"],
                g["x"],
                g["y"],
                g["bbox_x0"],
                g["bbox_y0"],
                g["bbox_x1"],
                g["bbox_y1"],
                g["area_px"],
                g["diameter_px"],
                g["diameter_nm"],
                *(f"{v:.6f}" for v in pr),
                classes[int(res.pred[j])],
                int(res.review[j]),
            ]
            if with_label:
                line.append(lab or "")
            lines.append(line)
            j += 1
    _write_csv(staging / "particles.csv", header, lines)
    write_shares(res.sample_shares, staging / "shares.csv")
    write_shares(res.micrograph_shares, staging / "micrograph_shares.csv")
    known = all(m.pixel_size_nm is not None for m in mics if m.rows)
    diam = np.array(
        [float(g["diameter_nm"] if known else g["diameter_px"]) for m in mics for g in m.rows],
        dtype=np.float64,
    )
    png = _diameter_png(diam, res.pred, classes, "nm" if known else "px")
    (staging / "diameters.png").write_bytes(png)
    hist = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    summary = {
        "model": model,
        "classes": list(classes),
        "micrographs": [
            {
                "name": m.name,
                "path": m.path,
                "sample": m.sample,
                "particles": len(m.rows),
                "width": m.shape[1],
                "height": m.shape[0],
                "pixel_size_nm": m.pixel_size_nm,
                "skipped": m.skipped,
                "fallback": m.fallback,
            }
            for m in mics
        ],
        "particles": res.n,
        "flagged": int(res.review.sum()),
        "review_threshold": res.review_threshold,
        "surround_px": surround,
        "predict": asdict(cfg),
        "micrograph_config": asdict(mcfg),
    }
    (staging / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    from lipoclass.predict import plot_shares

    plot_shares(res.sample_shares, staging / "shares.png", cfg.level)
    page = _index_html(res, mics, model, hist, cfg.level, "shares.png")
    (staging / "index.html").write_text(page, encoding="utf-8")
