"""Deployment commands: predict (datasets and micrographs), export, explain."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lipoclass.choices import DEVICES, EXPORT_FORMATS, INFERENCE_PRECISIONS
from lipoclass.cli._common import (
    AddCommand,
    add_detect_options,
    add_executor_options,
    add_particle_source_options,
    particle_source,
    positive_float,
    positive_int,
)
from lipoclass.errors import LipoclassError

__all__ = ["register"]


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
        audit=Path(args.audit) if args.audit else None,
        audit_draw=args.audit_draw,
    )
    return 0


def _cmd_predict_micrographs(args: argparse.Namespace, inputs: list[Path]) -> int:
    from lipoclass.micrograph import read_sample_table
    from lipoclass.micrograph.io import check_micrograph_path
    from lipoclass.micrograph.predict import MicrographPredictConfig, predict_micrographs
    from lipoclass.outputs import check_output_folder
    from lipoclass.predict import PredictConfig

    if args.model_dir is None or args.onnx is not None:
        raise LipoclassError("micrographs are predicted with a model folder (not --onnx)")
    if args.shares is not None:
        raise LipoclassError("--shares is for datasets; micrograph shares go into --out DIR")
    if args.audit_draw is not None:
        raise LipoclassError(
            "--audit-draw is for particle datasets: for micrographs, draw the audit on the "
            "review page (lipoclass review REPORT, audit queue), then predict again with "
            "--audit REPORT/reviews.csv"
        )
    if args.out is None:
        raise LipoclassError("give --out DIR for the micrograph report (a new or empty folder)")
    check_output_folder(args.out)
    mics = [check_micrograph_path(m) for m in inputs]
    source, mics = particle_source(args, mics)
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
        audit=Path(args.audit) if args.audit else None,
    )  # fmt: skip
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from lipoclass.outputs import check_output_file

    dataset = Path(args.dataset) if args.dataset else None
    if args.format == "bioimageio":
        from lipoclass.export.bioimageio import BioimageioConfig, export_bioimageio

        out = Path(args.out or "model.zip")
        try:
            bcfg = BioimageioConfig(tolerance=args.tolerance,
                                    authors=tuple(args.author or ("lipoclass",)))  # fmt: skip
        except ValueError as exc:
            raise LipoclassError(f"export: {exc}") from None
        export_bioimageio(Path(args.model_dir), out, bcfg, dataset=dataset)
        return 0
    from lipoclass.export import ExportConfig, export_onnx

    if args.author:
        raise LipoclassError("--author goes with --format bioimageio")
    out = check_output_file(args.out or "model.onnx")
    export_onnx(Path(args.model_dir), out, ExportConfig(tolerance=args.tolerance),
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


def _register_predict(add: AddCommand) -> None:
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
    p.add_argument("--audit", default=None, metavar="FILE",
                   help="a person's labels of a random audit sample of these particles: the "
                   "review page's reviews.csv (its audit queue) or a CSV id,label (e.g. the "
                   "file from --audit-draw, filled in); adds audit-corrected shares "
                   "(prediction-powered inference) and labels-only shares beside the "
                   "model's. Micrographs: the reviews.csv of an earlier report of the same "
                   "micrographs (ids <micrograph>_<particle>)")  # fmt: skip
    p.add_argument("--audit-draw", type=positive_int, default=None, metavar="K",
                   help="also write <out name>_audit.csv: K particles per sample drawn at "
                   "random (spread over the micrographs) for a person to label")  # fmt: skip
    p.add_argument(
        "--batch-size",
        type=positive_int,
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
    _add_predict_micrograph_options(p)


def _add_predict_micrograph_options(p: Any) -> None:
    g = p.add_argument_group(
        "micrographs", "where the particles are (at most one; default: --detect), how they are "
        "cut out, and where micrographs are processed (docs/micrographs.md)")  # fmt: skip
    add_particle_source_options(g, g, predict=True)
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
    g.add_argument("--pixel-size", type=positive_float, default=None, metavar="NM",
                   help="pixel size in nm (default: from the MRC/TIFF header)")  # fmt: skip
    g.add_argument("--no-pixel-size", action="store_true",
                   help="accept MRC files without a pixel size")  # fmt: skip
    add_executor_options(g, "micrographs processed")
    add_detect_options(p)


def _register_export_explain(add: AddCommand) -> None:
    p = add(
        "export",
        _cmd_export,
        "export a CNN model folder to ONNX or a bioimage.io model package (checked against "
        "PyTorch)",
        "Writes the whole model (the average of its fold models, calibrated) as one ONNX file, "
        "or as a bioimage.io model package (zip with rdf.yaml, ONNX weights, test particles, "
        "cover and README) for the bioimage.io model zoo, ilastik, deepImageJ, Fiji and QuPath.",
    )
    p.add_argument("model_dir", help="CNN model folder from 'train' or 'cv'")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="onnx",
                   help="onnx (default): one .onnx file; bioimageio: a model package .zip "
                   "(docs/deployment.md)")  # fmt: skip
    p.add_argument("--out", default=None,
                   help="output file (default: model.onnx; model.zip for bioimageio)")  # fmt: skip
    p.add_argument("--tolerance", type=positive_float, default=1e-4,
                   help="max abs difference allowed vs PyTorch (default: %(default)s)")  # fmt: skip
    p.add_argument("--dataset", default=None, help="real particles to check on (ONNX: up to "
                   "256) and, for bioimageio, the package's test particles (default: the "
                   "training set model.json records)")  # fmt: skip
    p.add_argument("--author", action="append", default=None, metavar="NAME",
                   help="bioimageio: an author of the package (repeat for several; default: "
                   "lipoclass)")  # fmt: skip

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


def register(add: AddCommand) -> None:
    """Add this group's subcommands."""
    _register_predict(add)
    _register_export_explain(add)
