"""``FoldStore``: the finished folds of one cross-validation, kept on disk so that a killed
run resumes.

A fold's outcome (out-of-fold probabilities, fit info, importance and, for a model folder,
the fitted fold estimator) is written as ``fold<k>.pkl`` as soon as the fold ends (temporary
name, then ``os.replace``: a kill leaves no half-written fold). Each file carries the run's
fingerprint (dataset content + model spec + CV settings + seed + software versions, see
``run_fingerprint``) and a hash of the fold's training and test positions; a fold is reused
only when both match, so a rerun with other data or settings starts fresh. Every fold has
its own seed (``_fold_seed``), so a resumed run equals an uninterrupted one.

The files are pickles written by this process for this process: never load a store from
a source you do not trust (the staging folder beside ``--out`` is the only place used)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from lipoclass.data import ParticleDataset
    from lipoclass.evaluate.cv import CVConfig, FoldOutcome
    from lipoclass.spec import ModelSpec

__all__ = ["FoldStore", "run_fingerprint"]

_FINGERPRINT = "fingerprint.json"


def run_fingerprint(
    dataset: ParticleDataset,
    spec: ModelSpec,
    cv: CVConfig,
    features_csv: str | os.PathLike[str] | None = None,
) -> str:
    """Hash of everything that decides the fold models: the dataset's content
    (``dataset_fingerprint``), the model spec, folds / seed / grouping, an external
    features table (name, size, modification time) and the software versions."""
    from lipoclass.data import dataset_fingerprint
    from lipoclass.provenance import versions

    feat = None
    if features_csv is not None:
        p = Path(features_csv)
        st = p.stat() if p.is_file() else None
        feat = [str(p.resolve()), st.st_size if st else -1, st.st_mtime_ns if st else -1]
    blob = json.dumps(
        {"dataset": dataset_fingerprint(dataset), "spec": spec.to_dict(), "cv": asdict(cv),
         "features_csv": feat, "versions": versions()},
        sort_keys=True, default=str,
    )  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()


def _split_hash(train: np.ndarray, test: np.ndarray) -> str:
    h = hashlib.sha256(np.asarray(train, dtype=np.int64).tobytes())
    h.update(b"|")
    h.update(np.asarray(test, dtype=np.int64).tobytes())
    return h.hexdigest()


class FoldStore:
    """Finished folds of the run with ``fingerprint`` in ``folder``."""

    def __init__(self, folder: str | os.PathLike[str], fingerprint: str) -> None:
        self.folder = Path(folder)
        self.fingerprint = fingerprint

    def matches(self) -> bool:
        """Whether ``folder`` holds folds of a run with this fingerprint."""
        try:
            rec = json.loads((self.folder / _FINGERPRINT).read_text())
        except (OSError, ValueError):
            return False
        return isinstance(rec, dict) and rec.get("fingerprint") == self.fingerprint

    def finished(self) -> list[int]:
        """Fold numbers with a stored outcome (of this run, when ``matches()``)."""
        if not self.matches():
            return []
        stems = [p.stem[4:] for p in self.folder.glob("fold*.pkl")]
        return sorted(int(s) for s in stems if s.isdigit())

    def _start(self) -> None:
        """Mark the folder as this run's (a folder of another run is emptied first)."""
        if self.matches():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for p in self.folder.glob("fold*.pkl"):
            p.unlink()
        tmp = self.folder / f".{_FINGERPRINT}.tmp"
        tmp.write_text(json.dumps({"fingerprint": self.fingerprint}))
        os.replace(tmp, self.folder / _FINGERPRINT)

    def load(self, fold: int, train: np.ndarray, test: np.ndarray) -> FoldOutcome | None:
        """The stored outcome of ``fold`` when it was fitted on exactly ``train`` / ``test``
        by a run with this fingerprint; None otherwise (also for an unreadable file)."""
        path = self.folder / f"fold{fold}.pkl"
        if not self.matches() or not path.is_file():
            return None
        try:
            with path.open("rb") as fh:
                rec: dict[str, Any] = pickle.load(fh)
        except Exception:  # a damaged file: the fold is simply fitted again
            return None
        if rec.get("fingerprint") != self.fingerprint or rec.get("split") != _split_hash(
            train, test
        ):
            return None
        return rec["outcome"]  # type: ignore[no-any-return]

    def save(self, outcome: FoldOutcome, train: np.ndarray, test: np.ndarray) -> None:
        """Store a finished fold atomically."""
        self._start()
        rec = {"fingerprint": self.fingerprint, "split": _split_hash(train, test),
               "outcome": outcome}  # fmt: skip
        path = self.folder / f"fold{outcome.fold}.pkl"
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("wb") as fh:
            pickle.dump(rec, fh, protocol=pickle.HIGHEST_PROTOCOL)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
