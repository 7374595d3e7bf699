"""timm-style model registry: ``@register_model`` on a factory, ``create_model(name, ...)``.

Factories take ``(num_classes, in_size, **kw)`` and return an ``nn.Module``; the registry
records each model's default input side so callers (the CLI, ``PrepConfig``) can size inputs
without building the network, and stores the exact constructor arguments on the module
(``model.lipo_config``) so a model folder can rebuild it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from lipoclass.errors import LipoclassError

__all__ = ["create_model", "default_input_size", "list_models", "model_note", "register_model"]

_REGISTRY: dict[str, tuple[Callable[..., nn.Module], int]] = {}
_NOTES: dict[str, str] = {}


def register_model(
    name: str, *, input_size: int = 28, note: str = ""
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a factory ``fn(num_classes, in_size, **kw) -> nn.Module``;
    ``note``: a few words for the ``--model`` help (e.g. "recommended")."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = (fn, int(input_size))
        if note:
            _NOTES[name] = note
        return fn

    return deco


def model_note(name: str) -> str:
    """The help note of a registered model ("" when none)."""
    return _NOTES.get(name, "")


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def _lookup(name: str) -> tuple[Callable[..., nn.Module], int]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise LipoclassError(
            f"unknown model {name!r}; choose from {', '.join(list_models())}"
        ) from None


def default_input_size(name: str) -> int:
    """The input side (pixels) a model is designed for (28 for LipNet-4, 32 for LipNet-6)."""
    return _lookup(name)[1]


def create_model(name: str, num_classes: int, in_size: int | None = None, **kw: Any) -> nn.Module:
    """Build a registered model for ``num_classes`` outputs and ``in_size`` x ``in_size`` input.

    The module gets ``lipo_config = {"name", "num_classes", "in_size", **kw}`` (JSON-able) so
    it can be rebuilt by ``create_model(**cfg)``. Unknown names and impossible sizes raise
    ``LipoclassError``."""
    fn, default = _lookup(name)
    if int(num_classes) < 2:
        raise LipoclassError(f"model {name!r}: need at least 2 classes, got {num_classes}")
    size = default if in_size is None else int(in_size)
    model = fn(num_classes=int(num_classes), in_size=size, **kw)
    model.lipo_config = {"name": name, "num_classes": int(num_classes), "in_size": size, **kw}  # type: ignore[assignment]
    return model
