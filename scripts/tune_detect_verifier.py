"""Tuning harness of the detector's liposome verifier: the design comparisons of the
"fourth round" and later in docs/micrographs.md ("Detector", "Benchmark") are rows of this
script's output.

A verifier variant is fitted as ``scripts/train_detect_verifier.py`` fits the packaged one
(candidates of the 160 training micrographs, seeds 1000-1159, ``--blank`` blank
micrographs, seed 1900, and ``--alt`` micrographs of benchmarks/altsim.py, seeds 10000+, at
the default ring threshold, labelled at mask IoU >= 0.5; ``fit_verifier`` with network seed
``--seeds``) and scored at detection level (the accepted candidates painted together, matched
one-to-one with the truth at mask IoU >= 0.5) at each liposome-score threshold of
``--thresholds`` ("oof": the out-of-fold F1 optimum) on

- **tuning** micrographs: the 12 conditions of ``benchmarks/bench_detect.py`` with seeds
  3000 + 100 k (k = condition index; the benchmark uses 50000 + 100 k), micrographs
  0 ... ``--tune-count`` - 1 of each (12: 144 micrographs; the first three rounds used 3);
- **validation** micrographs: 20 drawn as the training ones, seeds 2000-2019;
- **altsim check** micrographs: the 15 conditions of ``benchmarks/bench_detect_altsim.py``,
  3 each, seeds 7000 + 1000 k + i (its benchmark uses 50000 + 1000 k + i);
- **blank** micrographs: 96 of noise only (256 and 1024 px; 0.5, 1, 2 and 3 nm/px; 8-bit
  Gaussian noise, mean 150, sd 4, generator seeds 0-11; not the training blanks), counted
  when any candidate on them is accepted (an empty micrograph must give no particle).

Printed per variant and threshold: per tuning condition the truth count, precision, recall,
F1 and "*" when precision and recall are >= 0.95; "met" (how many conditions), tuning and
validation precision / recall / F1 pooled, and blanks with a detection. The benchmark's
seeds (50000+) are never used here; report on them with ``benchmarks/bench_detect.py``.

``--shipped`` scores the packaged verifier instead of fitting one (at its stored threshold
unless ``--thresholds`` is given). ``--work-min-side 0`` switches off the fourth round's
">= 512 px working image" (``detect._WORK_MIN_SIDE``) to reproduce the rows before it.
``--cache DIR`` keeps each set's candidates (features, outlines, truth) so that further
variants skip the candidate finder (~15 min for all sets on one idle core); delete it when
the detector changes. Commands behind the fourth round's table (each row one run):

    PYTHONPATH=src python scripts/tune_detect_verifier.py --cache /tmp/tune --shipped
    PYTHONPATH=src python scripts/tune_detect_verifier.py --cache /tmp/tune \\
        --seeds 0,1,2 --thresholds 0.25,0.3,0.35           # >= 512 px, 128 blanks
    ... --blank 48 --seeds 0 --thresholds 0.2,0.3,0.4      # 48 blanks
    ... --blank 16 --work-min-side 0 --thresholds oof      # third round (other cache dir)

A new feature is tried by adding it to ``lipoclass.micrograph.detect`` (FEATURES and the
feature code) with an empty cache; the script fits whatever ``detect_candidates`` returns.

``--ensemble K`` fits K networks a seed (seeds s, s + 1000, ...; logits averaged, stored as
one network) and skips the out-of-fold fits unless a threshold is "oof"; ``--prior`` scores
each variant with per-micrograph prior shifts of the scores (``verify.prior_shift``, e.g.
``none;em:1:20:2:0``; "stored", the default, is the verifier's own). The eleventh round's
rows (docs/micrographs.md):

    ... --cache /tmp/prior/cache --seeds 0,1,2 --prior "none;em:1:20:2;em:0.5:20:2;..."
    ... --cache /tmp/prior/cache --seeds 0,1,2 --ensemble 5 --prior "none;em:1:20:2:0;..."

``--fullres on`` (twelfth round, an experiment) builds the candidates with
``detect._FULLRES`` (the full-resolution membrane profile, ``detect.FULLRES_FEATURES``,
appended; cache files ``*_fullres.pkl``) and fits them; ``--fullres drop`` fits the same
candidates without those columns (the baseline):

    ... --cache /tmp/fullres/cache --seeds 0,1,2 --ensemble 5 --prior em:1:20:2:0 \\
        --fullres on                                        # then --fullres drop

``--work-scale`` (thirteenth round, an experiment) appends ``log_work_nm``, the log of nm per
working pixel, to every candidate; ``--drop NAMES`` fits without some features (a new
feature's baseline on the same candidates):

    ... --cache /tmp/r13 --seeds 0,1,2 --ensemble 5 --prior em:1:20:2:0 --work-scale

``--train-on ours`` / ``alt`` (fifteenth round, leave one simulator out) fits on the training
micrographs of one simulator only (our seeds 1000+ or altsim's 10000+; the blanks always):
with ``ours`` the altsim check line is out of domain, with ``alt`` the tuning and validation
lines are; ``--clip Q`` fits with every feature clipped to its Q .. 1 - Q quantiles of the
training candidates (0: their range; ``fit_verifier(clip=)``, stored as the verifier's
bounds):

    ... --cache /tmp/verifier-lodo/cache --seeds 0,1,2 --ensemble 5 --prior em:1:20:2:0 \
        --train-on ours --clip 0.005
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
from train_detect_verifier import alt_micrographs, blank_micrographs, conditions

from bench_detect import CONDITIONS, REF, _score
from lipoclass.choices import VERIFIER_MODELS
from lipoclass.micrograph import detect as D
from lipoclass.micrograph.match import pool_matches
from lipoclass.micrograph.verify import (
    TrainingSet,
    Verifier,
    candidate_truth,
    fit_verifier,
    load_verifier,
    prior_shift,
)
from lipoclass.synth import MicrographConfig, render_micrograph

_N_BASE = len(D.FEATURES)  # the shipped features, before --fullres on appends its columns


@dataclass
class Cand:
    """The candidates of one micrograph and its truth (zlib-compressed uint32 labels)."""

    name: str
    features: np.ndarray
    y: np.ndarray
    cy: np.ndarray
    cx: np.ndarray
    radii: np.ndarray
    shape: tuple[int, int]
    truth_z: bytes
    work_nm: float = float("nan")  # nm per working pixel (thirteenth round, --work-scale)

    def truth(self) -> np.ndarray:
        t = np.frombuffer(zlib.decompress(self.truth_z), np.uint32).reshape(self.shape)
        return t.astype(np.int64)


def _cands(name: str, image: np.ndarray, truth: np.ndarray, px: float) -> Cand:
    det = D.detect_candidates(image, D.DetectConfig(verifier="none"), px, name, verifier=False)
    y = candidate_truth(det, truth)
    z = zlib.compress(np.ascontiguousarray(truth, np.uint32).tobytes(), 1)
    work_nm = px * D._work_factor(D.DetectConfig().diameters_px(px)[0], image.shape)
    return Cand(name, det.features, y, det.cy, det.cx, det.radii, truth.shape, z, work_nm)


def _synth(name: str, cfg: MicrographConfig, index: int) -> Cand:
    m = render_micrograph(cfg, index)
    px = m.sample.pixel_size_nm
    return _cands(name, m.image.astype(np.float32), m.labels.astype(np.int64), float(px))


def _blank(name: str, image: np.ndarray, px: float) -> Cand:
    return _cands(name, image, np.zeros(image.shape, np.int64), px)


def cached(path: Path | None, what: str, make: Callable[[], list[Cand]]) -> list[Cand]:
    """The candidates ``make()`` returns, read from / kept in ``path`` (our own pickle) when
    given; the time taken printed for ``what``."""
    if path is not None and path.exists():
        return pickle.loads(path.read_bytes())  # our own cache file
    t0 = time.time()
    out = make()
    print(f"candidates of {what}: {len(out)} micrographs, {time.time() - t0:.0f} s",
          file=sys.stderr)  # fmt: skip
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(out))
    return out


def build(which: str, args: argparse.Namespace) -> list[Cand]:
    """The candidates of set ``which`` (train / tune / val / blank), from the cache if there."""
    tag = {"train": f"{args.count}_{args.blank}" + (f"_alt{args.alt}" if args.alt else ""),
           "tune": str(args.tune_count)}.get(which, "")  # fmt: skip
    fr = "_fullres" if D._FULLRES else ""
    path = args.cache / f"{which}{tag}_side{D._WORK_MIN_SIDE}{fr}.pkl" if args.cache else None
    return cached(path, which, lambda: _make_set(which, args))


def _make_set(which: str, args: argparse.Namespace) -> list[Cand]:
    out: list[Cand] = []
    if which in ("train", "val"):
        seed0, n = (1000, args.count) if which == "train" else (2000, 20)
        for c in conditions(seed0, n):
            out.append(_synth(f"s{c['seed']}", MicrographConfig(**c), 0))  # type: ignore[arg-type]
        if which == "train":
            for k, (img, px) in enumerate(blank_micrographs(1900, args.blank)):
                out.append(_blank(f"blank{k}", img, px))
            for name, img, truth, px in alt_micrographs(10000, args.alt):
                out.append(_cands(name, img, truth, px))
    elif which == "altcheck":
        from altsim import AltConfig, render
        from bench_detect_altsim import CONDITIONS as ALT_CONDITIONS

        for k, (_, change) in enumerate(ALT_CONDITIONS):
            for i in range(3):
                m = render(replace(AltConfig(), **change), 7000 + 1000 * k + i)  # type: ignore[arg-type]
                out.append(_cands(f"c{k}_{i}", m.image.astype(np.float32),
                                  m.labels.astype(np.int64), float(m.pixel_nm)))  # fmt: skip
    elif which == "tune":
        for k, (_, change) in enumerate(CONDITIONS):
            cfg = replace(REF, seed=3000 + 100 * k, **change)  # type: ignore[arg-type]
            out += [_synth(f"t{k}_{i}", cfg, i) for i in range(args.tune_count)]
    else:
        for size in (256, 1024):
            for px in (0.5, 1.0, 2.0, 3.0):
                for seed in range(12):
                    rng = np.random.default_rng(seed)
                    img = np.clip(rng.normal(150, 4, (size, size)), 0, 255).astype(np.uint8)
                    out.append(_blank(f"b{size}_{px}_{seed}", img.astype(np.float32), px))
    return out


def parse_prior(spec: str) -> dict[str, Any] | str | None:
    """``stored`` (the verifier's own prior shift, if any), ``none`` or
    ``METHOD:DAMPING:PSEUDO:CLIP[:UPPER[:REFERENCE]]`` (``verify.prior_shift``; e.g. em:1:20:2,
    em:1:20:2:0 lowers scores only, em:1:20:2:2:0.4 shifts around 0.4)."""
    if spec in ("none", "stored"):
        return None if spec == "none" else spec
    method, damping, pseudo, clip, *rest = spec.split(":")
    out: dict[str, Any] = {"method": method, "damping": float(damping),
                           "pseudo": float(pseudo), "clip": float(clip)}  # fmt: skip
    if rest:
        out["upper"] = float(rest[0])
    if len(rest) > 1:
        out["reference"] = float(rest[1])
    return out


def _mic_scores(c: Cand, ver: Verifier, prior: dict[str, Any] | str | None) -> np.ndarray:
    """The liposome scores of one micrograph's candidates, prior-shifted when ``prior``."""
    if prior == "stored":
        return ver.micrograph_scores(c.features)[0]
    p = ver.score(c.features)
    if not isinstance(prior, dict) or not len(p):
        return p
    return prior_shift(p, float(ver.info["positive_share"]), **prior)[0]


def _accepted_matches(
    cands: list[Cand], ver: Verifier, thr: float, prior: dict[str, Any] | str | None
) -> list:
    return [
        _score(c.truth(), c, _mic_scores(c, ver, prior) >= thr if len(c.y) else np.zeros(0, bool))
        for c in cands
    ]


def evaluate(
    label: str,
    ver: Verifier,
    thr: float,
    sets: dict[str, list[Cand]],
    n: int,
    prior: dict[str, Any] | str | None = "stored",
) -> dict[str, float]:
    """Print the per-condition table and the pooled figures of ``ver`` at ``thr`` (scores
    prior-shifted per micrograph by ``prior``: ``parse_prior``); return the pooled figures
    (met, tuning / validation / altsim check precision, recall, F1, blanks)."""
    mt = _accepted_matches(sets["tune"], ver, thr, prior)
    mv = pool_matches(_accepted_matches(sets["val"], ver, thr, prior))
    blanks = sum(
        bool(len(c.y)) and bool(_mic_scores(c, ver, prior).max() >= thr) for c in sets["blank"]
    )
    rows, met = [], 0
    for k, (name, _) in enumerate(CONDITIONS):
        m = pool_matches(mt[n * k : n * k + n])
        ok = m.precision >= 0.95 and m.recall >= 0.95
        met += ok
        rows.append(f"  {name:18s} truth {m.n_truth:5d}  P {m.precision:.3f}  R {m.recall:.3f}"
                    f"  F1 {m.f1:.4f}{'  *' if ok else ''}")  # fmt: skip
    a = pool_matches(mt)
    print(f"{label} threshold {thr:.2f}: met {met}/12 | tuning P {a.precision:.3f} R "
          f"{a.recall:.3f} F1 {a.f1:.4f} | validation P {mv.precision:.3f} R {mv.recall:.3f} "
          f"F1 {mv.f1:.4f} | blanks with a detection {blanks}/{len(sets['blank'])}")  # fmt: skip
    print("\n".join(rows), flush=True)
    out = {"met": float(met), "blanks": float(blanks)}
    for key, m in (("tune", a), ("val", mv)):
        out.update({f"{key}_p": m.precision, f"{key}_r": m.recall, f"{key}_f1": m.f1})
    if "altcheck" in sets:
        ma = _accepted_matches(sets["altcheck"], ver, thr, prior)
        a = pool_matches(ma)
        print(f"  altsim check (15 conditions x 3, seeds 7000+): P {a.precision:.3f} R "
              f"{a.recall:.3f} F1 {a.f1:.4f}", flush=True)  # fmt: skip
        out.update({"alt_p": a.precision, "alt_r": a.recall, "alt_f1": a.f1})
    return out


def _fullres_columns(sets: dict[str, list[Cand]], keep: bool, names: str | None = None) -> None:
    """Candidates built with ``detect._FULLRES``: keep the appended columns (those of
    ``names``, comma-separated, or all; named in ``detect.FEATURES``, which ``fit_verifier``
    stores) or drop them, in place."""
    fr = D.FULLRES_FEATURES
    chosen = [f for f in fr if not names or f in names.split(",")] if keep else []
    cols = list(range(_N_BASE)) + [_N_BASE + fr.index(f) for f in chosen]
    D.FEATURES = D.FEATURES[:_N_BASE] + tuple(chosen)
    for cands in sets.values():
        for c in cands:
            if c.features.shape[1] == _N_BASE + len(fr):
                c.features = c.features[:, cols]


def _drop_columns(sets: dict[str, list[Cand]], names: str) -> None:
    """Fit without the ``FEATURES`` named in ``names`` (comma-separated; the A/B of a new
    feature on the same candidates), in place."""
    drop = names.split(",")
    unknown = [f for f in drop if f not in D.FEATURES]
    if unknown:
        raise SystemExit(f"--drop: unknown feature(s) {', '.join(unknown)}")
    cols = [i for i, f in enumerate(D.FEATURES) if f not in drop]
    for cands in sets.values():
        for c in cands:
            c.features = c.features[:, cols]
    D.FEATURES = tuple(D.FEATURES[i] for i in cols)


def _work_scale_column(sets: dict[str, list[Cand]]) -> None:
    """Thirteenth round (an experiment): append ``log_work_nm``, the log of nm per working
    pixel clipped to the training range 0.5-3 nm, to every candidate, in place."""
    D.FEATURES = (*D.FEATURES, "log_work_nm")
    for cands in sets.values():
        for c in cands:
            col = np.full((len(c.y), 1), np.log(np.clip(c.work_nm, 0.5, 3.0)))
            c.features = np.hstack([c.features, col])


def _train_subset(train: list[Cand], which: str) -> list[Cand]:
    """The training micrographs of ``which``: "both", "ours" (names s1000...) or "alt"
    (a10000...), the blank ones (blank0...) always."""
    if which == "both":
        return train
    return [c for c in train if c.name.startswith(("blank", "s" if which == "ours" else "a"))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0", help="network seeds, comma-separated")
    ap.add_argument("--thresholds", default=None,
                    help="liposome-score thresholds, comma-separated, or 'oof' (default: 0.3; "
                    "with --shipped the stored one)")  # fmt: skip
    ap.add_argument("--count", type=int, default=160, help="training micrographs")
    ap.add_argument("--blank", type=int, default=128, help="blank training micrographs")
    ap.add_argument("--alt", type=int, default=80, help="altsim training micrographs")
    ap.add_argument("--tune-count", type=int, default=12, help="tuning micrographs a condition")
    ap.add_argument("--model", choices=VERIFIER_MODELS, default="mlp")
    ap.add_argument("--shipped", action="store_true", help="score the packaged verifier")
    ap.add_argument("--work-min-side", type=int, default=D._WORK_MIN_SIDE)
    ap.add_argument("--cache", type=Path, default=None, help="folder for the candidates")
    ap.add_argument("--ensemble", type=int, default=1,
                    help="networks a verifier (seeds s + 1000 k), logits averaged")  # fmt: skip
    ap.add_argument("--prior", default="stored",
                    help="per-micrograph prior shifts of the scores, ';'-separated: 'stored' "
                    "(the verifier's own: the packaged one's with --shipped, none for fitted "
                    "ones), 'none' or METHOD:DAMPING:PSEUDO:CLIP[:UPPER[:REFERENCE]] "
                    "(verify.prior_shift), e.g. 'none;em:1:20:2:0'")  # fmt: skip
    ap.add_argument("--fullres", choices=("off", "on", "drop"), default="off",
                    help="twelfth round: candidates with detect.FULLRES_FEATURES appended "
                    "(own cache files); 'on' fits them, 'drop' fits without them (the "
                    "baseline on the same candidates)")  # fmt: skip
    ap.add_argument("--fullres-keep", default=None,
                    help="with --fullres on: the FULLRES_FEATURES to fit, comma-separated "
                    "(default: all)")  # fmt: skip
    ap.add_argument("--drop", default=None,
                    help="fit without these FEATURES (comma-separated): a new feature's "
                    "baseline on the same candidates")  # fmt: skip
    ap.add_argument("--train-on", choices=("both", "ours", "alt"), default="both",
                    help="fifteenth round: fit on the training micrographs of both simulators "
                    "or of one (the blanks always)")  # fmt: skip
    ap.add_argument(
        "--clip",
        type=float,
        default=None,
        help="clip every feature to its Q .. 1 - Q training quantiles (0: range)",
    )
    ap.add_argument("--work-scale", action="store_true",
                    help="thirteenth round: fit with log nm per working pixel "
                    "appended")  # fmt: skip
    args = ap.parse_args()
    priors = [(sp, parse_prior(sp)) for sp in args.prior.split(";")]
    D._WORK_MIN_SIDE = args.work_min_side
    D._FULLRES = args.fullres != "off"
    warnings.simplefilter("ignore")
    sets = {w: build(w, args) for w in ("tune", "val", "blank", "altcheck")}
    if args.fullres != "off":
        _fullres_columns(sets, args.fullres == "on", args.fullres_keep)
    thr_arg = args.thresholds or ("stored" if args.shipped else "0.3")
    if args.shipped:
        ver = load_verifier("default")
        assert ver is not None
        thrs = [ver.threshold] if thr_arg == "stored" else [float(t) for t in thr_arg.split(",")]
        for t in thrs:
            for sp, pr in priors:
                evaluate(f"packaged verifier, prior {sp},", ver, t, sets, args.tune_count, pr)
        return
    train = _train_subset(build("train", args), args.train_on)
    if args.fullres != "off":
        _fullres_columns({"train": train}, args.fullres == "on", args.fullres_keep)
    if args.work_scale:
        _work_scale_column({"train": train, **sets})
    if args.drop:
        _drop_columns({"train": train, **sets}, args.drop)
    ts = TrainingSet(np.concatenate([c.features for c in train]),
                     np.concatenate([c.y for c in train]),
                     [c.name for c in train for _ in c.y])  # fmt: skip
    for seed in (int(s) for s in args.seeds.split(",")):
        t0 = time.time()
        oof = "oof" in thr_arg.split(",")
        ver, stats = fit_verifier(ts, seed=seed, model=args.model, ensemble=args.ensemble,
                                  oof=oof, threshold=None if oof else 0.5,
                                  clip=args.clip)  # fmt: skip
        print(f"== {args.model} x {args.ensemble} seed {seed}, trained on {args.train_on}"
              f"{'' if args.clip is None else f', clip {args.clip}'} ({len(ts.y)} candidates, "
              f"{int(ts.y.sum())} liposomes, share {ver.info['positive_share']:.4f}; "
              f"{time.time() - t0:.0f} s): OOF threshold {stats['threshold']:.2f}, "
              f"precision {stats['oof_precision']:.4f}, "
              f"recall {stats['oof_recall']:.4f}")  # fmt: skip
        thrs = [stats["threshold"] if t == "oof" else float(t) for t in thr_arg.split(",")]
        for t in thrs:
            for sp, pr in priors:
                evaluate(f"seed {seed} x {args.ensemble}, prior {sp},", ver, t, sets,
                         args.tune_count, pr)  # fmt: skip


if __name__ == "__main__":
    main()
