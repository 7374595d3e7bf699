"""The CNN kind: registry networks (``lipoclass.models``) trained by ``lipoclass.train``.

Config ``TrainConfig``; estimator ``train.CNNEstimator``; a member is ``members/fold<k>.pt``
(state dict + model kwargs); calibration: one temperature fitted on all out-of-fold logits;
members run on the fast CPU engine (``lipoclass.models.engine``) or a torch device;
particles without a usable mask are prepared on the automatic mask (the default fallback).
Training code is imported only inside the methods that train or fit."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lipoclass.errors import LipoclassError
from lipoclass.kinds.base import Backend, Kind, MemberRunner

if TYPE_CHECKING:
    from lipoclass.data import PrepConfig
    from lipoclass.spec import Estimator, ModelSpec

__all__ = ["KIND", "CNNKind"]


def _temperature(info: dict[str, Any]) -> float:
    cal = info.get("calibration") or {}
    return float(cal.get("temperature", 1.0)) if cal.get("method") == "temperature" else 1.0


class CNNKind(Kind):
    name = "cnn"
    member_suffix = ".pt"
    config_key = "train"
    supports_tta = True

    # ------------------------------------------------------------------ spec side

    def model_names(self) -> tuple[str, ...]:
        from lipoclass.models import list_models

        return tuple(list_models())

    def help_text(self) -> str:
        from lipoclass.models import model_note

        names = sorted(self.model_names(), key=lambda n: model_note(n) != "recommended")
        listed = [f"{n} ({model_note(n)})" if model_note(n) else n for n in names]
        return f"a neural network (CNN) that looks at the pixels: {', '.join(listed)}"

    def config_class(self) -> type:
        from lipoclass.train import TrainConfig

        return TrainConfig

    def build(self, model: str, options: dict[str, Any]) -> tuple[PrepConfig, Any]:
        from lipoclass.data import PrepConfig
        from lipoclass.models import default_input_size
        from lipoclass.train import TrainConfig

        balance = options.get("balance")
        kw: dict[str, Any] = {}
        if options.get("augment") is not None:
            kw["augment"] = tuple(options["augment"])
        size = options.get("size")
        try:
            prep = PrepConfig(
                mode=options.get("mode", "auto"),
                size=int(default_input_size(model)) if size is None else size,
            )
            train = TrainConfig(
                epochs=options.get("epochs", 30), batch_size=options.get("batch_size", 32),
                optimizer=options.get("optimizer", "adam"), lr=options.get("lr"),
                balance="oversample" if balance is None else balance,  # type: ignore[arg-type]
                device=options.get("device", "auto"),
                precision=options.get("precision", "auto"), **kw,
            )  # fmt: skip
        except ValueError as exc:  # TrainConfig validates (the one check of each option)
            raise LipoclassError(f"CNN options: {exc}") from None
        return prep, train

    def make_estimator(self, spec: ModelSpec, seed: int, classes: tuple[str, ...]) -> Estimator:
        from lipoclass.train import CNNEstimator

        est: Estimator = CNNEstimator(spec.model, spec.prep, spec.config, seed)
        return est

    def plan(self, spec: ModelSpec, train_counts: Sequence[np.ndarray]) -> tuple[str, float]:
        from lipoclass.train.plan import training_seconds  # the one estimate (cv and study)

        cfg = spec.config
        return f" x {cfg.epochs} epochs", training_seconds(train_counts, cfg, spec.prep.size)

    # ------------------------------------------------------------------ model folder: write

    def save_member(self, estimator: Any, path: Path) -> None:
        import torch

        torch.save({"state_dict": estimator.model.state_dict(),
                    "model_kwargs": dict(estimator.model.lipo_config)}, path)  # fmt: skip

    def calibrate(self, raw: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        from lipoclass.models.inference import softmax
        from lipoclass.train.calibration import fit_temperature

        logits = np.log(np.clip(raw, 1e-300, None))  # = logits up to a per-row constant
        temp = fit_temperature(logits, y)
        return softmax(logits, temp), {"method": "temperature", "temperature": temp}

    def folder_info(self, models: dict[int, Any], staging: Path) -> dict[str, Any]:
        first = models[min(models)]
        _plot_curves(models, staging / "training_curves.png")
        return {"model_kwargs": dict(first.model.lipo_config)}

    # ------------------------------------------------------------------ model folder: read

    def load_member(
        self, path: Path, info: dict[str, Any], prep: PrepConfig, classes: tuple[str, ...]
    ) -> Any:
        """One fold network, checked against model.json (name, input size, class count)."""
        import torch

        from lipoclass.models import create_model

        root = path.parent.parent
        rel = path.relative_to(root).as_posix()
        mj = root / "model.json"
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            kw = dict(blob["model_kwargs"])
            name, nc, size = kw.pop("name"), int(kw.pop("num_classes")), kw.pop("in_size")
        except Exception as exc:
            raise LipoclassError(f"{path}: cannot load weights ({exc})") from None
        if name != info["model"]:
            raise LipoclassError(
                f"{mj}: 'model' is {info['model']!r} but {rel} holds a {name!r} network"
            )
        if nc != len(classes):
            raise LipoclassError(f"{mj}: {len(classes)} classes listed but {rel} has {nc} outputs")
        if size is not None and int(size) != int(prep.size):
            raise LipoclassError(f"{mj}: prep size {prep.size} but {rel} was trained at {size} px")
        try:
            module = create_model(name, nc, size, **kw)
            module.load_state_dict(blob["state_dict"])
        except LipoclassError:
            raise
        except Exception as exc:
            raise LipoclassError(f"{path}: cannot load weights ({exc})") from None
        return module.eval()

    def calibrate_oof(self, p: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        from lipoclass.models.inference import softmax

        t = _temperature(info)
        return p if t == 1.0 else softmax(np.log(np.clip(p, 1e-300, None)), t)

    def needs_aux(self, members: Sequence[Any]) -> bool:
        return bool(members) and bool(getattr(members[0], "needs_aux", False))

    def networks(self, members: Sequence[Any]) -> list[Any]:
        return list(members)

    def runners(
        self, members: Sequence[Any], info: dict[str, Any], backend: Backend
    ) -> list[MemberRunner]:
        """CPU: one ``CPUEngine`` per member (traced/channels-last, cache-sized chunks);
        another device: each member moved there for its batch, then back."""
        t = _temperature(info)
        if backend.device == "cpu":
            from lipoclass.models.engine import CPUEngine, EngineConfig

            ecfg = EngineConfig(batch_size=backend.batch_size, precision=backend.precision,
                                threads=backend.threads)  # fmt: skip
            return [CPUEngine(m, t, ecfg).predict_proba for m in members]
        import torch

        from lipoclass.models.inference import predict_logits, softmax

        dev = torch.device(backend.device)

        def run(module: Any) -> MemberRunner:
            def proba(x: np.ndarray, aux: np.ndarray | None) -> np.ndarray:
                module.to(dev)
                try:
                    logits = predict_logits(module, x, aux, dev, backend.batch_size)
                finally:
                    module.cpu()
                return softmax(logits, t)

            return proba

        return [run(m) for m in members]


def _plot_curves(models: dict[int, Any], path: Path) -> None:
    """training_curves.png: each fold model's training loss per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for k in sorted(models):
        h = models[k].history
        if h is None or not h.epochs:
            continue
        ep = [r["epoch"] for r in h.epochs]
        ax.plot(ep, [r["train_loss"] for r in h.epochs], label=f"fold {k + 1}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (augmented, balanced)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


KIND = CNNKind()
