"""Fitting commands: demo, cv, train, study, report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from lipoclass.choices import DEFAULT_RECIPE, RECIPES, SEED_MAX
from lipoclass.cli._common import (
    FIXED_ONLY,
    AddCommand,
    add_executor_options,
    add_model_options,
    folds,
    fraction,
    seed,
    spec_from_args,
)
from lipoclass.errors import LipoclassError

__all__ = ["register"]


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
    cv = CVConfig(folds=args.folds, seed=args.seed, group_by=args.group_by)
    if _recipe(args) == "auto":
        return _fit_auto(args, cv, exe)
    args.model = args.model or args.model_default
    if args.model is None:
        raise LipoclassError("--recipe fixed needs --model (or leave both out: --recipe auto)")
    spec = spec_from_args(args)
    ds = load_dataset(args.dataset)
    _, result = fit_model(ds, spec, cv, out, features_csv=args.features_csv, executor=exe,
                          review_target=args.review_target, tta=args.tta)  # fmt: skip
    print(result.table())
    print(f"model folder (cross-validation results and {result.metrics['folds']} fold models): "
          f"{out}")  # fmt: skip
    return 0


def _fixed_options(args: argparse.Namespace) -> list[str]:
    """The FIXED_ONLY options given with a value other than their default, as flags."""
    return [f"--{k.replace('_', '-')}" for k in FIXED_ONLY
            if getattr(args, k) != args.fixed_defaults[k]]  # fmt: skip


def _recipe(args: argparse.Namespace) -> str:
    """``--recipe`` as given; left out: ``fixed`` when a model option is given (--model,
    --size, ...: the user chose the model), else ``auto`` (the default)."""
    if args.recipe is not None:
        return str(args.recipe)
    return "fixed" if _fixed_options(args) else DEFAULT_RECIPE


def _fit_auto(args: argparse.Namespace, cv: Any, exe: Any) -> int:
    """``--recipe auto``: the plan and the candidates (``lipoclass.recipe.fit_auto``)."""
    from lipoclass.data import load_dataset
    from lipoclass.recipe import RecipeConfig, fit_auto

    given = _fixed_options(args)
    if given:  # never silently ignored
        raise LipoclassError(f"{given[0]} does not go with --recipe auto (the recipe plans the "
                             "models, input preparation, training and balance itself; "
                             "--recipe fixed takes them as given)")  # fmt: skip
    # --epochs caps the plan's epochs (the budget rule may use fewer)
    cfg = RecipeConfig(device=args.device, precision=args.precision, max_epochs=args.epochs,
                       min_epochs=min(10, args.epochs))  # fmt: skip
    ds = load_dataset(args.dataset)
    res = fit_auto(ds, cv, args.out, config=cfg, executor=exe, review_target=args.review_target)
    print(res.text())
    print(f"model folder ({res.chosen}; every candidate's figures in recipe.json): {res.out}")
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


# built-in studies (src/lipoclass/study/presets/*.toml; a test checks this list is complete)
_PRESETS = {
    "benchmark": "LipNet-4 against the SVM on measured features, 2 runs (~1 h)",
    "architectures": "per-class F1 of the 7 LipNet network designs, 7 runs (~6 h)",
    "augmentation": "adding image augmentations one by one to LipNet-4, 6 runs (~5 h)",
    "imbalance": "7 ways of handling rare classes for LipNet-4, 7 runs (~6 h)",
    "input-modes": "LipNet-4 on whole image, crop, or masked crop, 3 runs (~2.5 h)",
}


def _register_demo(add: AddCommand) -> None:
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
    p.add_argument("--seed", type=seed, default=0, help="random seed for data and folds "
                   f"(0 to {SEED_MAX}, default: 0)")  # fmt: skip


def _register_fit(add: AddCommand) -> None:
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
        add_model_options(p, default_model=default_model)
        p.add_argument("--recipe", choices=RECIPES, default=None,
                       help=f"{DEFAULT_RECIPE} (default, unless a model option such as --model "
                       "or --size is given): measure the dataset (particle size, classes, "
                       "pixel size), plan the input size, epochs and balance by written "
                       "rules, cross-validate a few candidates (CNN at one or two sizes, SVM, "
                       "their stack) on the same folds and keep the best by out-of-fold "
                       "macro-F1 (at most ~3x one cross-validation; --epochs caps the plan's "
                       "epochs); fixed (the default when a model option is given): the "
                       "--model and its options as given (docs/cnn.md, Self-configuring "
                       "recipe)")  # fmt: skip
        p.add_argument("--folds", type=folds, default=5,
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
        p.add_argument("--review-target", type=fraction, default=0.95, metavar="ACC",
                       help="flag particles for review until the rest reach this accuracy, "
                       "measured out of fold (default: 0.95)")  # fmt: skip
        p.add_argument(
            "--tta",
            action="store_true",
            help="CNN: predict with every flip and quarter turn of each particle "
            "and average, the out-of-fold figures too, so they describe what the model "
            "folder predicts (8x slower prediction; off by default, docs/cnn.md)",
        )
        add_executor_options(p, "folds trained")
        # the model options' own defaults: what "given" means for the implied recipe
        p.set_defaults(fixed_defaults={k: p.get_default(k) for k in FIXED_ONLY})
        p.add_argument(
            "-o",
            "--out",
            required=True,
            help="model folder to write (new, or an earlier model folder to replace)",
        )


def _register_study(add: AddCommand) -> None:
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
    add_executor_options(p, "study runs")

    p = add("report", _cmd_report, "rebuild DIR/report.html from a study folder's stored results")
    p.add_argument("dir", help="study folder (or one 'lipoclass cv' results folder)")


def register(add: AddCommand) -> None:
    """Add this group's subcommands."""
    for fn in (_register_demo, _register_fit, _register_study):
        fn(add)
