"""The CNN ``Trainer``: architecture-agnostic training loop with early stopping.

Speed on CPU: the prepared images stay in memory (on the GPU: on the device); each epoch's
index order comes from the sampler, and augmentation runs on whole chunks of
``augment_chunk`` images (one fused affine warp per 1024 images instead of per 32-batch)
before the chunk is sliced into batches. Evaluation runs under ``torch.inference_mode`` in
large batches.

Reproducibility: all torch randomness (weight init, dropout, augmentation parameters,
input noise) comes from torch's default generator, which ``seeded_torch`` forks, seeds and
restores afterwards, so the caller's global RNG state is left untouched and one seed gives
one result on one device. Numpy randomness (sampling, splits) uses ``default_rng(seed)``.
On CUDA some kernels (max-pool / grid-sample backward, atomic adds) are nondeterministic."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from lipoclass import metrics as M
from lipoclass.errors import LipoclassError
from lipoclass.models.inference import predict_logits, resolve_device
from lipoclass.threads import pick_threads, torch_threads
from lipoclass.train.callbacks import Callback, FitState, default_callbacks
from lipoclass.train.config import TrainConfig
from lipoclass.train.precision import make_precision
from lipoclass.train.strategies import build_augmentation, make_loss, make_sampler

__all__ = [
    "History",
    "Trainer",
    "resolve_device",
    "seeded_torch",
    "stratified_split",
    "torch_threads",
]


@contextlib.contextmanager
def seeded_torch(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Run a block with torch's default generator(s) seeded to ``seed``, restoring the previous
    global state on exit (``torch.random.fork_rng``), so library code never changes the
    caller's RNG state while layers that only use the default generator (dropout, init,
    kornia) are still reproducible."""
    devices = []
    if device is not None and device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(int(seed))
        for d in devices:
            torch.cuda.default_generators[d].manual_seed(int(seed))
        yield


