"""The one exception type that the CLI turns into a single clear line and a non-zero exit."""

from __future__ import annotations

__all__ = ["LipoclassError"]


class LipoclassError(Exception):
    """A problem with the user's input (file, row, option) that is explained in one line.

    Library code raises it with a message that names the file or row and what is wrong;
    ``lipoclass.cli.main`` prints ``lipoclass: error: <message>`` and exits with status 2.
    """
