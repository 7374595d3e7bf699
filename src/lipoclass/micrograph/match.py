"""Matching found particles to known ones on the same micrograph (instance label images):
detection scores against a truth (synthetic micrographs, a lab's annotations: ``detect
--truth``), and carrying the true classes over to detected outlines (so a model can be
trained on the outlines the detector draws)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ClassShare",
    "InstanceMatch",
    "class_shares",
    "greedy_one_to_one",
    "match_instances",
    "paired_f1_interval",
    "pool_matches",
    "pooled_interval",
    "transfer_labels",
]


@dataclass(frozen=True)
class InstanceMatch:
    """One-to-one matches at mask IoU >= ``min_iou``: ``pairs`` (M, 2) int64 of (truth
    instance, found instance), ``iou`` (M,); ``n_truth`` and ``n_found`` instances."""

    pairs: np.ndarray
    iou: np.ndarray
    n_truth: int
    n_found: int

    @property
    def recall(self) -> float:
        return len(self.pairs) / self.n_truth if self.n_truth else float("nan")

    @property
    def precision(self) -> float:
        return len(self.pairs) / self.n_found if self.n_found else float("nan")

    @property
    def f1(self) -> float:
        """2 matched / (truth + found)."""
        total = self.n_truth + self.n_found
        return 2 * len(self.pairs) / total if total else float("nan")

    @property
    def mean_iou(self) -> float:
        """Mean mask IoU of the matched pairs (NaN without a match)."""
        return float(np.mean(self.iou)) if len(self.iou) else float("nan")


def pool_matches(matches: list[InstanceMatch]) -> InstanceMatch:
    """Several micrographs' matches as one (counts summed, pairs and IoUs concatenated; the
    pair ids then no longer name one image)."""
    pairs = [m.pairs for m in matches] or [np.zeros((0, 2), np.int64)]
    ious = [m.iou for m in matches] or [np.zeros(0)]
    n_truth = sum(m.n_truth for m in matches)
    n_found = sum(m.n_found for m in matches)
    return InstanceMatch(np.concatenate(pairs), np.concatenate(ious), n_truth, n_found)


def _resamples(n: int, level: float, n_boot: int, seed: int) -> np.ndarray:
    """``n_boot`` resamples (n_boot, n) of the indices of ``n`` micrographs, drawn with
    replacement by a local generator seeded with ``seed``; ``ValueError`` for bad arguments."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n < 2 or n_boot < 1:
        raise ValueError(f"need 2+ micrographs and n_boot >= 1, got {n}, {n_boot}")
    return np.random.default_rng(seed).integers(0, n, (n_boot, n))


