"""Study files: a TOML declaration of many cross-validation runs (thesis sections 8-9).

A study names its datasets, the folds/seed shared by every run, ``[base]`` settings and either
a ``[grid]`` (cartesian product of lists), an explicit ``[[runs]]`` list, or both (every
explicit run crossed with every grid point). Settings keys are the keyword arguments of
``lipoclass.evaluate.build_spec`` plus ``model``, ``label`` (display name only), any other
``TrainConfig`` / ``SVMConfig`` field (applied on top of ``build_spec``), and
``synthetic = "auto"`` (synthetic training data made by ``lipoclass.synth``).
"""

from __future__ import annotations

import itertools
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from lipoclass.errors import LipoclassError

__all__ = [
    "BUILD_SPEC_KEYS",
    "PLOTS",
    "RunSettings",
    "Study",
    "list_presets",
    "load_study",
    "resolve_spec",
    "setting_keys",
]

#: keyword arguments of ``build_spec`` besides ``model``
BUILD_SPEC_KEYS = (
    "mode",
    "size",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "balance",
    "augment",
    "device",
    "features",
)
#: figure types the report can draw; ``[study] plots`` picks them (default: inferred)
PLOTS = ("steps", "f1", "compare")
_STUDY_KEYS = ("name", "description", "datasets", "folds", "seed", "group_by", "plots")


def _config_fields() -> set[str]:
    """Field names of every model kind's config (settable on top of build_spec)."""
    from lipoclass.kinds import get_kind, kind_names

    out: set[str] = set()
    for name in kind_names():
        out |= get_kind(name).config_fields()
    return out


def setting_keys() -> tuple[str, ...]:
    """Every key a run's settings may use."""
    return tuple(sorted({"model", "label", *BUILD_SPEC_KEYS} | _config_fields()))


def _freeze(v: Any) -> Any:
    """TOML lists -> tuples so settings are hashable and compare by value."""
    if isinstance(v, list | tuple):
        return tuple(_freeze(x) for x in v)
    return v


@dataclass(frozen=True)
class RunSettings:
    """One run of a study: resolved settings (base, then grid point, then explicit run)."""

    label: str
    settings: tuple[tuple[str, Any], ...]

    def __post_init__(self) -> None:
        if not self.label:
            raise ValueError("run label must not be empty")
        keys = [k for k, _ in self.settings]
        if "model" not in keys:
            raise ValueError(f"run {self.label!r} has no 'model' setting")
        if len(set(keys)) != len(keys):
            raise ValueError(f"run {self.label!r} repeats a setting")

    def as_dict(self) -> dict[str, Any]:
        return dict(self.settings)

    @property
    def model(self) -> str:
        return str(self.as_dict()["model"])


