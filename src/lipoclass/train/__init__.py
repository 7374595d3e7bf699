"""CNN training: ``TrainConfig``, the architecture-agnostic ``Trainer`` with imbalance /
loss / augmentation strategies and callbacks, and ``CNNEstimator`` (the estimator protocol for
cross-validation). Model folders are written by ``lipoclass.crossfit`` and read by
``lipoclass.ensemble``."""

from lipoclass.train.callbacks import BestState, Callback, Checkpoint, EarlyStopping, ProgressBar
from lipoclass.train.config import AUGMENTS, BALANCES, TrainConfig
from lipoclass.train.estimator import CNNEstimator
from lipoclass.train.strategies import (
    FocalLoss,
    NoSampler,
    OversampleSampler,
    SmoteSampler,
    UndersampleSampler,
    build_augmentation,
    make_loss,
    make_sampler,
)
from lipoclass.train.trainer import History, Trainer, seeded_torch, stratified_split

__all__ = [
    "AUGMENTS",
    "BALANCES",
    "BestState",
    "CNNEstimator",
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "FocalLoss",
    "History",
    "NoSampler",
    "OversampleSampler",
    "ProgressBar",
    "SmoteSampler",
    "TrainConfig",
    "Trainer",
    "UndersampleSampler",
    "build_augmentation",
    "make_loss",
    "make_sampler",
    "seeded_torch",
    "stratified_split",
]
