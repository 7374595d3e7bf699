"""Review commands: ``review [serve]`` (the review page), ``review apply`` (decisions -> a new
dataset version), ``review queue`` (a queue as a CSV, for scripts)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lipoclass.choices import REVIEW_QUEUES as _QUEUES
from lipoclass.cli._common import AddCommand, Parser, positive_int, seed
from lipoclass.errors import LipoclassError

__all__ = ["register"]


class _AnyName(dict):  # type: ignore[type-arg]
    """Subcommand table that, once ``lenient``, lets any first word through argparse's choice
    check (``_DefaultServe`` then reads it as the SOURCE of ``serve``)."""

    lenient = False

    def __contains__(self, key: object) -> bool:
        if not self.lenient:
            return dict.__contains__(self, key)
        return isinstance(key, str) and not key.startswith("-")


class _DefaultServe(argparse._SubParsersAction):  # type: ignore[type-arg]
    """``lipoclass review SOURCE`` means ``lipoclass review serve SOURCE``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._name_parser_map = _AnyName()
        self.choices = self._name_parser_map

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        if values and values[0] not in dict.keys(self._name_parser_map):
            values = ["serve", *values]
        super().__call__(parser, namespace, values, option_string)


def _review_extra() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise LipoclassError(
            "lipoclass review needs Starlette and uvicorn: pip install 'lipoclass[review]'"
        ) from None


def _reviews_path(args: argparse.Namespace, source: Any) -> Path:
    return Path(args.reviews) if args.reviews else source.root / "reviews.csv"


def _cmd_serve(args: argparse.Namespace) -> int:
    _review_extra()
    from lipoclass.review import ReviewConfig, ReviewSession, open_source, serve

    try:
        cfg = ReviewConfig(
            queue=args.queue,
            audit_size=args.audit_size,
            seed=args.seed,
            reviewer=args.reviewer,
            port=args.port,
        )
    except ValueError as exc:
        raise LipoclassError(f"review: {exc}") from None
    source = open_source(args.source, dataset=args.dataset, model=args.model)
    session = ReviewSession(source, _reviews_path(args, source), cfg)
    serve(session, open_browser=not args.no_browser)
    return 0


def _cmd_apply(args: argparse.Namespace) -> int:
    from lipoclass.review import apply_reviews

    src = Path(args.source)
    if args.reviews:
        reviews = Path(args.reviews)
    else:
        reviews = (src if src.is_dir() else src.parent) / "reviews.csv"
    if not reviews.is_file():
        raise LipoclassError(f"{reviews}: decisions file not found (give --reviews FILE)")
    res = apply_reviews(src, reviews, Path(args.out), dataset=args.dataset)
    print(res.text())
    return 0


def _cmd_queue(args: argparse.Namespace) -> int:
    from lipoclass.outputs import check_output_file
    from lipoclass.review import open_source, write_queue

    check_output_file(args.out)
    source = open_source(args.source, dataset=args.dataset, model=args.model)
    n = write_queue(source, args.queue, Path(args.out), audit_size=args.audit_size, seed=args.seed)
    print(f"{args.queue} queue: {n} particle(s) -> {args.out}")
    return 0


def _cmd_help(args: argparse.Namespace) -> int:
    raise LipoclassError(
        "review: give SOURCE (the page) or a subcommand: serve, apply, queue (see "
        "'lipoclass review --help')"
    )


def _source_options(p: argparse.ArgumentParser, model: bool = True) -> None:
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="what predict wrote (the micrograph output folder, or a predictions "
        "CSV with --dataset) or a training dataset folder (with --model)",
    )
    p.add_argument(
        "--dataset",
        metavar="DATASET",
        help="the particle dataset a predictions CSV was predicted from",
    )
    if model:
        p.add_argument(
            "--model",
            metavar="MODEL_DIR",
            help="the model folder: for a training dataset its oof.csv finds the "
            "probably wrong labels; with a dataset its fold models rank the "
            "uncertain queue by their disagreement (BALD) instead of the margin",
        )


def _audit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--audit-size",
        type=positive_int,
        default=200,
        metavar="K",
        help="particles in the random audit sample (default 200)",
    )
    p.add_argument("--seed", type=seed, default=0, help="seed of the audit sample (default 0)")


def register(add: AddCommand) -> None:
    """Add the ``review`` command and its subcommands."""
    p = add(
        "review",
        _cmd_help,
        "check, relabel and audit particles in the browser; apply the decisions",
        "Review particles in a browser page (keys 1-9 set the class, 0 = not a particle, "
        "u = unsure, arrows move, z undoes); every decision is saved at once to reviews.csv. "
        "'lipoclass review SOURCE' is short for 'lipoclass review serve SOURCE'. Then "
        "'lipoclass review apply' makes a new dataset version from the decisions. See "
        "docs/review.md.",
    )
    p.register("action", "parsers", _DefaultServe)
    sub = p.add_subparsers(
        dest="review_command", metavar="{serve,apply,queue}", parser_class=Parser
    )
    s = sub.add_parser(
        "serve",
        help="serve the review page on this computer (127.0.0.1)",
        description="Serve the review page on 127.0.0.1 (a free port, a random "
        "access token in the URL). Queues: " + ", ".join(_QUEUES) + ".",
    )
    s.set_defaults(func=_cmd_serve)
    _source_options(s)
    s.add_argument(
        "--queue",
        choices=_QUEUES,
        default=None,
        help="queue the page opens on (default: the first available; the page switches with q)",
    )
    s.add_argument(
        "--reviews",
        metavar="FILE",
        help="decisions file (default: reviews.csv in the prediction folder, beside "
        "the predictions CSV, or in the dataset folder); a restart resumes it",
    )
    s.add_argument("--reviewer", help="your name, written with every decision (default: login)")
    _audit_options(s)
    s.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    s.add_argument("--no-browser", action="store_true", help="only print the page's URL")
    a = sub.add_parser(
        "apply",
        help="write a new dataset version with the decisions",
        description="Apply a reviews.csv: labels changed, not-a-particle "
        "removed (and written to detection_negatives.csv for the detector), "
        "unsure kept as is; history.csv keeps who changed what and why.",
    )
    a.set_defaults(func=_cmd_apply)
    _source_options(a, model=False)
    a.add_argument("--reviews", metavar="FILE", help="decisions file (default: as for serve)")
    a.add_argument("--out", required=True, metavar="DIR", help="the new dataset (a new folder)")
    q = sub.add_parser(
        "queue",
        help="write a review queue as CSV (id, score, ...)",
        description="Write one review queue, in review order, as a CSV.",
    )
    q.set_defaults(func=_cmd_queue)
    _source_options(q)
    q.add_argument("--queue", choices=_QUEUES, required=True, help="which queue")
    _audit_options(q)
    q.add_argument("--out", required=True, metavar="FILE", help="the CSV to write")
    sub._name_parser_map.lenient = True  # type: ignore[attr-defined]
