"""Shared pieces of the command line: the one-line-error parser, typed option converters
and option groups used by several commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lipoclass.choices import (
    AUGMENTS,
    BALANCES_CNN,
    BALANCES_SVM,
    CANDIDATE_FINDERS,
    DETECT_TRAIN_THRESHOLDS,
    DEVICES,
    EXECUTORS,
    FEATURE_SETS,
    INPUT_MODES,
    OPTIMIZERS,
    PRECISIONS,
    RING_THRESHOLD,
    SEED_MAX,
)
from lipoclass.errors import LipoclassError

__all__ = [
    "FIXED_ONLY",
    "AddCommand",
    "Parser",
    "add_detect_options",
    "add_executor_options",
    "add_model_options",
    "add_particle_source_options",
    "augment_list",
    "detect_config",
    "folds",
    "fraction",
    "length",
    "new_output_folder",
    "particle_source",
    "positive_float",
    "positive_int",
    "seed",
    "spec_from_args",
    "threshold_or_auto",
]

AddCommand = Callable[..., Any]
"""``add(name, handler, help, description)`` -> the new subcommand's parser."""


class Parser(argparse.ArgumentParser):
    """argparse that reports a wrong flag as one line and exit 2 (its default) without usage
    noise spread over many lines."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")  # prog: "lipoclass [command]"

    def format_help(self) -> str:
        # help built from a registry (e.g. --model from the model kinds) is filled in only
        # when shown: the registries import torch, which parsing must not
        for action in self._actions:
            make = getattr(action, "lazy_help", None)
            if make is not None:
                action.help = make()
        return super().format_help()


def augment_list(text: str) -> tuple[str, ...]:
    text = text.strip().lower()
    if text in ("none", ""):
        return ()
    if text == "all":
        return AUGMENTS
    items = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in items if t not in AUGMENTS]
    if bad:
        raise argparse.ArgumentTypeError(
            f"unknown augmentation {bad[0]!r}; choose from {', '.join(AUGMENTS)}, all or none"
        )
    return items


def _parse(text: str, cast: type[int] | type[float]) -> Any:
    """``cast(text)``, or argparse's one-line error naming what was expected."""
    try:
        return cast(text)
    except ValueError:
        what = "an integer" if cast is int else "a number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise argparse.ArgumentTypeError(message)


def positive_int(text: str) -> int:
    v: int = _parse(text, int)
    _check(v >= 1, f"{text!r} must be at least 1")
    return v


def seed(text: str) -> int:
    v: int = _parse(text, int)
    _check(0 <= v <= SEED_MAX, f"{text!r} is out of range: use 0 to {SEED_MAX}")
    return v


def fraction(text: str) -> float:
    v: float = _parse(text, float)
    _check(0 < v <= 1, f"{text!r} must be in (0, 1], e.g. 0.95")
    return v


def folds(text: str) -> int:
    v: int = _parse(text, int)
    _check(v >= 2, f"{text!r}: cross-validation needs at least 2 folds")
    return v


def positive_float(text: str) -> float:
    v: float = _parse(text, float)
    _check(v > 0, f"{text!r} must be positive")
    return v


#: options that configure one model as given (the fixed recipe): giving one selects
#: --recipe fixed; --recipe auto plans them itself and refuses them
FIXED_ONLY = ("model", "size", "balance", "features_csv", "tta", "mode", "batch_size",
              "optimizer", "lr", "augment", "features")  # fmt: skip