def _percentiles(d: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """The percentile interval (``level``) of bootstrap figures ``d`` (B, ...) over their
    rows with every figure finite; NaN where none is."""
    d = d[np.isfinite(d).reshape(len(d), -1).all(axis=1)]
    if len(d) == 0:
        nan = np.full(d.shape[1:], np.nan)
        return nan, nan
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(d, [tail, 1.0 - tail], axis=0)
    return lo, hi


def pooled_interval(
    matches: list[InstanceMatch], level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval (``level``) of the pooled precision and recall,
    resampling whole micrographs (the liposomes of one micrograph share its ice, film and
    dose, so they are not independent); ``seed`` seeds a local generator."""
    idx = _resamples(len(matches), level, n_boot, seed)
    counts = np.array([(len(m.pairs), m.n_truth, m.n_found) for m in matches], np.float64)
    sums = counts[idx].sum(axis=1)  # (B, 3)
    with np.errstate(invalid="ignore", divide="ignore"):
        figures = {"precision": sums[:, 0] / sums[:, 2], "recall": sums[:, 0] / sums[:, 1]}
    out: dict[str, tuple[float, float]] = {}
    for name, v in figures.items():
        lo, hi = _percentiles(v, level)
        out[name] = (float(lo), float(hi))
    return out


def paired_f1_interval(
    a: list[InstanceMatch],
    b: list[InstanceMatch],
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval (``level``) of pooled F1 of ``b`` minus pooled F1 of
    ``a``, two detectors on the same micrographs (``a[i]``, ``b[i]`` one micrograph), the
    micrographs resampled together for both (paired), so a difference that one micrograph
    makes is not taken for a better detector; ``seed`` seeds a local generator."""
    if len(a) != len(b):
        raise ValueError(f"need the same micrographs for both, got {len(a)} and {len(b)}")
    idx = _resamples(len(a), level, n_boot, seed)

    def f1(ms: list[InstanceMatch]) -> np.ndarray:
        c = np.array([(len(m.pairs), m.n_truth + m.n_found) for m in ms], np.float64)[idx]
        with np.errstate(invalid="ignore", divide="ignore"):
            return 2.0 * c[..., 0].sum(axis=1) / c[..., 1].sum(axis=1)

    lo, hi = _percentiles(f1(b) - f1(a), level)
    return (float(lo), float(hi))


@dataclass(frozen=True)
class ClassShare:
    """One annotated class on annotated micrographs: ``truth`` liposomes, ``matched`` of
    them found, ``true_share`` and ``found_share`` (% of the annotated and of the found
    annotated liposomes: what a perfect classifier would report from the detections),
    ``change`` = found - true (percentage points) with its ``low`` / ``high`` bootstrap
    interval over the micrographs (NaN for one micrograph)."""

    label: str
    truth: int
    matched: int
    true_share: float
    found_share: float
    change: float
    low: float
    high: float

    @property
    def recall(self) -> float:
        return self.matched / self.truth if self.truth else float("nan")


def class_shares(
    matches: Sequence[InstanceMatch],
    classes: Sequence[Mapping[int, str]],
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> list[ClassShare]:
    """How detection alone moves the class shares: per class (sorted by name), its share
    among the annotated liposomes and among those the detector found (``matches[i]`` and
    ``classes[i]``, truth instance -> class, one micrograph; instances without a class are
    left out). Misses that fall on one class more than another bias every share measured
    on the detections, however good the classifier; the interval resamples whole
    micrographs (percentile bootstrap, ``seed`` seeds a local generator)."""
    if len(matches) != len(classes):
        raise ValueError(f"need a class table per match, got {len(matches)} and {len(classes)}")
    labels = sorted({c for table in classes for c in table.values()})
    if not labels:
        return []
    col = {c: j for j, c in enumerate(labels)}
    truth = np.zeros((len(matches), len(labels)))
    found = np.zeros_like(truth)
    for i, (m, table) in enumerate(zip(matches, classes)):
        for c in table.values():
            truth[i, col[c]] += 1
        for inst in m.pairs[:, 0].tolist():
            if inst in table:
                found[i, col[table[inst]]] += 1

    def change(t: np.ndarray, f: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return 100 * (f / f.sum(-1, keepdims=True) - t / t.sum(-1, keepdims=True))

    t_all, f_all = truth.sum(0), found.sum(0)
    point = change(t_all, f_all)
    lows = highs = np.full(len(labels), np.nan)
    if len(matches) > 1:
        idx = _resamples(len(matches), level, n_boot, seed)
        lows, highs = _percentiles(change(truth[idx].sum(1), found[idx].sum(1)), level)
    with np.errstate(invalid="ignore", divide="ignore"):
        true_pct, found_pct = 100 * t_all / t_all.sum(), 100 * f_all / f_all.sum()
    return [
        ClassShare(c, int(t_all[j]), int(f_all[j]), float(true_pct[j]), float(found_pct[j]),
                   float(point[j]), float(lows[j]), float(highs[j]))
        for j, c in enumerate(labels)
    ]  # fmt: skip


def greedy_one_to_one(pairs: np.ndarray, iou: np.ndarray) -> np.ndarray:
    """Indices of ``pairs`` (K, 2: left id, right id) kept one-to-one, greedily by ``iou``
    (K,) descending (ties in the given order): each id on either side at most once."""
    used_a: set[int] = set()
    used_b: set[int] = set()
    keep: list[int] = []
    for k in np.argsort(-np.asarray(iou), kind="stable"):
        a, b = int(pairs[k, 0]), int(pairs[k, 1])
        if a in used_a or b in used_b:
            continue
        used_a.add(a)
        used_b.add(b)
        keep.append(int(k))
    return np.asarray(keep, dtype=np.int64)


def match_instances(truth: np.ndarray, found: np.ndarray, min_iou: float = 0.5) -> InstanceMatch:
    """Match the instances of two label images (H, W) (0 background) by mask IoU. At
    ``min_iou`` >= 0.5 a match is unique on both sides; below it each truth instance takes its
    best partner not taken yet (greedy by IoU)."""
    if truth.shape != found.shape:
        raise ValueError(f"label images differ in shape: {truth.shape} vs {found.shape}")
    if not 0 < min_iou <= 1:
        raise ValueError(f"min_iou must be in (0, 1], got {min_iou}")
    t = truth.ravel().astype(np.int64)
    f = found.ravel().astype(np.int64)
    nt, nf = int(t.max(initial=0)) + 1, int(f.max(initial=0)) + 1
    inter = np.bincount(t * nf + f, minlength=nt * nf).reshape(nt, nf)  # (T+1, F+1)
    area_t, area_f = inter.sum(1), inter.sum(0)
    iou = inter / np.maximum(area_t[:, None] + area_f[None, :] - inter, 1)
    iou[0, :] = 0
    iou[:, 0] = 0
    cand = np.argwhere(iou >= min_iou)  # (K, 2)
    arr = cand[greedy_one_to_one(cand, iou[cand[:, 0], cand[:, 1]])].astype(np.int64)
    arr = arr.reshape(-1, 2)
    ious = iou[arr[:, 0], arr[:, 1]] if len(arr) else np.zeros(0)
    n_truth = int(np.count_nonzero(area_t[1:]))
    n_found = int(np.count_nonzero(area_f[1:]))
    return InstanceMatch(arr, ious.astype(np.float64), n_truth, n_found)


def transfer_labels(
    truth: np.ndarray,
    truth_classes: dict[int, str],
    found: np.ndarray,
    min_iou: float = 0.5,
) -> tuple[np.ndarray, dict[int, str]]:
    """The found label image (H, W) with only the instances that match a truth instance with
    a class (others set to 0), and their classes {found instance: class}."""
    m = match_instances(truth, found, min_iou)
    classes = {int(b): truth_classes[int(a)] for a, b in m.pairs if int(a) in truth_classes}
    keep = np.zeros(int(found.max(initial=0)) + 1, dtype=bool)
    keep[list(classes)] = True
    return np.where(keep[found], found, 0), classes
