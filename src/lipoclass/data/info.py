"""Summarise and check a particle dataset: counts per class and sample, image sizes per class
(the thesis' Figs 3-4), masks, pixel sizes, feature columns and, with ``check``, every problem
found by decoding each image and mask."""

from __future__ import annotations

import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lipoclass.data.dataset import ParticleDataset, empty_class_messages
from lipoclass.data.io import image_size, read_image
from lipoclass.errors import LipoclassError
from lipoclass.outputs import save_figure

__all__ = ["DatasetInfo", "dataset_info"]

_UNLABELLED = "(unlabelled)"


@dataclass
class DatasetInfo:
    """What ``dataset_info`` found. ``sizes`` is (N, 2) int (height, width) per particle, in
    dataset order (-1 where the header could not be read); ``problems`` lists (id, message)
    (id "" for a problem of the whole dataset, e.g. a declared class without particles);
    ``empty_masks`` is None unless the masks were decoded (``check``)."""

    name: str
    root: Path
    classes: tuple[str, ...]
    labels: list[str]  # class name per particle, or "(unlabelled)"
    samples: list[str | None]
    sizes: np.ndarray
    masks_present: int
    masks_missing: int
    empty_masks: int | None
    pixel_sizes: list[float | None]
    feature_columns: tuple[str, ...]
    checked: bool = False
    problems: list[tuple[str, str]] = field(default_factory=list)
    figure: Path | None = None

    def class_counts(self) -> dict[str, int]:
        counts = Counter(self.labels)
        out = {c: counts.get(c, 0) for c in self.classes}
        if counts.get(_UNLABELLED):
            out[_UNLABELLED] = counts[_UNLABELLED]
        return out

    def size_stats(self) -> dict[str, tuple[int, int, int, int, int, int]]:
        """Per class: (min w, median w, max w, min h, median h, max h) in pixels."""
        out: dict[str, tuple[int, int, int, int, int, int]] = {}
        lab = np.array(self.labels, dtype=object)
        ok = self.sizes[:, 0] >= 0
        for c in self.class_counts():
            sel = (lab == c) & ok
            if not sel.any():
                continue
            h, w = self.sizes[sel, 0], self.sizes[sel, 1]
            out[c] = (
                int(w.min()), int(np.median(w)), int(w.max()),
                int(h.min()), int(np.median(h)), int(h.max()),
            )  # fmt: skip
        return out

    def text(self) -> str:
        """A plain-text report (what ``lipoclass info`` prints)."""
        n = len(self.labels)
        lines = [f"dataset {self.name!r} at {self.root}: {n} particles"]
        counts = self.class_counts()
        width = max(len(c) for c in counts) if counts else 5
        lines.append("class counts:")
        for c, k in counts.items():
            lines.append(f"  {c:<{width}} {k:>7}  {100.0 * k / n:6.2f}%")
        named = [s for s in self.samples if s is not None]
        if named:
            per: dict[str, Counter[str]] = {}
            for s, lab in zip(self.samples, self.labels):
                per.setdefault(s or "(none)", Counter())[lab] += 1
            lines.append(f"samples: {len(per)}")
            for s, cnt in sorted(per.items())[:30]:
                parts = ", ".join(f"{c} {cnt[c]}" for c in counts if cnt.get(c))
                lines.append(f"  {s}: {sum(cnt.values())} ({parts})")
            if len(per) > 30:
                lines.append(f"  ... and {len(per) - 30} more samples")
        lines.append("image size per class (px): width min/median/max, height min/median/max")
        for c, (w0, w1, w2, h0, h1, h2) in self.size_stats().items():
            lines.append(f"  {c:<{width}} w {w0}/{w1}/{w2}  h {h0}/{h1}/{h2}")
        empty = "not checked" if self.empty_masks is None else str(self.empty_masks)
        lines.append(
            f"masks: {self.masks_present} present, {self.masks_missing} missing "
            f"(auto mask for crop/masked), {empty} empty"
        )
        px = [p for p in self.pixel_sizes if p is not None]
        if px:
            arr = np.array(px)
            distinct = sorted(set(px))
            shown = ", ".join(f"{v:g}" for v in distinct[:5]) + (
                " ..." if len(distinct) > 5 else ""
            )
            lines.append(
                f"pixel size (nm): {len(px)} known, {n - len(px)} unknown; "
                f"min {arr.min():g}, median {np.median(arr):g}, max {arr.max():g} ({shown})"
            )
        else:
            lines.append("pixel size (nm): unknown for all particles")
        if self.feature_columns:
            cols = ", ".join(self.feature_columns[:8])
            more = " ..." if len(self.feature_columns) > 8 else ""
            lines.append(f"feature columns: {len(self.feature_columns)} ({cols}{more})")
        else:
            lines.append("feature columns: none")
        if self.checked:
            if self.problems:
                lines.append(f"problems: {len(self.problems)}")
                for pid, msg in self.problems[:100]:
                    lines.append(f"  id {pid}: {msg}" if pid else f"  {msg}")
                if len(self.problems) > 100:
                    lines.append(f"  ... and {len(self.problems) - 100} more")
            else:
                lines.append("problems: none (every image and mask decoded)")
        if self.figure is not None:
            lines.append(f"figure: {self.figure}")
        return "\n".join(lines)


