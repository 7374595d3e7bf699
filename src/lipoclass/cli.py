"""Command line: ``lipoclass <command> ...``. Each subcommand parses typed arguments and calls
one library function; heavy imports happen only after parsing, so ``--help`` is instant."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lipoclass.errors import LipoclassError

__all__ = ["main"]

AUGMENTS = ("rotate", "shift", "flip", "shear", "zoom")
BALANCES_CNN = ("none", "oversample", "undersample", "smote", "weights", "focal")
BALANCES_SVM = ("weights", "none", "oversample", "undersample", "smote")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a wrong flag as one line and exit 2 (its default) without usage
    noise spread over many lines."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        self.exit(2, f"lipoclass {self.prog.split(' ', 1)[-1]}: error: {message}\n")


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
        help="'svm' (handcrafted features) or a CNN: lipnet1, lipnet2, lipnet4, lipnet4c, "
        "lipnet6, lipnet_fcn, lipnet_hybrid, tiny (default: %(default)s)",
    )
    g = p.add_argument_group("input preparation")
    g.add_argument(
        "--mode",
        choices=("auto", "surround", "crop", "masked"),
        default="auto",
        help="surround: whole image; crop: mask bounding box; masked: crop and zero outside "
        "the mask (best in the thesis); auto (default): masked when every particle has a "
        "mask, else surround",
    )
    g.add_argument("--size", type=_positive_int, default=None, help="input side in pixels "
                   "(default: the model's own, 28 for LipNet-4, 32 for LipNet-6)")  # fmt: skip
    g = p.add_argument_group("training (CNN)")
    g.add_argument("--epochs", type=_positive_int, default=30, help="epochs (default: 30)")
    g.add_argument("--batch-size", type=_positive_int, default=32, help="default: 32")
    g.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    g.add_argument("--lr", type=_positive_float, default=None,
                   help="learning rate (default: 1e-3 adam, 1e-2 sgd)")  # fmt: skip
    g.add_argument(
        "--balance",
        default=None,
        help="imbalance handling. CNN: none, oversample (default), undersample, smote, weights, "
        "focal. SVM: weights (default), none, oversample, undersample, smote",
    )
    g.add_argument(
        "--augment",
        type=_augment_list,
        default=AUGMENTS,
        help="comma list of rotate,shift,flip,shear,zoom, or all / none (default: all)",
    )
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    g = p.add_argument_group("SVM")
    g.add_argument(
        "--features",
        choices=("vironova", "all", "precomputed"),
        default="vironova",
        help="SVM feature set: the thesis' Vironova set, all computed features, or the "
        "numeric columns of particles.csv (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


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
    )


# --------------------------------------------------------------------------- handlers


def _cmd_demo(args: argparse.Namespace) -> int:
    from lipoclass.study import run_demo

    report = run_demo(Path(args.out), quick=not args.full, seed=args.seed)
    print(f"report: {report}")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from lipoclass.synth import parse_ratios, synthesize

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


def _cmd_info(args: argparse.Namespace) -> int:
    from lipoclass.data import load_dataset
    from lipoclass.data.info import dataset_info, default_figure_path

    ds = load_dataset(args.dataset)
    figure = Path(args.figure) if args.figure else default_figure_path(ds)
    info = dataset_info(ds, figure=figure, check=True)
    print(info.text())
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

    ds = load_dataset(args.dataset)
    table = compute_features(ds)
    out = Path(args.out)
    table.to_csv(out)
    for pid, reason in table.failed:
        print(f"lipoclass: warning: particle {pid}: {reason}", file=sys.stderr)
    print(f"{len(table)} particles x {table.values.shape[1]} features -> {out}")
    if table.auto_masked:
        print(f"{table.auto_masked} particle(s) without a mask used an automatic mask")
    if table.failed:
        print(f"{len(table.failed)} particle(s) without features (warnings above; empty rows)")
    return 0


def _cmd_cv(args: argparse.Namespace) -> int:
    from lipoclass.data import load_dataset
    from lipoclass.evaluate import CVConfig, cross_validate

    ds = load_dataset(args.dataset)
    spec = _spec_from_args(args)
    cv = CVConfig(folds=args.folds, seed=args.seed, group_by=args.group_by)
    result = cross_validate(ds, spec, cv, out=Path(args.out), features_csv=args.features_csv)
    print(result.table())
    print(f"results: {args.out}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from lipoclass.data import load_dataset
    from lipoclass.train import train_model

    ds = load_dataset(args.dataset)
    if args.confusion_folds < 0 or args.confusion_folds == 1:
        raise LipoclassError(
            f"--confusion-folds must be 0 or at least 2, got {args.confusion_folds}"
        )
    out = train_model(ds, _spec_from_args(args), Path(args.out), seed=args.seed,
                      confusion_folds=args.confusion_folds,
                      confusion_from=args.confusion_from)  # fmt: skip
    print(f"model folder: {out}")
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    from lipoclass.study import run_study

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
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from lipoclass.report import build_report

    print(f"report: {build_report(Path(args.dir))}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from lipoclass.predict import predict

    if args.model_dir is None and args.onnx is None:
        raise LipoclassError("give a MODEL_DIR or --onnx model.onnx")
    predict(
        Path(args.model_dir) if args.model_dir else None,
        Path(args.input),
        Path(args.out),
        onnx_path=Path(args.onnx) if args.onnx else None,
        shares_path=Path(args.shares) if args.shares else None,
        batch_size=args.batch_size,
        device=args.device,
    )
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from lipoclass.export import export_onnx

    dataset = Path(args.dataset) if args.dataset else None
    export_onnx(Path(args.model_dir), Path(args.out), tolerance=args.tolerance, dataset=dataset)
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from lipoclass.explain import explain

    ids = [s for s in args.ids.split(",") if s] if args.ids else None
    page = explain(Path(args.model_dir), Path(args.dataset), Path(args.out), ids=ids)
    print(f"explanations: {page}")
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lipoclass",
        description="Classify particles (e.g. liposomes: lamellarity, encapsulation) in TEM / "
        "cryo-TEM images with small CNNs, beside an SVM on handcrafted features, under "
        "heavy class imbalance. A dataset is a folder with particles.csv (id,image[,mask,"
        "label,pixel_size_nm,sample]) and the images it names.",
        epilog="Start with 'lipoclass demo'. Each command has its own --help.",
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
    p.add_argument("--out", default="lipoclass-demo", help="output folder (default: %(default)s)")
    p.add_argument("--full", action="store_true", help="full-size data and epochs (slow)")
    p.add_argument("--seed", type=int, default=0)

    p = add(
        "synth",
        _cmd_synth,
        "write a synthetic liposome dataset (lamellarity or encapsulation)",
        "Simulate TEM liposome crops with masks and pixel size, with the class shares of the "
        "thesis (Tables 1-2) unless --ratios is given. Writes a particle dataset folder and one "
        "contact-sheet PNG per class.",
    )
    p.add_argument("problem", choices=("lamellarity", "encapsulation"))
    p.add_argument("out", help="output dataset folder (must not exist)")
    p.add_argument("--n", type=_positive_int, default=None,
                   help="number of particles (default: thesis size, 14169 / 24918)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--ratios",
        default=None,
        help="class shares, e.g. 'unilamellar=0.5,multilamellar=0.3,uncertain=0.2' or 'balanced'",
    )
    p.add_argument("--tiff16", action="store_true", help="write 16-bit TIFF images, not PNG")
    p.add_argument("--workers", type=_positive_int, default=None, help="processes (default: all)")

    p = add(
        "info",
        _cmd_info,
        "summarise and check a particle dataset",
        "Counts per class and sample, image sizes per class (figure), masks, pixel sizes, and "
        "every problem found (unreadable images, masks of another size, empty masks).",
    )
    p.add_argument("dataset", help="dataset folder (with particles.csv)")
    p.add_argument("--figure", default=None,
                   help="size-distribution PNG (default: <name>_info.png here)")  # fmt: skip

    p = add(
        "import-export",
        _cmd_import,
        "convert a particle-export JSON (the thesis' source layout) into a dataset",
        "Reads concatenated JSON objects or a JSON list of particle records (Id, Class code, "
        "Bmp/Image, features) and writes a particle dataset with the features as columns.",
    )
    p.add_argument("export", help="the export .json file")
    p.add_argument("--images", required=True, help="folder holding the images the records name")
    p.add_argument("--out", required=True, help="output dataset folder (must not exist)")
    p.add_argument("--keep-going", action="store_true",
                   help="write the dataset even if some records are bad (listed)")  # fmt: skip

    p = add(
        "features",
        _cmd_features,
        "compute handcrafted features (area, moments, profiles, ...) to a CSV",
    )
    p.add_argument("dataset")
    p.add_argument("--out", default="features.csv", help="default: %(default)s")

    p = add(
        "cv",
        _cmd_cv,
        "cross-validate a model (SVM or CNN) with per-class metrics",
        "Stratified k-fold cross-validation; every model gets identical folds for the same "
        "seed. Writes metrics.json, oof.csv (out-of-fold predictions), confusion-matrix PNGs.",
    )
    p.add_argument("dataset")
    _add_model_options(p, default_model=None)
    p.add_argument("--folds", type=int, default=5, help="default: 5")
    p.add_argument("--group-by", choices=("sample",), default=None,
                   help="keep all particles of one sample in the same fold")  # fmt: skip
    p.add_argument("--features-csv", default=None,
                   help="SVM: use this features CSV (from 'lipoclass features')")  # fmt: skip
    p.add_argument("--out", required=True, help="run folder")

    p = add(
        "train",
        _cmd_train,
        "train one model on a whole dataset and save a model folder",
        "Trains on all labelled particles (a validation split is held out for early stopping "
        "and calibration) and saves weights, config and class names. The confusion matrix "
        "behind predict's adjusted class shares is cross-validated: by default 5 more "
        "trainings on the same folds as 'lipoclass cv', or reused from a finished cv run.",
    )
    p.add_argument("dataset")
    _add_model_options(p, default_model="lipnet4")
    p.add_argument("--out", required=True, help="model folder")
    p.add_argument(
        "--confusion-folds",
        type=int,
        default=5,
        metavar="K",
        help="folds of the cross-validation behind adjusted shares; 0 uses the "
        "validation split instead (fast, thin for rare classes) (default: 5)",
    )
    p.add_argument("--confusion-from", default=None, metavar="RUN",
                   help="reuse the out-of-fold confusion of a finished 'lipoclass cv' run "
                   "(same dataset and settings) instead of cross-validating again")  # fmt: skip

    p = add(
        "study",
        _cmd_study,
        "run a declared grid of cross-validations (a preset or a TOML file) and report",
        "Presets: augmentation, architectures, input-modes, imbalance, benchmark. Finished runs "
        "are reused, so an interrupted study resumes.",
    )
    p.add_argument("study", help="preset name or path to a study .toml")
    p.add_argument("dataset", nargs="*", default=[], help="dataset folder(s) (TOML may name them)")
    p.add_argument("--out", required=True, help="study folder")
    p.add_argument("--quick", action="store_true", help="few epochs and a data subset (minutes)")
    p.add_argument("--executor", choices=("local", "ray"), default="local")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start local)")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="local executor: runs in parallel (default: 1)")  # fmt: skip

    p = add("report", _cmd_report, "rebuild DIR/report.html from a study folder's stored results")
    p.add_argument("dir", help="study folder")

    p = add(
        "predict",
        _cmd_predict,
        "classify particles with a trained model and report class shares per sample",
    )
    p.add_argument("model_dir", nargs="?", default=None, help="model folder from 'train'")
    p.add_argument("input", help="particle dataset folder, or a folder of particle images")
    p.add_argument("--out", default="predictions.csv", help="default: %(default)s")
    p.add_argument("--shares", default=None, help="shares CSV (default: shares.csv beside --out)")
    p.add_argument("--onnx", default=None, help="use this ONNX model with onnxruntime")
    p.add_argument("--batch-size", type=_positive_int, default=512)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")

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
        "filters, activations and saliency maps (deconvolution, guided backprop, Grad-CAM)",
    )
    p.add_argument("model_dir")
    p.add_argument("dataset")
    p.add_argument("--out", required=True, help="output folder (index.html and PNGs)")
    p.add_argument("--ids", default=None, help="comma list of particle ids (default: a few/class)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 partial failure, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
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
