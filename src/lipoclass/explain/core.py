"""Look inside a trained CNN (thesis sections 4.4 and 10): the filters of every convolution
(Fig. 14), the activations they produce for chosen particles (Fig. 15), per-particle saliency
by deconvolution (Zeiler & Fergus), guided backprop (Springenberg et al.) and Grad-CAM
(Selvaraju et al.) from captum, and class-average guided-backprop maps. Everything lands in
one folder as PNGs plus an ``index.html`` that shows them together (relative links)."""

from __future__ import annotations

import copy
import html
import os
import shutil
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lipoclass.data import publish_folder
from lipoclass.errors import LipoclassError

__all__ = ["ExplainConfig", "explain"]


@dataclass(frozen=True)
class ExplainConfig:
    """``per_class``: default particles per class; ``max_channels``: channels drawn per layer;
    ``max_class_average``: correctly predicted particles averaged per class; ``cmap``: the
    diverging colormap of signed maps (symmetric limits); ``dpi`` of the PNGs."""

    per_class: int = 3
    max_channels: int = 32
    max_class_average: int = 256
    cmap: str = "seismic"
    dpi: int = 90

    def __post_init__(self) -> None:
        for name in ("per_class", "max_channels", "max_class_average", "dpi"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


def _figure(w: float, h: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h))


def _save(fig: Any, path: Path, dpi: int) -> str:
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path.name


def _sym(a: np.ndarray) -> float:
    v = float(np.abs(a).max()) if a.size else 0.0
    return v if v > 0 else 1.0


def _mosaic(tiles: np.ndarray, cols: int) -> np.ndarray:
    """(N, h, w) -> one (R*(h+1)-1, cols*(w+1)-1) image, NaN gaps (drawn blank)."""
    n, h, w = tiles.shape
    rows = int(np.ceil(n / cols))
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan, dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = tiles[i]
    return out


