"""The liposome verifier of ``lipoclass detect``: a small neural network (one hidden layer of
32 units; default) or a logistic regression on the candidate features of
``lipoclass.micrograph.detect.FEATURES`` (standardised), stored as a small JSON file (feature
names, means, scales, weights, threshold) evaluated with numpy (no pickle, no torch). The
packaged default
(``verifier.json`` next to this module) is trained on synthetic micrographs with distractors
by ``scripts/train_detect_verifier.py`` (fifteen networks, logits averaged, stored as one; its
scores shifted down on micrographs whose share of liposomes among the candidates is below
the training share: ``prior_shift``); ``lipoclass detect-train`` trains one from a lab's
own annotated micrographs (annotated particles are positives, the other candidates negatives,
plus the rows of a review's ``detection_negatives.csv``; by default
``DETECT_TRAIN_ENSEMBLE`` networks, ``PRIOR_SHIFT`` on request). The design comparison is in
docs/micrographs.md."""

from __future__ import annotations

import csv
import functools
import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lipoclass.choices import (
    DETECT_TRAIN_BLANKS,
    DETECT_TRAIN_ENSEMBLE,
    DETECT_TRAIN_LABELS,
    DETECT_TRAIN_PRIOR_SHIFT,
    DETECT_TRAIN_THRESHOLDS,
    VERIFIER_LABELS,
    VERIFIER_MODELS,
)
from lipoclass.errors import LipoclassError

__all__ = [
    "DEFAULT_VERIFIER",
    "DETECT_TRAIN_BLANKS",
    "DETECT_TRAIN_ENSEMBLE",
    "DETECT_TRAIN_LABELS",
    "DETECT_TRAIN_PRIOR_SHIFT",
    "DETECT_TRAIN_THRESHOLDS",
    "NEGATIVE_COLUMNS",
    "PRIOR_SHIFT",
    "REASONS",
    "VERIFIER_LABELS",
    "VERIFIER_MODELS",
    "TrainingSet",
    "Verifier",
    "blank_micrographs",
    "candidate_threshold",
    "candidate_truth",
    "check_ensemble",
    "check_labels_rule",
    "collect_training_set",
    "combine_networks",
    "fit_verifier",
    "load_verifier",
    "prior_shift",
    "read_negatives",
    "train_detect_verifier",
    "write_training_csv",
]

DEFAULT_VERIFIER = Path(__file__).with_name("verifier.json")
VERIFIER_FILE = "verifier.json"
#: columns of a review's detection_negatives.csv (fixed by the project, see COMMON formats)
NEGATIVE_COLUMNS = ("micrograph", "x", "y", "diameter_px", "id")
_FORMAT = "lipoclass-detect-verifier"
_MLP_HIDDEN = 32  # hidden units of the mlp verifier
_MLP_ALPHA = 1e-3  # its L2 penalty
#: per-micrograph prior shift of the scores (``prior_shift`` keyword arguments, the
#: ``prior_shift`` entry of a verifier's info) of the packaged verifier and of
#: ``detect-train``: the share of liposomes among a micrograph's candidates estimated by EM,
#: shrunk towards the training share by 20 candidates, and scores only lowered (where the
#: share is below the training share), by at most e^2 in odds (eleventh round,
#: docs/micrographs.md)
PRIOR_SHIFT: dict[str, Any] = {
    "method": "em", "damping": 1.0, "pseudo": 20.0, "clip": 2.0, "upper": 0.0,
}  # fmt: skip

#: why a candidate is rejected, by the feature that pulls its score down most
REASONS = {
    "log_significance": "faint ring",
    "rim_z": "weak membrane",
    "rim_minus_inner": "interior as dark as the rim (no membrane ring)",
    "rim_minus_outer": "rim no darker than its surroundings",
    "rim_coverage": "incomplete ring",
    "rim_asymmetry": "one-sided ring (edge or gap)",
    "inner_dark": "dark solid interior (ice, debris)",
    "inner_rim_ratio": "solid dark blob (no membrane ring)",
    "outer_step": "on a step of the background (film edge)",
    "radius_jitter": "irregular outline",
    "ellipticity": "elongated shape",
    "kept_fraction": "mostly inside neighbours (gap between liposomes)",
    "inner_texture": "textured interior",
    "outer_texture": "textured surroundings (carbon film, ice halo)",
    "rim_peak": "no thin membrane line at the rim",
    "inner_step": "a step of darkness across the interior (film edge)",
    "rim_weakest_quarter": "part of the ring missing (edge or gap)",
    "rim_side_balance": "darker inside than outside the rim (edge of a solid blob)",
    "rim_line": "no thin membrane line at the rim",
    "sig_vs_micrograph": "ring faint against the micrograph's other candidates",
    "strong_share": "few strong rings in this micrograph (sparse or empty: a ring must stand out)",
    "sig_vs_strong": "ring faint against the micrograph's clear liposomes",
    **{
        f"profile_{q}": "darkness profile unlike a membrane ring"
        for q in (0, 30, 55, 75, 90, 115, 130)
    },
}


