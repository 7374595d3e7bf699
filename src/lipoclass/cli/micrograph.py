"""Micrograph commands: crop, detect, detect-train."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lipoclass.choices import (
    DETECT_TRAIN_BLANKS,
    DETECT_TRAIN_ENSEMBLE,
    DETECT_TRAIN_LABELS,
    DETECT_TRAIN_PRIOR_SHIFT,
    DETECT_TRAIN_THRESHOLDS,
    VERIFIER_LABELS,
    VERIFIER_MODELS,
)
from lipoclass.cli._common import (
    AddCommand,
    add_detect_options,
    add_particle_source_options,
    detect_config,
    new_output_folder,
    particle_source,
    positive_float,
)
from lipoclass.errors import LipoclassError

__all__ = ["register"]


def _cmd_crop(args: argparse.Namespace) -> int:
    from lipoclass.micrograph import CropConfig, crop_micrographs, read_sample_table
    from lipoclass.micrograph.io import check_micrograph_path

    new_output_folder(args.out)
    mics = [check_micrograph_path(m) for m in args.micrographs]
    source, mics = particle_source(args, mics)
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

    if args.classes and not args.truth:
        raise LipoclassError("--classes goes with --truth (a class per annotated particle)")
    new_output_folder(args.out)
    cfg = detect_config(args)
    result = detect_to_folder(
        args.micrographs, Path(args.out), cfg, pixel_size_nm=args.pixel_size,
        truth=Path(args.truth) if args.truth else None,
        truth_classes=Path(args.classes) if args.classes else None,
    )  # fmt: skip
    print(result.text())
    return 0


def _cmd_detect_train(args: argparse.Namespace) -> int:
    from lipoclass.micrograph import CocoSource, LabelImageSource
    from lipoclass.micrograph.io import check_micrograph_path
    from lipoclass.micrograph.verify import train_detect_verifier

    new_output_folder(args.out)
    mics = [check_micrograph_path(m) for m in args.micrographs]
    source: Any
    if args.labels:
        source = LabelImageSource(Path(args.labels), mics)
    else:
        source = CocoSource(Path(args.coco), mics)
        mics = mics or source.micrographs
    if not mics:
        raise LipoclassError("no micrographs given")
    auto = args.threshold == "auto"
    cfg = detect_config(args, DETECT_TRAIN_THRESHOLDS[0] if auto else None)
    ver, stats = train_detect_verifier(
        mics, source, cfg, Path(args.out), pixel_size_nm=args.pixel_size,
        negatives=Path(args.negatives) if args.negatives else None, model=args.model,
        ensemble=args.ensemble, prior=args.prior_shift, blanks=args.blanks,
        thresholds=DETECT_TRAIN_THRESHOLDS if auto else None, labels=args.labels_rule,
    )  # fmt: skip
    _print_training(args, ver, stats, len(mics))
    return 0


def _print_training(args: argparse.Namespace, ver: Any, stats: dict[str, float], n: int) -> None:
    """detect-train's summary: the verifier, its examples, its out-of-fold figures (per
    candidate threshold with --threshold auto) and how to use it."""
    for thr, f in ver.info.get("candidate_thresholds", {}).items():
        print(f"candidate threshold {thr}: {f['candidates']} candidates, "
              f"{f['with_candidate']} of {f['annotated']} annotated liposomes among them; "
              f"out-of-fold precision {f['precision']:.3f}, recall {f['recall']:.3f}, "
              f"F1 {f['f1']:.3f}")  # fmt: skip
    if "candidate_thresholds" in ver.info:
        print(f"candidate threshold {stats['candidate_threshold']:g} chosen (best F1)")
    k = int(ver.info.get("ensemble", 1))
    print(f"{ver.model}" + (f", {k} networks (logits averaged)" if k > 1 else "")
          + (", per-micrograph prior shift" if ver.prior else ", no prior shift"))  # fmt: skip
    print(f"{int(stats['positives'])} annotated liposome(s) and {int(stats['negatives'])} other "
          f"candidate(s) on {n} micrograph(s)"
          + (f" and {args.blanks} blank one(s)" if args.blanks else ""))  # fmt: skip
    print(f"liposome-score threshold {ver.threshold:.2f}: out-of-fold precision "
          f"{stats['oof_precision']:.3f}, recall {stats['oof_recall']:.3f} (of the candidates), "
          f"{stats['detection_recall']:.3f} (of the annotated liposomes)")  # fmt: skip
    print(f"verifier -> {args.out} (use: lipoclass detect ... --verifier {args.out})")


def _register_crop(add: AddCommand) -> None:
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
    add_particle_source_options(src.add_mutually_exclusive_group(required=True), p,
                                predict=False)  # fmt: skip
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
    p.add_argument("--pixel-size", type=positive_float, default=None, metavar="NM",
                   help="pixel size in nm (default: from the MRC/TIFF header)")  # fmt: skip
    p.add_argument("--no-pixel-size", action="store_true",
                   help="accept MRC files without a pixel size (crops get none)")  # fmt: skip
    add_detect_options(p)


def _register_detect(add: AddCommand) -> None:
    p = add(
        "detect",
        _cmd_detect,
        "find liposomes on micrographs and write instance label images",
        "Band-pass filter, ring filters of every radius in the diameter range, outline "
        "refined along rays, touching liposomes split; every candidate then gets a liposome "
        "score from the verifier and those below its threshold are rejected (ice, debris, "
        "film edges, gaps between liposomes). Writes OUT/<micrograph>.tif label images of "
        "the accepted liposomes (0 background, 1..K), detections.csv (every candidate with "
        "its score, status and the reason of a rejection) and overlays/<micrograph>.png "
        "(accepted in blue, rejected in grey; with --truth the annotated particles it "
        "missed in reddish purple); 'lipoclass crop --labels OUT' then cuts the "
        "crops.",
    )
    p.add_argument("micrographs", nargs="+", metavar="MICROGRAPH")
    p.add_argument("--out", required=True, help="output folder for the label images (new)")
    p.add_argument("--pixel-size", type=positive_float, default=None, metavar="NM",
                   help="pixel size in nm (default: from the MRC/TIFF header)")  # fmt: skip
    p.add_argument("--truth", metavar="LABELS",
                   help="true instance label image (one micrograph) or folder of them named "
                   "like the micrographs: prints precision, recall, F1 (mask IoU >= 0.5) "
                   "and mean IoU per micrograph and overall (with a 95 %% interval over "
                   "the micrographs), and writes detection_scores.csv; also scores the "
                   "other --finder on the same micrographs and, with 5 or more of them, "
                   "says whether its F1 is clearly higher or lower "
                   "(finder_comparison.csv)")  # fmt: skip
    p.add_argument("--classes", metavar="CSV",
                   help="with --truth: the class of each annotated particle (columns "
                   "micrograph,instance,label, as for 'crop --classes'): prints each "
                   "class's share among your annotated particles and among those the "
                   "detector found, so you see whether detection alone shifts the class "
                   "shares (detection_by_class.csv)")  # fmt: skip
    add_detect_options(p)


def _register_detect_train(add: AddCommand) -> None:
    p = add(
        "detect-train",
        _cmd_detect_train,
        "train the detector's liposome verifier on your own annotated micrographs",
        "Runs the candidate finder of 'lipoclass detect' on annotated micrographs; "
        "candidates that match an annotated particle (mask IoU >= 0.5) are liposomes, all "
        "other candidates are not, nor are the rows of --negatives (detection_negatives.csv "
        "from the review page). Fits the verifier (a small neural network or a logistic "
        "regression on ring, interior and outline features; by default several networks, "
        "logits averaged, as the default verifier) and picks its threshold on out-of-fold "
        "scores. Writes "
        "OUT/verifier.json and OUT/training.csv; use it with 'detect --verifier OUT'.",
    )
    p.add_argument("micrographs", nargs="*", metavar="MICROGRAPH",
                   help="annotated micrographs (with --coco they may be omitted)")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder for the verifier (new)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--labels",
        metavar="PATH",
        help="instance label image or folder of them named like the micrographs",
    )
    src.add_argument("--coco", metavar="JSON", help="COCO annotations (polygons, RLE or boxes)")
    p.add_argument("--negatives", metavar="CSV",
                   help="detection_negatives.csv (micrograph,x,y,diameter_px,id): candidates "
                   "a reviewer marked as not a particle")  # fmt: skip
    p.add_argument("--model", choices=VERIFIER_MODELS, default=VERIFIER_MODELS[0],
                   help="verifier model: 'mlp' (a small neural network, 32 hidden units) or "
                   "'logistic' (logistic regression, fewer annotations needed; readable "
                   "weights) (default: %(default)s)")  # fmt: skip
    p.add_argument("--ensemble", type=int, default=None, metavar="K",
                   help="networks of the verifier (mlp only; seeds 0, 1000, ..., logits "
                   "averaged, stored as one network), at least 1 (default: "
                   f"{DETECT_TRAIN_ENSEMBLE} with mlp, 1 with logistic)")  # fmt: skip
    shift = "--prior-shift" if DETECT_TRAIN_PRIOR_SHIFT else "--no-prior-shift"
    p.add_argument("--prior-shift", action=argparse.BooleanOptionalAction,
                   default=DETECT_TRAIN_PRIOR_SHIFT,
                   help="lower the scores on micrographs whose share of liposomes among the "
                   "candidates is below the training share, as the default verifier does; "
                   "the threshold is chosen on scores shifted the same way "
                   f"(default: {shift})")  # fmt: skip
    p.add_argument("--blanks", type=int, default=DETECT_TRAIN_BLANKS, metavar="N",
                   help="noise-only micrographs (no liposome) added as negatives, at the "
                   "pixel sizes of the micrographs, so that the verifier rejects empty "
                   "ones; 0: none (default: %(default)s)")  # fmt: skip
    p.add_argument("--labels-rule", choices=VERIFIER_LABELS, default=DETECT_TRAIN_LABELS,
                   help="which candidates count as liposomes in training: 'painted' judges "
                   "each candidate's outline as left over after all candidates' outlines are "
                   "drawn together (a true liposome overlapped by a spurious ring may be "
                   "taught as a non-liposome); 'alone' judges each outline on its own and "
                   "takes, per annotated liposome, only its best-fitting candidate (a "
                   "near-duplicate ring of the same liposome is a non-liposome; it gave the "
                   "better detectors on simulated labs) (default: %(default)s)")  # fmt: skip
    p.add_argument("--pixel-size", type=positive_float, default=None, metavar="NM",
                   help="pixel size in nm (default: from the MRC/TIFF header)")  # fmt: skip
    add_detect_options(p, verifier=False)


def register(add: AddCommand) -> None:
    """Add this group's subcommands."""
    _register_crop(add)
    _register_detect(add)
    _register_detect_train(add)