def stratified_split(
    y: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Positions (train, val): ``round(fraction * n_c)`` but at least 1 per class go to
    validation, for every class with at least 2 members (a single member stays in training)."""
    train, val = [], []
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        k = max(1, round(fraction * len(members))) if len(members) >= 2 else 0
        val.append(members[:k])
        train.append(members[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _metric(y: np.ndarray, pred: np.ndarray, name: str, n_classes: int) -> float:
    """Balanced accuracy or macro F1 of the validation predictions, with the same definitions
    as the cross-validation report (``lipoclass.metrics``, numpy only)."""
    cm = M.confusion_matrix(y, pred, n_classes)
    if name == "balanced_accuracy":
        return float(M.balanced_accuracy(cm))
    return float(M.macro_f1(cm))


@dataclass
class History:
    """Per-epoch records (``epoch, train_loss, val_loss, val_metric, lr, seconds``) and the
    epoch whose weights were kept (``best_epoch``, 1-based)."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    metric: str = "balanced_accuracy"
    stopped_early: bool = False
    images_per_s: float = 0.0
    precision: str = "fp32"  # resolved training precision ("fp32" / "bf16" / "fp16")
    threads: int | None = None  # torch CPU threads used (None: not set, e.g. CUDA)

    def to_dict(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "metric": self.metric,
            "stopped_early": self.stopped_early,
            "images_per_s": self.images_per_s,
            "precision": self.precision,
            "threads": self.threads,
        }


def _dense_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(weights of nn.Linear layers, everything else): weight decay goes to dense layers only
    (thesis 5.1: decay on convolutions produced dead filters)."""
    dense_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    dense = [p for p in model.parameters() if id(p) in dense_ids and p.requires_grad]
    other = [p for p in model.parameters() if id(p) not in dense_ids and p.requires_grad]
    return dense, other


class Trainer:
    """Trains any ``nn.Module`` mapping (B,1,S,S) [+ aux (B,K)] to logits (B,C).

    The imbalance sampler, loss and augmentation are strategy objects built from the config;
    best state, early stopping and the progress bar are callbacks (``default_callbacks``),
    and ``callbacks`` adds more (e.g. ``Checkpoint``), called after those. The trainer
    knows nothing about architectures."""

    def __init__(self, config: TrainConfig, callbacks: Sequence[Callback] = ()) -> None:
        self.config = config
        self.callbacks = list(callbacks)
        self.device = resolve_device(config.device)
        self.sampler = make_sampler(config)
        self.augment = build_augmentation(config.augment, config.zoom)
        self.precision = make_precision(config.precision, self.device, config.amp)

    def _optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        cfg = self.config
        dense, other = _dense_params(model)
        groups = [
            {"params": dense, "weight_decay": cfg.weight_decay},
            {"params": other, "weight_decay": 0.0},
        ]
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(
                groups, lr=cfg.learning_rate, momentum=cfg.momentum, nesterov=cfg.nesterov
            )
        # one fused kernel for all parameters (CPU and CUDA, torch >= 2.4) instead of a
        # Python loop over parameter tensors: the step of a small CNN is overhead-bound
        return torch.optim.Adam(groups, lr=cfg.learning_rate, **_adam_impl())  # type: ignore[arg-type]

    def _scheduler(self, opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler | None:
        cfg = self.config
        if cfg.schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
        if cfg.schedule == "step":
            return torch.optim.lr_scheduler.StepLR(
                opt, step_size=max(1, cfg.epochs // 3), gamma=0.1
            )
        return None

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Training forward pass + loss (bf16 / fp16 autocast or nothing)."""
        return self.precision.train_autocast()

    def _eval_autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Validation and prediction: float32 (``Precision.eval_autocast``)."""
        return self.precision.eval_autocast()

    @torch.inference_mode()
    def predict_logits(
        self,
        model: nn.Module,
        x: torch.Tensor | np.ndarray,
        aux: torch.Tensor | np.ndarray | None = None,
        batch_size: int = 1024,
    ) -> np.ndarray:
        """Logits (N, C) float32 in eval mode, batched."""
        return predict_logits(model, x, aux, self.device, batch_size, self._eval_autocast)

    def fit(
        self,
        model: nn.Module,
        x: np.ndarray,
        y: np.ndarray,
        x_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
        *,
        aux: np.ndarray | None = None,
        aux_val: np.ndarray | None = None,
        seed: int = 0,
        num_classes: int | None = None,
    ) -> History:
        """Train ``model`` in place on x (N,1,S,S) float32 / y (N,) int64 (and optional aux
        (N,K)); with validation data and ``early_stopping`` keep the best epoch's weights
        (by ``val_metric``, ties broken by lower validation loss) and stop after ``patience``
        epochs without improvement. ``num_classes`` (the model's outputs) defaults to the
        largest label + 1: pass it when the top class may be absent from ``y``. Returns the
        history."""
        cfg = self.config
        rng = np.random.default_rng(seed)
        if num_classes is None:
            num_classes = int(
                max(y.max(), -1 if y_val is None or len(y_val) == 0 else y_val.max()) + 1
            )
        threads = cfg.threads
        if threads is None and self.device.type == "cpu":
            threads = pick_threads()  # fewer threads while other processes hold cores
        with seeded_torch(int(rng.integers(2**31 - 1)), self.device), torch_threads(threads):
            hist = self._fit(model, x, y, x_val, y_val, aux, aux_val, rng, num_classes)
        hist.threads = threads
        return hist

    def _fit(self, model, x, y, x_val, y_val, aux, aux_val, rng, num_classes) -> History:
        cfg, dev = self.config, self.device
        xs, ys = self.sampler.setup(x, y, rng, aux)  # SMOTE adds rows here; others return x, y
        fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        model.to(dev, memory_format=fmt)
        data = _Tensors(
            x=torch.as_tensor(np.ascontiguousarray(xs), dtype=torch.float32, device=dev),
            y=torch.as_tensor(ys, dtype=torch.int64, device=dev),
            aux=None if aux is None else torch.as_tensor(aux, dtype=torch.float32, device=dev),
            y_np=ys,
        )
        has_val = x_val is not None and y_val is not None and len(y_val) > 0
        xv = torch.as_tensor(x_val, dtype=torch.float32, device=dev) if has_val else None
        av = None if aux_val is None else torch.as_tensor(aux_val, dtype=torch.float32, device=dev)
        self.augment = self.augment.to(dev)
        scaler = torch.amp.GradScaler(
            "cuda", enabled=dev.type == "cuda" and self.precision.needs_grad_scaler
        )
        opt = self._optimizer(model)
        sched = self._scheduler(opt)
        loss_fn = make_loss(cfg, ys, num_classes, reduction="none").to(dev)  # per sample (B,)
        hist = History(metric=cfg.val_metric, precision=self.precision.name)
        state = FitState(model, hist, has_val, cfg.epochs, optimizer=opt)
        callbacks = [*default_callbacks(cfg), *self.callbacks]
        for cb in callbacks:
            cb.on_fit_start(state)
        seen, train_time = 0, 0.0
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            lr = opt.param_groups[0]["lr"]
            total, count = self._train_epoch(model, data, opt, scaler, loss_fn, rng, fmt)
            if sched is not None:
                sched.step()
            dt = time.perf_counter() - t0
            seen, train_time = seen + count, train_time + dt
            if not math.isfinite(total):
                raise LipoclassError(
                    f"training diverged: the loss became non-finite (NaN or infinity) in epoch "
                    f"{epoch}; check the images for NaN pixels (lipoclass info) or lower --lr"
                )
            rec = {"epoch": epoch, "train_loss": total / max(count, 1), "lr": lr, "seconds": dt}
            if xv is not None and y_val is not None:
                rec.update(self._validate(model, xv, av, y_val))
            hist.epochs.append(rec)
            state.epoch, state.record = epoch, rec
            for cb in callbacks:
                cb.on_epoch_end(state)
            if state.stop:
                break
        for cb in callbacks:
            cb.on_fit_end(state)
        model.to(memory_format=torch.contiguous_format).eval()
        hist.images_per_s = seen / train_time if train_time > 0 else math.nan
        return hist

    def _train_epoch(
        self, model: nn.Module, data: _Tensors, opt: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler, loss_fn: nn.Module, rng: np.random.Generator,
        fmt: torch.memory_format,
    ) -> tuple[float, int]:  # fmt: skip
        """One epoch: the sampler's index order, augmented in chunks, optimised in batches
        (micro-batches with summed gradients on CPU). Returns (summed loss, rows seen)."""
        cfg, dev = self.config, self.device
        class_w = getattr(loss_fn, "weight", None)  # (C,) or None
        bs = cfg.batch_size
        micro = bs if dev.type == "cuda" or cfg.micro_batch is None else min(bs, cfg.micro_batch)
        chunk = max(bs, (cfg.augment_chunk // bs) * bs)
        model.train()
        idx = torch.as_tensor(self.sampler.epoch_indices(data.y_np, rng), device=dev)
        total, count = torch.zeros((), device=dev), 0
        for c0 in range(0, len(idx), chunk):
            ci = idx[c0 : c0 + chunk]
            with torch.no_grad():
                xc = self.augment(data.x[ci])  # (n,1,S,S), one fused warp per chunk
                if cfg.noise_std > 0:
                    xc = xc + cfg.noise_std * torch.randn_like(xc)
                xc = xc.contiguous(memory_format=fmt)
            yc = data.y[ci]
            ac = None if data.aux is None else data.aux[ci]
            for b0 in range(0, len(ci), bs):
                yb = yc[b0 : b0 + bs]
                # normaliser of the batch mean: sum of class weights (weighted CE) or B
                denom = class_w[yb].sum() if class_w is not None else float(len(yb))
                opt.zero_grad(set_to_none=True)
                for m0 in range(b0, b0 + len(yb), micro):  # micro-batches, summed grads
                    xm, ym = xc[m0 : m0 + micro], yc[m0 : min(m0 + micro, b0 + bs)]
                    xm = xm[: len(ym)]
                    with self._autocast():
                        out = model(xm) if ac is None else model(xm, ac[m0 : m0 + len(ym)])
                        loss = loss_fn(out.float(), ym).sum() / denom
                    scaler.scale(loss).backward()
                    total += loss.detach() * len(yb)  # no host sync per batch
                scaler.step(opt)
                scaler.update()
                count += len(yb)
        return float(total), count  # one host sync per epoch

    def _validate(
        self, model: nn.Module, xv: torch.Tensor, av: torch.Tensor | None, y_val: np.ndarray
    ) -> dict[str, float]:
        """``val_loss`` (plain cross-entropy) and ``val_metric`` of the validation data."""
        dev = self.device
        logits = torch.as_tensor(predict_logits(model, xv, av, dev, 1024, self._eval_autocast))
        pred = logits.argmax(1).numpy()
        return {
            "val_loss": float(nn.CrossEntropyLoss()(logits, torch.as_tensor(y_val))),
            "val_metric": _metric(y_val, pred, self.config.val_metric, logits.shape[1]),
        }


@dataclass
class _Tensors:
    """The training set on the device: images (N,1,S,S), labels (N,) (also as numpy, for the
    sampler) and optional aux features (N,K)."""

    x: torch.Tensor
    y: torch.Tensor
    aux: torch.Tensor | None
    y_np: np.ndarray


def _adam_impl() -> dict[str, bool]:
    """``fused=True`` where this torch has a fused Adam for the device, else ``foreach``."""
    import inspect

    if "fused" in inspect.signature(torch.optim.Adam).parameters:
        return {"fused": True}
    return {"foreach": True}