def _plot_filters(name: str, conv: nn.Conv2d, cfg: ExplainConfig, path: Path) -> str:
    """Filter grid of one conv: rows = output channels, columns = input channels (capped),
    each tile k x k, diverging colormap with limits symmetric about 0 (thesis Fig. 14)."""
    w = conv.weight.detach().cpu().numpy()  # (out, in, k, k)
    w = w[: cfg.max_channels, : min(w.shape[1], 16)]
    o, i, kh, kw = w.shape
    cols = i if i > 1 else min(o, 8)
    tiles = w.reshape(o * i, kh, kw)
    img = _mosaic(tiles, cols)
    lim = _sym(w)
    fig = _figure(min(12, 1 + 0.35 * cols * (kw + 1) / 3), min(14, 1 + 0.35 * img.shape[0] / 3))
    ax = fig.subplots()
    im = ax.imshow(img, cmap=cfg.cmap, vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_axis_off()
    what = "out x in channels" if i > 1 else "filters"
    ax.set_title(f"{name}: {tuple(conv.weight.shape)} ({what})", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.03)
    return _save(fig, path, cfg.dpi)


def _plot_activations(
    name: str, act: np.ndarray, x: np.ndarray, ids: Sequence[str], cfg: ExplainConfig, path: Path
) -> str:
    """Rows = particles: the input, then the feature maps of one conv (thesis Fig. 15)."""
    n, ch = act.shape[0], min(act.shape[1], cfg.max_channels)  # act (N, C, h, w)
    fig = _figure(1.2 + 0.9 * (ch + 1) / 2, 0.9 * n + 0.6)
    axes = np.atleast_2d(fig.subplots(n, ch + 1, squeeze=False))
    lim = _sym(act[:, :ch])
    for r in range(n):
        axes[r, 0].imshow(x[r, 0], cmap="gray")
        axes[r, 0].set_ylabel(ids[r], fontsize=7)
        for c in range(ch):
            axes[r, c + 1].imshow(act[r, c], cmap=cfg.cmap, vmin=-lim, vmax=lim)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{name}: activations (first {ch} of {act.shape[1]} channels)", fontsize=8)
    return _save(fig, path, cfg.dpi)


def _overlay(ax: Any, img: np.ndarray, attr: np.ndarray, cmap: str, title: str, sym: bool) -> None:
    ax.imshow(img, cmap="gray")
    if sym:
        lim = _sym(attr)
        ax.imshow(attr, cmap=cmap, vmin=-lim, vmax=lim, alpha=0.6)
    else:
        ax.imshow(attr, cmap=cmap, vmin=0, vmax=max(float(attr.max()), 1e-12), alpha=0.5)
    ax.set_title(title, fontsize=7)
    ax.set_axis_off()


def _no_inplace(module: nn.Module) -> nn.Module:
    """A copy in eval mode whose ReLUs are not in-place (captum's backward hooks need that)."""
    m = copy.deepcopy(module).eval()
    for sub in m.modules():
        if isinstance(sub, nn.ReLU):
            sub.inplace = False
    return m


def _pick_ids(
    ids: Sequence[str] | None, prep_ids: list[str], all_ids: set[str], skipped: dict[str, str],
    labels: np.ndarray, pred: np.ndarray, n_classes: int, per_class: int, root: Path,
) -> list[int]:  # fmt: skip
    """Rows of the prepared arrays to explain: the given ids, or ``per_class`` per class (true
    class when labelled, else predicted)."""
    row_of = {pid: r for r, pid in enumerate(prep_ids)}
    if ids:
        rows = []
        for pid in ids:
            if pid not in all_ids:
                raise LipoclassError(f"--ids: particle {pid!r} is not in {root}")
            if pid not in row_of:
                raise LipoclassError(
                    f"--ids: particle {pid!r} cannot be prepared ({skipped.get(pid, 'skipped')})"
                )
            rows.append(row_of[pid])
        return rows
    key = np.where(labels >= 0, labels, pred)
    return [int(r) for k in range(n_classes) for r in np.flatnonzero(key == k)[:per_class]]


def _page(title: str, sections: list[tuple[str, str, list[str]]]) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;margin:1em 2em}}"
        "img{max-width:100%;border:1px solid #ddd;margin:4px}p{max-width:60em}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>",
    ]
    for head, text, images in sections:
        parts.append(f"<h2>{html.escape(head)}</h2><p>{text}</p>")
        parts += [f"<a href='{html.escape(i)}'><img src='{html.escape(i)}' alt='{html.escape(i)}'"
                  "></a>" for i in images]  # fmt: skip
    parts.append("</body></html>")
    return "\n".join(parts)


