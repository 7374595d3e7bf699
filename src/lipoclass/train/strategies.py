"""Strategy objects used by the ``Trainer`` (minGPT style: the trainer calls them, it does not
branch on flags): epoch samplers for class imbalance (thesis 4.8), losses (4.7, label
smoothing 5.2, class weights, focal) and the kornia augmentation pipeline (5.5)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import nn

from lipoclass.errors import LipoclassError
from lipoclass.train.config import TrainConfig

__all__ = [
    "FocalLoss",
    "FusedAugment",
    "NoSampler",
    "OversampleSampler",
    "Sampler",
    "SmoteSampler",
    "UndersampleSampler",
    "build_augmentation",
    "fused_augmentation",
    "make_loss",
    "make_sampler",
]


class Sampler(Protocol):
    """Decides which training rows one epoch visits (and may add synthetic rows once)."""

    def setup(
        self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
        aux: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]: ...  # fmt: skip

    def epoch_indices(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...


class NoSampler:
    """Every training row once per epoch, shuffled."""

    def setup(
        self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
        aux: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """The training rows (x, y) once before training; ``aux`` (N,K) features travel with
        the rows, so a sampler that adds rows must refuse them."""
        return x, y

    def epoch_indices(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.permutation(len(y))


class OversampleSampler(NoSampler):
    """Thesis 4.8.1: every class repeated (random draws with replacement beyond one full copy)
    up to the majority count, so each epoch holds ``C * max_count`` rows, shuffled."""

    def epoch_indices(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        classes, counts = np.unique(y, return_counts=True)
        target = int(counts.max())
        parts = []
        for c, n in zip(classes, counts):
            members = np.flatnonzero(y == c)
            extra = rng.choice(members, size=target - int(n), replace=True)
            parts += [members, extra]
        idx = np.concatenate(parts)
        return idx[rng.permutation(len(idx))]


class UndersampleSampler(NoSampler):
    """Thesis 4.8.2: at the start of each epoch drop a fresh random ``drop`` share (20%) of the
    majority class; the other classes are kept whole."""

    def __init__(self, drop: float = 0.2) -> None:
        if not 0 <= drop < 1:
            raise ValueError(f"drop must be in [0, 1), got {drop}")
        self.drop = drop

    def epoch_indices(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        classes, counts = np.unique(y, return_counts=True)
        major = classes[int(np.argmax(counts))]
        members = np.flatnonzero(y == major)
        keep_n = len(members) - round(self.drop * len(members))
        kept = rng.choice(members, size=keep_n, replace=False)
        idx = np.concatenate([np.flatnonzero(y != major), kept])
        return idx[rng.permutation(len(idx))]


class SmoteSampler(NoSampler):
    """Thesis 4.8.3: SMOTE (imbalanced-learn) in pixel space on the flattened training images,
    once before training, up to the majority count; then every row once per epoch. A class
    with a single member cannot be interpolated and is oversampled by repetition instead."""

    def __init__(self, k_neighbors: int = 5) -> None:
        self.k_neighbors = k_neighbors

    def setup(
        self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
        aux: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        from imblearn.over_sampling import SMOTE

        if aux is not None:  # synthetic rows have no size features
            raise LipoclassError("balance 'smote' cannot be combined with size features (aux)")

        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            return x, y
        singles = classes[counts < 2]
        if len(singles):  # SMOTE needs 2 members: a copy makes it repeat the one example
            warnings.warn(
                f"SMOTE: class(es) {singles.tolist()} have one training example; repeated instead",
                stacklevel=2,
            )
            dup = np.flatnonzero(np.isin(y, singles))
            x, y = np.concatenate([x, x[dup]]), np.concatenate([y, y[dup]])
            counts = np.unique(y, return_counts=True)[1]
        k = max(1, min(self.k_neighbors, int(counts.min()) - 1))
        sm = SMOTE(k_neighbors=k, random_state=int(rng.integers(2**31 - 1)))
        n, shape = len(y), x.shape[1:]
        xr, yr = sm.fit_resample(x.reshape(n, -1), y)  # (N', S*S) balanced to the majority
        return (
            np.asarray(xr, dtype=np.float32).reshape(-1, *shape),  # (N', 1, S, S)
            np.asarray(yr, dtype=np.int64),
        )


def make_sampler(cfg: TrainConfig) -> NoSampler:
    """The sampler for ``cfg.balance`` (weights/focal act in the loss, so they sample plainly)."""
    if cfg.balance == "oversample":
        return OversampleSampler()
    if cfg.balance == "undersample":
        return UndersampleSampler(cfg.undersample_drop)
    if cfg.balance == "smote":
        return SmoteSampler()
    return NoSampler()


class FocalLoss(nn.Module):
    """Softmax focal loss (Lin et al. 2017): ``(1 - p_t)^gamma * CE`` per sample, averaged
    unless ``reduction="none"``; gamma = 0 is plain cross-entropy. Written out (4 lines)
    because kornia's ``focal_loss`` reduction semantics changed between versions."""

    weight = None  # no class weights (the trainer's normaliser looks for this attribute)

    def __init__(self, gamma: float = 2.0, reduction: str = "mean") -> None:
        super().__init__()
        self.gamma = float(gamma)
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits.float(), dim=1)  # (B,C)
        logp_t = logp.gather(1, y[:, None]).squeeze(1)  # (B,)
        loss = -((1.0 - logp_t.exp()).clamp_min(0.0) ** self.gamma) * logp_t  # (B,)
        return loss if self.reduction == "none" else loss.mean()


