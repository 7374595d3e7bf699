"""CNN training: ``TrainConfig``, the architecture-agnostic ``Trainer`` with imbalance /
loss / augmentation strategies, ``CNNEstimator`` (estimator protocol for cross-validation)
and model folders (``train_model`` / ``load_model``)."""

from lipoclass.train.config import AUGMENTS, BALANCES, TrainConfig
from lipoclass.train.estimator import CNNEstimator
from lipoclass.train.folder import FORMAT_VERSION, LoadedModel, load_model, train_model
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
    "FORMAT_VERSION",
    "CNNEstimator",
    "FocalLoss",
    "History",
    "LoadedModel",
    "NoSampler",
    "OversampleSampler",
    "SmoteSampler",
    "TrainConfig",
    "Trainer",
    "UndersampleSampler",
    "build_augmentation",
    "load_model",
    "make_loss",
    "make_sampler",
    "seeded_torch",
    "stratified_split",
    "train_model",
]
