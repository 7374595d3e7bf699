"""The stack kind: a model folder made by ``--recipe auto`` whose prediction combines the
predictions of other model folders (its *bases*, e.g. a CNN and the SVM).

Layout (docs/cnn.md, Self-configuring recipe)::

    MODEL/model.json             kind "stack", the stack record ("stack": combiner, bases)
    MODEL/members/fold0.json     the combiner: "mean", or "logistic" with the standardisation,
                                 coefficients and intercepts of a multinomial logistic
                                 regression on the bases' log-probabilities + size features
    MODEL/candidates/<name>/     each base: a complete model folder (its own fold models,
                                 calibration, out-of-fold table)

Each base predicts through its own ``EnsemblePredictor`` (the mean of its calibrated fold
members); the combiner turns those into the stack's probabilities. Loading reads JSON and
the bases' folders: no training code."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lipoclass.errors import LipoclassError
from lipoclass.kinds.base import Backend, Fallback, Kind, MemberRunner

if TYPE_CHECKING:
    from lipoclass.data import ParticleDataset, Prepared, PrepConfig
    from lipoclass.spec import Estimator, ModelSpec

__all__ = [
    "KIND",
    "LOG_FLOOR",
    "StackConfig",
    "StackKind",
    "StackMember",
    "combine",
    "group_means",
    "stack_inputs",
]

#: probabilities are clipped to this before the logarithm (the stack's inputs)
LOG_FLOOR = 1e-4


@dataclass(frozen=True)
class StackConfig:
    """The stack record: ``combiner`` ("logistic" or "mean"), ``bases`` (model-folder paths
    relative to the stack folder) and ``size_features`` (whether the logistic combiner reads
    ``lipoclass.models.size_features`` of each particle)."""

    combiner: str = "logistic"
    bases: tuple[str, ...] = ()
    size_features: bool = True

    def __post_init__(self) -> None:
        if self.combiner not in ("logistic", "mean"):
            raise ValueError(f"combiner must be 'logistic' or 'mean', got {self.combiner!r}")


def stack_inputs(base_probs: Sequence[np.ndarray], size: np.ndarray | None) -> np.ndarray:
    """The logistic combiner's input (n, F): each base's log-probabilities (clipped at
    ``LOG_FLOOR``) side by side, then the size features (n, K) when given."""
    cols = [np.log(np.clip(np.asarray(p, dtype=np.float64), LOG_FLOOR, 1.0)) for p in base_probs]
    if size is not None:
        cols.append(np.asarray(size, dtype=np.float64))
    return np.concatenate(cols, axis=1)


def group_means(
    base_probs: Sequence[np.ndarray], groups: Sequence[Sequence[int]] | None
) -> list[np.ndarray]:
    """The bases' probabilities with each group of bases (indices into ``base_probs``; the
    seed members of one CNN configuration) replaced by its mean, in group order; ``groups``
    None or empty: the bases as given."""
    if not groups:
        return [np.asarray(p, dtype=np.float64) for p in base_probs]
    return [
        np.asarray(np.mean([np.asarray(base_probs[int(i)], dtype=np.float64) for i in g], axis=0))
        for g in groups
    ]


def combine(
    stacker: dict[str, Any], base_probs: Sequence[np.ndarray], size: np.ndarray | None
) -> np.ndarray:
    """The stack's probabilities (n, C) from its bases' probabilities and size features;
    with ``groups`` in the record, each group of bases is averaged first (``group_means``)."""
    base_probs = group_means(base_probs, stacker.get("groups"))
    if stacker["combiner"] == "mean":
        return np.asarray(np.mean([np.asarray(p, dtype=np.float64) for p in base_probs], axis=0))
    z = stack_inputs(base_probs, size if stacker.get("size_features") else None)
    z = (z - np.asarray(stacker["mean"])) / np.asarray(stacker["scale"])
    logits = z @ np.asarray(stacker["coef"]).T + np.asarray(stacker["intercept"])
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


@dataclass
class StackMember:
    """The loaded combiner with its loaded base model folders (``LoadedModel``)."""

    stacker: dict[str, Any]
    bases: list[Any]
    classes: tuple[str, ...]


def _size_rows(dataset: ParticleDataset, prep: PrepConfig, index: np.ndarray) -> np.ndarray:
    """Size features (n, K) of the particles at ``index`` (prepared with ``prep``)."""
    from lipoclass.data import prepare
    from lipoclass.models import size_features

    prepared = prepare(dataset, prep, cache=False)
    row_of = {int(p): r for r, p in enumerate(prepared.index)}
    meta = np.full((len(index), prepared.meta.shape[1]), np.nan)
    for r, i in enumerate(index):
        if int(i) in row_of:
            meta[r] = prepared.meta[row_of[int(i)]]
    return size_features(meta)


class StackKind(Kind):
    name = "stack"
    member_suffix = ".json"
    config_key = "stack"
    reads_prepared = False

    def model_names(self) -> tuple[str, ...]:
        return ()  # made by '--recipe auto', never by --model

    def config_class(self) -> type:
        return StackConfig

    def config_fields(self) -> set[str]:
        return set()  # nothing a study may set: stacks come from '--recipe auto' only

    def config_from_dict(self, d: dict[str, Any]) -> Any:
        return StackConfig(
            str(d.get("combiner", "logistic")),
            tuple(d.get("bases", ())),
            bool(d.get("size_features", True)),
        )

    def build(self, model: str, options: dict[str, Any]) -> tuple[PrepConfig, Any]:
        raise LipoclassError("stack models are made by '--recipe auto', not by --model")

    def make_estimator(self, spec: ModelSpec, seed: int, classes: tuple[str, ...]) -> Estimator:
        raise LipoclassError("stack models are made by '--recipe auto', not cross-validated alone")

    def describe_input(self, spec: ModelSpec) -> str | None:
        return None

    def save_member(self, estimator: Any, path: Path) -> None:
        path.write_text(json.dumps(estimator, indent=1))

    def load_member(
        self, path: Path, info: dict[str, Any], prep: PrepConfig, classes: tuple[str, ...]
    ) -> Any:
        from lipoclass.ensemble.folder import load_model  # the bases are model folders

        root = path.parent.parent
        try:
            stacker = json.loads(path.read_text())
            combiner = stacker["combiner"]
            bases = list((info.get("stack") or {}).get("bases", ()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LipoclassError(f"{path}: unreadable stack combiner ({exc})") from None
        if combiner not in ("logistic", "mean") or not bases:
            raise LipoclassError(f"{root / 'model.json'}: a stack needs a combiner and bases")
        groups = stacker.get("groups")
        if groups is not None and (
            not isinstance(groups, list)
            or sorted(int(i) for g in groups for i in g) != list(range(len(bases)))
        ):
            raise LipoclassError(f"{path}: 'groups' must use each of the {len(bases)} bases once")
        if combiner == "logistic":
            for key in ("mean", "scale", "coef", "intercept"):
                vals = np.asarray(stacker.get(key, []), dtype=np.float64)
                if not vals.size or not np.isfinite(vals).all():
                    raise LipoclassError(f"{path}: '{key}' missing or not finite")
        loaded = [load_model(root / str(b)) for b in bases]
        for b, m in zip(bases, loaded):
            if tuple(m.classes) != tuple(classes):
                raise LipoclassError(
                    f"{root / str(b)}: classes {list(m.classes)} differ from the stack's "
                    f"{list(classes)}"
                )
        return StackMember(stacker, loaded, tuple(classes))

    def calibrate_oof(self, p: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        return p  # oof.csv holds the stack's cross-fitted probabilities

    def bases(self, members: Sequence[Any]) -> list[Any]:
        return list(members[0].bases)

    def runners(
        self, members: Sequence[Any], info: dict[str, Any], backend: Backend
    ) -> list[MemberRunner]:
        raise LipoclassError(
            "a stack model combines models that measure particles from a dataset (the SVM), "
            "not prepared images ('lipoclass crop' the micrographs first, then predict the crops)"
        )

    def usable(
        self, members: Sequence[Any], dataset: ParticleDataset, prep: PrepConfig
    ) -> np.ndarray:
        ok = np.ones(len(dataset), dtype=bool)
        for b in members[0].bases:
            ok &= np.asarray(b.usable(dataset), dtype=bool)
        return ok

    def _base_outputs(
        self, member: StackMember, dataset: ParticleDataset
    ) -> tuple[list[np.ndarray], np.ndarray, list[tuple[str, str]]]:
        """Each base's probabilities on the particles every base predicts as given."""
        outs = [b.predictor().predict_dataset(dataset) for b in member.bases]
        common = outs[0][1]
        for _, index, _ in outs[1:]:
            common = np.intersect1d(common, index)
        probs = []
        for p, index, _ in outs:
            pos = {int(i): r for r, i in enumerate(index)}
            probs.append(p[[pos[int(i)] for i in common]] if len(common) else p[:0])
        skipped: dict[str, str] = {}
        for _, _, sk in outs:
            for pid, why in sk:
                skipped.setdefault(pid, why)
        ids = {dataset.particles[int(i)].id for i in common}
        for pid in (p.id for p in dataset.particles):
            if pid not in ids and pid not in skipped:
                skipped[pid] = "not usable by every model of the stack"
        return probs, common.astype(np.int64), list(skipped.items())

    def predict_dataset(
        self,
        members: Sequence[Any],
        dataset: ParticleDataset,
        prep: PrepConfig,
        proba_prepared: Callable[[Prepared], np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
        m: StackMember = members[0]
        probs, index, skipped = self._base_outputs(m, dataset)
        n_classes = len(m.classes)
        if not len(index):
            return np.zeros((0, n_classes)), index, skipped
        size = _size_rows(dataset, prep, index) if m.stacker.get("size_features") else None
        return combine(m.stacker, probs, size), index, skipped

    def member_proba_dataset(
        self,
        members: Sequence[Any],
        dataset: ParticleDataset,
        idx: np.ndarray,
        prep: PrepConfig,
        member_proba: Callable[[np.ndarray, np.ndarray], np.ndarray],
    ) -> np.ndarray | None:
        return None  # one combined member: no fold-member spread to report

    def fallback(
        self,
        members: Sequence[Any],
        dataset: ParticleDataset,
        idx: np.ndarray,
        prep: PrepConfig,
        proba_prepared: Callable[[Prepared], np.ndarray],
        n_classes: int,
    ) -> Fallback:
        """The first base (the planned CNN) alone, as given where it can, else with its own
        fallback (the automatic mask)."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        first = members[0].bases[0]
        pred = first.predictor()
        sub = dataset.subset(idx)
        p, index, _ = pred.predict_dataset(sub)
        got = set(int(i) for i in index)
        rest = np.array([r for r in range(len(idx)) if r not in got], dtype=np.int64)
        fb = pred.fallback(sub, rest) if len(rest) else Fallback.none(n_classes)
        probs = np.concatenate([p.reshape(-1, n_classes), fb.probs.reshape(-1, n_classes)])
        where = np.concatenate([idx[index], idx[np.asarray(fb.index, dtype=np.int64)]])
        how = ["first model of the stack alone"] * len(index) + [
            f"first model of the stack alone, {h}" for h in fb.how
        ]
        return Fallback(probs, where.astype(np.int64), how, list(fb.failed))


KIND = StackKind()