def add_model_options(p: argparse.ArgumentParser, *, default_model: str | None) -> None:
    """Options shared by ``cv`` and ``train``; ``--model`` lists every registered model kind's
    models (``lipoclass.kinds.models_help``). ``--model`` is left None when not given (fine
    with ``--recipe auto``); ``args.model_default`` holds ``default_model``."""
    flags = ", ".join(f"--{k.replace('_', '-')}" for k in FIXED_ONLY[1:])
    default = (f" (giving --model, {flags} selects --recipe fixed"
               + (f"; with --recipe fixed the default is {default_model})" if default_model
                  else ")"))  # fmt: skip
    p.set_defaults(model_default=default_model)
    model = p.add_argument("--model", default=None, help="the model to fit" + default)

    def model_help() -> str:
        from lipoclass.kinds import models_help

        return models_help() + default

    model.lazy_help = model_help  # type: ignore[attr-defined]  # see Parser.format_help
    g = p.add_argument_group("input preparation (CNN)")
    g.add_argument(
        "--mode",
        choices=INPUT_MODES,
        default="auto",
        help="what the network sees: surround = the whole particle image with its "
        "surroundings; crop = cut to the particle's mask outline (bounding box); masked = "
        "cropped and everything outside the mask set to zero (usually best); auto (default): "
        "masked when every particle has a mask, else surround",
    )
    g.add_argument("--size", type=positive_int, default=None, help="images are resized to "
                   "SIZE x SIZE pixels (default: the model's own, 28 for LipNet-4, 32 for "
                   "LipNet-6)")  # fmt: skip
    g = p.add_argument_group("training (CNN)")
    g.add_argument("--epochs", type=positive_int, default=30, help="passes over the training "
                   "particles; every fold runs all of them on all its training particles "
                   "(no early stopping: docs/cnn.md, ablation) (default: 30)")  # fmt: skip
    g.add_argument("--batch-size", type=positive_int, default=32,
                   help="particles per training step (default: 32)")  # fmt: skip
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="adam",
                   help="training algorithm (default: adam)")  # fmt: skip
    g.add_argument("--lr", type=positive_float, default=None,
                   help="learning rate: step size of training; lower it if training "
                   "diverges (default: 1e-3 adam, 1e-2 sgd)")  # fmt: skip
    g.add_argument(
        "--balance",
        default=None,
        help="how to handle rare classes. oversample: show rare-class particles more often "
        "(CNN default); undersample: use fewer particles of common classes; weights: count "
        "errors on rare classes more (SVM default); smote: add synthetic in-between examples "
        "of rare classes; focal: a loss that focuses on hard particles (CNN only); none. "
        f"CNN: {', '.join(BALANCES_CNN)}; SVM: {', '.join(BALANCES_SVM)}",
    )
    g.add_argument(
        "--augment",
        type=augment_list,
        default=AUGMENTS,
        help="random changes applied to training images so the network does not depend on "
        f"orientation or position: comma list of {','.join(AUGMENTS)}, or all / none "
        "(default: all)",
    )
    g.add_argument("--device", choices=DEVICES, default="auto",
                   help="where to compute: cuda = NVIDIA GPU, cpu, or auto (GPU when "
                   "present) (default: auto)")  # fmt: skip
    g.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="number format while training: bf16 (bfloat16, about 1.7x faster on "
                   "processors with AVX-512 BF16 or AMX and on recent GPUs), fp32, or auto "
                   "(bf16 where the hardware computes it natively, else fp32); predictions "
                   "are always computed in fp32 (default: auto; bf16 and fp32 gave the same "
                   "accuracy in our tests)")  # fmt: skip
    g = p.add_argument_group("SVM")
    g.add_argument(
        "--features",
        choices=FEATURE_SETS,
        default="vironova",
        help="measurements the SVM uses: vironova = area, circularity, shape moments, edge "
        "profile, grey-level histogram and internal texture (the set of the Vironova "
        "analysis software); all = every computed measurement; precomputed = the numeric "
        "columns of particles.csv (default: %(default)s)",
    )
    p.add_argument("--seed", type=seed, default=0, help="random seed: the same seed gives "
                   f"the same folds and results (0 to {SEED_MAX}, default: 0)")  # fmt: skip


def spec_from_args(args: argparse.Namespace) -> Any:
    from lipoclass.evaluate import build_spec

    return build_spec(
        args.model,
        mode=args.mode,
        size=args.size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        balance=args.balance,
        augment=args.augment,
        device=args.device,
        features=args.features,
        precision=args.precision,
    )


def add_executor_options(p: Any, what: str) -> None:
    """--workers / --executor / --address, defined once for every command whose independent
    tasks (``what``: "folds trained", "study runs", ...) can run in parallel; ``p`` is a parser
    or an argument group."""
    p.add_argument("--workers", type=positive_int, default=1,
                   help=f"{what} at once in local processes (with --executor ray and "
                   "no --address: the CPUs of the Ray instance started here) "
                   "(default: 1)")  # fmt: skip
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help=f"where the {what.split()[0]} run: local = this computer, ray = a Ray "
                   "compute cluster (default: local)")  # fmt: skip
    p.add_argument("--address", default=None,
                   help="Ray cluster address (default: start Ray on this computer)")  # fmt: skip


