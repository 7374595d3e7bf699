"""Dataset commands: synth, info, import-export, features."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lipoclass.choices import SEED_MAX
from lipoclass.cli._common import (
    AddCommand,
    new_output_folder,
    positive_float,
    positive_int,
    seed,
)
from lipoclass.errors import LipoclassError

__all__ = ["register"]


def _cmd_synth(args: argparse.Namespace) -> int:
    from lipoclass.synth import parse_ratios, synthesize

    if args.micrographs:
        return _cmd_synth_micrographs(args)
    new_output_folder(args.out, "output folder")
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


def _cmd_synth_micrographs(args: argparse.Namespace) -> int:
    from lipoclass.synth import parse_ratios, synthesize_micrographs

    if args.n is not None or args.tiff16:
        raise LipoclassError("--n and --tiff16 are for crops; with --micrographs use --count")
    new_output_folder(args.out, "output folder")
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
        touching=args.touching,
        ice=args.ice,
        carbon=args.carbon,
        debris=args.debris,
        gradient=args.gradient,
    )
    print(f"{args.count} micrograph(s) with label images and annotations.csv -> {out}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from lipoclass.data import load_dataset
    from lipoclass.data.info import dataset_info
    from lipoclass.outputs import check_output_file

    ds = load_dataset(args.dataset, allow_outside=args.allow_outside_paths)
    # outputs go only where the user says: no figure without --figure
    figure = check_output_file(Path(args.figure)) if args.figure else None
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


def _register_synth(add: AddCommand) -> None:
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
    p.add_argument("--n", type=positive_int, default=None,
                   help="number of particles (default: the reference size, 14169 for "
                   "lamellarity, 24918 for encapsulation)")  # fmt: skip
    p.add_argument("--seed", type=seed, default=0, help="random seed: the same seed gives "
                   f"the same images (0 to {SEED_MAX}, default: 0)")  # fmt: skip
    p.add_argument(
        "--ratios",
        default=None,
        help="class shares, e.g. 'unilamellar=0.5,multilamellar=0.3,uncertain=0.2', or "
        "'balanced' for equal shares (default: the reference shares)",
    )
    p.add_argument("--tiff16", action="store_true", help="write 16-bit TIFF images, not PNG")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="parallel processes (default: one per CPU core)")  # fmt: skip
    g = p.add_argument_group(
        "whole micrographs",
        "with --micrographs, OUT gets micrographs/ (16-bit TIFF or MRC with the pixel size), "
        "labels/ (instance label images: 0 background, 1..K, open in Fiji or napari) and "
        "annotations.csv (micrograph, instance, label, x, y, diameter_nm, ...)",
    )
    g.add_argument("--micrographs", action="store_true",
                   help="write whole micrographs with many liposomes, not crops")  # fmt: skip
    g.add_argument("--count", type=positive_int, default=4,
                   help="number of micrographs (default: %(default)s)")  # fmt: skip
    g.add_argument("--micrograph-size", type=positive_int, default=1024, metavar="PX",
                   help="side of each square micrograph in px (default: %(default)s)")  # fmt: skip
    g.add_argument("--density", type=positive_float, default=0.2,
                   help="fraction of the field covered by liposomes, up to 0.6 "
                   "(default: %(default)s)")  # fmt: skip
    g.add_argument("--noise", type=positive_float, default=1.0,
                   help="shot-noise factor: 2 means a 4x lower electron dose "
                   "(default: %(default)s)")  # fmt: skip
    g.add_argument("--format", choices=("tiff", "mrc"), default="tiff",
                   help="micrograph file type (default: %(default)s)")  # fmt: skip
    g.add_argument("--pixel-size", type=positive_float, default=None, metavar="NM",
                   help="pixel size in nm (default: drawn per micrograph, 0.4-1.2)")  # fmt: skip
    g.add_argument("--touching", type=float, default=0.3, metavar="SHARE",
                   help="share of liposomes placed against another, 0-1 (default: "
                   "%(default)s)")  # fmt: skip
    g.add_argument("--ice", type=float, default=2.0, metavar="N",
                   help="dark ice blobs per 1024 x 1024 px (default: %(default)s)")  # fmt: skip
    g.add_argument("--carbon", type=float, default=0.5, metavar="P",
                   help="chance of a carbon-film edge per micrograph (default: "
                   "%(default)s)")  # fmt: skip
    g.add_argument("--debris", type=float, default=0.0, metavar="N",
                   help="irregular dark fragments and fibres per 1024 x 1024 px (default: "
                   "%(default)s)")  # fmt: skip
    g.add_argument("--gradient", type=float, default=0.0, metavar="F",
                   help="uneven illumination: relative brightness change across the field, "
                   "0-0.8 (default: %(default)s)")  # fmt: skip


def _register_info(add: AddCommand) -> None:
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
    p.add_argument("--figure", default=None, help="also draw the particle image sizes by "
                   "class into this PNG file (default: no figure)")  # fmt: skip
    p.add_argument("--allow-outside-paths", action="store_true", help="accept image paths "
                   "in particles.csv that lead outside the dataset folder "
                   "(e.g. ../other/a.png)")  # fmt: skip


def _register_import(add: AddCommand) -> None:
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


def _register_features(add: AddCommand) -> None:
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


def register(add: AddCommand) -> None:
    """Add this group's subcommands."""
    for fn in (_register_synth, _register_info, _register_import, _register_features):
        fn(add)
