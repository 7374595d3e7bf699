"""``CNNEstimator``: a registry CNN + ``Trainer`` behind the estimator protocol of
docs/architecture.md (``classes``, ``usable``, ``fit``, ``predict_proba`` over particle
indices), so ``cross_validate`` treats CNNs and the SVM alike."""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
from torch import nn

from lipoclass.data import ParticleDataset, Prepared, PrepConfig, load_dataset, prepare
from lipoclass.errors import LipoclassError
from lipoclass.models import create_model, size_features
from lipoclass.models.inference import predict_logits
from lipoclass.train.calibration import softmax
from lipoclass.train.config import TrainConfig
from lipoclass.train.trainer import History, Trainer, seeded_torch, stratified_split

__all__ = ["CNNEstimator", "prepared_for"]

_CACHE: dict[tuple[int, PrepConfig], tuple[weakref.ref[ParticleDataset], Prepared]] = {}


def prepared_for(dataset: ParticleDataset, prep: PrepConfig) -> Prepared:
    """``prepare(dataset, prep)`` memoised in memory per dataset object (and on disk by
    ``prepare`` itself), so k folds do not re-hash and re-load the images."""
    key = (id(dataset), prep)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is dataset:
        return hit[1]
    out = prepare(dataset, prep)
    for k in [k for k, (ref, _) in _CACHE.items() if ref() is None]:
        del _CACHE[k]
    if len(_CACHE) >= 8:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = (weakref.ref(dataset), out)
    return out


def _rows(prep: Prepared, dataset: ParticleDataset, idx: np.ndarray) -> np.ndarray:
    """Rows of ``prep`` for dataset positions ``idx``; LipoclassError for unusable ones."""
    lookup = np.full(len(dataset), -1, dtype=np.int64)
    lookup[prep.index] = np.arange(len(prep.index))
    idx = np.asarray(idx, dtype=np.int64)
    rows = lookup[idx]
    if (rows < 0).any():
        p = dataset.particles[int(idx[np.flatnonzero(rows < 0)[0]])]
        raise LipoclassError(
            f"particle {p.id} (particles.csv row {p.row}) cannot be used in input mode "
            f"'{prep.config.mode}' (see the skipped-particle warning)"
        )
    return rows


