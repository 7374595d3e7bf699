"""Evidence across data for the self-configuring recipe (issue 20, deliverable 4).

Compares, on the SAME folds (``lipoclass.evaluate.make_folds``: stratified 5-fold, seeded; with
``--group-by-sample`` samples stay whole, which is what ``shared/bench/plain_cnn.py`` does
whenever a ``sample`` column exists; at seed 0 the folds equal the script's splitter, checked
before every ``plain`` run):

* ``plain``   - ``shared/bench/plain_cnn.py``'s design (32 px whole crop stretched, per-image
  z-score, oversampled training folds, kornia rotate 180 / shift 0.1 / flips, LipNet-4-style
  net, Adam 1e-3, batch 64, label smoothing 0.1, 30 fixed epochs), reimplemented here so it
  runs on the given folds. Same random streams as the script (torch seed 0, numpy
  ``default_rng(0)``), so on the script's own folds it reproduces the script up to the thread
  count (``plain-script`` runs the script itself for that check);
* ``auto``    - ``lipoclass cv DATASET --recipe auto`` (the default of cv/train since issue 20,
  the same as leaving ``--recipe`` out);
* ``lipnet4`` - ``lipoclass cv DATASET --model lipnet4``: fixed LipNet-4 (the old default,
  before issue 20); ``lipnet4-48`` / ``lipnet4-64`` the same at ``--size 48`` / ``--size 64``
  (input-size question);
* ``svm``     - ``lipoclass cv DATASET --model svm``.

(Results files written before the rename name the fixed LipNet-4 runs ``default``,
``default48``, ``default64``; they are read as ``lipnet4``, ``lipnet4-48``, ``lipnet4-64``.)

Datasets: ``vesicle`` (``../shared/data/vesicle-em-7-13``, never copied), ``lam0..lam2`` /
``enc0..enc2`` (``lipoclass synth lamellarity|encapsulation --n N --seed S`` at the thesis
shares, generated into ``--work``). Each run appends one JSON line to ``WORK/results.jsonl``
(pooled out-of-fold macro-F1, per-fold macro-F1 mean and sd, balanced accuracy, wall and CPU
seconds, load average before / after, threads, the source's git commit); a finished
(dataset, method, cv seed) is skipped on a rerun, so a killed run loses one CV at most.
``--table`` prints the markdown tables from the results file. ``--nested`` measures the
optimism of ``--recipe auto``'s choice by nested CV (``lipoclass.recipe.nested_optimism``:
the auto choice repeated inside each outer training part, the chosen model scored on the outer
test part).

Usage (from the repository root; CPU etiquette: nice, one thread)::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_recipe.py \\
        --datasets vesicle lam0 enc0 --methods plain lipnet4 svm auto --work /tmp/bench_recipe
    .venv/bin/python benchmarks/bench_recipe.py --work /tmp/bench_recipe --table
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = ROOT.parent / "shared"
PROBLEMS = {"lam": "lamellarity", "enc": "encapsulation"}
SYNTH_SEEDS = (0, 1, 2)
DATASETS = ("vesicle", *(f"{p}{s}" for p in PROBLEMS for s in SYNTH_SEEDS))
#: "small" variants (suffix ``s``) in the vesicle set's regime: each synthetic particle cut
#: to its mask's box (+ ``SMALL_MARGIN`` each side), resized to ``SMALL_PX`` px, no mask, no
#: pixel size; there the plan trains one 28 px CNN and leaves budget over (CNN seed rule)
SMALL_PX = 32
SMALL_MARGIN = 0.15
SMALL_SETS = tuple(f"{p}{s}s" for p in PROBLEMS for s in SYNTH_SEEDS)
# rule-choice sets (looked at while choosing the recipe's rules) vs held-out sets
RULE_SETS = ("lam0", "enc0", "lam0s", "enc0s")
CLI_METHODS: dict[str, list[str]] = {
    "auto": ["--recipe", "auto"],  # the default of cv/train
    "lipnet4": ["--model", "lipnet4"],  # fixed LipNet-4: the old default
    "lipnet4-48": ["--model", "lipnet4", "--size", "48"],
    "lipnet4-64": ["--model", "lipnet4", "--size", "64"],
    "svm": ["--model", "svm"],
}
METHODS = ("plain", "plain-script", *CLI_METHODS)
# table column headers: what each method is
LABELS = {
    "plain": "plain_cnn.py",
    "plain-script": "plain_cnn.py (script itself)",
    "auto": "auto (default)",
    "lipnet4": "fixed LipNet-4 (old default)",
    "lipnet4-48": "fixed LipNet-4 48 px",
    "lipnet4-64": "fixed LipNet-4 64 px",
    "svm": "SVM",
}
# method names of results files written before the rename ("default" was --model lipnet4)
RENAMED = {"default": "lipnet4", "default48": "lipnet4-48", "default64": "lipnet4-64"}

# Child process for the CLI methods: fixes torch's thread count (lipoclass picks it from the
# load otherwise) so runs are comparable, then runs the CLI in-process.
_CLI_RUNNER = """
import sys
n = int(sys.argv[1])
import lipoclass.train.trainer as _t
_t.pick_threads = lambda *a, **k: n
import lipoclass.models.engine as _e
_e.pick_threads = lambda *a, **k: n
from lipoclass.cli import main
sys.exit(main(sys.argv[2:]))
"""


# --------------------------------------------------------------------------- datasets


def dataset_path(name: str, work: Path, n: int, shared: Path) -> Path:
    """Folder of dataset ``name``; synthetic ones are generated on first use."""
    if name == "vesicle":
        path = shared / "data" / "vesicle-em-7-13"
        if not (path / "particles.csv").is_file():
            raise SystemExit(f"{path}: the shared vesicle set is not there (--shared)")
        return path
    m = re.fullmatch(r"(lam|enc)(\d+)(s?)", name)
    if not m:
        raise SystemExit(f"unknown dataset {name!r}; known: {', '.join(DATASETS + SMALL_SETS)}")
    problem, seed = PROBLEMS[m.group(1)], int(m.group(2))
    if m.group(3):
        return small_variant(dataset_path(name[:-1], work, n, shared))
    path = work / "data" / f"{problem}-s{seed}-n{n}"
    if not (path / "particles.csv").is_file():
        from lipoclass.synth import synthesize

        tmp = path.with_name(path.name + ".tmp")
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        synthesize(problem, tmp, n=n, seed=seed, workers=1)  # thesis shares (the default)
        tmp.rename(path)
    return path


def small_variant(src: Path) -> Path:
    """``src`` in the vesicle set's regime (``SMALL_PX`` px whole crops around each particle,
    no masks, no pixel sizes), made once next to it."""
    import shutil

    from PIL import Image

    path = src.with_name(src.name + f"-small{SMALL_PX}")
    if (path / "particles.csv").is_file():
        return path
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    rows = read_rows(src)
    with open(tmp / "particles.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "image", "mask", "label"])
        for r in rows:
            im = read_grey(str(src / r["image"]))
            mask = read_grey(str(src / r["mask"])) > 0
            ys, xs = np.nonzero(mask)
            cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
            half = max(ys.max() - ys.min(), xs.max() - xs.min()) / 2 * (1 + 2 * SMALL_MARGIN)
            y0, x0 = round(float(cy - half)), round(float(cx - half))
            side = round(float(2 * half))
            pad = np.pad(im, side, mode="reflect")  # the box may reach past the crop
            box = pad[y0 + side : y0 + 2 * side, x0 + side : x0 + 2 * side]
            small = Image.fromarray(box.astype(np.float32)).resize(
                (SMALL_PX, SMALL_PX), Image.BILINEAR
            )
            a = np.clip(np.asarray(small), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(tmp / "images" / f"{r['id']}.png")
            w.writerow([r["id"], f"images/{r['id']}.png", "", r["label"]])
    toml = (src / "dataset.toml").read_text() if (src / "dataset.toml").is_file() else ""
    classes = next((ln for ln in toml.splitlines() if ln.startswith("classes")), None)
    (tmp / "dataset.toml").write_text(
        f'name = "{path.name}"\n'
        f'description = "{src.name}: {SMALL_PX} px crops around each particle, no masks"\n'
        + (classes + "\n" if classes else "")
    )
    tmp.rename(path)
    return path


def read_rows(root: Path) -> list[dict[str, str]]:
    with open(root / "particles.csv", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r.get("label")]


def is_grouped(rows: list[dict[str, str]]) -> bool:
    """plain_cnn.py's rule: grouped by ``sample`` when the first row has one."""
    return bool(rows and rows[0].get("sample"))


