"""Check that an output file or folder can be written *before* any expensive work starts.

Light module (standard library only) so the CLI can call it right after parsing::

    check_output_file(path) -> Path        # a file to be (over)written
    check_output_folder(path, allow_existing_kind=None) -> Path

Both raise :class:`lipoclass.errors.LipoclassError` with one line naming the location when it
cannot be written (a parent is a regular file, a directory is read-only, the path is a folder
where a file is expected, ...). They create nothing: the probe file they write to test the
nearest existing parent is removed at once.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from lipoclass.errors import LipoclassError

__all__ = ["check_output_file", "check_output_folder", "check_writable_dir", "save_figure"]


def _nearest_existing(path: Path) -> Path:
    """The path itself or its closest ancestor that exists (anything: file, folder, link)."""
    p = path
    while not p.exists() and not p.is_symlink():
        if p.parent == p:
            break
        p = p.parent
    return p


def check_writable_dir(folder: Path, what: Path | None = None) -> None:
    """Raise unless new entries can be created in the existing directory ``folder``.

    ``what`` is the output location named in the message (default: ``folder``)."""
    target = what if what is not None else folder
    if not os.access(folder, os.W_OK | os.X_OK):
        raise LipoclassError(f"cannot write {target}: folder {folder} is not writable")
    try:
        fd, probe = tempfile.mkstemp(prefix=".lipoclass-probe-", dir=folder)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise LipoclassError(f"cannot write {target}: {reason} in {folder}") from None
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:  # pragma: no cover - removed by someone else
        pass


def _check_parents(path: Path) -> None:
    """The nearest existing ancestor of ``path`` must be a writable directory."""
    parent = _nearest_existing(path.parent)
    if not parent.is_dir():
        raise LipoclassError(f"cannot write {path}: {parent} is a file, not a folder")
    check_writable_dir(parent, path)


def check_output_file(path: str | os.PathLike[str]) -> Path:
    """Check that the file ``path`` can be created or replaced; returns it as a Path.

    Refused: ``path`` is an existing folder, a parent is a regular file, or the nearest
    existing parent folder (or the existing file) is not writable."""
    p = Path(path)
    if p.is_dir():
        raise LipoclassError(f"cannot write {p}: it is a folder (give a file name)")
    if p.exists():
        if not os.access(p, os.W_OK):
            raise LipoclassError(f"cannot write {p}: the file is read-only")
        # outputs are written to a temporary name beside the file and renamed
        check_writable_dir(p.parent if str(p.parent) else Path("."), p)
        return p
    _check_parents(p)
    return p


def check_output_folder(
    path: str | os.PathLike[str],
    *,
    allow_existing_kind: str | None = None,
    marker: str | None = None,
) -> Path:
    """Check that the folder ``path`` can be created (or written into); returns it as a Path.

    ``path`` may not exist yet (its nearest existing parent must be a writable folder) or be
    an empty folder. A non-empty existing folder is accepted only when ``allow_existing_kind``
    is given and ``marker`` (a file name, e.g. ``study.json``) exists in it, i.e. the folder
    is an earlier output of the same kind (``allow_existing_kind`` names it in the message);
    with ``allow_existing_kind`` and no ``marker`` any existing folder is accepted.
    """
    p = Path(path)
    if p.exists() or p.is_symlink():
        if not p.is_dir():
            raise LipoclassError(f"cannot write folder {p}: it is a file")
        if any(p.iterdir()):
            if allow_existing_kind is None:
                raise LipoclassError(
                    f"output folder {p} already exists and is not empty; give a new folder"
                )
            if marker is not None and not (p / marker).exists():
                raise LipoclassError(
                    f"output folder {p} is not empty and is not an earlier "
                    f"{allow_existing_kind} output (no {marker}); give a new or empty folder"
                )
        check_writable_dir(p)
        return p
    _check_parents(p)
    return p


def save_figure(fig: Any, out: Path, dpi: int, **savefig: Any) -> Path:
    """Write the matplotlib figure ``fig`` to ``out`` (PNG) through a temp file renamed into
    place, so a failed write leaves no half-written file; a pyplot figure is closed.
    ``savefig``: more keywords of ``Figure.savefig`` (e.g. ``bbox_inches``)."""
    import sys

    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}.png")
    try:
        fig.savefig(tmp, format="png", dpi=dpi, **savefig)
        os.replace(tmp, out)
    finally:
        if "matplotlib.pyplot" in sys.modules:  # figures made without pyplot need no closing
            sys.modules["matplotlib.pyplot"].close(fig)
        tmp.unlink(missing_ok=True)
    return out