class CNNEstimator:
    """Registry CNN trained by ``Trainer``; inputs prepared by ``lipoclass.data.prepare``.

    ``fit`` carves a stratified validation split (``val_fraction``, >= 1 per class) from the
    training indices for early stopping when ``train.early_stopping``; synthetic data
    (``train.synthetic``) is added to the training part only. After ``fit``: ``model``,
    ``history``, ``classes``."""

    def __init__(
        self, model_name: str, prep: PrepConfig, train: TrainConfig, seed: int = 0
    ) -> None:
        self.model_name = model_name
        self.prep = prep
        self.train = train
        self.seed = int(seed)
        self.classes: tuple[str, ...] = ()
        self.model: nn.Module | None = None
        self.history: History | None = None
        self.val_rows: np.ndarray = np.zeros(0, dtype=np.int64)

    @property
    def train_seed(self) -> int:
        """The seed training uses: ``seed``, or with ``train.member_seed`` k >= 1 an
        independent seed derived from (``seed``, k) (a seed member on the same folds)."""
        k = int(self.train.member_seed)
        if k == 0:
            return self.seed
        return int(np.random.SeedSequence([self.seed & 0xFFFFFFFF, k]).generate_state(1)[0])

    def get_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "prep": self.prep, "train": self.train,
                "seed": self.seed}  # fmt: skip

    def usable(self, dataset: ParticleDataset) -> np.ndarray:
        """(N,) bool: the particles ``prepare`` keeps in this input mode."""
        ok = np.zeros(len(dataset), dtype=bool)
        ok[prepared_for(dataset, self.prep).index] = True
        return ok

    def unusable_reasons(self, dataset: ParticleDataset) -> dict[str, str]:
        """{id: reason} for the particles ``prepare`` skips in this input mode."""
        return dict(prepared_for(dataset, self.prep).skipped)

    def fit_info(self) -> dict[str, Any]:
        """Training summary for config.json: epochs run, best epoch, early stop, speed and the
        resolved precision / CPU threads (``train.precision`` may be "auto")."""
        if self.history is None:
            return {}
        h = self.history
        return {"epochs_run": len(h.epochs), "best_epoch": h.best_epoch,
                "stopped_early": h.stopped_early, "train_images_per_s": round(h.images_per_s, 1),
                "val_metric": h.metric, "precision": h.precision,
                "threads": h.threads, "train_seed": self.train_seed}  # fmt: skip

    def _aux(self, prep: Prepared, rows: np.ndarray) -> np.ndarray | None:
        if self.model is not None and getattr(self.model, "needs_aux", False):
            return size_features(prep.meta[rows])
        return None

    def _synthetic(self, classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        assert self.train.synthetic is not None
        syn = load_dataset(self.train.synthetic)
        sp = prepared_for(syn, self.prep)
        lab = sp.y >= 0
        names = [syn.classes[i] for i in sp.y[lab]]
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise LipoclassError(
                f"{self.train.synthetic}: synthetic class {unknown[0]!r} is not a class of the "
                f"dataset ({', '.join(classes)})"
            )
        y = np.array([classes.index(n) for n in names], dtype=np.int64)
        return sp.x[lab], y, size_features(sp.meta[lab])

    def fit(self, dataset: ParticleDataset, train_idx: np.ndarray) -> CNNEstimator:
        """Train on the labelled, usable particles among ``train_idx``."""
        prep = prepared_for(dataset, self.prep)
        rows = _rows(prep, dataset, train_idx)
        rows = rows[prep.y[rows] >= 0]
        if len(rows) == 0:
            raise LipoclassError(f"{dataset.root}: no labelled particles to train on")
        self.classes = tuple(dataset.classes)
        rng = np.random.default_rng(self.train_seed)
        cfg = self.train
        if cfg.early_stopping:
            tr, va = stratified_split(prep.y[rows], cfg.val_fraction, rng)
            tr_rows, va_rows = rows[tr], rows[va]
        else:
            tr_rows, va_rows = rows, rows[:0]
        self.val_rows = va_rows
        trainer = Trainer(cfg)
        with seeded_torch(self.train_seed, trainer.device):  # weight initialisation
            self.model = create_model(
                self.model_name, len(self.classes), self.prep.size, **cfg.model_kwargs()
            )
        x, y = prep.x[tr_rows], prep.y[tr_rows]
        aux = self._aux(prep, tr_rows)
        if cfg.synthetic:
            sx, sy, saux = self._synthetic(self.classes)
            x, y = np.concatenate([x, sx]), np.concatenate([y, sy])
            aux = None if aux is None else np.concatenate([aux, saux])
        if aux is not None:
            self.model.set_aux_stats(aux)  # type: ignore[operator]
        self.history = trainer.fit(
            self.model, x, y, prep.x[va_rows], prep.y[va_rows],
            aux=aux, aux_val=self._aux(prep, va_rows), seed=int(rng.integers(2**31 - 1)),
            num_classes=len(self.classes),
        )  # fmt: skip
        self.model.cpu().eval()
        return self

    def decision_logits(self, dataset: ParticleDataset, idx: np.ndarray) -> np.ndarray:
        """Raw logits (len(idx), C) for usable particles ``idx``."""
        if self.model is None:
            raise LipoclassError("CNNEstimator: call fit() before predicting")
        prep = prepared_for(dataset, self.prep)
        rows = _rows(prep, dataset, idx)
        dev = next(self.model.parameters()).device
        return predict_logits(self.model, prep.x[rows], self._aux(prep, rows), dev)

    def predict_proba(self, dataset: ParticleDataset, idx: np.ndarray) -> np.ndarray:
        """Softmax probabilities (len(idx), C) in ``classes`` order; with ``train.tta`` the
        mean of the softmax over the 8 dihedral views (flips / quarter turns)."""
        if len(idx) == 0:
            return np.zeros((0, len(self.classes)))
        if not self.train.tta:
            return softmax(self.decision_logits(dataset, idx))
        import torch

        from lipoclass.models.inference import DIHEDRAL, dihedral

        if self.model is None:
            raise LipoclassError("CNNEstimator: call fit() before predicting")
        prep = prepared_for(dataset, self.prep)
        rows = _rows(prep, dataset, idx)
        dev = next(self.model.parameters()).device
        x, aux = torch.from_numpy(np.ascontiguousarray(prep.x[rows])), self._aux(prep, rows)
        views = [dihedral(x, k, f).contiguous() for k, f in DIHEDRAL]
        return np.mean([softmax(predict_logits(self.model, v, aux, dev)) for v in views], axis=0)
