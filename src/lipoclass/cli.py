"""Command line: ``lipoclass <command> ...``. Each subcommand parses typed arguments and calls
one library function; heavy imports happen only after parsing, so ``--help`` is instant."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lipoclass.choices import (
    AUGMENTS,
    BALANCES_CNN,
    BALANCES_SVM,
    DEVICES,
    EXECUTORS,
    FEATURE_SETS,
    INFERENCE_PRECISIONS,
    INPUT_MODES,
    OPTIMIZERS,
    PRECISIONS,
    SEED_MAX,
)
from lipoclass.errors import LipoclassError

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse that reports a wrong flag as one line and exit 2 (its default) without usage
    noise spread over many lines."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")  # prog: "lipoclass [command]"


def _augment_list(text: str) -> tuple[str, ...]:
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


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return v


def _seed(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= v <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range: use 0 to {SEED_MAX}")
    return v


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be in (0, 1], e.g. 0.95")
    return v


def _folds(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: cross-validation needs at least 2 folds")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return v


def _add_model_options(p: argparse.ArgumentParser, *, default_model: str | None) -> None:
    """Options shared by ``cv`` and ``train`` (names fixed by the CNN issue)."""
    p.add_argument(
        "--model",
        default=default_model,
        required=default_model is None,
        help="'svm': a support-vector machine on measured particle features (size, shape, "
        "grey-level profile); or a neural network (CNN) that looks at the pixels: lipnet4 "
        "(recommended), lipnet1, lipnet2, lipnet4c, lipnet6, lipnet_fcn, lipnet_hybrid (also "
        "gets the particle size), tiny (for tests)"
        + (f" (default: {default_model})" if default_model else ""),
    )
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
    g.add_argument("--size", type=_positive_int, default=None, help="images are resized to "
                   "SIZE x SIZE pixels (default: the model's own, 28 for LipNet-4, 32 for "
                   "LipNet-6)")  # fmt: skip
    g = p.add_argument_group("training (CNN)")
    g.add_argument("--epochs", type=_positive_int, default=30, help="passes over the training "
                   "particles; training may stop earlier when the held-out score stops "
                   "improving (default: 30)")  # fmt: skip
    g.add_argument("--batch-size", type=_positive_int, default=32,
                   help="particles per training step (default: 32)")  # fmt: skip
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="adam",
                   help="training algorithm (default: adam)")  # fmt: skip
    g.add_argument("--lr", type=_positive_float, default=None,
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
        type=_augment_list,
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
    p.add_argument("--seed", type=_seed, default=0, help="random seed: the same seed gives "
                   f"the same folds and results (0 to {SEED_MAX}, default: 0)")  # fmt: skip


def _spec_from_args(args: argparse.Namespace) -> Any:
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


# --------------------------------------------------------------------------- handlers


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.which == "micrographs":
        from lipoclass.study.micrograph_demo import run_micrograph_demo

        if args.full:
            raise LipoclassError("--full is for the benchmark demo")
        run_micrograph_demo(Path(args.out or "lipoclass-micrograph-demo"), seed=args.seed)
        return 0  # the micrograph prediction step already printed "report: .../index.html"
    from lipoclass.study import run_demo

    report = run_demo(Path(args.out or "lipoclass-demo"), quick=not args.full, seed=args.seed)
    print(f"report: {report}")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from lipoclass.outputs import check_output_folder
    from lipoclass.synth import parse_ratios, synthesize

    if args.micrographs:
        return _cmd_synth_micrographs(args)
    if Path(args.out).exists():
        raise LipoclassError(f"{args.out}: already exists (choose another output folder)")
    check_output_folder(args.out)
    ds = synthesize(
        args.problem,
        Path(args.out),
        n=args.n,
        seed=args.seed,
        ratios=parse_ratios(args.ratios) if args.ratios else None,
        tiff16=args.tiff16,
        workers=args.workers,
    )
    from lipoclass.data.info import dataset_info

    print(dataset_info(ds).text())
    return 0


def _add_executor_options(p: Any, what: str) -> None:
    """--workers / --executor / --address, defined once for every command whose independent
    tasks (``what``: "folds trained", "study runs", ...) can run in parallel; ``p`` is a parser
    or an argument group."""
    p.add_argument("--workers", type=_positive_int, default=1,
                   help=f"{what} at once in local processes (with --executor ray and "
                   "no --address: the CPUs of the Ray instance started here) "
                   "(default: 1)")  # fmt: skip
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help=f"where the {what.split()[0]} run: local = this computer, ray = a Ray "
                   "compute cluster (default: local)")  # fmt: skip
    p.add_argument("--address", default=None,
                   help="Ray cluster address (default: start Ray on this computer)")  # fmt: skip


def _add_detect_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("detection (crop --detect, detect)")
    g.add_argument("--min-diameter", type=_length, default=(20.0, "nm"), metavar="LEN",
                   help="smallest liposome, e.g. 20nm or 16px (default: 20nm)")  # fmt: skip
    g.add_argument("--max-diameter", type=_length, default=(300.0, "nm"), metavar="LEN",
                   help="largest liposome, e.g. 300nm or 400px (default: 300nm)")  # fmt: skip
    g.add_argument("--threshold", type=_positive_float, default=6.0,
                   help="how clear a ring must be (robust z-score; lower finds fainter "
                   "liposomes and more false ones; default: %(default)s)")  # fmt: skip


def _cmd_synth_micrographs(args: argparse.Namespace) -> int:
    from lipoclass.outputs import check_output_folder
    from lipoclass.synth import parse_ratios, synthesize_micrographs

    if args.n is not None or args.tiff16:
        raise LipoclassError("--n and --tiff16 are for crops; with --micrographs use --count")
    if Path(args.out).exists():
        raise LipoclassError(f"{args.out}: already exists (choose another output folder)")
    check_output_folder(args.out)
    out = synthesize_micrographs(
        args.problem,
        Path(args.out),
        count=args.count,
        size=args.micrograph_size,
        density=args.density,
        noise=args.noise,
        fmt=args.format,
        seed=args.seed,
        ratios=parse_ratios(args.ratios) if args.ratios else None,
        pixel_size_nm=args.pixel_size,
    )
    print(f"{args.count} micrograph(s) with label images and annotations.csv -> {out}")
    return 0


def _length(text: str) -> tuple[float, str]:
    """'20nm', '16px' or '20' (nm) -> (value, unit)."""
    t = text.strip().lower()
    unit = "px" if t.endswith("px") else "nm"
    num = t[:-2] if t.endswith(("px", "nm")) else t
    try:
        v = float(num)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a length like 20nm or 16px") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return v, unit


def _detect_config(args: argparse.Namespace) -> Any:
    from lipoclass.micrograph import DetectConfig

    (dmin, umin), (dmax, umax) = args.min_diameter, args.max_diameter
    if umin != umax:
        raise LipoclassError("--min-diameter and --max-diameter need the same unit (nm or px)")
    try:
        return DetectConfig(min_diameter=dmin, max_diameter=dmax, unit=umin,
                            threshold=args.threshold)  # fmt: skip
    except ValueError as exc:
        raise LipoclassError(f"detect: {exc}") from None


def _cmd_crop(args: argparse.Namespace) -> int:
    from lipoclass.micrograph import (
        CocoSource,
        CoordinateSource,
        CropConfig,
        DetectSource,
        LabelImageSource,
        crop_micrographs,
        read_sample_table,
    )
    from lipoclass.micrograph.io import check_micrograph_path
    from lipoclass.outputs import check_output_folder

    if Path(args.out).exists():
        raise LipoclassError(f"{args.out}: already exists (choose another --out)")
    check_output_folder(args.out)
    mics = [check_micrograph_path(m) for m in args.micrographs]
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
        source = DetectSource(_detect_config(args))
    if not mics:
        raise LipoclassError("no micrographs given")
    samples = read_sample_table(Path(args.samples)) if args.samples else None
    try:
        crop_cfg = CropConfig(surround=args.surround, keep_edge=args.keep_edge)
    except ValueError as exc:
        raise LipoclassError(f"crop: {exc}") from None
    result = crop_micrographs(
        mics, Path(args.out), source, crop_cfg,
        pixel_size_nm=args.pixel_size, samples=samples,
        require_pixel_size=not args.no_pixel_size,
    )  # fmt: skip
    print(result.text())
    return 0


def _cmd_detect(args: argparse.Namespace) -> int:
    from lipoclass.micrograph.detect import detect_to_folder
    from lipoclass.outputs import check_output_folder

    if Path(args.out).exists():
        raise LipoclassError(f"{args.out}: already exists (choose another --out)")
    check_output_folder(args.out)
    cfg = _detect_config(args)
    counts = detect_to_folder(args.micrographs, Path(args.out), cfg, pixel_size_nm=args.pixel_size)
    for name, n in counts.items():
        print(f"{name}: {n} particle(s)")
    print(f"label images and detections.csv -> {args.out}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from lipoclass.data import load_dataset
    from lipoclass.data.info import dataset_info, default_figure_path
    from lipoclass.outputs import check_output_file

    ds = load_dataset(args.dataset, allow_outside=args.allow_outside_paths)
    figure = check_output_file(Path(args.figure) if args.figure else default_figure_path(ds))
    info = dataset_info(ds, figure=figure, check=True)
    print(info.text())
    if info.problems:
        print(f"lipoclass: {len(info.problems)} problem(s) found (exit status 1)", file=sys.stderr)
        return 1
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from lipoclass.data.importer import import_export

    result = import_export(
        Path(args.export), Path(args.images), Path(args.out), keep_going=args.keep_going
    )
    print(result.text())
    return 0 if not result.errors or args.keep_going else 1


def _cmd_features(args: argparse.Namespace) -> int:
    from lipoclass.data import load_dataset
    from lipoclass.features import compute_features
    from lipoclass.outputs import check_output_file

    out = check_output_file(args.out)  # before minutes of feature computation
    ds = load_dataset(args.dataset)
    table = compute_features(ds)
    table.to_csv(out)
    for pid, reason in table.failed:
        print(f"lipoclass: warning: particle {pid}: {reason}", file=sys.stderr)
    print(f"{len(table)} particles x {table.values.shape[1]} features -> {out}")
    if table.auto_masked:
        print(f"{table.auto_masked} particle(s) without a mask used an automatic mask")
    if table.failed:
        print(f"{len(table.failed)} particle(s) without features (warnings above; empty rows)")
    return 0


def _fit(args: argparse.Namespace, what: str) -> int:
    """``cv`` and ``train``: one computation (``lipoclass.crossfit.fit_model``)."""
    from lipoclass.crossfit import check_model_out, fit_model
    from lipoclass.data import load_dataset
    from lipoclass.evaluate import CVConfig, ExecutorConfig

    out = Path(args.out)
    check_model_out(out)  # before any work: a wrong --out must not cost the folds
    try:
        exe = ExecutorConfig(args.executor, args.workers, args.address)
    except ValueError as exc:
        raise LipoclassError(f"--executor/--workers/--address: {exc}") from None
    ds = load_dataset(args.dataset)
    spec = _spec_from_args(args)
    cv = CVConfig(folds=args.folds, seed=args.seed, group_by=args.group_by)
    _, result = fit_model(ds, spec, cv, out, features_csv=args.features_csv, executor=exe,
                          review_target=args.review_target, tta=args.tta)  # fmt: skip
    print(result.table())
    print(f"model folder (cross-validation results and {result.metrics['folds']} fold models): "
          f"{out}")  # fmt: skip
    return 0


def _cmd_cv(args: argparse.Namespace) -> int:
    return _fit(args, "cv")


def _cmd_train(args: argparse.Namespace) -> int:
    return _fit(args, "train")


def _cmd_study(args: argparse.Namespace) -> int:
    from lipoclass.study import failed_runs, run_study

    report = run_study(
        args.study,
        [Path(d) for d in args.dataset],
        Path(args.out),
        quick=args.quick,
        executor=args.executor,
        address=args.address,
        workers=args.workers,
    )
    print(f"report: {report}")
    failed = failed_runs(args.out)
    if failed:
        names = ", ".join(label for label, _ in failed[:3]) + (" ..." if len(failed) > 3 else "")
        print(
            f"lipoclass: error: {len(failed)} run(s) failed ({names}); the traceback of each is "
            f"in {Path(args.out) / 'runs'}/<key>/error.txt; rerun the study to retry them",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from lipoclass.report import build_report

    print(f"report: {build_report(Path(args.dir))}")
    return 0


_MICROGRAPH_ONLY = ("labels", "coco", "coords", "classes", "samples", "diameter", "surround",
                    "pixel_size")  # fmt: skip


def _cmd_predict(args: argparse.Namespace) -> int:
    from lipoclass.micrograph.io import MICROGRAPH_SUFFIXES
    from lipoclass.predict import PredictConfig, predict

    inputs = [Path(i) for i in args.input]
    if len(inputs) > 1 or any(
        p.suffix.lower() in MICROGRAPH_SUFFIXES and not p.is_dir() for p in inputs
    ):
        return _cmd_predict_micrographs(args, inputs)
    given = [o for o in _MICROGRAPH_ONLY if getattr(args, o) is not None]
    given += [o for o in ("detect", "keep_edge", "no_pixel_size") if getattr(args, o)]
    if given or args.executor != "local":
        opt = "--" + (given[0] if given else "executor").replace("_", "-")
        raise LipoclassError(f"{opt} applies to micrograph inputs (MRC/TIFF/PNG files) only")
    if args.model_dir is None and args.onnx is None:
        raise LipoclassError("give a MODEL_DIR or --onnx model.onnx")
    cfg = PredictConfig(batch_size=args.batch_size, device=args.device, tta=args.tta,
                        precision=args.precision)  # fmt: skip
    predict(
        Path(args.model_dir) if args.model_dir else None,
        inputs[0],
        Path(args.out or "predictions.csv"),
        onnx_path=Path(args.onnx) if args.onnx else None,
        shares_path=Path(args.shares) if args.shares else None,
        config=cfg,
    )
    return 0


def _cmd_predict_micrographs(args: argparse.Namespace, inputs: list[Path]) -> int:
    from lipoclass.micrograph import (
        CocoSource,
        CoordinateSource,
        DetectSource,
        LabelImageSource,
        read_sample_table,
    )
    from lipoclass.micrograph.io import check_micrograph_path
    from lipoclass.micrograph.predict import MicrographPredictConfig, predict_micrographs
    from lipoclass.outputs import check_output_folder
    from lipoclass.predict import PredictConfig

    if args.model_dir is None or args.onnx is not None:
        raise LipoclassError("micrographs are predicted with a model folder (not --onnx)")
    if args.shares is not None:
        raise LipoclassError("--shares is for datasets; micrograph shares go into --out DIR")
    if args.out is None:
        raise LipoclassError("give --out DIR for the micrograph report (a new or empty folder)")
    check_output_folder(args.out)
    mics = [check_micrograph_path(m) for m in inputs]
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
    elif args.coords:
        source = CoordinateSource(Path(args.coords), mics, diameter=args.diameter)
    else:
        source = DetectSource(_detect_config(args))
    samples = read_sample_table(Path(args.samples)) if args.samples else None
    runner = None
    if args.executor != "local" or args.workers > 1:
        from functools import partial

        from lipoclass.evaluate.executors import ExecutorConfig, run_tasks

        try:
            ecfg = ExecutorConfig(args.executor, workers=args.workers, address=args.address,
                                  threads=1)  # fmt: skip
        except ValueError as exc:
            raise LipoclassError(f"predict: {exc}") from None
        runner = partial(run_tasks, config=ecfg)
    try:
        cfg = PredictConfig(batch_size=args.batch_size, device=args.device, tta=args.tta,
                            precision=args.precision)  # fmt: skip
        mcfg = MicrographPredictConfig(surround=args.surround, keep_edge=args.keep_edge)
    except ValueError as exc:
        raise LipoclassError(f"predict: {exc}") from None
    predict_micrographs(
        Path(args.model_dir), mics, Path(args.out), source, config=cfg, mic_config=mcfg,
        pixel_size_nm=args.pixel_size, samples=samples,
        require_pixel_size=not args.no_pixel_size, runner=runner,
    )  # fmt: skip
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from lipoclass.export import ExportConfig, export_onnx
    from lipoclass.outputs import check_output_file

    check_output_file(args.out)
    dataset = Path(args.dataset) if args.dataset else None
    export_onnx(Path(args.model_dir), Path(args.out), ExportConfig(tolerance=args.tolerance),
                dataset=dataset)  # fmt: skip
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from lipoclass.explain import explain
    from lipoclass.outputs import check_output_folder

    check_output_folder(args.out, allow_existing_kind="explain", marker="index.html")
    ids = [s for s in args.ids.split(",") if s] if args.ids else None
    page = explain(Path(args.model_dir), Path(args.dataset), Path(args.out), ids=ids)
    print(f"explanations: {page}")
    return 0


# --------------------------------------------------------------------------- parser

# built-in studies (src/lipoclass/study/presets/*.toml; a test checks this list is complete)
_PRESETS = {
    "benchmark": "LipNet-4 against the SVM on measured features, 2 runs (~1 h)",
    "architectures": "per-class F1 of the 7 LipNet network designs, 7 runs (~6 h)",
    "augmentation": "adding image augmentations one by one to LipNet-4, 6 runs (~5 h)",
    "imbalance": "7 ways of handling rare classes for LipNet-4, 7 runs (~6 h)",
    "input-modes": "LipNet-4 on whole image, crop, or masked crop, 3 runs (~2.5 h)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lipoclass",
        description="Classify particles (e.g. liposomes: lamellarity, encapsulation) in TEM / "
        "cryo-TEM images with small CNNs, beside an SVM on handcrafted features, under "
        "heavy class imbalance. A dataset is a folder with particles.csv (id,image[,mask,"
        "label,pixel_size_nm,sample]) and the images it names.",
        epilog="Start with 'lipoclass demo'. Each command has its own --help, e.g. "
        "'lipoclass info --help'. Exit status: 0 ok, 1 problems found or some runs failed, "
        "2 bad input or usage, 130 interrupted.",
    )
    from lipoclass import __version__

    parser.add_argument("--version", action="version", version=f"lipoclass {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def add(name: str, fn: Callable[[argparse.Namespace], int], help: str, desc: str = "") -> Any:
        p = sub.add_parser(name, help=help, description=desc or help)
        p.set_defaults(func=fn)
        return p

    p = add(
        "demo",
        _cmd_demo,
        "synthesise a liposome set, compare SVM and LipNet-4 by 5-fold CV, write a report",
        "The main job: synthesise the default lamellarity set, run the quick 'benchmark' study "
        "(SVM vs LipNet-4, 5 folds, identical folds) and write an HTML report.",
    )
    p.add_argument("which", nargs="?", choices=("benchmark", "micrographs"), default="benchmark",
                   help="benchmark (default): the SVM vs LipNet-4 study; micrographs: "
                   "synthesise micrographs, detect, crop, train LipNet-4 briefly, predict on "
                   "new micrographs and write their report (~5 min)")  # fmt: skip
    p.add_argument("--out", default=None, help="output folder for the data, the "
                   "results and report.html; a rerun reuses it "
                   "(default: lipoclass-demo, lipoclass-micrograph-demo)")  # fmt: skip
    p.add_argument("--full", action="store_true", help="all 14,169 particles and 30 epochs "
                   "(about an hour on a 2-core computer; default: a quick run of "
                   "minutes)")  # fmt: skip
    p.add_argument("--seed", type=_seed, default=0, help="random seed for data and folds "
                   f"(0 to {SEED_MAX}, default: 0)")  # fmt: skip

    p = add(
        "synth",
        _cmd_synth,
        "write a synthetic liposome dataset (lamellarity or encapsulation)",
        "Simulate TEM images of single liposomes, each with a mask (outline) and pixel size, "
        "in the class shares of a real reference data set (lamellarity: unilamellar, "
        "multilamellar, uncertain; encapsulation: full, empty, ...) unless --ratios is given. "
        "Writes a particle dataset folder and one overview sheet (PNG) per class.",
    )
    p.add_argument("problem", choices=("lamellarity", "encapsulation"),
                   help="which classes to simulate: lamellarity (number of membranes) or "
                   "encapsulation (whether the liposome is filled)")  # fmt: skip
    p.add_argument("out", help="output dataset folder (must not exist)")
    p.add_argument("--n", type=_positive_int, default=None,
                   help="number of particles (default: the reference size, 14169 for "
                   "lamellarity, 24918 for encapsulation)")  # fmt: skip
    p.add_argument("--seed", type=_seed, default=0, help="random seed: the same seed gives "
                   f"the same images (0 to {SEED_MAX}, default: 0)")  # fmt: skip
    p.add_argument(
        "--ratios",
        default=None,
        help="class shares, e.g. 'unilamellar=0.5,multilamellar=0.3,uncertain=0.2', or "
        "'balanced' for equal shares (default: the reference shares)",
    )
    p.add_argument("--tiff16", action="store_true", help="write 16-bit TIFF images, not PNG")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="parallel processes (default: one per CPU core)")  # fmt: skip
    g = p.add_argument_group(
        "whole micrographs",
        "with --micrographs, OUT gets micrographs/ (16-bit TIFF or MRC with the pixel size), "
        "labels/ (instance label images: 0 background, 1..K, open in Fiji or napari) and "
        "annotations.csv (micrograph, instance, label, x, y, diameter_nm, ...)",
    )
    g.add_argument("--micrographs", action="store_true",
                   help="write whole micrographs with many liposomes, not crops")  # fmt: skip
    g.add_argument("--count", type=_positive_int, default=4,
                   help="number of micrographs (default: %(default)s)")  # fmt: skip
    g.add_argument("--micrograph-size", type=_positive_int, default=1024, metavar="PX",
                   help="side of each square micrograph in px (default: %(default)s)")  # fmt: skip
    g.add_argument("--density", type=_positive_float, default=0.2,
                   help="fraction of the field covered by liposomes, up to 0.6 "
                   "(default: %(default)s)")  # fmt: skip
    g.add_argument("--noise", type=_positive_float, default=1.0,
                   help="shot-noise factor: 2 means a 4x lower electron dose "
                   "(default: %(default)s)")  # fmt: skip
    g.add_argument("--format", choices=("tiff", "mrc"), default="tiff",
                   help="micrograph file type (default: %(default)s)")  # fmt: skip
    g.add_argument("--pixel-size", type=_positive_float, default=None, metavar="NM",
                   help="pixel size in nm (default: drawn per micrograph, 0.4-1.2)")  # fmt: skip

    p = add(
        "crop",
        _cmd_crop,
        "cut one crop per particle out of micrographs into a particle dataset",
        "Reads micrographs (MRC, TIFF, PNG) and where the particles are: an instance label "
        "image (cellpose, StarDist, napari, micro-sam, 'lipoclass detect'), a COCO JSON "
        "(CVAT, Roboflow), a coordinate CSV or a RELION/cryoSPARC STAR file, or --detect. "
        "Each crop is centred on one particle with --surround px around it and has its mask. "
        "Particles whose crop would leave the micrograph are skipped (and counted).",
    )
    p.add_argument("micrographs", nargs="*", metavar="MICROGRAPH",
                   help="micrograph files (with --coco they may be omitted: the images "
                   "named in the COCO file are used)")  # fmt: skip
    p.add_argument("--out", required=True, help="output dataset folder (must not exist)")
    src = p.add_argument_group("where the particles are (choose one)")
    src = src.add_mutually_exclusive_group(required=True)
    src.add_argument("--labels", metavar="PATH",
                     help="instance label image (one micrograph) or folder of label images "
                     "named like the micrographs (mic.tif, mic_masks.png, ...)")  # fmt: skip
    src.add_argument("--coco", metavar="JSON", help="COCO annotations (polygons, RLE or boxes)")
    src.add_argument("--coords", metavar="FILE",
                     help="CSV with micrograph,x,y and diameter or w,h (pixels; optional "
                     "label), or a RELION/cryoSPARC .star particle file")  # fmt: skip
    src.add_argument("--detect", action="store_true",
                     help="find the liposomes automatically (see 'lipoclass detect')")  # fmt: skip
    p.add_argument("--classes", metavar="CSV",
                   help="with --labels: class per instance (columns instance,label and "
                   "optionally micrograph)")  # fmt: skip
    p.add_argument("--diameter", type=_positive_float, default=None, metavar="PX",
                   help="particle diameter in pixels where the coordinates give none "
                   "(needed for STAR files)")  # fmt: skip
    p.add_argument("--samples", metavar="CSV",
                   help="sample per micrograph (columns micrograph,sample; default: the "
                   "micrograph's file name)")  # fmt: skip
    p.add_argument(
        "--surround",
        type=int,
        default=50,
        metavar="PX",
        help="pixels of surroundings on each side of the particle (default: 50)",
    )
    p.add_argument("--keep-edge", action="store_true",
                   help="keep particles near the micrograph edge, padding their crop")  # fmt: skip
    p.add_argument("--pixel-size", type=_positive_float, default=None, metavar="NM",
                   help="pixel size in nm (default: from the MRC/TIFF header)")  # fmt: skip
    p.add_argument("--no-pixel-size", action="store_true",
                   help="accept MRC files without a pixel size (crops get none)")  # fmt: skip
    _add_detect_options(p)

    p = add(
        "detect",
        _cmd_detect,
        "find liposomes on micrographs and write instance label images",
        "Classical detector (no training): band-pass filter, ring filters of every radius in "
        "the diameter range, outline refined along rays, touching liposomes split. Writes "
        "OUT/<micrograph>.tif label images (0 background, 1..K) and detections.csv; "
        "'lipoclass crop --labels OUT' then cuts the crops.",
    )
    p.add_argument("micrographs", nargs="+", metavar="MICROGRAPH")
    p.add_argument("--out", required=True, help="output folder for the label images (new)")
    p.add_argument("--pixel-size", type=_positive_float, default=None, metavar="NM",
                   help="pixel size in nm (default: from the MRC/TIFF header)")  # fmt: skip
    _add_detect_options(p)

    p = add(
        "info",
        _cmd_info,
        "summarise and check a particle dataset",
        "Counts per class and sample, image sizes per class (figure), masks, pixel sizes, and "
        "every problem found (unreadable images, NaN pixels, masks of another size, empty "
        "masks, classes without particles). Exit status 1 when a problem is found, so scripts "
        "can stop before training on a broken dataset.",
    )
    p.add_argument("dataset", help="dataset folder (with particles.csv)")
    p.add_argument("--figure", default=None, help="where to write the image-size figure "
                   "(PNG; default: <dataset name>_info.png in the current folder)")  # fmt: skip
    p.add_argument("--allow-outside-paths", action="store_true", help="accept image paths "
                   "in particles.csv that lead outside the dataset folder "
                   "(e.g. ../other/a.png)")  # fmt: skip

    p = add(
        "import-export",
        _cmd_import,
        "convert a particle-export JSON file (from particle-analysis software) into a dataset",
        "Reads concatenated JSON objects or a JSON list of particle records (Id, Class code, "
        "Bmp/Image, measured features), as written by particle-analysis software such as "
        "Vironova's, and writes a particle dataset with the features as columns.",
    )
    p.add_argument("export", help="the exported .json file of particle records")
    p.add_argument("--images", required=True, help="folder holding the images the records name")
    p.add_argument("--out", required=True, help="output dataset folder (must not exist)")
    p.add_argument("--keep-going", action="store_true", help="write the dataset even if "
                   "some records are bad (they are listed and left out)")  # fmt: skip

    p = add(
        "features",
        _cmd_features,
        "measure every particle (area, circularity, shape moments, edge and grey-level "
        "profiles, ...) into a CSV table",
        "Measure size, shape and grey-level features of every particle (the measurements the "
        "SVM uses) and write one CSV row per particle. Particles without a mask get an "
        "automatic outline.",
    )
    p.add_argument("dataset", help="dataset folder (with particles.csv)")
    p.add_argument("--out", default="features.csv", help="output CSV file (default: %(default)s)")

    fit_help = (
        "Stratified k-fold cross-validation; every model gets identical folds for the same "
        "seed. The k fold models are kept: the folder is both the evaluation (metrics.json, "
        "oof.csv with each particle's prediction by the model that did not see it, confusion "
        "PNGs) and the model that 'predict' uses (the fold models' average). 'cv' and 'train' "
        "are the same computation."
    )
    for name, fn, default_model, line in (
        ("cv", _cmd_cv, None, "cross-validate a model (SVM or CNN) and keep it as a model folder"),
        ("train", _cmd_train, "lipnet4",
         "train a model: the fold models of a cross-validation (same as 'cv')"),
    ):  # fmt: skip
        p = add(name, fn, line, fit_help)
        p.add_argument("dataset", help="labelled particle dataset folder (with particles.csv)")
        _add_model_options(p, default_model=default_model)
        p.add_argument("--folds", type=_folds, default=5,
                       help="number of folds, at least 2 (default: 5; fewer when the smallest "
                       "class has fewer particles)")  # fmt: skip
        p.add_argument("--group-by", choices=("sample",), default=None,
                       help="keep all particles of one sample (grid, batch) in the same fold, so "
                       "the scores say how the model does on a new sample")  # fmt: skip
        p.add_argument(
            "--features-csv",
            default=None,
            help="SVM only: use this features CSV (from 'lipoclass features')",
        )
        p.add_argument("--review-target", type=_fraction, default=0.95, metavar="ACC",
                       help="flag particles for review until the rest reach this accuracy, "
                       "measured out of fold (default: 0.95)")  # fmt: skip
        p.add_argument(
            "--tta",
            action="store_true",
            help="CNN: predict with every flip and quarter turn of each particle "
            "and average (8x slower prediction; off by default, docs/cnn.md)",
        )
        _add_executor_options(p, "folds trained")
        p.add_argument(
            "--out",
            required=True,
            help="model folder to write (new, or an earlier model folder to replace)",
        )

    p = add(
        "study",
        _cmd_study,
        "compare several model settings by cross-validation (a preset or a TOML file) and "
        "write an HTML report",
        "Run a list of cross-validations with identical folds (a built-in preset or your own "
        "TOML file) and write report.html comparing them. Finished runs are reused, so an "
        "interrupted study resumes when rerun with the same --out. Exit status 1 when a run "
        "failed (the others are still reported).",
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = (
        "presets (rough time on a 2-core computer for ~14,000 particles; --quick: minutes):\n"
        + "\n".join(f"  {k:<14} {v}" for k, v in _PRESETS.items())
    )
    p.add_argument("study", help="preset name (listed below) or path to a study .toml file")
    p.add_argument("dataset", nargs="*", default=[],
                   help="dataset folder(s) (a TOML file may name them instead)")  # fmt: skip
    p.add_argument("--out", required=True, help="study folder: new, empty or an earlier "
                   "study folder (to resume)")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="3 epochs and at most ~1500 "
                   "particles per dataset: a check that everything runs (minutes)")  # fmt: skip
    _add_executor_options(p, "study runs")

    p = add("report", _cmd_report, "rebuild DIR/report.html from a study folder's stored results")
    p.add_argument("dir", help="study folder (or one 'lipoclass cv' results folder)")

    p = add(
        "predict",
        _cmd_predict,
        "classify particles with a trained model and report class shares per sample",
        "Classify every particle with the model folder's fold models (their average), flag "
        "uncertain ones for review, and estimate each class's share per sample.",
    )
    p.add_argument(
        "model_dir",
        nargs="?",
        default=None,
        help="model folder from 'train' or 'cv' (optional only with --onnx)",
    )
    p.add_argument("input", nargs="+", metavar="INPUT",
                   help="particle dataset folder, a folder of particle images, or micrograph "
                   "files (MRC/TIFF/PNG; particles from the options below or the "
                   "detector)")  # fmt: skip
    p.add_argument("--out", default=None,
                   help="dataset input: predictions CSV, one row per particle (default: "
                   "predictions.csv); micrographs: report folder (new or empty) with "
                   "particles.csv, shares.csv, overlays and index.html")  # fmt: skip
    p.add_argument(
        "--shares",
        default=None,
        help="class-shares CSV (default: <out name>_shares.csv beside --out)",
    )
    p.add_argument(
        "--onnx", default=None, help="use this exported ONNX model (onnxruntime) instead of PyTorch"
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=512,
        help="particles per batch (default: %(default)s)",
    )
    p.add_argument(
        "--device", choices=DEVICES, default="auto", help="auto (a GPU when present), cpu or cuda"
    )
    p.add_argument("--precision", choices=INFERENCE_PRECISIONS, default="fp32",
                   help="number format of CPU inference: fp32 (default; the numbers the "
                   "model's evaluation saw) or bf16 (about 2x faster on processors with "
                   "AVX-512 BF16 or AMX; probabilities differ slightly, see "
                   "docs/deployment.md)")  # fmt: skip
    tta = p.add_mutually_exclusive_group()
    tta.add_argument(
        "--tta",
        dest="tta",
        action="store_true",
        default=None,
        help="average over every flip and quarter turn of each particle",
    )
    tta.add_argument(
        "--no-tta",
        dest="tta",
        action="store_false",
        help="no flips/turns (default: what the model folder says)",
    )
    g = p.add_argument_group(
        "micrographs", "where the particles are (at most one; default: --detect), how they are "
        "cut out, and where micrographs are processed (docs/micrographs.md)")  # fmt: skip
    g.add_argument("--labels", metavar="PATH", default=None,
                   help="instance label image(s), as for 'crop'")  # fmt: skip
    g.add_argument("--coco", metavar="JSON", default=None, help="COCO annotations")
    g.add_argument("--coords", metavar="FILE", default=None,
                   help="coordinate CSV or RELION/cryoSPARC .star file")  # fmt: skip
    g.add_argument("--detect", action="store_true",
                   help="find the liposomes with the detector (the default)")  # fmt: skip
    g.add_argument("--classes", metavar="CSV", default=None,
                   help="with --labels: true class per instance (reported beside the "
                   "predictions)")  # fmt: skip
    g.add_argument("--diameter", type=_positive_float, default=None, metavar="PX",
                   help="particle diameter where the coordinates give none")  # fmt: skip
    g.add_argument(
        "--samples",
        metavar="CSV",
        default=None,
        help="sample per micrograph (micrograph,sample; default: file name)",
    )
    g.add_argument(
        "--surround",
        type=int,
        default=None,
        metavar="PX",
        help="px around each particle (default: the training dataset's, else 50)",
    )
    g.add_argument("--keep-edge", action="store_true",
                   help="also classify particles cut by the micrograph edge")  # fmt: skip
    g.add_argument("--pixel-size", type=_positive_float, default=None, metavar="NM",
                   help="pixel size in nm (default: from the MRC/TIFF header)")  # fmt: skip
    g.add_argument("--no-pixel-size", action="store_true",
                   help="accept MRC files without a pixel size")  # fmt: skip
    _add_executor_options(g, "micrographs processed")
    _add_detect_options(p)

    p = add("export", _cmd_export, "export a CNN model folder to ONNX (checked against PyTorch)")
    p.add_argument("model_dir")
    p.add_argument("--out", default="model.onnx", help="default: %(default)s")
    p.add_argument("--tolerance", type=_positive_float, default=1e-4,
                   help="max abs difference allowed vs PyTorch (default: %(default)s)")  # fmt: skip
    p.add_argument("--dataset", default=None, help="check on up to 256 prepared particles "
                   "of this dataset (default: the training set model.json records)")  # fmt: skip

    p = add(
        "explain",
        _cmd_explain,
        "show what a trained network looks at: learned filters and heat maps of the image "
        "regions behind each decision",
        "Writes an HTML page with the network's learned filters, its intermediate images "
        "(activations) and heat maps (saliency maps: deconvolution, guided backpropagation, "
        "Grad-CAM) marking the pixels that drove the predicted class, for a few particles.",
    )
    p.add_argument("model_dir", help="CNN model folder from 'lipoclass train'")
    p.add_argument("dataset", help="dataset folder with the particles to explain")
    p.add_argument("--out", required=True, help="output folder (index.html and PNGs); new, "
                   "empty or an earlier explain folder")  # fmt: skip
    p.add_argument("--ids", default=None, help="comma-separated particle ids (default: a few "
                   "particles per class)")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 problems found or partial failure, 2 bad
    input or usage, 130 interrupted). Argument errors exit through argparse (SystemExit 2)."""
    parser = build_parser()
    argv = list(argv) if argv is not None else sys.argv[1:]
    if not argv:  # a bare 'lipoclass': the command list, not a terse error
        parser.print_help(sys.stderr)
        return 2
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"lipoclass: warning: {msg}\n"  # type: ignore[assignment]
    try:
        return int(args.func(args))
    except LipoclassError as exc:
        print(f"lipoclass: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lipoclass: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
