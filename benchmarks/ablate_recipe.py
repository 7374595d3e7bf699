"""Ablation of the default CNN recipe (issue "Deploy what was evaluated", point 4).

Runs k-fold cross-validation of named recipe variants on one dataset through the public API
and prints one table row per (config, seed): macro-F1 as mean +- std over folds (what
metrics.json reports), pooled out-of-fold macro-F1 (f1_score over all pooled predictions, what
``shared/bench/plain_cnn.py`` prints), balanced accuracy (fold mean and pooled), the mean
number of epochs trained and the wall time.

A config is a ``+``-joined list of tokens applied left to right to the *current defaults*
(``build_spec(model)``, i.e. ``lipoclass cv DATASET --model lipnet4``):

* a macro name from ``MACROS`` below (e.g. ``noes``, ``plainlike``, ``cand``);
* ``field=value`` for any ``TrainConfig`` or ``PrepConfig`` field (value parsed after the
  field's current type; tuples as ``a,b`` or ``a/b``, ``-`` for an empty tuple),
  e.g. ``default+batch_size=64+size=32``;
* ``affine1`` (experiment-only): rotation folded into the one ``RandomAffine`` (a single
  bilinear resampling per image, as plain_cnn.py does) instead of ``RandomRotation``
  followed by ``RandomAffine`` (two resamplings); done by swapping the augmentation builder
  the ``Trainer`` calls, nothing in src/ changes;
* ``hold`` (experiment-only): hold back ``val_fraction`` of each training fold (stratified,
  as early stopping does) but train without early stopping, to separate "less data" from
  "early stopping".

Usage (from the repository root, importing a frozen snapshot of src/)::

    PYTHONPATH=/work/ablation/src .venv/bin/python benchmarks/ablate_recipe.py \\
        ../shared/data/vesicle-em-7-13 default default+noes plainlike --seeds 0 1 2

Options: ``--folds`` (5), ``--seeds`` (0), ``--threads`` (torch threads, 2), ``--model``
(lipnet4), ``--jsonl FILE`` (append one JSON record per run).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score

from lipoclass.data import PrepConfig, load_dataset
from lipoclass.evaluate import CVConfig, ModelSpec, build_spec, cross_validate
from lipoclass.train import TrainConfig

# Named groups of tokens. "plainlike" = shared/bench/plain_cnn.py expressed in lipoclass knobs
# (32 px surround stretched, rotate/shift/flip, no noise, batch 64, constant lr, no early
# stopping, no weight decay, label smoothing 0.1, Adam 1e-3, 30 epochs).
MACROS: dict[str, list[str]] = {
    "default": [],
    "noes": ["early_stopping=False"],
    "sel": ["patience=1000"],  # keep the best validation epoch, never stop early
    "s32": ["size=32"],
    "stretch": ["aspect=stretch"],
    "rsf": ["augment=rotate,shift,flip"],
    "noshear": ["augment=rotate,shift,flip,zoom"],
    "nozoom": ["augment=rotate,shift,flip,shear"],
    "nonoise": ["noise_std=0"],
    "bs64": ["batch_size=64"],
    "const": ["schedule=none"],
    "wd0": ["weight_decay=0"],
    "ls0": ["label_smoothing=0"],
    "plainlike": ["noes", "s32", "stretch", "rsf", "nonoise", "bs64", "const", "wd0"],
}

_CLASSES = {f.name: TrainConfig for f in dataclasses.fields(TrainConfig)}
_CLASSES.update({f.name: PrepConfig for f in dataclasses.fields(PrepConfig)})


def _parse_value(cur: object, text: str) -> object:
    if isinstance(cur, bool):
        return text.lower() in ("1", "true", "yes", "on")
    if isinstance(cur, tuple):
        if text in ("-", ""):
            return ()
        parts = text.replace("/", ",").split(",")
        return tuple(float(p) for p in parts) if cur and isinstance(cur[0], float) else tuple(parts)
    if cur is None and text.lower() == "none":
        return None
    if isinstance(cur, int):
        return int(text)
    if isinstance(cur, float) or cur is None:
        try:
            return float(text)
        except ValueError:
            return text
    return text


def _expand(tokens: list[str]) -> list[str]:
    out: list[str] = []
    for t in tokens:
        out += _expand(MACROS[t]) if t in MACROS else [t]
    return out


class _HoldoutSpec(ModelSpec):
    """ModelSpec whose estimators drop a stratified ``val_fraction`` of their training part
    before fitting without early stopping (the data early stopping would hold back)."""

    def make_estimator(self, seed: int, classes: tuple[str, ...] = ()):  # type: ignore[override]
        est = super().make_estimator(seed, classes)
        frac = self.train.val_fraction if self.train is not None else 0.1
        inner_fit = est.fit

        def fit(dataset, train_idx):
            from lipoclass.train.trainer import stratified_split

            idx = np.asarray(train_idx)
            y = dataset.labels[idx]
            tr, _ = stratified_split(y, frac, np.random.default_rng(seed))
            return inner_fit(dataset, idx[tr])

        est.fit = fit  # type: ignore[method-assign]
        return est


def _single_affine(augment, zoom=(0.8, 1.0)):
    """build_augmentation with rotation inside the one RandomAffine (one resampling)."""
    import math

    import kornia.augmentation as K
    from torch import nn

    items = set(augment)
    ops: list[nn.Module] = []
    if items & {"rotate", "shift", "shear", "zoom"}:
        ops.append(
            K.RandomAffine(
                degrees=180.0 if "rotate" in items else 0.0,
                translate=(0.1, 0.1) if "shift" in items else None,
                scale=(1.0 / zoom[1], 1.0 / zoom[0]) if "zoom" in items else None,
                shear=(0.0, math.degrees(math.atan(0.2))) if "shear" in items else None,
                resample="bilinear", padding_mode="zeros", p=1.0,
            )
        )  # fmt: skip
    if "flip" in items:
        ops += [K.RandomHorizontalFlip(p=0.5), K.RandomVerticalFlip(p=0.5)]
    if not ops:
        return nn.Identity()
    return K.AugmentationSequential(*ops, data_keys=["input"])


def _use_single_affine(on: bool) -> None:
    import lipoclass.train.trainer as trainer_mod
    from lipoclass.train import strategies

    trainer_mod.build_augmentation = _single_affine if on else strategies.build_augmentation


def make_spec(config: str, model: str, threads: int) -> ModelSpec:
    spec = build_spec(model)
    train = dataclasses.replace(spec.config, progress=False, threads=threads)
    prep = spec.prep
    hold = False
    for tok in _expand(config.split("+")):
        if tok == "hold":
            hold = True
            continue
        if tok == "affine1":
            continue  # handled in run_one
        if "=" not in tok:
            raise SystemExit(f"unknown token {tok!r} in config {config!r}")
        key, val = tok.split("=", 1)
        cls = _CLASSES.get(key)
        if cls is TrainConfig:
            train = dataclasses.replace(train, **{key: _parse_value(getattr(train, key), val)})
        elif cls is PrepConfig:
            prep = dataclasses.replace(prep, **{key: _parse_value(getattr(prep, key), val)})
        else:
            raise SystemExit(f"unknown field {key!r} in config {config!r}")
    if hold:
        train = dataclasses.replace(train, early_stopping=False)
        return _HoldoutSpec(model, prep, train, None)
    return ModelSpec(model, prep, train)


def run_one(dataset, config: str, model: str, seed: int, folds: int, threads: int) -> dict:
    spec = make_spec(config, model, threads)
    _use_single_affine("affine1" in _expand(config.split("+")))
    t0 = time.perf_counter()
    out = Path("/tmp/ablate_recipe_runs") / f"{config.replace('/', '_')}_s{seed}"
    res = cross_validate(dataset, spec, CVConfig(folds=folds, seed=seed), out=out, progress=False)
    dt = time.perf_counter() - t0
    m = res.metrics
    cfg = json.loads((out / "config.json").read_text())
    fold_info = cfg.get("fold_info") or []
    epochs = [f["epochs_run"] for f in fold_info if "epochs_run" in f]
    best = [f["best_epoch"] for f in fold_info if "best_epoch" in f]
    per_fold_f1 = []
    for k in np.unique(res.fold):
        sel = res.fold == k
        per_fold_f1.append(
            f1_score(res.y_true[sel], res.y_pred[sel], average="macro",
                     labels=range(len(res.classes)), zero_division=0)
        )  # fmt: skip
    return {
        "config": config,
        "seed": seed,
        "mode": spec.for_dataset(dataset).prep.mode,
        "f1_mean": m["macro_f1"],
        "f1_std": m["macro_f1_std"],
        "f1_folds": [round(float(v), 4) for v in per_fold_f1],
        "f1_pooled": float(f1_score(res.y_true, res.y_pred, average="macro")),
        "bacc_mean": m["balanced_accuracy"],
        "bacc_pooled": float(balanced_accuracy_score(res.y_true, res.y_pred)),
        "per_class_f1_pooled": [
            round(float(v), 3) for v in f1_score(res.y_true, res.y_pred, average=None)
        ],
        "epochs_mean": float(np.mean(epochs)) if epochs else float("nan"),
        "best_epoch_mean": float(np.mean(best)) if best else float("nan"),
        "seconds": dt,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset")
    ap.add_argument("configs", nargs="+")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="lipnet4")
    ap.add_argument("--jsonl", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.dataset)
    print(f"{'config':<52} seed  F1 mean+-std    pooled  bAcc(mean/pool) ep    s", flush=True)
    for config in args.configs:
        for seed in args.seeds:
            r = run_one(ds, config, args.model, seed, args.folds, args.threads)
            print(
                f"{config:<52} {seed:>4}  {r['f1_mean']:.3f}+-{r['f1_std']:.3f}  "
                f"{r['f1_pooled']:.3f}   {r['bacc_mean']:.3f}/{r['bacc_pooled']:.3f}  "
                f"{r['epochs_mean']:4.1f} {r['seconds']:5.0f}",
                flush=True,
            )
            if args.jsonl:
                with open(args.jsonl, "a") as fh:
                    fh.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