def _check_particle(p_image: Path, p_mask: Path | None) -> tuple[list[str], bool | None]:
    """Decode one particle; return (problems, mask_is_empty or None without mask)."""
    problems: list[str] = []
    img = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            img = read_image(p_image)
        except LipoclassError as exc:
            problems.append(str(exc))
    if any("colour" in str(w.message) for w in caught):
        problems.append(f"{p_image.name}: colour image (converted to greyscale when read)")
    if img is not None and not np.isfinite(img).all():
        bad = int(img.size - np.count_nonzero(np.isfinite(img)))
        problems.append(
            f"{p_image.name}: {bad} non-finite pixel value(s) (NaN or infinity); "
            "prepare, cv and train refuse this image"
        )
    empty: bool | None = None
    if p_mask is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mask = read_image(p_mask) > 0
        except LipoclassError as exc:
            problems.append(f"mask {exc}")
            return problems, None
        empty = not bool(mask.any())
        if empty:
            problems.append(
                f"mask {p_mask.name} is empty (skipped for crop/masked, kept for surround)"
            )
        if img is not None and mask.shape != img.shape:
            problems.append(
                f"mask {p_mask.name} is {mask.shape[1]}x{mask.shape[0]} but image "
                f"{p_image.name} is {img.shape[1]}x{img.shape[0]}"
            )
    return problems, empty


def dataset_info(
    ds: ParticleDataset, figure: str | os.PathLike[str] | None = None, check: bool = False
) -> DatasetInfo:
    """Summarise ``ds``. Image sizes come from file headers (fast); ``check=True`` decodes every
    image and mask and lists problems (unreadable, colour, non-finite pixels, mask size
    mismatch, empty mask); a class of dataset.toml without particles is always a problem.
    ``figure``: write the size-distribution PNG there (nothing when None; ``lipoclass info`` writes
    one only with ``--figure``)."""
    sizes = np.full((len(ds), 2), -1, dtype=np.int64)
    problems: list[tuple[str, str]] = [("", msg) for msg in empty_class_messages(ds)]
    empty_masks: int | None = 0 if check else None
    for i, p in enumerate(ds.particles):
        if check:
            msgs, empty = _check_particle(p.image, p.mask)
            problems += [(p.id, m) for m in msgs]
            if empty and empty_masks is not None:
                empty_masks += 1
        try:
            sizes[i] = image_size(p.image)
        except LipoclassError as exc:
            if not check:  # with check the decode problem is already listed
                problems.append((p.id, str(exc)))
    info = DatasetInfo(
        name=ds.name,
        root=ds.root,
        classes=ds.classes,
        labels=[p.label if p.label is not None else _UNLABELLED for p in ds.particles],
        samples=[p.sample for p in ds.particles],
        sizes=sizes,
        masks_present=sum(p.mask is not None for p in ds.particles),
        masks_missing=sum(p.mask is None for p in ds.particles),
        empty_masks=empty_masks,
        pixel_sizes=[p.pixel_size_nm for p in ds.particles],
        feature_columns=ds.feature_columns,
        checked=check,
        problems=problems,
    )
    if figure is not None:
        info.figure = Path(figure)
        _write_figure(info, info.figure)
    return info


def _write_figure(info: DatasetInfo, path: Path) -> None:
    """Scatter of width vs height coloured by class (thesis Fig. 3) and per-class histograms
    of width and height (Fig. 4), written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = {c: k for c, k in info.class_counts().items() if k}
    lab = np.array(info.labels, dtype=object)
    ok = info.sizes[:, 0] >= 0
    ncols = 1 + max(1, len(counts))
    fig, axes = plt.subplots(1, ncols, figsize=(3.6 * ncols, 3.6), squeeze=False)
    ax = axes[0, 0]
    colours = plt.get_cmap("tab10")
    lo = hi = 0
    if ok.any():
        lo, hi = int(info.sizes[ok].min()), int(info.sizes[ok].max())
    bins = np.linspace(lo, hi + 1, 21)
    for k, c in enumerate(counts):
        sel = (lab == c) & ok
        col = "0.5" if c == _UNLABELLED else colours(k % 10)
        ax.scatter(
            info.sizes[sel, 1], info.sizes[sel, 0], s=6, alpha=0.5, color=col,
            label=f"{c} ({counts[c]})",
        )  # fmt: skip
        hx = axes[0, k + 1]
        hx.hist(info.sizes[sel, 1], bins=bins, alpha=0.6, label="width", color=col)
        hx.hist(info.sizes[sel, 0], bins=bins, alpha=0.6, label="height", histtype="step",
                color="k")  # fmt: skip
        hx.set_title(f"{c} (n={counts[c]})", fontsize=9)
        hx.set_xlabel("pixels")
        hx.legend(fontsize=7)
    ax.set_xlabel("image width (px)")
    ax.set_ylabel("image height (px)")
    ax.set_title(f"{info.name}: image sizes", fontsize=9)
    if counts:
        ax.legend(fontsize=7, markerscale=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        save_figure(fig, path, 110)
    except OSError as exc:
        raise LipoclassError(f"{path}: cannot write figure ({exc})") from None
