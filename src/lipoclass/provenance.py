"""``versions()``: the software versions recorded with every result (model folder, cv run,
study). Light module: it imports scikit-learn and torch only when called."""

from __future__ import annotations

import platform

__all__ = ["versions"]


def versions() -> dict[str, str]:
    """{"python", "numpy", "sklearn", "torch", "lipoclass"} version strings ("absent" for a
    package that cannot be imported)."""
    from lipoclass import __version__

    out = {"python": platform.python_version()}
    for key, module in (("numpy", "numpy"), ("sklearn", "sklearn"), ("torch", "torch")):
        try:
            out[key] = str(__import__(module).__version__)
        except ImportError:  # pragma: no cover - all are dependencies
            out[key] = "absent"
    out["lipoclass"] = __version__
    return out