def class_weights(y: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights ``N / (C * n_c)`` (sklearn's 'balanced'); absent classes 0."""
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, len(y) / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def make_loss(
    cfg: TrainConfig, y_train: np.ndarray, num_classes: int, reduction: str = "mean"
) -> nn.Module:
    """Cross-entropy with label smoothing; class-weighted for ``weights``; focal for ``focal``.

    ``reduction="none"`` gives per-sample losses (B,) (weighted ones multiplied by their class
    weight), which the trainer normalises itself to accumulate micro-batches exactly."""
    if cfg.balance == "focal":
        return FocalLoss(cfg.focal_gamma, reduction=reduction)
    weight = class_weights(y_train, num_classes) if cfg.balance == "weights" else None
    return nn.CrossEntropyLoss(
        weight=weight, label_smoothing=cfg.label_smoothing, reduction=reduction
    )


class FusedAugment(nn.Module):
    """Thesis 5.5 augmentation as ONE resampling per image: rotation, shift, x-shear, zoom and
    both flips are composed into one 2x3 affine matrix per image and applied to the whole
    chunk with a single ``affine_grid`` + ``grid_sample`` (bilinear, zero padding, rotation
    about the image centre). Compared with kornia's chain (a rotation warp, then an affine
    warp, then two flips) this is ~4x faster and blurs less (one interpolation instead of
    two). Parameter ranges are those of ``build_augmentation``; randomness comes from torch's
    default generator (callers seed it with ``seeded_torch``). Flip-only: exact flips."""

    def __init__(
        self,
        rotate: bool,
        shift: float,
        shear: float,
        zoom: tuple[float, float] | None,
        flip: bool,
    ) -> None:
        super().__init__()
        self.rotate, self.shift, self.shear, self.zoom, self.flip = (
            rotate, float(shift), float(shear), zoom, flip,
        )  # fmt: skip

    @property
    def warps(self) -> bool:
        return self.rotate or self.shift > 0 or self.shear > 0 or self.zoom is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, dev = x.shape[0], x.device
        if n == 0:
            return x
        u = torch.rand((n, 6), device=dev)  # one draw for all parameters of the chunk
        fx = torch.where(u[:, 4] < 0.5, -1.0, 1.0) if self.flip else torch.ones(n, device=dev)
        fy = torch.where(u[:, 5] < 0.5, -1.0, 1.0) if self.flip else torch.ones(n, device=dev)
        if not self.warps:  # flips only: exact, no interpolation
            hx, vy = (fx < 0).view(n, 1, 1, 1), (fy < 0).view(n, 1, 1, 1)
            x = torch.where(hx, x.flip(-1), x)
            return torch.where(vy, x.flip(-2), x)
        theta = (2 * u[:, 0] - 1) * math.pi if self.rotate else torch.zeros(n, device=dev)
        lo, hi = self.zoom if self.zoom is not None else (1.0, 1.0)
        # forward map (normalised coordinates, square field): p' = S Sh R F p + t; the grid
        # needs the inverse, written out in closed form.
        s = 1.0 / (lo + (hi - lo) * u[:, 1])  # zoom-in factor 1/zoom, visible fraction zoom
        k = torch.tan(u[:, 2] * math.atan(self.shear)) if self.shear > 0 else torch.zeros_like(s)
        t = (2 * torch.rand((n, 2), device=dev) - 1) * (2 * self.shift)  # +-shift of the width
        c, sn = torch.cos(theta), torch.sin(theta)
        # A = s * [[1, k], [0, 1]] @ [[c, -sn], [sn, c]] @ diag(fx, fy)
        a00, a01 = s * (c + k * sn) * fx, s * (-sn + k * c) * fy
        a10, a11 = s * sn * fx, s * c * fy
        det = a00 * a11 - a01 * a10
        i00, i01, i10, i11 = a11 / det, -a01 / det, -a10 / det, a00 / det
        b0 = -(i00 * t[:, 0] + i01 * t[:, 1])
        b1 = -(i10 * t[:, 0] + i11 * t[:, 1])
        mat = torch.stack([i00, i01, b0, i10, i11, b1], 1).view(n, 2, 3).to(x.dtype)
        grid = nn.functional.affine_grid(mat, list(x.shape), align_corners=False)
        return nn.functional.grid_sample(
            x, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )


def fused_augmentation(augment: Sequence[str], zoom: tuple[float, float] = (0.8, 1.0)) -> nn.Module:
    """Experimental, not the default: thesis 5.5 as one fused affine warp per chunk of
    (B,1,S,S) images (``FusedAugment``). About 5x faster than ``build_augmentation`` but, on
    the real vesicle set (seed 0, fp32, 5 folds), 0.637 pooled macro-F1 against 0.670 for the
    kornia chain (docs/cnn.md, Speed), so training keeps the kornia chain.

    rotate: uniform +-180 deg, bilinear; shift: up to 0.1 of the width/height each way;
    shear: x-shear factor in [0, 0.2] (= 0 to 11.3 degrees); zoom: zoom-in so that a ``zoom``
    fraction (0.8-1.0) of the field stays visible (as Keras' RandomZoom); flip: horizontal
    and vertical flips, p = 0.5 each. Empty ``augment`` gives ``nn.Identity``. Zero padding
    (the mean after z-scoring). Randomness comes from torch's default generator: callers run
    it under ``seeded_torch`` (see trainer)."""
    items = set(augment)
    bad = items - {"rotate", "shift", "flip", "shear", "zoom"}
    if bad:
        raise LipoclassError(f"unknown augmentation {sorted(bad)[0]!r}")
    if not items:
        return nn.Identity()
    return FusedAugment(
        rotate="rotate" in items,
        shift=0.1 if "shift" in items else 0.0,
        shear=0.2 if "shear" in items else 0.0,
        zoom=(float(zoom[0]), float(zoom[1])) if "zoom" in items else None,
        flip="flip" in items,
    )


def build_augmentation(augment: Sequence[str], zoom: tuple[float, float] = (0.8, 1.0)) -> nn.Module:
    """The training augmentation: thesis 5.5 as a kornia ``AugmentationSequential`` over
    (B,1,S,S) batches.

    rotate: RandomRotation(+-180 deg, bilinear); shift/shear/zoom: one RandomAffine with
    translate 0.1, x-shear factor in [0, 0.2] (= 0 to 11.3 degrees) and zoom-in so that a
    ``zoom`` fraction (0.8-1.0) of the field stays visible (kornia scale 1/zoom); flip:
    horizontal and vertical flips, p = 0.5 each. Empty ``augment`` gives ``nn.Identity``.
    Zero padding (the mean after z-scoring). Randomness comes from torch's default generator:
    callers run it under ``seeded_torch`` (see trainer)."""
    import kornia.augmentation as K

    items = set(augment)
    bad = items - {"rotate", "shift", "flip", "shear", "zoom"}
    if bad:
        raise LipoclassError(f"unknown augmentation {sorted(bad)[0]!r}")
    ops: list[nn.Module] = []
    if "rotate" in items:
        ops.append(K.RandomRotation(180.0, resample="bilinear", p=1.0))
    if items & {"shift", "shear", "zoom"}:
        ops.append(
            K.RandomAffine(
                degrees=0.0,
                translate=(0.1, 0.1) if "shift" in items else None,
                scale=(1.0 / zoom[1], 1.0 / zoom[0]) if "zoom" in items else None,
                shear=(0.0, math.degrees(math.atan(0.2))) if "shear" in items else None,
                resample="bilinear",
                padding_mode="zeros",
                p=1.0,
            )
        )
    if "flip" in items:
        ops += [K.RandomHorizontalFlip(p=0.5), K.RandomVerticalFlip(p=0.5)]
    if not ops:
        return nn.Identity()
    return K.AugmentationSequential(*ops, data_keys=["input"])  # type: ignore[arg-type]
