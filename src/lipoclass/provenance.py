"""``versions()``: the software versions recorded with every result (model folder, cv run,
study, detect folder). Light module: it reads the installed packages' metadata and imports
none of them (scikit-learn and torch cost seconds to import)."""

from __future__ import annotations

import platform
from importlib import metadata

__all__ = ["versions"]


def versions() -> dict[str, str]:
    """{"python", "numpy", "sklearn", "torch", "lipoclass"} version strings ("absent" for a
    package that is not installed)."""
    from lipoclass import __version__

    out = {"python": platform.python_version()}
    for key, dist in (("numpy", "numpy"), ("sklearn", "scikit-learn"), ("torch", "torch")):
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:  # pragma: no cover - all are dependencies
            out[key] = "absent"
    out["lipoclass"] = __version__
    return out
