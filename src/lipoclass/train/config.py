"""``TrainConfig``: every knob of CNN training (thesis sections 4.5, 4.8, 5, 8.1)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from lipoclass.choices import AUGMENTS, DEVICES, OPTIMIZERS, PRECISIONS, SCHEDULES, VAL_METRICS
from lipoclass.choices import BALANCES_CNN as BALANCES

__all__ = ["AUGMENTS", "BALANCES", "TrainConfig"]


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    """ValueError unless ``value`` is one of ``allowed`` (a list of ``lipoclass.choices``)."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """CNN training settings. Defaults follow the thesis (Adam, batch 32, oversampling,
    all augmentations, label smoothing, dense-only weight decay, dropout, early stopping).

    ``lr=None`` means 1e-3 for Adam and 1e-2 for SGD. ``dropout=None`` keeps each model's own
    rates (0.25 conv / 0.5 dense); a number sets the dense dropout and half of it in the conv
    blocks. ``zoom`` is the visible field fraction as in Keras (0.8 = zoom in by up to 20%).
    ``synthetic`` names a dataset folder whose labelled particles are added to the training
    part only (never to validation or test). ``threads`` bounds torch CPU threads while
    training (``None``: torch's default). ``channels_last`` runs convolutions in NHWC layout,
    measurably faster with oneDNN on CPU (see benchmarks/bench_train.py). On CPU each batch
    is computed in micro-batches of at most ``micro_batch`` images whose gradients are summed
    before the optimizer step: the same update as one pass (the loss is normalised over the
    whole batch); ``None`` (the default) or CUDA: whole batches (measured 2026-12-02: bf16
    batch 128 trains ~25 % faster whole than as 4 x 32; fp32 the same either way).
    ``precision``: "auto" (default) picks bf16 on CPUs with AVX-512 BF16 / AMX (and
    bf16-capable GPUs), else fp32; "fp32" trains in float32, "bf16" under bfloat16 autocast
    (accuracy fp32 vs bf16 over 3 seeds: docs/cnn.md, Speed; ``lipoclass.train.precision``);
    the resolved value is recorded in the history and the run's fold_info. ``threads=None``
    on CPU: all cores when the machine is idle, fewer when other processes keep cores busy
    (``lipoclass.threads``). ``tta``: the fold models' own predictions (the out-of-fold
    predictions of ``cv``) average the softmax over the 8 flips / quarter turns of each
    particle; a model folder made from such a spec predicts with TTA as well, and
    ``fit_model(tta=True)`` (``cv/train --tta``) sets it, so a folder's out-of-fold figures
    are those of what it predicts. ``member_seed``: 0 trains with the seed it is given (per
    fold: the run seed and the fold number); k >= 1 mixes k into it, so the same folds train
    with another initialisation, sampling and augmentation (the CNN seed members of
    ``--recipe auto``, a deep ensemble; ``CNNEstimator.train_seed``)."""

    epochs: int = 30
    batch_size: int = 32
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float | None = None
    momentum: float = 0.9
    nesterov: bool = True
    schedule: Literal["cosine", "none", "step"] = "cosine"
    balance: Literal["none", "oversample", "undersample", "smote", "weights", "focal"] = (
        "oversample"
    )
    undersample_drop: float = 0.2
    focal_gamma: float = 2.0
    synthetic: str | None = None
    augment: tuple[str, ...] = AUGMENTS
    zoom: tuple[float, float] = (0.8, 1.0)
    label_smoothing: float = 0.1
    weight_decay: float = 1e-4
    noise_std: float = 0.05
    dropout: float | None = None
    patience: int = 5
    min_epochs: int = 10  # early stopping never ends a run before this epoch
    val_fraction: float = 0.1
    early_stopping: bool = False  # fixed epochs on all training data (docs/cnn.md, ablation)
    val_metric: Literal["balanced_accuracy", "macro_f1"] = "balanced_accuracy"
    augment_chunk: int = 1024
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # docs/cnn.md, Speed: bf16 measured
    threads: int | None = None
    channels_last: bool = True
    micro_batch: int | None = None
    progress: bool = True
    tta: bool = False
    member_seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "augment", tuple(self.augment))
        object.__setattr__(self, "zoom", tuple(float(z) for z in self.zoom))
        if int(self.epochs) < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("balance", self.balance, BALANCES)
        if not 0 <= self.undersample_drop < 1:
            raise ValueError(f"undersample_drop must be in [0, 1), got {self.undersample_drop}")
        if self.focal_gamma < 0:
            raise ValueError(f"focal_gamma must be >= 0, got {self.focal_gamma}")
        bad = [a for a in self.augment if a not in AUGMENTS]
        if bad:
            raise ValueError(f"unknown augmentation {bad[0]!r}; choose from {', '.join(AUGMENTS)}")
        if len(self.zoom) != 2 or not 0 < self.zoom[0] <= self.zoom[1] <= 1:
            raise ValueError(f"zoom must be (lo, hi) with 0 < lo <= hi <= 1, got {self.zoom}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if int(self.patience) < 1:
            raise ValueError(f"patience must be at least 1, got {self.patience}")
        if int(self.min_epochs) < 1:
            raise ValueError(f"min_epochs must be at least 1, got {self.min_epochs}")
        if not 0 < self.val_fraction < 0.5:
            raise ValueError(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")
        _choice("val_metric", self.val_metric, VAL_METRICS)
        if int(self.augment_chunk) < 1:
            raise ValueError(f"augment_chunk must be at least 1, got {self.augment_chunk}")
        _choice("device", self.device, DEVICES)
        if self.micro_batch is not None and int(self.micro_batch) < 1:
            raise ValueError(f"micro_batch must be at least 1, got {self.micro_batch}")
        _choice("precision", self.precision, PRECISIONS)
        if self.threads is not None and int(self.threads) < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if isinstance(self.member_seed, bool) or int(self.member_seed) < 0:
            raise ValueError(f"member_seed must be an integer >= 0, got {self.member_seed}")

    @property
    def learning_rate(self) -> float:
        """``lr`` or the optimizer's default (1e-3 Adam, 1e-2 SGD)."""
        if self.lr is not None:
            return float(self.lr)
        return 1e-3 if self.optimizer == "adam" else 1e-2

    def model_kwargs(self) -> dict[str, float]:
        """Dropout overrides for ``create_model`` (empty: the model's own rates)."""
        if self.dropout is None:
            return {}
        return {"drop_dense": float(self.dropout), "drop_conv": float(self.dropout) / 2}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["augment"] = list(self.augment)
        d["zoom"] = list(self.zoom)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        if "augment" in d:
            d["augment"] = tuple(d["augment"])
        if "zoom" in d:
            d["zoom"] = tuple(d["zoom"])
        return cls(**d)