def add_detect_options(p: argparse.ArgumentParser, *, verifier: bool = True) -> None:
    """The detector's options; ``verifier=False`` (``detect-train``, which makes a verifier)
    leaves out --verifier and --min-score and titles the group "candidate finder"."""
    title = "detection (crop --detect, detect)" if verifier else "candidate finder (as in detect)"
    g = p.add_argument_group(title)
    g.add_argument("--min-diameter", type=length, default=(20.0, "nm"), metavar="LEN",
                   help="smallest liposome, e.g. 20nm or 16px (default: 20nm)")  # fmt: skip
    g.add_argument("--max-diameter", type=length, default=(300.0, "nm"), metavar="LEN",
                   help="largest liposome, e.g. 300nm or 400px (default: 300nm)")  # fmt: skip
    if not verifier:
        grid = ", ".join(f"{t:g}" for t in DETECT_TRAIN_THRESHOLDS)
        g.add_argument("--threshold", type=threshold_or_auto, default=RING_THRESHOLD,
                       help="how clear a ring must be to become a candidate (robust z-score; "
                       "lower finds fainter liposomes and more false candidates, which the "
                       "verifier must then reject), or 'auto': try "
                       f"{grid}, one verifier each, and keep the one that finds your annotated "
                       "liposomes best (out-of-fold F1 over all of them; three to five times "
                       "the training time; on two simulated labs of 8 micrographs it chose "
                       "3.5 and found liposomes on new micrographs slightly worse than 4, so "
                       "4 stays the default); the verifier records the threshold and 'detect "
                       "--verifier' uses it (default: %(default)s)")  # fmt: skip
        return
    g.add_argument("--threshold", type=positive_float, default=None,
                   help="how clear a ring must be (robust z-score; lower finds fainter "
                   "liposomes and more false ones; default: the threshold the --verifier "
                   f"was trained with, {RING_THRESHOLD:g} for 'default' and 'none')")  # fmt: skip
    g.add_argument("--verifier", default="default", metavar="PATH",
                   help="liposome verifier that rejects candidates that are not liposomes "
                   "(ice, debris, film edges, gaps between liposomes): a folder from "
                   "'lipoclass detect-train', 'default' (trained on synthetic micrographs) "
                   "or 'none' (keep every candidate)")  # fmt: skip
    g.add_argument("--min-score", type=float, default=None, metavar="S",
                   help="reject candidates whose liposome score (0-1) is below S (default: "
                   "the verifier's own threshold)")  # fmt: skip
    g.add_argument("--finder", choices=CANDIDATE_FINDERS, default="ring",
                   help="how liposomes are found: 'ring' (a ring filter, then the verifier) "
                   "or 'ring+learned' (also a small neural network's confident finds that "
                   "the ring filter missed, less solid particles such as ice: on "
                   "micrographs of a simulator it never saw it found more liposomes (recall "
                   "0.54 -> 0.65) at about the same precision (0.95 -> 0.94), on our own "
                   "simulator's it was less precise, and detection takes about a quarter "
                   "longer (3.4 s instead of 2.7 s for 4096 x 4096 px on 2 cores); "
                   "'detect --truth' scores both on your own annotated micrographs and says "
                   "whether one is clearly better there; default: %(default)s)")  # fmt: skip


def length(text: str) -> tuple[float, str]:
    """'20nm', '16px' or '20' (nm) -> (value, unit)."""
    t = text.strip().lower()
    unit = "px" if t.endswith("px") else "nm"
    num = t[:-2] if t.endswith(("px", "nm")) else t
    try:
        v = float(num)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a length like 20nm or 16px") from None
    _check(v > 0, f"{text!r} must be positive")
    return v, unit


def threshold_or_auto(text: str) -> float | str:
    """detect-train --threshold: 'auto' or a positive number."""
    return "auto" if text.strip().lower() == "auto" else positive_float(text)


def _candidate_threshold(given: float | None, verifier: str) -> float:
    """--threshold as given, else the candidate threshold the ``verifier`` was trained with
    (``detect-train`` records it), else ``RING_THRESHOLD``; a one-line warning when a given
    one differs from the verifier's."""
    from lipoclass.micrograph.verify import candidate_threshold

    recorded = candidate_threshold(verifier)
    if given is None:
        return RING_THRESHOLD if recorded is None else recorded
    if recorded is not None and given != recorded:
        print(f"lipoclass: warning: --threshold {given:g} differs from the candidate threshold "
              f"{recorded:g} the verifier was trained with (leave --threshold out to use "
              "it)", file=sys.stderr)  # fmt: skip
    return given


