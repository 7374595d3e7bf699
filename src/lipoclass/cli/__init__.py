"""Command line: ``lipoclass <command> ...``. Each subcommand parses typed arguments and calls
one library function; heavy imports happen only after parsing, so ``--help`` is instant."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from lipoclass.cli._common import Parser
from lipoclass.errors import LipoclassError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    def add(name: str, fn: Callable[[argparse.Namespace], int], help: str, desc: str = "") -> Any:
        p = sub.add_parser(name, help=help, description=desc or help)
        p.set_defaults(func=fn)
        return p

    from lipoclass.cli import data, deploy, fit, micrograph, review

    for group in (fit, data, micrograph, deploy, review):
        group.register(add)
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