@dataclass(frozen=True)
class Verifier:
    """Liposome score from standardised candidate features ``xs = (x - mean) / scale``:
    with no ``layers`` a logistic regression, score = sigmoid(xs . coef + intercept); with
    ``layers`` ((W, b), ...) a small neural network (multilayer perceptron), each hidden
    layer h = relu(h @ W + b) starting from xs, then score = sigmoid(h . coef + intercept).
    Candidates with score < ``threshold`` are rejected. ``bounds`` (low, high), each (F,) in
    feature units, clip the features before the standardisation (the training range: a
    feature outside it cannot push the score further; None: not clipped, files before the
    fifteenth round)."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    threshold: float
    info: dict[str, Any] = field(default_factory=dict)
    layers: tuple[tuple[np.ndarray, np.ndarray], ...] = ()
    bounds: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def model(self) -> str:
        return "mlp" if self.layers else "logistic"

    def _check(self, x: np.ndarray) -> np.ndarray:
        from lipoclass.micrograph.detect import FEATURES

        x = np.asarray(x, dtype=np.float64)
        cols = _columns(self.features, FEATURES)
        if x.ndim == 2 and x.shape[1] != len(self.features) and x.shape[1] == len(FEATURES):
            x = x[:, cols] if cols is not None else x  # the detector's full feature matrix
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ValueError(f"expected (N, {len(self.features)}) features, got {x.shape}")
        if self.bounds is not None:
            x = np.clip(x, self.bounds[0], self.bounds[1])
        return (x - self.mean) / self.scale

    def _score_std(self, xs: np.ndarray) -> np.ndarray:
        h = xs
        for w, b in self.layers:
            h = np.maximum(h @ w + b, 0.0)
        t = h @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(t, -50, 50)))

    def score(self, x: np.ndarray) -> np.ndarray:
        """Liposome score (N,) in [0, 1] of features ``x`` (N, F)."""
        return self._score_std(self._check(x))

    @property
    def prior(self) -> dict[str, Any] | None:
        """The per-micrograph prior shift of the scores (``prior_shift`` keyword arguments
        with the training share ``pi_train``), or None."""
        spec = self.info.get("prior_shift")
        if not spec:
            return None
        return {"pi_train": float(self.info["positive_share"]), **spec}

    def micrograph_scores(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Liposome scores of one micrograph's candidates ``x`` (N, F): ``score`` shifted to
        the micrograph's own share of liposomes among its candidates when the verifier has
        a ``prior`` (``prior_shift``), and the unshifted scores: ((N,), (N,))."""
        raw = self.score(x)
        prior = self.prior
        if prior is None or not len(raw):
            return raw, raw
        return prior_shift(raw, **prior)[0], raw

    def reasons(self, x: np.ndarray) -> list[str]:
        """Per candidate, the feature whose replacement by the training mean raises its
        score most (for the logistic regression: the most negative contribution), as words
        (``REASONS``)."""
        xs = self._check(x)
        if not len(xs):
            return []
        base = self._score_std(xs)
        gain = np.empty_like(xs)
        if len(self.layers) == 1:  # one hidden layer: zeroing feature k shifts its input
            w, b = self.layers[0]
            pre = xs @ w + b
            h = np.empty_like(pre)  # reused: 15 networks make pre (N, 480)
            for k in range(xs.shape[1]):
                np.multiply(xs[:, k : k + 1], w[k], out=h)
                np.subtract(pre, h, out=h)
                np.maximum(h, 0.0, out=h)
                gain[:, k] = h @ self.coef
            t = np.clip(gain + self.intercept, -50, 50)
            gain = 1.0 / (1.0 + np.exp(-t)) - base[:, None]
        else:
            for k in range(xs.shape[1]):
                alt = xs.copy()
                alt[:, k] = 0.0
                gain[:, k] = self._score_std(alt) - base
        worst = np.argmax(gain, axis=1)
        return [
            f"low liposome score: {REASONS.get(self.features[k], self.features[k])}" for k in worst
        ]

    def save(self, path: str | os.PathLike[str]) -> None:
        doc: dict[str, Any] = {
            "format": _FORMAT,
            "version": 2,
            "model": self.model,
            "features": list(self.features),
            "mean": _r6(self.mean),
            "scale": _r6(self.scale),
            "layers": [
                {"weights": [_r6(row) for row in w], "bias": _r6(b)} for w, b in self.layers
            ],
            "coef": _r6(self.coef),
            "intercept": round(float(self.intercept), 6),
            "threshold": round(float(self.threshold), 4),
            "info": self.info,
        }
        if self.bounds is not None:
            doc["bounds"] = {"low": _r6(self.bounds[0]), "high": _r6(self.bounds[1])}
        Path(path).write_text(json.dumps(doc, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Verifier:
        from lipoclass.micrograph.detect import FEATURES

        p = Path(path)
        if p.is_dir():
            p = p / VERIFIER_FILE
        if not p.is_file():
            raise LipoclassError(f"{path}: verifier not found (a folder from 'detect-train')")
        try:
            doc = json.loads(p.read_text())
            if doc.get("format") != _FORMAT:
                raise ValueError("not a lipoclass detect verifier")
            feats = tuple(str(f) for f in doc["features"])
            arrs = [np.asarray(doc[k], dtype=np.float64) for k in ("mean", "scale", "coef")]
            intercept, thr = float(doc["intercept"]), float(doc["threshold"])
            layers = tuple((np.asarray(d["weights"], dtype=np.float64),
                            np.asarray(d["bias"], dtype=np.float64))
                           for d in doc.get("layers", []))  # fmt: skip
            bounds = _read_bounds(doc.get("bounds"), len(feats))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LipoclassError(f"{p}: unreadable verifier ({exc})") from None
        if _columns(feats, FEATURES) is None:
            raise LipoclassError(
                f"{p}: verifier made for other features ({', '.join(feats)}); retrain it "
                f"with 'lipoclass detect-train'"
            )
        n_in, ok = len(feats), True
        for w, b in layers:
            ok &= w.ndim == 2 and w.shape[0] == n_in and b.shape == (w.shape[1],)
            ok &= bool(np.isfinite(w).all() and np.isfinite(b).all())
            n_in = w.shape[1] if w.ndim == 2 else n_in
        if (
            not ok
            or arrs[2].shape != (n_in,)
            or not (
                all(a.shape == (len(feats),) for a in arrs[:2])
                and all(np.isfinite(a).all() for a in arrs)
                and np.all(arrs[1] > 0)
                and np.isfinite(intercept)
                and 0 <= thr <= 1
            )
        ):
            raise LipoclassError(f"{p}: verifier values are malformed")
        ver = cls(feats, arrs[0], arrs[1], arrs[2], intercept, thr, dict(doc.get("info", {})),
                  layers, bounds)  # fmt: skip
        try:
            prior = ver.prior
            if prior is not None:
                prior_shift(np.full(1, 0.5), **prior)
                if not 0 < prior["pi_train"] < 1:
                    raise ValueError("positive_share must be in (0, 1)")
        except (KeyError, ValueError, TypeError) as exc:
            raise LipoclassError(f"{p}: verifier prior shift is malformed ({exc})") from None
        return ver


def _columns(feats: Sequence[str], all_feats: Sequence[str]) -> list[int] | None:
    """The columns of ``feats`` among ``all_feats`` when ``feats`` are some of them in the same
    order (a verifier may leave features out: fifteenth round), else None."""
    cols = [all_feats.index(f) for f in feats if f in all_feats]
    return cols if len(cols) == len(feats) and cols == sorted(set(cols)) else None


def _r6(a: Any) -> list[float]:
    return [round(float(v), 6) for v in np.asarray(a).ravel()]


def _read_bounds(doc: Any, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A verifier file's ``bounds`` entry ({"low": [...], "high": [...]}, ``n`` finite values
    each, low <= high) as arrays; None when absent (files before the fifteenth round)."""
    if doc is None:
        return None
    lo, hi = (np.asarray(doc[k], dtype=np.float64) for k in ("low", "high"))
    if lo.shape != (n,) or hi.shape != (n,) or not np.isfinite([lo, hi]).all():
        raise ValueError("bounds must hold one finite low and high value per feature")
    if np.any(lo > hi):
        raise ValueError("a lower bound is above its upper bound")
    return lo, hi


def prior_shift(
    p: np.ndarray,
    pi_train: float,
    *,
    method: str = "em",
    damping: float = 1.0,
    pseudo: float = 20.0,
    clip: float = 2.0,
    upper: float | None = None,
    reference: float | None = None,
    iterations: int = 100,
) -> tuple[np.ndarray, float]:
    """Liposome scores ``p`` (N,) of one micrograph's candidates, adjusted to the
    micrograph's own share of liposomes among its candidates (a prior shift: the verifier
    learnt the training share ``pi_train``). The share ``pi`` is estimated from the scores,
    by ``method`` "em" (Saerens, Latinne & Decaestecker 2002: the mean of the adjusted scores,
    iterated) or "mean" (the mean score), each shrunk towards ``pi_train`` by ``pseudo``
    candidates (a micrograph with few candidates keeps about the training share). Each
    candidate's odds are multiplied by ((pi / (1 - pi)) / (pi_train / (1 - pi_train))) **
    ``damping``, the log of that factor clipped to -``clip`` .. ``upper`` (None: ``clip``;
    0: scores are only lowered); ``reference`` replaces ``pi_train`` in that factor (the
    share at which scores stay as they are). Returns the adjusted scores and ``pi``."""
    p0 = np.asarray(p, dtype=np.float64)
    p = np.clip(p0, 1e-9, 1 - 1e-9)
    pt = float(np.clip(pi_train, 1e-6, 1 - 1e-6))
    n = len(p)
    if n == 0:
        return p0.copy(), pt
    lo = np.log(p / (1 - p))
    lt = np.log(pt / (1 - pt))

    hi = clip if upper is None else upper

    def shifted(pi: float, d: float, ref: float = lt, up: float = clip) -> np.ndarray:
        s = float(np.clip(d * (np.log(pi / (1 - pi)) - ref), -clip, up))
        return p0.copy() if s == 0 else 1.0 / (1.0 + np.exp(-(lo + s)))

    pi = (float(p.sum()) + pseudo * pt) / (n + pseudo)
    if method == "em":
        for _ in range(iterations):
            new = (float(shifted(pi, 1.0).sum()) + pseudo * pt) / (n + pseudo)
            new = float(np.clip(new, 1e-6, 1 - 1e-6))
            if abs(new - pi) < 1e-6:
                pi = new
                break
            pi = new
    elif method != "mean":
        raise ValueError(f"method must be 'em' or 'mean', got {method!r}")
    lr = lt if reference is None else float(np.log(reference / (1 - reference)))
    return shifted(pi, damping, lr, hi), pi


def _same_bounds(a: tuple[np.ndarray, ...] | None, b: tuple[np.ndarray, ...] | None) -> bool:
    if a is None or b is None:
        return a is b
    return all(np.array_equal(p, q) for p, q in zip(a, b))


def combine_networks(nets: Sequence[Verifier]) -> Verifier:
    """One network whose logit is the mean of the logits of ``nets`` (one-hidden-layer
    networks on the same standardisation): the hidden layers side by side, the output
    weights divided by their number, the mean intercept. Threshold, info and bounds of the
    first."""
    if not nets or any(len(v.layers) != 1 for v in nets):
        raise ValueError("combine_networks needs one-hidden-layer networks")
    v0, k = nets[0], len(nets)
    for v in nets[1:]:
        if not (np.array_equal(v.mean, v0.mean) and np.array_equal(v.scale, v0.scale)):
            raise ValueError("combine_networks: networks standardise their inputs differently")
        if not _same_bounds(v.bounds, v0.bounds):
            raise ValueError("combine_networks: networks clip their inputs differently")
    w = np.concatenate([v.layers[0][0] for v in nets], axis=1)
    b = np.concatenate([v.layers[0][1] for v in nets])
    coef = np.concatenate([v.coef for v in nets]) / k
    intercept = float(np.mean([v.intercept for v in nets]))
    return Verifier(v0.features, v0.mean, v0.scale, coef, intercept, v0.threshold,
                    dict(v0.info), ((w, b),), v0.bounds)  # fmt: skip


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, mtime: float) -> Verifier:
    return Verifier.load(path)


def load_verifier(spec: str) -> Verifier | None:
    """``"none"`` -> None (accept every candidate), ``"default"`` -> the packaged verifier,
    else a verifier folder or JSON file (cached while the file is unchanged)."""
    if spec == "none":
        return None
    p = DEFAULT_VERIFIER if spec == "default" else Path(spec)
    q = p / VERIFIER_FILE if p.is_dir() else p
    if not q.is_file():
        raise LipoclassError(f"{spec}: verifier not found (a folder from 'detect-train')")
    return _load_cached(str(q), q.stat().st_mtime)


def candidate_threshold(spec: str) -> float | None:
    """The candidate threshold (ring significance) the verifier ``spec`` (as
    ``load_verifier``) was trained with: its info's ``candidate_threshold`` (``detect-train``
    records it), None for "none" or a verifier that records none."""
    ver = load_verifier(spec)
    value = ver.info.get("candidate_threshold") if ver is not None else None
    return float(value) if value is not None else None


# --------------------------------------------------------------------------- training


@dataclass
class TrainingSet:
    """Candidate features (N, F), labels (N,) 1 liposome / 0 not, and the micrograph of
    each row (N,)."""

    x: np.ndarray
    y: np.ndarray
    micrograph: list[str]


def check_labels_rule(rule: str) -> str:
    """``rule`` if it is one of ``VERIFIER_LABELS``, else ValueError."""
    if rule not in VERIFIER_LABELS:
        raise ValueError(f"labels rule must be one of {VERIFIER_LABELS}, got {rule!r}")
    return rule


def candidate_truth(
    det: Any, truth: np.ndarray, min_iou: float = 0.5, rule: str = "painted"
) -> np.ndarray:
    """1 for each candidate of ``det`` (``detect.Detections``) that matches a truth instance
    of ``truth`` (H, W) at mask IoU >= ``min_iou``, else 0: (N,) int. ``rule``
    (``VERIFIER_LABELS``): "painted" all candidates' outlines painted together, then matched
    one-to-one; "alone" each outline on its own, then one-to-one greedily by IoU (per truth
    instance only its best candidate is 1)."""
    from lipoclass.micrograph.detect import alone_overlaps, paint_outlines
    from lipoclass.micrograph.match import greedy_one_to_one, match_instances

    check_labels_rule(rule)
    y = np.zeros(len(det), dtype=np.int64)
    if rule == "painted":
        lab, _ = paint_outlines(truth.shape, det.cy, det.cx, det.radii)
        m = match_instances(truth, lab, min_iou)
        y[m.pairs[:, 1] - 1] = 1
        return y
    pairs, iou = alone_overlaps(truth, det.cy, det.cx, det.radii)
    keep = iou >= min_iou
    pairs, iou = pairs[keep], iou[keep]
    y[pairs[greedy_one_to_one(pairs, iou), 0]] = 1
    return y


def read_negatives(path: Path) -> dict[str, list[tuple[float, float, float]]]:
    """``detection_negatives.csv`` -> {micrograph stem: [(x, y, diameter_px)]}."""
    from lipoclass.errors import finite_number as _number
    from lipoclass.micrograph.annotations import _read_csv, _stem

    header, rows = _read_csv(path, "detection negatives")
    for req in ("micrograph", "x", "y"):
        if req not in header:
            raise LipoclassError(f"{path}: required column '{req}' is missing")
    out: dict[str, list[tuple[float, float, float]]] = {}
    for r, row in rows:
        where = f"{path} row {r}"
        d = _number(row["diameter_px"], "diameter_px", where) if row.get("diameter_px") else 0.0
        out.setdefault(_stem(row["micrograph"]), []).append(
            (_number(row["x"], "x", where), _number(row["y"], "y", where), d)
        )
    return out


def _apply_negatives(det: Any, y: np.ndarray, points: list[tuple[float, float, float]]) -> int:
    """Set candidates centred within half their radius of a negative point to 0; count."""
    n = 0
    r = det.radii.mean(axis=1) if len(det) else np.zeros(0)
    for x, yy, _d in points:
        if not len(det):
            break
        dist = np.hypot(det.cx - x, det.cy - yy)
        k = int(np.argmin(dist))
        if dist[k] <= 0.5 * r[k]:
            y[k] = 0
            n += 1
    return n


def collect_training_set(
    micrographs: Sequence[Any],
    truths: Sequence[np.ndarray],
    cfg: Any,
    negatives: dict[str, list[tuple[float, float, float]]] | None = None,
    rule: str = "painted",
) -> TrainingSet:
    """Candidates (without verification) of each micrograph (``io.Micrograph``), labelled by
    the truth label image of the same index (``candidate_truth``'s ``rule``) and the extra
    negatives."""
    from lipoclass.micrograph.detect import detect_candidates

    xs, ys, names = [], [], []
    for mic, truth in zip(micrographs, truths):
        det = detect_candidates(mic.image, cfg, mic.pixel_size_nm, str(mic.path), verifier=False)
        y = candidate_truth(det, truth, rule=rule)
        if negatives and mic.name in negatives:
            _apply_negatives(det, y, negatives[mic.name])
        xs.append(det.features)
        ys.append(y)
        names += [mic.name] * len(y)
    from lipoclass.micrograph.detect import FEATURES

    x = np.concatenate(xs) if xs else np.zeros((0, len(FEATURES)))
    return TrainingSet(x, np.concatenate(ys) if ys else np.zeros(0, np.int64), names)


def _best_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The score threshold maximising F1 of the positive class on (y, p)."""
    grid = np.round(np.arange(0.05, 0.951, 0.01), 2)
    f1 = []
    for t in grid:
        pred = p >= t
        tp = float(np.sum(pred & (y == 1)))
        f1.append(2 * tp / max(float(pred.sum() + (y == 1).sum()), 1.0))
    return float(grid[int(np.argmax(f1))])


def _ensemble_proba(x: np.ndarray, ms: Sequence[Any]) -> np.ndarray:
    """Liposome probability of fitted classifiers ``ms`` on ``x``: one model's own, or the
    logits of several averaged (as ``combine_networks`` stores them)."""
    if len(ms) == 1:
        return np.asarray(ms[0].predict_proba(x)[:, 1])
    q = [np.clip(m.predict_proba(x), 1e-12, 1.0) for m in ms]
    t = np.mean([np.log(a[:, 1]) - np.log(a[:, 0]) for a in q], axis=0)
    return np.asarray(1.0 / (1.0 + np.exp(-t)))


def check_ensemble(ensemble: int | None, model: str) -> int:
    """Networks a verifier: ``ensemble``, or for None ``DETECT_TRAIN_ENSEMBLE`` with the mlp
    and 1 with the logistic regression; ValueError unless it is at least 1, and 1 unless
    ``model`` is the mlp."""
    if ensemble is None:
        return DETECT_TRAIN_ENSEMBLE if model == "mlp" else 1
    if ensemble < 1:
        raise ValueError(f"ensemble must be at least 1, got {ensemble}")
    if ensemble > 1 and model != "mlp":
        raise ValueError(f"an ensemble of {ensemble} networks needs model 'mlp', got {model!r}")
    return ensemble


def _shift_by_micrograph(
    p: np.ndarray, groups: np.ndarray, pi_train: float, spec: dict[str, Any]
) -> np.ndarray:
    """Scores ``p`` (N,) shifted by ``prior_shift(**spec)`` one micrograph (``groups``) at a
    time, as ``Verifier.micrograph_scores`` shifts them at detection."""
    out = np.asarray(p, dtype=np.float64).copy()
    for g in np.unique(groups):
        sel = groups == g
        out[sel] = prior_shift(out[sel], pi_train, **spec)[0]
    return out


def _chosen_features(
    x: np.ndarray, features: Sequence[str] | None
) -> tuple[tuple[str, ...], np.ndarray]:
    """(names, columns of ``x``) of the ``features`` a verifier is fitted on (None: all of
    ``detect.FEATURES``, the columns of ``x``); ValueError unless they are some of them in
    their order."""
    from lipoclass.micrograph.detect import FEATURES

    if features is None:
        return FEATURES, x
    cols = _columns(features, FEATURES)
    if cols is None or not cols:
        raise ValueError(f"features must be some of detect.FEATURES in order, got {features}")
    return tuple(features), x[:, cols]


def _training_bounds(x: np.ndarray, clip: float | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Per feature the ``clip`` and 1 - ``clip`` quantiles of training features ``x`` (N, F)
    (0: minimum and maximum), the ``Verifier.bounds``; None for ``clip`` None."""
    if clip is None:
        return None
    if not 0.0 <= clip < 0.5:
        raise ValueError(f"clip must be a quantile share in [0, 0.5), got {clip}")
    return np.quantile(x, clip, axis=0), np.quantile(x, 1.0 - clip, axis=0)


def _standardised(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, scale, standardised x) of training features ``x`` (N, F)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    return mean, scale, (x - mean) / scale


def _model_maker(model: str, c: float, seed: int) -> Callable[[int], Any]:
    """``make(k)``: an unfitted scikit-learn classifier of ``model`` (network k of an
    ensemble: seed ``seed + 1000 k``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    def make(k: int = 0) -> Any:
        if model == "logistic":
            return LogisticRegression(C=c, max_iter=2000, class_weight="balanced")
        return MLPClassifier(
            (_MLP_HIDDEN,), alpha=_MLP_ALPHA, max_iter=600, random_state=seed + 1000 * k
        )

    return make


def _oof_scores(
    xs: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    seed: int,
    make: Callable[[int], Any],
    ensemble: int,
    oof: bool,
) -> np.ndarray:
    """Out-of-fold liposome scores (5 folds grouped by micrograph when there are at least 3
    micrographs, else stratified by candidate); zeros when ``oof`` is False."""
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    scores = np.zeros(len(y))
    if not oof:
        return scores
    k = min(5, len(set(groups.tolist())))
    if k >= 3:
        splits = GroupKFold(n_splits=k).split(xs, y, groups)
    else:
        splits = StratifiedKFold(5, shuffle=True, random_state=seed).split(xs, y)
    for tr, te in splits:
        if len(set(y[tr])) < 2:
            scores[te] = y[tr].mean()
            continue
        scores[te] = _ensemble_proba(xs[te], [make(j).fit(xs[tr], y[tr]) for j in range(ensemble)])
    return scores


def _as_verifier(
    fitted: Sequence[Any],
    model: str,
    mean: np.ndarray,
    scale: np.ndarray,
    thr: float,
    meta: dict[str, Any],
    c: float,
    bounds: tuple[np.ndarray, np.ndarray] | None,
    feats: tuple[str, ...],
) -> Verifier:
    """The ``Verifier`` of fitted scikit-learn models (one logistic regression, or one or
    more one-hidden-layer networks combined by ``combine_networks``) on features ``feats``."""
    m = fitted[0]
    if model == "logistic":
        meta["C"] = c
        return Verifier(feats, mean, scale, m.coef_[0].astype(np.float64),
                        float(m.intercept_[0]), thr, meta, (), bounds)  # fmt: skip
    meta["alpha"] = _MLP_ALPHA
    meta["ensemble"] = len(fitted)
    nets = [
        Verifier(feats, mean, scale, np.asarray(f.coefs_[-1], np.float64)[:, 0],
                 float(f.intercepts_[-1][0]), thr, meta,
                 tuple((np.asarray(w, np.float64), np.asarray(b, np.float64))
                       for w, b in zip(f.coefs_[:-1], f.intercepts_[:-1])), bounds)
        for f in fitted
    ]  # fmt: skip
    return nets[0] if len(nets) == 1 else combine_networks(nets)


def fit_verifier(
    ts: TrainingSet,
    seed: int = 0,
    c: float = 1.0,
    threshold: float | None = None,
    info: dict[str, Any] | None = None,
    model: str = "mlp",
    ensemble: int = 1,
    oof: bool = True,
    prior: dict[str, Any] | None = None,
    clip: float | None = None,
    features: Sequence[str] | None = None,
) -> tuple[Verifier, dict[str, float]]:
    """Fit the verifier on ``ts``: ``model`` "mlp" (one hidden layer of ``_MLP_HIDDEN``
    relu units, L2 ``_MLP_ALPHA``, seeded by ``seed``; ``ensemble`` > 1: that many networks,
    seeds ``seed + 1000 k``, logits averaged, stored as one network, ``combine_networks``) or
    "logistic" (class-balanced, L2 1/``c``). The threshold (None) maximises the F1 of the
    out-of-fold scores (5 folds grouped by micrograph when there are enough, else by
    candidate; ``oof`` False skips them, then ``threshold`` is needed). ``prior``
    (``prior_shift`` keyword arguments, e.g. ``PRIOR_SHIFT``) is stored as the info's
    ``prior_shift`` (scores shifted per micrograph at detection) and the out-of-fold scores
    are shifted the same way, per micrograph, before the threshold is chosen. The training
    share of liposomes among the candidates is stored in the info (``positive_share``).
    ``clip`` (a quantile share, 0: the range): every feature is clipped to its ``clip`` ..
    1 - ``clip`` quantiles of the training candidates, in training and at detection
    (``Verifier.bounds``). ``features`` (some of ``detect.FEATURES``, in their order; None:
    all) are the features the verifier uses; ``ts.x`` holds all ``FEATURES``. Returns the
    verifier and out-of-fold figures at that threshold."""
    from sklearn.exceptions import ConvergenceWarning

    if model not in VERIFIER_MODELS:
        raise ValueError(f"model must be one of {', '.join(VERIFIER_MODELS)}, got {model!r}")
    check_ensemble(ensemble, model)
    y = ts.y.astype(np.int64)
    npos, nneg = int(y.sum()), int((y == 0).sum())
    if npos < 5 or nneg < 5:
        raise LipoclassError(
            f"too few examples to train a verifier: {npos} annotated liposome(s) and {nneg} "
            f"other candidate(s) found (need at least 5 of each)"
        )
    if not oof and threshold is None:
        raise ValueError("without out-of-fold scores a threshold is needed")
    feats, x = _chosen_features(ts.x, features)
    bounds = _training_bounds(x, clip)
    mean, scale, xs = _standardised(x if bounds is None else np.clip(x, *bounds))
    make = _model_maker(model, c, seed)
    groups = np.asarray(ts.micrograph)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = _oof_scores(xs, y, groups, seed, make, ensemble, oof)
        fitted = [make(j).fit(xs, y) for j in range(ensemble)]
    share = round(npos / (npos + nneg), 6)
    if prior is not None and oof:
        scores = _shift_by_micrograph(scores, groups, share, prior)
    thr = _best_threshold(y, scores) if threshold is None else float(threshold)
    pred = scores >= thr
    tp = float(np.sum(pred & (y == 1)))
    stats = {
        "positives": float(npos),
        "negatives": float(nneg),
        "threshold": thr,
        "oof_precision": tp / max(float(pred.sum()), 1.0),
        "oof_recall": tp / max(float(npos), 1.0),
        "oof_accepted": float(pred.sum()),
        "oof_true_positives": tp,
    }
    meta = dict(info or {})
    if prior is not None:
        meta["prior_shift"] = dict(prior)
    meta.update({"positives": npos, "negatives": nneg, "positive_share": share})
    if clip is not None:
        meta["clip"] = clip
    if oof:
        meta.update({"oof_precision": round(stats["oof_precision"], 4),
                     "oof_recall": round(stats["oof_recall"], 4)})  # fmt: skip
    else:
        stats["oof_precision"] = stats["oof_recall"] = float("nan")
    ver = _as_verifier(fitted, model, mean, scale, thr, meta, c, bounds, feats)
    return ver, stats


def write_training_csv(path: Path, ts: TrainingSet) -> None:
    """The training candidates (micrograph, label, features) as CSV."""
    from lipoclass.micrograph.detect import FEATURES

    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["micrograph", "liposome", *FEATURES])
        for name, yy, row in zip(ts.micrograph, ts.y, ts.x):
            w.writerow([name, int(yy), *(f"{v:.5g}" for v in row)])


def blank_micrographs(
    seed: int, n: int, pixel_range: tuple[float, float] = (0.5, 3.0)
) -> list[tuple[np.ndarray, float]]:
    """``n`` micrographs without any liposome (image, pixel size nm) from a generator seeded
    ``seed``: white or lightly smoothed Gaussian noise, 256-1024 px, some quantised to 8 bit,
    pixel size log-uniform in ``pixel_range`` (nm); every candidate on them is a negative (an
    empty micrograph must give no particle). The packaged verifier's training uses seed 1900
    and the default range (scripts/train_detect_verifier.py); ``detect-train --blanks``
    the range of the lab's micrographs."""
    from scipy import ndimage as ndi

    lo, hi = np.log(pixel_range[0]), np.log(pixel_range[1])
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        size = int(rng.choice([256, 512, 1024]))
        img = rng.normal(0.0, 1.0, (size, size))
        if rng.random() < 0.5:
            img = ndi.gaussian_filter(img, float(rng.uniform(0.5, 2.0)))
        img = 150.0 + img / img.std() * float(rng.uniform(2.0, 20.0))
        if rng.random() < 0.5:
            img = np.clip(np.rint(img), 0, 255)
        out.append((img.astype(np.float32), float(np.exp(rng.uniform(lo, hi)))))
    return out


def check_blanks(blanks: int) -> int:
    """``detect-train --blanks``: a whole number of blank micrographs, at least 0."""
    if isinstance(blanks, bool) or not isinstance(blanks, (int, np.integer)) or blanks < 0:
        raise ValueError(f"blank micrographs must be a whole number >= 0, got {blanks!r}")
    return int(blanks)


def _truth_image(mic: Any, anns: Sequence[Any]) -> np.ndarray:
    """Annotations (``ParticleAnnotation``) painted into an instance label image (H, W)."""
    lab = np.zeros(mic.shape, dtype=np.int64)
    for k, a in enumerate(anns, start=1):
        mh, mw = a.mask.shape
        y0, x0 = max(0, a.top), max(0, a.left)
        y1, x1 = min(mic.shape[0], a.top + mh), min(mic.shape[1], a.left + mw)
        if y1 <= y0 or x1 <= x0:
            continue
        sub = a.mask[y0 - a.top : y1 - a.top, x0 - a.left : x1 - a.left]
        lab[y0:y1, x0:x1][sub] = k
    return lab


def _add_blanks(
    mics: list[Any], truths: list[np.ndarray], n: int, seed: int, pxs: Sequence[float | None]
) -> None:
    """Append ``n`` blank micrographs (``blank_micrographs``, seeded ``seed``) with empty
    truth, their pixel sizes drawn in the range of ``pxs`` (unknown when all are)."""
    from lipoclass.micrograph.io import Micrograph

    known = [p for p in pxs if p is not None]
    rng = (min(known), max(known)) if known else (1.0, 1.0)
    for k, (img, px) in enumerate(blank_micrographs(seed, n, rng)):
        mics.append(Micrograph(Path(f"blank-{k}.tif"), img, px if known else None))
        truths.append(np.zeros(img.shape, np.int64))


def _detection_figures(stats: dict[str, float], n_truth: int) -> dict[str, float]:
    """Out-of-fold detection precision, recall and F1 of ``fit_verifier``'s ``stats``: the
    recall of all ``n_truth`` annotated liposomes (those without a candidate are misses), the
    blanks' accepted candidates false detections."""
    tp, acc = stats["oof_true_positives"], stats["oof_accepted"]
    return {
        "candidates": stats["positives"] + stats["negatives"],
        "detection_precision": tp / max(acc, 1.0),
        "detection_recall": tp / max(float(n_truth), 1.0),
        "detection_f1": 2.0 * tp / max(acc + n_truth, 1.0),
    }


def _fit_thresholds(
    mics: Sequence[Any],
    truths: Sequence[np.ndarray],
    cfg: Any,
    neg: dict[str, list[tuple[float, float, float]]] | None,
    thresholds: Sequence[float] | None,
    fit: Callable[[TrainingSet, float], tuple[Verifier, dict[str, float]]],
    rule: str = "painted",
) -> tuple[Verifier, dict[str, float], TrainingSet]:
    """``fit`` (training set, candidate threshold) -> (verifier, stats) on the candidates of
    ``cfg`` at each of ``thresholds`` (None: ``cfg.threshold``); the verifier of the best
    out-of-fold detection F1 (``_detection_figures``; the first of equals), its stats with
    the detection figures and ``candidate_threshold``, and its training set. With several
    thresholds the figures of each go to the info's ``candidate_thresholds``."""
    from dataclasses import replace

    n_truth = sum(int(np.count_nonzero(np.unique(t))) for t in truths)
    table: dict[str, dict[str, float]] = {}
    best: tuple[Verifier, dict[str, float], TrainingSet] | None = None
    for thr in [cfg.threshold] if thresholds is None else thresholds:
        ts = collect_training_set(mics, truths, replace(cfg, threshold=float(thr)), neg, rule)
        ver, stats = fit(ts, float(thr))
        stats.update(_detection_figures(stats, n_truth), candidate_threshold=float(thr))
        table[f"{float(thr):g}"] = {"candidates": int(stats["candidates"]),
                                    "with_candidate": int(stats["positives"]),
                                    "annotated": n_truth,
                                    "score_threshold": round(stats["threshold"], 4),
                                    **{k.split("_")[1]: round(stats[k], 4) for k in
                                       ("detection_precision", "detection_recall",
                                        "detection_f1")}}  # fmt: skip
        if best is None or stats["detection_f1"] > best[1]["detection_f1"]:
            best = (ver, stats, ts)
    if best is None:
        raise ValueError("thresholds: at least one candidate threshold is needed")
    if thresholds is not None:
        best[0].info["candidate_thresholds"] = table
    return best


def _train_options(ensemble: int | None, model: str, blanks: int, labels: str) -> tuple[int, int]:
    """detect-train's (networks, blanks), checked with its labels rule; a LipoclassError
    naming the option otherwise."""
    checks: tuple[tuple[str, Callable[[], Any]], ...] = (
        ("--ensemble", lambda: check_ensemble(ensemble, model)),
        ("--blanks", lambda: check_blanks(blanks)),
        ("--labels-rule", lambda: check_labels_rule(labels)),
    )
    done = []
    for option, check in checks:
        try:
            done.append(check())
        except ValueError as exc:
            raise LipoclassError(f"detect-train: {exc} ({option})") from None
    return int(done[0]), int(done[1])


def train_detect_verifier(
    micrographs: Sequence[str | os.PathLike[str]],
    source: Any,
    cfg: Any,
    out: str | os.PathLike[str],
    *,
    negatives: Path | None = None,
    pixel_size_nm: float | None = None,
    seed: int = 0,
    model: str = "mlp",
    ensemble: int | None = None,
    prior: bool = DETECT_TRAIN_PRIOR_SHIFT,
    blanks: int = DETECT_TRAIN_BLANKS,
    thresholds: Sequence[float] | None = None,
    labels: str = DETECT_TRAIN_LABELS,
) -> tuple[Verifier, dict[str, float]]:
    """``lipoclass detect-train``: candidates of ``micrographs`` labelled by the annotations
    of ``source`` (an ``AnnotationSource``: annotated particles are positives, the other
    candidates negatives) and the rows of ``negatives`` (a review's
    ``detection_negatives.csv``); fit a verifier (``model``: ``VERIFIER_MODELS``;
    ``ensemble`` networks, mlp only, None: ``check_ensemble``'s default; ``prior``: scores
    shifted per micrograph by ``PRIOR_SHIFT``, the threshold chosen on the out-of-fold
    scores shifted the same way; ``blanks`` noise-only micrographs, ``blank_micrographs``
    seeded 1900 + ``seed`` at the micrographs' pixel sizes, add negatives) and write
    ``out/verifier.json`` and ``out/training.csv`` (staging folder renamed at the end).
    ``thresholds`` (e.g. ``DETECT_TRAIN_THRESHOLDS``; None: ``cfg.threshold`` alone): the
    candidate thresholds tried, one verifier each, the one of the best out-of-fold detection
    F1 kept (``_fit_thresholds``; its figures per threshold in the info's
    ``candidate_thresholds``). ``labels``: how candidates are labelled (``VERIFIER_LABELS``,
    ``candidate_truth``'s rule; recorded in the info as ``labels_rule``). The stats hold the
    out-of-fold detection figures (``detection_precision``, ``_recall``, ``_f1``: recall of
    all annotated liposomes)."""
    import shutil
    import uuid

    from lipoclass.data import publish_folder
    from lipoclass.micrograph.io import check_micrographs, read_micrograph

    ensemble, blanks = _train_options(ensemble, model, blanks, labels)
    out = Path(out)
    if out.exists():
        raise LipoclassError(f"{out}: already exists (choose another --out)")
    paths, pxs = check_micrographs(
        micrographs, pixel_size_nm, cfg.unit == "nm", None, "training rows would clash"
    )
    for p in paths:
        cfg.diameters_px(pxs[p], str(p))
    neg = read_negatives(Path(negatives)) if negatives is not None else None
    mics, truths = [], []
    for p in paths:
        mic = read_micrograph(p, pixel_size_nm=pxs[p], require_pixel_size=False)
        truths.append(_truth_image(mic, source.particles(mic)))
        mics.append(mic)
    _add_blanks(mics, truths, blanks, 1900 + seed, [pxs[p] for p in paths])
    info = {"trained_on": f"{len(paths)} annotated micrograph(s) (lipoclass detect-train)",
            "blanks": blanks, "labels_rule": labels,
            "training_ring_clip": cfg.ring_clip,
            "training_ring_noise": cfg.ring_noise}  # fmt: skip

    def fit(ts: TrainingSet, thr: float) -> tuple[Verifier, dict[str, float]]:
        return fit_verifier(ts, seed=seed, info={**info, "candidate_threshold": thr},
                            model=model, ensemble=ensemble,
                            prior=PRIOR_SHIFT if prior else None)  # fmt: skip

    ver, stats, ts = _fit_thresholds(mics, truths, cfg, neg, thresholds, fit, labels)
    staging = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir(parents=True)
        ver.save(staging / VERIFIER_FILE)
        write_training_csv(staging / "training.csv", ts)
        publish_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ver, stats
