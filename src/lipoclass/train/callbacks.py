"""Trainer callbacks (as in minGPT's trainer): what happens around the training loop that is
not the loop itself - keeping the best epoch's weights, early stopping, the progress bar and
checkpoints. The ``Trainer`` calls ``on_fit_start`` / ``on_epoch_end`` / ``on_fit_end`` of
each callback in order; a callback reads and updates the shared ``FitState`` (setting
``state.stop`` ends training after the current epoch)."""

from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "BestState",
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "FitState",
    "ProgressBar",
    "default_callbacks",
]


@dataclass
class FitState:
    """What callbacks see: the model being trained, whether validation data exists, the
    epoch just finished (1-based) with its record (``train_loss``, ``lr``, ``seconds`` and,
    with validation data, ``val_loss`` / ``val_metric``), the history (``History``) and the
    stop flag. ``optimizer`` is set while training (checkpoints)."""

    model: nn.Module
    history: Any  # lipoclass.train.trainer.History
    has_val: bool
    epochs: int
    epoch: int = 0
    record: dict[str, float] = field(default_factory=dict)
    stop: bool = False
    optimizer: torch.optim.Optimizer | None = None


class Callback:
    """Base class: every hook does nothing."""

    def on_fit_start(self, state: FitState) -> None:
        """Before the first epoch."""

    def on_epoch_end(self, state: FitState) -> None:
        """After each epoch (``state.record`` is already in ``state.history.epochs``)."""

    def on_fit_end(self, state: FitState) -> None:
        """After the last epoch (also after an early stop)."""


def _improved(best: tuple[float, float] | None, rec: dict[str, float]) -> bool:
    """Higher ``val_metric``, ties broken by lower ``val_loss``."""
    return best is None or (rec["val_metric"], -rec["val_loss"]) > best


class BestState(Callback):
    """Tracks the best epoch (by validation metric, ties by lower validation loss) in
    ``history.best_epoch``; with ``restore`` (early stopping on) the best epoch's weights are
    loaded back at the end. Without validation data the last epoch is the best one."""

    def __init__(self, restore: bool) -> None:
        self.restore = restore
        self.best_key: tuple[float, float] | None = None
        self.best_state: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, state: FitState) -> None:
        if not state.has_val:
            state.history.best_epoch = state.epoch
            return
        rec = state.record
        if _improved(self.best_key, rec):
            self.best_key = (rec["val_metric"], -rec["val_loss"])
            state.history.best_epoch = state.epoch
            if self.restore:
                self.best_state = copy.deepcopy(state.model.state_dict())

    def on_fit_end(self, state: FitState) -> None:
        if self.restore and self.best_state is not None:
            state.model.load_state_dict(self.best_state)
        elif state.has_val:
            state.history.best_epoch = len(state.history.epochs)


class EarlyStopping(Callback):
    """Stops after ``patience`` epochs without a better validation metric, never before
    epoch ``min_epochs``; only with validation data."""

    def __init__(self, patience: int, min_epochs: int) -> None:
        self.patience, self.min_epochs = int(patience), int(min_epochs)
        self.best_key: tuple[float, float] | None = None
        self.bad_epochs = 0

    def on_epoch_end(self, state: FitState) -> None:
        if not state.has_val:
            return
        rec = state.record
        if _improved(self.best_key, rec):
            self.best_key, self.bad_epochs = (rec["val_metric"], -rec["val_loss"]), 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs >= self.patience and state.epoch >= self.min_epochs:
            state.history.stopped_early = True
            state.stop = True


class ProgressBar(Callback):
    """A tqdm bar over epochs with the training loss (and validation metric), only on a
    terminal: redirected to a log file it would be one endless line."""

    def __init__(self) -> None:
        self.bar: Any = None

    def on_fit_start(self, state: FitState) -> None:
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=state.epochs, desc="train", unit="epoch", file=sys.stderr,
                            leave=False)  # fmt: skip

    def on_epoch_end(self, state: FitState) -> None:
        if self.bar is None:
            return
        rec = state.record
        self.bar.update(1)
        self.bar.set_postfix_str(
            f"loss {rec['train_loss']:.3f}"
            + (f" val {rec['val_metric']:.3f}" if "val_metric" in rec else "")
        )

    def on_fit_end(self, state: FitState) -> None:
        if self.bar is not None:
            self.bar.close()


class Checkpoint(Callback):
    """Writes ``{"epoch", "model", "optimizer"}`` state dicts to ``path`` every ``every``
    epochs and after the last one (temporary name, then rename: a kill leaves the previous
    checkpoint whole)."""

    def __init__(self, path: str | os.PathLike[str], every: int = 1) -> None:
        if int(every) < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        self.path, self.every = Path(path), int(every)

    def _save(self, state: FitState) -> None:
        opt = state.optimizer
        blob = {"epoch": state.epoch, "model": state.model.state_dict(),
                "optimizer": None if opt is None else opt.state_dict()}  # fmt: skip
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        torch.save(blob, tmp)
        os.replace(tmp, self.path)

    def on_epoch_end(self, state: FitState) -> None:
        if state.epoch % self.every == 0:
            self._save(state)

    def on_fit_end(self, state: FitState) -> None:
        if state.epoch % self.every != 0:
            self._save(state)


def default_callbacks(cfg: Any) -> list[Callback]:
    """The callbacks a ``TrainConfig`` asks for: best state (restored at the end when early
    stopping is on), early stopping (when on) and the progress bar (when on)."""
    cbs: list[Callback] = [BestState(restore=cfg.early_stopping)]
    if cfg.early_stopping:
        cbs.append(EarlyStopping(cfg.patience, cfg.min_epochs))
    if cfg.progress:
        cbs.append(ProgressBar())
    return cbs
