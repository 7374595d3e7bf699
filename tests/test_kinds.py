"""Model kinds behind one registry: a third kind, defined only here (nearest class mean on
the prepared pixels), runs through cv -> model folder -> predict -> shares without any other
file knowing it; and no code outside ``lipoclass.kinds`` tests a kind's name."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lipoclass.cli import main
from lipoclass.data import ParticleDataset, PrepConfig, load_dataset, prepare
from lipoclass.errors import LipoclassError
from lipoclass.kinds import Backend, Kind, get_kind, register_kind, unregister_kind

SRC = Path(__file__).resolve().parents[1] / "src" / "lipoclass"


@dataclass(frozen=True)
class NCMConfig:
    """``sharpness``: probabilities are softmax(-sharpness * mean squared distance)."""

    sharpness: float = 2.0

    def __post_init__(self) -> None:
        if not self.sharpness > 0:
            raise ValueError(f"sharpness must be positive, got {self.sharpness}")


def ncm_proba(means: np.ndarray, sharpness: float, x: np.ndarray) -> np.ndarray:
    """(n, C) softmax of -sharpness * mean squared distance of x (n,1,S,S) to means (C, S*S)."""
    flat = x.reshape(len(x), -1).astype(np.float64)  # (n, S*S)
    d = ((flat[:, None, :] - means[None]) ** 2).mean(axis=2)  # (n, C)
    z = -sharpness * d
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class NCMEstimator:
    def __init__(self, prep: PrepConfig, cfg: NCMConfig, classes: tuple[str, ...]) -> None:
        self.prep, self.cfg, self.classes = prep, cfg, classes
        self.means = np.zeros((0, 0))

    def _rows(self, dataset: ParticleDataset, idx: np.ndarray) -> tuple[np.ndarray, Any]:
        prepared = prepare(dataset, self.prep)
        lookup = {int(p): r for r, p in enumerate(prepared.index)}
        return np.array([lookup[int(i)] for i in idx], dtype=np.int64), prepared

    def usable(self, dataset: ParticleDataset) -> np.ndarray:
        ok = np.zeros(len(dataset), dtype=bool)
        ok[prepare(dataset, self.prep).index] = True
        return ok

    def fit(self, dataset: ParticleDataset, train_idx: np.ndarray) -> NCMEstimator:
        rows, prepared = self._rows(dataset, train_idx)
        flat = prepared.x[rows].reshape(len(rows), -1).astype(np.float64)
        y = prepared.y[rows]
        self.classes = tuple(dataset.classes)
        self.means = np.stack([flat[y == k].mean(axis=0) for k in range(len(self.classes))])
        return self

    def predict_proba(self, dataset: ParticleDataset, idx: np.ndarray) -> np.ndarray:
        rows, prepared = self._rows(dataset, idx)
        return ncm_proba(self.means, self.cfg.sharpness, prepared.x[rows])


class NCMKind(Kind):
    """Nearest class mean on the prepared pixels; a member is an .npz of the class means."""

    name = "ncm"
    member_suffix = ".npz"

    def model_names(self) -> tuple[str, ...]:
        return ("ncm",)

    def config_class(self) -> type:
        return NCMConfig

    def build(self, model: str, options: dict[str, Any]) -> tuple[PrepConfig, Any]:
        size = options.get("size") or 12
        return PrepConfig(mode=options.get("mode", "auto"), size=size), NCMConfig()

    def make_estimator(self, spec: Any, seed: int, classes: tuple[str, ...]) -> Any:
        return NCMEstimator(spec.prep, spec.config, classes)

    def save_member(self, estimator: Any, path: Path) -> None:
        with path.open("wb") as fh:
            np.savez(fh, means=estimator.means, sharpness=estimator.cfg.sharpness)

    def load_member(
        self, path: Path, info: dict[str, Any], prep: PrepConfig, classes: tuple[str, ...]
    ) -> Any:
        with np.load(path) as z:
            return z["means"], float(z["sharpness"])

    def runners(self, members: Any, info: dict[str, Any], backend: Backend) -> list[Any]:
        return [lambda x, aux, m=m: ncm_proba(m[0], m[1], x) for m in members]


@pytest.fixture
def ncm_kind() -> Iterator[NCMKind]:
    kind = register_kind(NCMKind())
    yield kind
    unregister_kind("ncm")


def test_a_third_kind_runs_through_cv_model_folder_predict_and_shares(
    tiny_dataset: Any, ncm_kind: NCMKind, tmp_path: Path, capsys: Any
) -> None:
    ds_dir = tiny_dataset(counts=(12, 10, 8), size=(20, 28), samples=2)
    model = tmp_path / "ncm_model"
    assert main(["train", str(ds_dir), "--model", "ncm", "--folds", "3", "--out", str(model),
                 "--seed", "1"]) == 0  # fmt: skip
    info = json.loads((model / "model.json").read_text())
    assert info["kind"] == "ncm" and info["members"] == [f"members/fold{k}.npz" for k in range(3)]
    assert info["spec"]["config"] == {"sharpness": 2.0}
    assert info["input"]["size"] == 12 and info["input"]["rescaled"] is False
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["model"] == "ncm" and metrics["n_particles"] == 30

    out = tmp_path / "predictions.csv"
    assert main(["predict", str(model), str(ds_dir), "--out", str(out)]) == 0
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    classes = info["classes"]
    got = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows])  # (N, C)

    # the same numbers by hand: mean over the fold members of each one's class-mean softmax
    ds = load_dataset(ds_dir)
    prepared = prepare(ds, PrepConfig(**info["prep"]), cache=False)
    members = [np.load(model / rel) for rel in info["members"]]
    want = np.mean([ncm_proba(m["means"], float(m["sharpness"]), prepared.x) for m in members],
                   axis=0)  # fmt: skip
    assert [r["id"] for r in rows] == prepared.ids
    np.testing.assert_allclose(got, want, atol=2e-6)  # predictions.csv keeps 6 decimals
    assert (got.argmax(1) == prepared.y).mean() > 0.5  # it learned something

    shares = out.with_name("predictions_shares.csv")
    with shares.open(newline="") as fh:
        share_rows = list(csv.DictReader(fh))
    assert {r["sample"] for r in share_rows} == {"s0", "s1"}
    assert {r["class"] for r in share_rows} == set(classes)
    assert "predictions" in capsys.readouterr().out


def test_unknown_kind_and_model_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(LipoclassError, match="model kind 'nope' is unknown"):
        get_kind("nope")
    folder = tmp_path / "m"
    (folder / "members").mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps({
        "format_version": 2, "kind": "ncm", "model": "ncm", "classes": ["a", "b"],
        "prep": {"mode": "masked", "size": 12}, "members": ["members/fold0.npz"],
    }))  # fmt: skip
    from lipoclass.ensemble import load_model

    with pytest.raises(LipoclassError, match=r"model\.json: kind 'ncm' is not one of cnn, svm"):
        load_model(folder)  # the kind is not registered in this process


def test_registering_a_taken_name_is_refused(ncm_kind: NCMKind) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_kind(NCMKind())


# what a branch on a kind's name looks like (comparisons and the old per-kind spec fields)
_KIND_BRANCH = re.compile(
    r"""(kind|model)\s*[!=]=\s*["'](svm|cnn)["']|["'](svm|cnn)["']\s*([!=]=|(not\s+)?in\b)|"""
    r"""spec\.(train|svm)\b|\.estimators\b"""
)


def test_no_code_outside_the_kinds_package_branches_on_the_kind() -> None:
    hits = []
    for py in sorted(SRC.rglob("*.py")):
        if "kinds" in py.relative_to(SRC).parts:
            continue
        for n, line in enumerate(py.read_text().splitlines(), start=1):
            if _KIND_BRANCH.search(line):
                hits.append(f"{py.relative_to(SRC)}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)
    # and the pattern does catch the old style
    assert _KIND_BRANCH.search('if spec.kind == "cnn":')
    assert _KIND_BRANCH.search("want = spec.svm is not None")
    assert _KIND_BRANCH.search('if "svm" in models and len(models) > 1:')


def test_model_help_lists_every_registered_kind(
    ncm_kind: NCMKind, capsys: pytest.CaptureFixture[str]
) -> None:
    """--model's help is built from the kinds registry when shown, so a new kind's models
    appear without any CLI change."""
    from lipoclass.cli import main

    with pytest.raises(SystemExit):
        main(["cv", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "'svm': a support-vector machine" in text
    assert "lipnet4 (recommended)" in text and "tiny (for tests)" in text
    assert "a ncm model: ncm" in text