def folds_for(
    root: Path, seed: int, k: int = 5, group: bool = False
) -> tuple[np.ndarray, list[str], bool]:
    """(fold per labelled particle in particles.csv order, ids, grouped) from make_folds;
    grouped by sample only when ``group`` and the set has samples."""
    from lipoclass.data import load_dataset
    from lipoclass.evaluate import CVConfig, make_folds

    rows = read_rows(root)
    grouped = group and is_grouped(rows)
    ds = load_dataset(root)
    folds = make_folds(ds, CVConfig(folds=k, seed=seed, group_by="sample" if grouped else None))
    by_id = {p.id: int(f) for p, f in zip(ds.particles, folds)}
    ids = [r["id"] for r in rows]
    return np.array([by_id[i] for i in ids]), ids, grouped


def plain_splits(rows: list[dict[str, str]], seed: int, k: int = 5) -> np.ndarray:
    """Fold per row exactly as plain_cnn.py's splitter assigns it (for the equivalence check;
    grouped by sample when the rows have samples, as the script does)."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    classes = sorted({r["label"] for r in rows})
    y = np.array([classes.index(r["label"]) for r in rows])
    g = np.array([r.get("sample") or r["id"] for r in rows])
    if is_grouped(rows):
        splits = StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(y, y, g)
    else:  # (the script passes groups here too; StratifiedKFold ignores them)
        splits = StratifiedKFold(k, shuffle=True, random_state=seed).split(y, y)
    out = np.full(len(rows), -1)
    for j, (_, te) in enumerate(splits):
        out[te] = j
    return out


# --------------------------------------------------------------------------- scoring


def score(y: np.ndarray, pred: np.ndarray, fold: np.ndarray, n_classes: int) -> dict:
    """Pooled out-of-fold macro-F1 / balanced accuracy and the per-fold macro-F1 spread."""
    from sklearn.metrics import balanced_accuracy_score, f1_score

    labels = list(range(n_classes))
    kw = {"labels": labels, "average": "macro", "zero_division": 0}
    per_fold = [float(f1_score(y[fold == k], pred[fold == k], **kw)) for k in np.unique(fold)]
    return {
        "macro_f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "per_class_f1": [
            round(float(v), 4)
            for v in f1_score(y, pred, labels=labels, average=None, zero_division=0)
        ],
        "fold_f1": [round(v, 4) for v in per_fold],
        "fold_mean": float(np.mean(per_fold)),
        "fold_sd": float(np.std(per_fold, ddof=1)) if len(per_fold) > 1 else 0.0,
    }


def read_oof(
    out: Path, ids: list[str], folds: np.ndarray, classes: list[str]
) -> tuple[np.ndarray, ...]:
    """(y, pred, fold) from a model folder's oof.csv in ``ids`` order, for the particles it
    scored (the SVM leaves out particles it cannot measure); checks its folds are the
    benchmark's (same folds for every method)."""
    with open(out / "oof.csv", newline="") as fh:
        rows = {r["id"]: r for r in csv.DictReader(fh)}
    keep = np.array([i in rows for i in ids])
    ids = [i for i in ids if i in rows]
    y = np.array([classes.index(rows[i]["label"]) for i in ids])
    pred = np.array([classes.index(rows[i]["pred"]) for i in ids])
    fold = np.array([int(rows[i]["fold"]) for i in ids])
    if not np.array_equal(fold, folds[keep]):
        raise SystemExit(f"{out}/oof.csv: folds differ from make_folds - not the same folds")
    return y, pred, fold


