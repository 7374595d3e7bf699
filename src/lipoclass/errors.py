"""The one exception type that the CLI turns into a single clear line and a non-zero exit,
and ``finite_number``: a number read from a user's file, or that line."""

from __future__ import annotations

import math

__all__ = ["LipoclassError", "finite_number"]


class LipoclassError(Exception):
    """A problem with the user's input (file, row, option) that is explained in one line.

    Library code raises it with a message that names the file or row and what is wrong;
    ``lipoclass.cli.main`` prints ``lipoclass: error: <message>`` and exits with status 2.
    """


def finite_number(text: str, what: str, where: str) -> float:
    """``text`` (the field ``what`` at ``where``, e.g. "particles.csv row 3") as a finite
    float, else LipoclassError naming both."""
    try:
        value = float(text)
    except ValueError:
        raise LipoclassError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise LipoclassError(f"{where}: {what} is {text!r}, expected a finite number")
    return value