def detect_config(args: argparse.Namespace, threshold: float | None = None) -> Any:
    """The ``DetectConfig`` of the options of ``add_detect_options`` (``threshold``: instead
    of --threshold)."""
    from lipoclass.micrograph import DetectConfig

    (dmin, umin), (dmax, umax) = args.min_diameter, args.max_diameter
    if umin != umax:
        raise LipoclassError("--min-diameter and --max-diameter need the same unit (nm or px)")
    verifier = getattr(args, "verifier", "none")
    given = args.threshold if threshold is None else threshold
    try:
        return DetectConfig(min_diameter=dmin, max_diameter=dmax, unit=umin,
                            threshold=_candidate_threshold(given, verifier),
                            verifier=verifier,
                            min_score=getattr(args, "min_score", None),
                            finder=getattr(args, "finder", "ring"))  # fmt: skip
    except ValueError as exc:
        raise LipoclassError(f"detect: {exc}") from None


def new_output_folder(path: str, what: str = "--out") -> Path:
    """``path`` as a Path, after checking that it does not exist yet and can be created (one
    line naming it otherwise; ``what``: the option or word the message suggests changing)."""
    from lipoclass.outputs import check_output_folder

    if Path(path).exists():
        raise LipoclassError(f"{path}: already exists (choose another {what})")
    return check_output_folder(path)


def add_particle_source_options(choose_one: Any, p: Any, *, predict: bool) -> None:
    """Where the particles on micrographs are: --labels / --coco / --coords / --detect on
    ``choose_one`` (a group that allows one of them), --classes and --diameter on ``p``;
    ``predict``: for 'predict' (detector by default, --classes are true classes reported
    beside the predictions) rather than 'crop'."""
    choose_one.add_argument("--labels", metavar="PATH",
                            help="instance label image (one micrograph) or folder of label "
                            "images named like the micrographs (mic.tif, mic_masks.png, "
                            "...)")  # fmt: skip
    choose_one.add_argument("--coco", metavar="JSON",
                            help="COCO annotations (polygons, RLE or boxes)")  # fmt: skip
    choose_one.add_argument("--coords", metavar="FILE",
                            help="CSV with micrograph,x,y and diameter or w,h (pixels; "
                            "optional label), or a RELION/cryoSPARC .star particle "
                            "file")  # fmt: skip
    choose_one.add_argument("--detect", action="store_true",
                            help="find the liposomes with the detector (the default)" if predict
                            else "find the liposomes automatically (see 'lipoclass "
                            "detect')")  # fmt: skip
    p.add_argument("--classes", metavar="CSV",
                   help="with --labels: " + ("true class per instance (reported beside the "
                   "predictions)" if predict else "class per instance (columns instance,label "
                   "and optionally micrograph)"))  # fmt: skip
    p.add_argument("--diameter", type=positive_float, default=None, metavar="PX",
                   help="particle diameter in pixels where the coordinates give none "
                   "(needed for STAR files)")  # fmt: skip


def particle_source(args: argparse.Namespace, mics: list[Path]) -> tuple[Any, list[Path]]:
    """The particle source the options of ``add_particle_source_options`` name (at most one;
    default: the detector) and the micrographs (with --coco and none given: the COCO
    file's)."""
    from lipoclass.micrograph import CocoSource, CoordinateSource, DetectSource, LabelImageSource

    picked = [o for o in ("labels", "coco", "coords") if getattr(args, o)]
    picked += ["detect"] * bool(args.detect)
    if len(picked) > 1:
        raise LipoclassError(f"--{picked[0]} and --{picked[1]}: give one annotation source")
    if args.classes and not args.labels:
        raise LipoclassError("--classes goes with --labels (a class per label-image instance)")
    source: Any
    if args.labels:
        source = LabelImageSource(Path(args.labels), mics, Path(args.classes) if args.classes
                                  else None)  # fmt: skip
    elif args.coco:
        source = CocoSource(Path(args.coco), mics)
        mics = mics or source.micrographs
    elif args.coords:
        source = CoordinateSource(Path(args.coords), mics, diameter=args.diameter)
    else:
        source = DetectSource(detect_config(args))
    return source, mics