# --------------------------------------------------------------------------- methods


def read_grey(path: str) -> np.ndarray:
    """plain_cnn.py's reader: greyscale float32 from PNG/JPG/BMP or TIFF."""
    from PIL import Image

    if path.endswith((".tif", ".tiff")):
        import tifffile

        return tifffile.imread(path).astype(np.float32)
    return np.asarray(Image.open(path).convert("L"), dtype=np.float32)


def run_plain(root: Path, folds: np.ndarray, epochs: int, threads: int) -> tuple[np.ndarray, ...]:
    """plain_cnn.py's design on the given folds; returns (y, pred). Same code and random
    streams as the script, with its ``cv.split`` loop replaced by the given folds."""
    import kornia.augmentation as K
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from torch import nn

    rows = read_rows(root)
    S = 32

    def load(r: dict[str, str]) -> np.ndarray:
        im = Image.fromarray(read_grey(str(root / r["image"]))).resize((S, S), Image.BILINEAR)
        a = np.asarray(im, dtype=np.float32)
        return (a - a.mean()) / (a.std() + 1e-6)

    def net(c: int) -> nn.Module:
        def b(i: int, o: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 3, padding=1), nn.ReLU(), nn.Conv2d(o, o, 3, padding=1),
                    nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25)]  # fmt: skip

        return nn.Sequential(*b(1, 32), *b(32, 32), nn.Flatten(),
                             nn.Linear(32 * (S // 4) ** 2, 128), nn.ReLU(), nn.Dropout(0.5),
                             nn.Linear(128, c))  # fmt: skip

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            rng = np.random.default_rng(0)
            X = torch.tensor(np.stack([load(r) for r in rows]))[:, None]
            classes = sorted({r["label"] for r in rows})
            y = np.array([classes.index(r["label"]) for r in rows])
            aug = K.AugmentationSequential(
                K.RandomAffine(degrees=180, translate=(0.1, 0.1), p=1.0),
                K.RandomHorizontalFlip(), K.RandomVerticalFlip(),
            )  # fmt: skip
            pred = np.zeros_like(y)
            yt = torch.tensor(y)
            for k in range(int(folds.max()) + 1):
                tr, te = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
                counts = np.bincount(y[tr], minlength=len(classes))
                idx = np.concatenate([
                    rng.choice(tr[y[tr] == c], counts.max(), replace=True)
                    for c in range(len(classes)) if counts[c]
                ])  # fmt: skip
                m = net(len(classes))
                opt = torch.optim.Adam(m.parameters(), 1e-3)
                for _ in range(epochs):
                    m.train()
                    perm = rng.permutation(idx)
                    for i in range(0, len(perm), 64):
                        b = perm[i : i + 64]
                        loss = F.cross_entropy(m(aug(X[b])), yt[b], label_smoothing=0.1)
                        opt.zero_grad()
                        loss.backward()
                        opt.step()
                m.eval()
                with torch.no_grad():
                    pred[te] = m(X[te]).argmax(1).numpy()
    finally:
        torch.set_num_threads(before)
    return y, pred


def run_plain_script(root: Path, epochs: int, shared: Path, threads: int) -> float:
    """Runs shared/bench/plain_cnn.py itself; returns the macro-F1 it prints."""
    script = shared / "bench" / "plain_cnn.py"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = subprocess.run(
        [sys.executable, str(script), str(root), str(epochs)],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    m = re.search(r"macro_f1=([0-9.]+)", out.stdout)
    if not m:
        raise SystemExit(f"plain_cnn.py printed no macro_f1: {out.stdout}{out.stderr}")
    print(out.stdout.strip(), flush=True)
    return float(m.group(1))


def run_cli(
    method: str, root: Path, out: Path, seed: int, grouped: bool, threads: int,
    src: Path | None = None,
) -> None:  # fmt: skip
    argv = ["cv", str(root), *CLI_METHODS[method], "--seed", str(seed), "--out", str(out)]
    if grouped:
        argv += ["--group-by", "sample"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    first = str(src or ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [first, env.get("PYTHONPATH")]))
    log = out.with_suffix(".log")
    if out.exists():  # an unfinished earlier run
        import shutil

        shutil.rmtree(out)
    with open(log, "w") as fh:
        rc = subprocess.run(
            [sys.executable, "-c", _CLI_RUNNER, str(threads), *argv],
            stdout=fh, stderr=subprocess.STDOUT, env=env,
        ).returncode  # fmt: skip
    if rc != 0:
        raise RuntimeError(f"lipoclass {' '.join(argv)} failed (exit {rc}); see {log}")


# --------------------------------------------------------------------------- driver


def _loadavg() -> list[float]:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _commit(src: Path) -> str | None:
    """``git describe --always --dirty`` of the checkout holding ``src`` (None: not a git
    checkout, e.g. a frozen copy)."""
    try:
        out = subprocess.run(["git", "-C", str(src), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, check=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def read_records(results: Path) -> list[dict]:
    """The records of a results file, method names of before the rename mapped (RENAMED)."""
    if not results.is_file():
        return []
    recs = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    for r in recs:
        r["method"] = RENAMED.get(r["method"], r["method"])
    return recs


def done_keys(results: Path) -> set[tuple[str, str, int]]:
    return {(r["dataset"], r["method"], r["cv_seed"]) for r in read_records(results)}


def run_one(name: str, method: str, seed: int, args: argparse.Namespace) -> dict:
    root = dataset_path(name, args.work, args.n, args.shared)
    folds, ids, grouped = folds_for(root, seed, group=args.group_by_sample)
    rows = read_rows(root)
    classes = sorted({r["label"] for r in rows})
    rec: dict = {
        "dataset": name, "method": method, "cv_seed": seed, "path": str(root),
        "n": len(rows), "counts": {c: sum(r["label"] == c for r in rows) for c in classes},
        "grouped": grouped, "threads": args.threads, "epochs": args.epochs,
        "load_before": _loadavg(), "machine": f"{platform.node()} {os.cpu_count()} cpu",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip
    rec["commit"] = _commit(args.src or ROOT / "src")
    t0, c0 = time.perf_counter(), _cpu()
    if method == "plain":
        plain_rows = rows if grouped else [{**r, "sample": ""} for r in rows]
        if seed == 0 and not np.array_equal(plain_splits(plain_rows, 0), folds):
            raise SystemExit(f"{name}: make_folds(seed 0) differs from plain_cnn.py's splitter")
        y, pred = run_plain(root, folds, args.epochs, args.threads)
        rec.update(score(y, pred, folds, len(classes)))
    elif method == "plain-script":
        if seed != 0:
            raise SystemExit("plain-script runs the script itself: its folds are seed 0 only")
        rec["macro_f1"] = run_plain_script(root, args.epochs, args.shared, args.threads)
    else:
        out = args.work / "runs" / name / f"{method}-s{seed}"
        out.parent.mkdir(parents=True, exist_ok=True)
        run_cli(method, root, out, seed, grouped, args.threads, args.src)
        rec["src"] = str(args.src or ROOT / "src")
        y, pred, fold = read_oof(out, ids, folds, classes)
        rec.update(score(y, pred, fold, len(classes)))
        rec["n_scored"] = len(y)  # particles with an out-of-fold prediction
        rec["model_dir"] = str(out)
        info = json.loads((out / "model.json").read_text())
        if "recipe" in info:  # --recipe auto: the chosen candidate and every candidate's figures
            rec["recipe"] = info["recipe"]
    rec["wall_s"] = round(time.perf_counter() - t0, 1)
    rec["cpu_s"] = round(_cpu() - c0, 1)
    rec["load_after"] = _loadavg()
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), metavar="NAME",
                    help=f"subset of: {', '.join(DATASETS + SMALL_SETS)}")  # fmt: skip
    ap.add_argument("--methods", nargs="+", default=["plain", "lipnet4", "svm", "auto"],
                    metavar="METHOD", help=f"subset of: {', '.join(METHODS)} (auto: "
                    "--recipe auto, the default of cv/train; lipnet4: fixed LipNet-4, the old "
                    "default; plain: plain_cnn.py's design on the same folds)")  # fmt: skip
    ap.add_argument("--seeds", nargs="+", type=int, default=[0], help="CV seeds (folds, init)")
    ap.add_argument("--n", type=int, default=500, help="particles per synthetic set")
    ap.add_argument("--epochs", type=int, default=30, help="plain CNN epochs")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_recipe"))
    ap.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    ap.add_argument("--group-by-sample", action="store_true",
                    help="folds keep samples whole (needs >= 5 samples; synth makes one per "
                    "50-200 particles)")  # fmt: skip
    ap.add_argument("--src", type=Path, default=None,
                    help="lipoclass source the CLI methods run (default: this checkout's src; "
                    "e.g. a frozen snapshot)")  # fmt: skip
    ap.add_argument("--force", action="store_true", help="rerun finished runs")
    ap.add_argument("--table", action="store_true", help="print the tables and exit")
    ap.add_argument("--nested", action="store_true", help="nested-CV optimism of --recipe auto")
    ap.add_argument("--outer-folds", type=int, default=5, help="nested CV: outer folds")
    ap.add_argument("--inner-folds", type=int, default=5, help="nested CV: inner folds")
    args = ap.parse_args(argv)
    for d in args.datasets:
        if d not in DATASETS + SMALL_SETS:
            ap.error(f"unknown dataset {d!r}; known: {', '.join(DATASETS + SMALL_SETS)}")
    for m in args.methods:
        if m in RENAMED:
            ap.error(f"method {m!r} was renamed {RENAMED[m]!r} (fixed LipNet-4, the old "
                     "default); the default of cv/train is now 'auto'")  # fmt: skip
        if m not in METHODS:
            ap.error(f"unknown method {m!r}; known: {', '.join(METHODS)}")
    if args.src is not None:  # in-process imports (folds, nested CV) from the same source
        sys.path.insert(0, str(args.src))
    results = args.work / "results.jsonl"
    if args.table:
        print(tables(results))
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    if args.nested:
        for name in args.datasets:
            if (name, "auto-nested", 0) not in done_keys(results) or args.force:
                run_nested(name, args, results)
        return 0
    done = set() if args.force else done_keys(results)
    for name in args.datasets:
        for method in args.methods:
            for seed in args.seeds:
                if (name, method, seed) in done:
                    continue
                try:
                    rec = run_one(name, method, seed, args)
                except RuntimeError as exc:
                    print(f"FAILED {name} {method} seed {seed}: {exc}", flush=True)
                    continue
                with open(results, "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                spread = ""
                if "fold_mean" in rec:
                    spread = f" (folds {rec['fold_mean']:.3f} ± {rec['fold_sd']:.3f})"
                print(
                    f"{name:8} {method:12} seed {seed}: macro-F1 {rec['macro_f1']:.3f}{spread}  "
                    f"{rec['wall_s']:.0f} s wall, load {rec['load_before'][:1]}"
                    f"->{rec['load_after'][:1]}",
                    flush=True,
                )
    return 0


# --------------------------------------------------------------------------- nested CV


def run_nested(name: str, args: argparse.Namespace, results: Path) -> None:
    """Optimism of --recipe auto's choice by nested CV (``lipoclass.recipe.nested_optimism``:
    the whole auto choice inside each outer training part, the chosen model scored on the
    outer test part it never saw). One record (method ``auto-nested``) with every outer fold's
    chosen candidate, inner out-of-fold and outer macro-F1."""
    import lipoclass.models.engine as engine
    import lipoclass.train.trainer as trainer
    from lipoclass.data import load_dataset

    trainer.pick_threads = lambda *a, **k: args.threads  # type: ignore[assignment]
    engine.pick_threads = lambda *a, **k: args.threads  # type: ignore[assignment]
    from lipoclass.recipe import nested_optimism  # (issue 20's recipe package)

    root = dataset_path(name, args.work, args.n, args.shared)
    t0, load0 = time.perf_counter(), _loadavg()
    res = nested_optimism(
        load_dataset(root), outer_folds=args.outer_folds, inner_folds=args.inner_folds,
        seed=0, work=args.work, progress=True,
    )  # fmt: skip
    rec = {
        "dataset": name, "method": "auto-nested", "cv_seed": 0,
        "outer_folds": args.outer_folds, "inner_folds": args.inner_folds, **res.to_dict(),
        "wall_s": round(time.perf_counter() - t0, 1), "load_before": load0,
        "load_after": _loadavg(), "threads": args.threads,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip
    with open(results, "a") as fh:
        fh.write(json.dumps(rec) + "\n")
    for r in res.rows:
        print(f"{name} outer fold {r['fold']}: chose {r['chosen']}, inner OOF macro-F1 "
              f"{r['inner']:.3f}, outer test {r['outer']:.3f}", flush=True)  # fmt: skip
    print(f"{name}: optimism (mean inner - outer) {res.optimism:+.3f}", flush=True)


# --------------------------------------------------------------------------- tables


def tables(results: Path) -> str:
    """Markdown: one row per dataset, one column per method (pooled macro-F1, fold mean ± sd,
    wall s), rule-choice sets apart from held-out ones, and auto - plain per dataset."""
    recs = {(r["dataset"], r["method"]): r for r in read_records(results) if r["cv_seed"] == 0}
    methods = [m for m in METHODS if any(k[1] == m for k in recs)]
    out = []
    held_out = tuple(d for d in DATASETS + SMALL_SETS if d not in RULE_SETS)
    for role, names in (("rule choice", RULE_SETS), ("held out", held_out)):
        names = tuple(d for d in names if any(k[0] == d for k in recs))
        if not names:
            continue
        out.append(f"\n{role}: pooled OOF macro-F1 / fold mean ± sd / wall s\n")
        heads = [LABELS.get(m, m) for m in methods]
        out.append("| data | n (classes) | " + " | ".join(heads) + " | auto - plain |")
        out.append("|---" * (len(methods) + 3) + "|")
        for d in names:
            first = next(r for k, r in recs.items() if k[0] == d)
            cells = []
            for m in methods:
                r = recs.get((d, m))
                if r is None:
                    cells.append("-")
                elif "fold_mean" in r:
                    spread = f"{r['fold_mean']:.3f} ± {r['fold_sd']:.3f}"
                    cells.append(f"{r['macro_f1']:.3f} / {spread} / {r['wall_s']:.0f}")
                else:
                    cells.append(f"{r['macro_f1']:.3f} / - / {r['wall_s']:.0f}")
            gap = "-"
            if (d, "auto") in recs and (d, "plain") in recs:
                gap = f"{recs[(d, 'auto')]['macro_f1'] - recs[(d, 'plain')]['macro_f1']:+.3f}"
            counts = "/".join(str(v) for v in first["counts"].values())
            out.append(f"| {d} | {first['n']} ({counts}) | " + " | ".join(cells) + f" | {gap} |")
    for role, names in (("rule choice", RULE_SETS), ("held out", held_out)):
        gaps = [recs[(d, "auto")]["macro_f1"] - recs[(d, "plain")]["macro_f1"]
                for d in names if (d, "auto") in recs and (d, "plain") in recs]  # fmt: skip
        if gaps:
            out.append(
                f"\n{role}: auto - plain over {len(gaps)} sets: mean {np.mean(gaps):+.3f}, "
                f"min {min(gaps):+.3f}, above plain on {sum(g > 0 for g in gaps)} of {len(gaps)}"
            )
    autos = [r for r in recs.values() if r["method"] == "auto" and "recipe" in r]
    if autos:
        out.append("\n--recipe auto: every candidate's pooled OOF macro-F1 (* = chosen)\n")
        out.append("| data | candidates |")
        out.append("|---|---|")
        for r in autos:
            star = r["recipe"]["chosen"]
            cells = [
                f"{t['name']} {t['macro_f1']:.3f}" + ("*" if t["name"] == star else "")
                for t in r["recipe"]["table"]
            ]
            out.append(f"| {r['dataset']} | " + ", ".join(cells) + " |")
    nested = [r for r in recs.values() if r["method"] == "auto-nested"]
    for r in nested:
        out.append(
            f"\nnested CV, {r['dataset']} ({r['outer_folds']} outer x {r['inner_folds']} inner "
            f"folds, {r['wall_s']:.0f} s): optimism {r['optimism']:+.3f} (inner mean "
            f"{r['inner_mean']:.3f}, outer mean {r['outer_mean']:.3f})\n"
        )
        out.append("| outer fold | chosen | inner OOF macro-F1 | outer test macro-F1 |")
        out.append("|---|---|---|---|")
        out += [f"| {x['fold']} | {x['chosen']} | {x['inner']:.3f} | {x['outer']:.3f} |"
                for x in r["rows"]]  # fmt: skip
    return "\n".join(out)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main(sys.argv[1:]))