def explain(
    model_dir: str | os.PathLike[str],
    dataset: str | os.PathLike[str],
    out: str | os.PathLike[str],
    ids: Sequence[str] | None = None,
    config: ExplainConfig | None = None,
) -> Path:
    """Write filters, activations, saliency (deconvolution, guided backprop, Grad-CAM) and
    class-average maps of a CNN model folder for particles of ``dataset`` into ``out``;
    returns ``out/index.html``. A stack folder (``--recipe auto``) is explained through its
    best CNN base, with a printed line saying which and that the SVM part has no pixel
    attribution. Unknown ids and SVM folders raise ``LipoclassError``."""
    import matplotlib

    matplotlib.use("Agg")
    from lipoclass.data import prepare
    from lipoclass.ensemble import load_model
    from lipoclass.models import size_features
    from lipoclass.predict.inputs import load_input

    cfg = config or ExplainConfig()
    # a stack folder (--recipe auto): its best CNN base, said in one line
    loaded, used = load_model(model_dir).network_model(
        "explain", "has no pixel attribution (it reads measured features, not pixels)"
    )
    if used is not None:
        print(used["note"])
    nets = loaded.networks("explain")  # LipoclassError when the members are not networks
    ds = load_input(dataset)
    prep = prepare(ds, loaded.prep, cache=True)
    if len(prep) == 0:
        raise LipoclassError(
            f"{dataset}: no particle could be prepared for mode {prep.config.mode}"
        )
    classes = loaded.classes
    lookup = {c: i for i, c in enumerate(classes)}
    labels = np.array(
        [lookup.get(ds.particles[int(i)].label or "", -1) for i in prep.index], dtype=np.int64
    )
    aux_all = size_features(prep.meta) if loaded.needs_aux else None
    probs = loaded.predictor().proba_prepared(prep)  # (N, C), the ensemble on the CPU
    pred = probs.argmax(axis=1)
    rows = _pick_ids(ids, prep.ids, {p.id for p in ds.particles}, dict(prep.skipped), labels,
                     pred, len(classes), cfg.per_class, ds.root)  # fmt: skip
    if not rows:
        raise LipoclassError(f"{dataset}: no particles to explain")

    model = _no_inplace(nets[0])  # the first fold network (they share one architecture)
    sel = _Selection(
        rows=rows, x=torch.from_numpy(prep.x[rows]),  # (n, 1, S, S)
        aux=None if aux_all is None else torch.from_numpy(aux_all[rows]),
        ids=[prep.ids[r] for r in rows], target=torch.as_tensor(pred[rows]),
    )  # fmt: skip
    dest = Path(out)
    reusable = dest.is_dir() and (not any(dest.iterdir()) or (dest / "index.html").is_file())
    if dest.exists() and not reusable:
        raise LipoclassError(f"{dest}: exists and is not an explain folder; choose another --out")
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
    stage.mkdir()
    try:
        convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        sections = [
            _filters_section(convs, cfg, stage),
            _activations_section(model, convs, sel, prep.x, cfg, stage),
            _saliency_section(model, sel, prep.x, labels, pred, probs, classes, cfg, stage),
            _class_average_section(model, prep.x, aux_all, labels, pred, classes, cfg, stage),
        ]
        if used is not None:
            sections.insert(0, ("Which model is explained", html.escape(used["note"]), []))
        where = Path(model_dir).name + (f" / {used['used']}" if used else "")
        title = f"lipoclass explain: {loaded.info.get('model')} ({where}) on {ds.name}"
        (stage / "index.html").write_text(_page(title, sections), encoding="utf-8")
        publish_folder(stage, dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return dest / "index.html"


@dataclass
class _Selection:
    """The particles to explain: rows into the prepared arrays, their inputs (n,1,S,S),
    optional size features (n,K), ids and predicted classes (n,)."""

    rows: list[int]
    x: torch.Tensor
    aux: torch.Tensor | None
    ids: list[str]
    target: torch.Tensor

    @property
    def extra(self) -> tuple[torch.Tensor, ...] | None:
        return None if self.aux is None else (self.aux,)


Section = tuple[str, str, list[str]]


def _filters_section(
    convs: list[tuple[str, nn.Conv2d]], cfg: ExplainConfig, stage: Path
) -> Section:
    filt = [_plot_filters(n, m, cfg, stage / f"filters_{i}_{n.replace('.', '_')}.png")
            for i, (n, m) in enumerate(convs)]  # fmt: skip
    return ("Filters", "Weights of every convolution (rows: output channels, "
            f"columns: input channels; colormap {cfg.cmap}, symmetric about 0; "
            "cf. thesis Fig. 14).", filt)  # fmt: skip


def _activations_section(
    model: nn.Module, convs: list[tuple[str, nn.Conv2d]], sel: _Selection, px: np.ndarray,
    cfg: ExplainConfig, stage: Path,
) -> Section:  # fmt: skip
    acts: dict[str, np.ndarray] = {}
    hooks = [m.register_forward_hook(
        lambda _m, _i, o, n=n: acts.__setitem__(n, o.detach().numpy()))
        for n, m in convs]  # fmt: skip
    with torch.no_grad():
        model(sel.x) if sel.aux is None else model(sel.x, sel.aux)
    for h in hooks:
        h.remove()
    act_png = [_plot_activations(n, acts[n], px[sel.rows], sel.ids, cfg,
                                 stage / f"activations_{i}_{n.replace('.', '_')}.png")
               for i, (n, _) in enumerate(convs)]  # fmt: skip
    text = ("Output of each convolution (before its ReLU) for the chosen particles; first "
            "column: the prepared input (cf. Fig. 15).")  # fmt: skip
    return ("Activations", text, act_png)


def _saliency_section(
    model: nn.Module, sel: _Selection, px: np.ndarray, labels: np.ndarray, pred: np.ndarray,
    probs: np.ndarray, classes: Sequence[str], cfg: ExplainConfig, stage: Path,
) -> Section:  # fmt: skip
    from captum.attr import Deconvolution, GuidedBackprop, LayerAttribution, LayerGradCam

    feats = getattr(model, "features", model)
    last_conv = [m for m in feats.modules() if isinstance(m, nn.Conv2d)][-1]
    x, target, extra = sel.x, sel.target, sel.extra
    with warnings.catch_warnings():  # captum's notes on hooks and requires_grad
        warnings.simplefilter("ignore")
        deconv = Deconvolution(model).attribute(x, target=target, additional_forward_args=extra)
        gbp = GuidedBackprop(model).attribute(x, target=target, additional_forward_args=extra)
        cam = LayerGradCam(model, last_conv).attribute(
            x, target=target, additional_forward_args=extra, relu_attributions=True
        )
    cam = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")
    sal: list[str] = []
    for j, pid in enumerate(sel.ids):
        r = sel.rows[j]
        fig = _figure(8, 2.3)
        axes = fig.subplots(1, 4)
        img = px[r, 0]
        truth = classes[labels[r]] if labels[r] >= 0 else "unlabelled"
        axes[0].imshow(img, cmap="gray")
        axes[0].set_title(f"{pid}: {truth}\npred {classes[pred[r]]} "
                          f"p={probs[r, pred[r]]:.2f}", fontsize=7)  # fmt: skip
        axes[0].set_axis_off()
        _overlay(axes[1], img, deconv[j, 0].detach().numpy(), cfg.cmap, "deconvolution", True)
        _overlay(axes[2], img, gbp[j, 0].detach().numpy(), cfg.cmap, "guided backprop", True)
        _overlay(axes[3], img, cam[j, 0].detach().numpy(), "jet", "Grad-CAM (last conv)",
                 False)  # fmt: skip
        sal.append(_save(fig, stage / f"saliency_{len(sal):03d}.png", cfg.dpi))
    return ("Saliency", "Per particle, for its predicted class: deconvolution, "
            "guided backprop (signed, symmetric limits) and Grad-CAM on the last "
            "convolution, overlaid on the prepared input.", sal)  # fmt: skip


def _class_average_section(
    model: nn.Module, px: np.ndarray, aux_all: np.ndarray | None, labels: np.ndarray,
    pred: np.ndarray, classes: Sequence[str], cfg: ExplainConfig, stage: Path,
) -> Section:  # fmt: skip
    from captum.attr import GuidedBackprop

    ok = np.flatnonzero((labels >= 0) & (labels == pred))
    if not len(ok):
        text = "No correctly predicted labelled particles: class averages not drawn."
        return ("Class averages", text, [])
    fig = _figure(2.4 * len(classes), 2.6)
    axes = np.atleast_1d(fig.subplots(1, len(classes)))
    gb = GuidedBackprop(model)
    for k, name in enumerate(classes):
        members = ok[labels[ok] == k][: cfg.max_class_average]
        ax = axes[k]
        ax.set_axis_off()
        if len(members) == 0:
            ax.set_title(f"{name}: none correct", fontsize=7)
            continue
        xa = torch.from_numpy(px[members])
        ea = None if aux_all is None else (torch.from_numpy(aux_all[members]),)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = gb.attribute(xa, target=k, additional_forward_args=ea).detach().abs()
        ax.imshow(a.mean(0)[0].numpy(), cmap="magma")
        ax.set_title(f"{name} (n={len(members)})", fontsize=7)
    avg = [_save(fig, stage / "class_average_guided_backprop.png", cfg.dpi)]
    text = ("Mean |guided backprop| over correctly predicted labelled particles of "
            "each class (at most " f"{cfg.max_class_average}).")  # fmt: skip
    return ("Class averages", text, avg)
