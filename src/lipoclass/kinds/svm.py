"""The SVM kind: ``models.svm.SVMEstimator`` on measured particle features.

Config ``SVMConfig``; a member is ``members/fold<k>.joblib`` (the fitted estimator);
calibration: Platt scaling inside each fold's SVC (nothing fitted afterwards); members read
the dataset (features), not prepared images; particles without a feature row are measured
again without their own mask (automatic mask, else centred disk) as the fallback."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lipoclass.errors import LipoclassError
from lipoclass.kinds.base import Fallback, Kind

if TYPE_CHECKING:
    from lipoclass.data import ParticleDataset, Prepared, PrepConfig
    from lipoclass.spec import Estimator, ModelSpec

__all__ = ["KIND", "SVMKind"]

#: rough CPU seconds per training particle of a fold (features once, then the inner grid
#: search; 2-core reference machine, docs/studies.md): measured 1.6-2.5 ms in
#: ``--recipe auto``'s SVM candidate at 254-500 particles (docs/cnn.md, Cost: estimate
#: against the wall clock; 1.25 ms before)
SVM_S_PER_TRAIN_PARTICLE = 2.0e-3


class SVMKind(Kind):
    name = "svm"
    member_suffix = ".joblib"
    config_key = "svm"
    reads_prepared = False

    # ------------------------------------------------------------------ spec side

    def model_names(self) -> tuple[str, ...]:
        return ("svm",)

    def help_text(self) -> str:
        return ("'svm': a support-vector machine on measured particle features (size, shape, "
                "grey-level profile)")  # fmt: skip

    def config_class(self) -> type:
        from lipoclass.models.svm import SVMConfig

        return SVMConfig

    def build(self, model: str, options: dict[str, Any]) -> tuple[PrepConfig, Any]:
        from lipoclass.data import PrepConfig
        from lipoclass.models.svm import SVMConfig

        balance = options.get("balance")
        size = options.get("size")
        try:  # SVMConfig validates (the one check of --balance and --features)
            svm = SVMConfig(features=options.get("features", "vironova"),
                            balance="weights" if balance is None else balance)  # fmt: skip
            prep = PrepConfig(mode=options.get("mode", "auto"), size=28 if size is None else size)
        except ValueError as exc:
            raise LipoclassError(f"SVM options: {exc}") from None
        return prep, svm

    def make_estimator(self, spec: ModelSpec, seed: int, classes: tuple[str, ...]) -> Estimator:
        from lipoclass.models.svm import SVMEstimator

        return SVMEstimator(spec.config, seed, classes)

    def with_features_csv(self, config: Any, path: str) -> Any:
        from dataclasses import replace

        return replace(config, features_csv=str(path))

    def wants_importance(self, config: Any) -> bool:
        return bool(config.importance)

    def describe_input(self, spec: ModelSpec) -> str | None:
        return None  # the SVM measures features; the image preparation does not apply

    def plan(self, spec: ModelSpec, train_counts: Sequence[np.ndarray]) -> tuple[str, float]:
        n = sum(int(c.sum()) for c in train_counts)
        return "", n * SVM_S_PER_TRAIN_PARTICLE

    # ------------------------------------------------------------------ model folder

    def save_member(self, estimator: Any, path: Path) -> None:
        import joblib

        joblib.dump(estimator, path)

    def calibrate(self, raw: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        return raw, {"method": "sigmoid"}  # Platt scaling inside each fold's SVC

    def load_member(
        self, path: Path, info: dict[str, Any], prep: PrepConfig, classes: tuple[str, ...]
    ) -> Any:
        import joblib

        try:
            est = joblib.load(path)
        except Exception as exc:
            raise LipoclassError(f"{path}: cannot load the SVM ({exc})") from None
        got = tuple(getattr(est, "classes", ()))
        if got != classes:
            rel = path.relative_to(path.parent.parent).as_posix()
            raise LipoclassError(
                f"{path.parent.parent / 'model.json'}: classes {list(classes)} differ from "
                f"{rel}'s {list(got)}"
            )
        return est

    def runners(self, members: Sequence[Any], info: dict[str, Any], backend: Any) -> list[Any]:
        raise LipoclassError(
            "an SVM model measures particles from a dataset, not from prepared images "
            "('lipoclass crop' the micrographs first, then predict the crops)"
        )

    def usable(
        self, members: Sequence[Any], dataset: ParticleDataset, prep: PrepConfig
    ) -> np.ndarray:
        return np.asarray(members[0].usable(dataset), dtype=bool)

    def predict_dataset(
        self,
        members: Sequence[Any],
        dataset: ParticleDataset,
        prep: PrepConfig,
        proba_prepared: Callable[[Prepared], np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
        ok = self.usable(members, dataset, prep)
        pos = np.flatnonzero(ok)
        probs = np.zeros((len(pos), len(members[0].classes)))
        if len(pos):
            probs = np.mean([np.asarray(e.predict_proba(dataset, pos)) for e in members], axis=0)
        why = members[0].unusable_reasons(dataset)
        skipped = [(p.id, why.get(p.id, "no usable features"))
                   for p, k in zip(dataset.particles, ok) if not k]  # fmt: skip
        return np.asarray(probs, dtype=np.float64), pos.astype(np.int64), skipped

    def member_proba_dataset(
        self,
        members: Sequence[Any],
        dataset: ParticleDataset,
        idx: np.ndarray,
        prep: PrepConfig,
        member_proba: Callable[[np.ndarray, np.ndarray], np.ndarray],
    ) -> np.ndarray | None:
        ok = self.usable(members, dataset, prep)
        if not ok[idx].all():
            return None
        return np.stack([np.asarray(e.predict_proba(dataset, idx)) for e in members])

    def fallback(
        self,
        members: Sequence[Any],
        dataset: ParticleDataset,
        idx: np.ndarray,
        prep: PrepConfig,
        proba_prepared: Callable[[Prepared], np.ndarray],
        n_classes: int,
    ) -> Fallback:
        """Features computed without the particle's own mask
        (``lipoclass.features.features_without_mask``: automatic mask, else centred disk),
        predicted by the fold SVMs. Only for computed feature sets (``vironova``, ``all``):
        precomputed features cannot be recomputed, so none."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        cfg = members[0].config
        if cfg.features_csv is not None or cfg.features == "precomputed":
            return Fallback.none(n_classes)
        from lipoclass.features import features_without_mask

        table, how = features_without_mask(dataset, idx)
        table = table.select(cfg.features)
        want = tuple(getattr(members[0], "feature_names", ()) or table.names)
        if tuple(table.names) != want:
            raise LipoclassError("the SVM's features differ from the fallback's")
        ok = np.isfinite(table.values).all(axis=1)  # (m,)
        failed = list(table.failed) + [
            (table.ids[r], "without its mask: non-finite feature value")
            for r in np.flatnonzero(~ok)
        ]  # fmt: skip
        X = table.values[ok]
        probs = np.zeros((len(X), n_classes))
        if len(X):
            probs = np.mean([np.asarray(e.predict_proba_values(X)) for e in members], axis=0)
        return Fallback(probs, np.asarray(table.index)[ok], [h for h, k in zip(how, ok) if k],
                        failed)  # fmt: skip


KIND = SVMKind()