@dataclass(frozen=True)
class Study:
    """A validated study declaration (datasets may still be given on the command line)."""

    name: str
    runs: tuple[RunSettings, ...]
    description: str = ""
    datasets: tuple[str, ...] = ()
    folds: int = 5
    seed: int = 0
    group_by: str | None = None
    plots: tuple[str, ...] = ()
    varying: tuple[str, ...] = ()
    source: str = ""
    base: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("study name must not be empty")
        if not self.runs:
            raise ValueError("a study needs at least one run")
        if int(self.folds) < 2:
            raise ValueError(f"folds must be at least 2, got {self.folds}")
        if self.group_by not in (None, "sample"):
            raise ValueError(f"group_by must be 'sample' or absent, got {self.group_by!r}")
        bad = [p for p in self.plots if p not in PLOTS]
        if bad:
            raise ValueError(f"unknown plot {bad[0]!r}; choose from {', '.join(PLOTS)}")
        labels = [r.label for r in self.runs]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(f"two runs share the label {dup[0]!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form stored in study.json."""
        return {
            "name": self.name,
            "description": self.description,
            "datasets": list(self.datasets),
            "folds": self.folds,
            "seed": self.seed,
            "group_by": self.group_by,
            "plots": list(self.plots),
            "varying": list(self.varying),
            "source": self.source,
            "runs": [{"label": r.label, "settings": _jsonable(r.as_dict())} for r in self.runs],
        }


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v


def list_presets() -> list[str]:
    """Names of the built-in studies (``src/lipoclass/study/presets/*.toml``)."""
    folder = resources.files("lipoclass.study") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def _read(path_or_preset: str | os.PathLike[str]) -> tuple[str, str, Path | None]:
    """(TOML text, where for messages, folder for relative dataset paths)."""
    text_name = str(path_or_preset)
    p = Path(text_name)
    if p.suffix == ".toml" or p.exists() or os.sep in text_name:
        if not p.is_file():
            raise LipoclassError(f"{p}: study file not found")
        return p.read_text(encoding="utf-8"), str(p), p.resolve().parent
    presets = list_presets()
    if text_name not in presets:
        raise LipoclassError(
            f"unknown study preset {text_name!r}; choose from {', '.join(presets)} "
            f"or give a .toml file"
        )
    res = resources.files("lipoclass.study") / "presets" / f"{text_name}.toml"
    return res.read_text(encoding="utf-8"), f"preset {text_name}", None


def _check_settings(where: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    for k in table:
        if k not in allowed:
            from lipoclass.kinds import get_kind, kind_names

            configs = "/".join(get_kind(n).config_class().__name__ for n in kind_names())
            raise LipoclassError(
                f"{where}: unknown setting {k!r} (known: model, label, "
                f"{', '.join(BUILD_SPEC_KEYS)} or a {configs} field)"
            )


def _default_label(settings: Mapping[str, Any], varying: list[str]) -> str:
    keys = [k for k in varying if k != "label"] or ["model"]
    parts = []
    for k in keys:
        v = settings.get(k)
        if isinstance(v, tuple):
            v = "+".join(str(x) for x in v) or "none"
        parts.append(str(v) if len(keys) == 1 else f"{k}={v}")
    return ", ".join(parts)


def _parse_toml(text: str, where: str) -> dict[str, Any]:
    """The TOML document (LipoclassError keeping the line number otherwise)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        if "line" not in msg:  # "at end of document": name the last line
            msg += f" (line {max(1, len(text.splitlines()))}, end of file)"
        raise LipoclassError(f"{where}: invalid TOML: {msg}") from None


def _sections(
    doc: dict[str, Any], where: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """([study], [base], [grid], [[runs]]) of a study document, their keys checked."""
    unknown = [k for k in doc if k not in ("study", "base", "grid", "runs")]
    if unknown:
        raise LipoclassError(
            f"{where}: unknown section [{unknown[0]}] (use study, base, grid, runs)"
        )
    head = doc.get("study", {})
    if not isinstance(head, dict):
        raise LipoclassError(f"{where}: [study] must be a table")
    for k in head:
        if k not in _STUDY_KEYS:
            raise LipoclassError(
                f"{where}: unknown key {k!r} in [study] (known: {', '.join(_STUDY_KEYS)})"
            )
    allowed = {"model", "label", *BUILD_SPEC_KEYS} | _config_fields()
    base = doc.get("base", {})
    grid = doc.get("grid", {})
    runs = doc.get("runs", [])
    if not isinstance(base, dict):
        raise LipoclassError(f"{where}: [base] must be a table")
    if not isinstance(grid, dict):
        raise LipoclassError(f"{where}: [grid] must be a table of lists")
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise LipoclassError(f"{where}: runs must be written as [[runs]] tables")
    _check_settings(f"{where} [base]", base, allowed)
    _check_settings(f"{where} [grid]", grid, allowed)
    for i, r in enumerate(runs, start=1):
        _check_settings(f"{where} [[runs]] #{i}", r, allowed)
    for k, v in grid.items():
        if not isinstance(v, list) or not v:
            raise LipoclassError(f"{where} [grid]: {k!r} must be a non-empty list of values")
    if "label" in grid:
        raise LipoclassError(f"{where} [grid]: 'label' cannot be a grid key")
    if not grid and not runs and not base:
        raise LipoclassError(
            f"{where}: the study declares no runs; add [[runs]] tables (e.g. "
            "model = 'lipnet4'), a [grid] or [base] settings, or use a preset (benchmark, ...)"
        )
    return head, base, grid, runs


def _expand_runs(
    base: dict[str, Any], grid: dict[str, Any], runs: list[dict[str, Any]], where: str
) -> tuple[list[RunSettings], list[str]]:
    """(every run: each [[runs]] table x each [grid] point over [base], labelled; the
    settings that vary)."""
    points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] or [{}]
    explicit = runs or [{}]
    varying = list(grid)
    for r in runs:
        for k in r:
            if k not in varying and k != "label":
                varying.append(k)
    resolved: list[RunSettings] = []
    for r in explicit:
        clash = [k for k in r if k in grid]
        if clash:
            raise LipoclassError(
                f"{where}: setting {clash[0]!r} is both a [grid] key and set in [[runs]]"
            )
        for point in points:
            merged = {"model": "lipnet4", **base, **point, **r}
            label = merged.pop("label", None)
            frozen = {k: _freeze(v) for k, v in merged.items()}
            if label is None or (len(points) > 1 and point):
                auto = _default_label(frozen, list(grid) or varying)
                label = f"{label} / {auto}" if label else auto
            try:
                resolved.append(RunSettings(str(label), tuple(sorted(frozen.items()))))
            except ValueError as exc:
                raise LipoclassError(f"{where}: {exc}") from None
    return resolved, varying


def _study_datasets(head: dict[str, Any], where: str, folder: Path | None) -> list[str]:
    """[study] datasets, relative paths taken from the study file's folder."""
    datasets = head.get("datasets", [])
    if isinstance(datasets, str):
        datasets = [datasets]
    if not isinstance(datasets, list) or not all(isinstance(d, str) for d in datasets):
        raise LipoclassError(f"{where}: [study] datasets must be a list of folder paths")
    if folder is not None:
        datasets = [str(folder / d) if not Path(d).is_absolute() else d for d in datasets]
    return datasets


def load_study(path_or_preset: str | os.PathLike[str]) -> Study:
    """Read and validate a study from a ``.toml`` file or a preset name.

    Unknown presets, unknown sections/settings, wrong types and TOML syntax errors (the
    message keeps the line number) raise ``LipoclassError``.
    """
    text, where, folder = _read(path_or_preset)
    head, base, grid, runs = _sections(_parse_toml(text, where), where)
    resolved, varying = _expand_runs(base, grid, runs, where)
    datasets = _study_datasets(head, where, folder)
    plots = head.get("plots", [])
    if not isinstance(plots, list):
        raise LipoclassError(f"{where}: [study] plots must be a list")
    for key, typ in (("folds", int), ("seed", int)):
        if key in head and (not isinstance(head[key], typ) or isinstance(head[key], bool)):
            raise LipoclassError(f"{where}: [study] {key} must be an integer")
    group_by = head.get("group_by") or None
    default_name = Path(where).stem if folder is not None else where.split()[-1]
    try:
        study = Study(
            name=str(head.get("name", default_name)),
            description=str(head.get("description", "")),
            runs=tuple(resolved),
            datasets=tuple(datasets),
            folds=int(head.get("folds", 5)),
            seed=int(head.get("seed", 0)),
            group_by=group_by,
            plots=tuple(plots),
            varying=tuple(varying),
            source=where,
            base=dict(base),
        )
    except ValueError as exc:
        raise LipoclassError(f"{where}: {exc}") from None
    for run in study.runs:
        resolve_spec(run, where=where)  # every setting value checked before any run
    return study


def resolve_spec(run: RunSettings, *, where: str = "study", quick_epochs: int | None = None) -> Any:
    """``ModelSpec`` of one run: ``build_spec`` with its keys, then the remaining fields of
    the model kind's config (TrainConfig, SVMConfig, ...) replaced on top. ``quick_epochs``
    caps CNN epochs.
    ``synthetic = "auto"`` is left for the runner to replace by a folder."""
    from lipoclass.spec import build_spec

    s = run.as_dict()
    s.pop("label", None)
    model = str(s.pop("model"))
    kw = {k: s.pop(k) for k in BUILD_SPEC_KEYS if k in s}
    if "augment" in kw:
        kw["augment"] = tuple(kw["augment"])
    if quick_epochs is not None:
        kw["epochs"] = min(int(kw.get("epochs", quick_epochs)), quick_epochs)
    try:
        spec = build_spec(model, **kw)
    except LipoclassError as exc:
        raise LipoclassError(f"{where}: run {run.label!r}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise LipoclassError(f"{where}: run {run.label!r}: {exc}") from None
    fields = spec.kind.config_fields()  # keys of other kinds do not apply to this run
    try:
        extra = {k: _freeze(v) for k, v in s.items() if k in fields}
        if extra:
            spec = spec.with_config(**extra)
    except (TypeError, ValueError) as exc:
        raise LipoclassError(f"{where}: run {run.label!r}: {exc}") from None
    return spec
