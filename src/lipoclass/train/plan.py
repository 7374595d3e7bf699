"""``training_seconds``: the one rough CPU-time estimate of CNN training, used by the plan
line of ``lipoclass cv`` / ``train`` and by the start-of-study estimate (standard library and
numpy only, so both import it cheaply)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lipoclass.train.config import TrainConfig

__all__ = ["CNN_IMAGES_PER_S", "epoch_rows", "training_seconds"]

#: rough CNN training speed on 2 CPU cores (LipNet-4, 28 px), images/s: measured 3,200-3,400
#: inside ``lipoclass cv`` (per-fold calibration and test-time augmentation included; bf16, one
#: torch thread, load <= 1; docs/cnn.md, Cost: estimate against the wall clock), rounded down;
#: fewer where other jobs share the cores, far more on a GPU
CNN_IMAGES_PER_S = 3000.0


def epoch_rows(counts: np.ndarray, train: TrainConfig) -> int:
    """Rows one epoch visits for per-class training counts (C,): oversampling and SMOTE
    repeat / synthesise every present class up to the majority's count, undersampling drops
    ``undersample_drop`` of the majority, the other strategies visit every row once."""
    counts = np.asarray(counts, dtype=np.int64)
    present = int((counts > 0).sum())
    if train.balance in ("oversample", "smote"):
        return int(counts.max()) * present
    if train.balance == "undersample":
        major = int(counts.max())
        return int(counts.sum()) - round(train.undersample_drop * major)
    return int(counts.sum())


def training_seconds(fold_counts: Sequence[np.ndarray], train: TrainConfig, size: int) -> float:
    """Rough seconds on 2 CPU cores to train one CNN per fold, given each fold's per-class
    training counts (C,): rows per epoch x epochs / ``CNN_IMAGES_PER_S``, scaled by the
    input area relative to 28 px (measured: a 64 px input cost 5.1-5.7x a 28 px one, the
    area ratio 5.2x)."""
    rows = sum(epoch_rows(c, train) for c in fold_counts)
    return rows * train.epochs / CNN_IMAGES_PER_S * (size / 28) ** 2
