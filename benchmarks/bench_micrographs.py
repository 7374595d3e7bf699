"""Streaming prediction on whole micrographs: particles/s and peak memory of
``predict_micrographs`` (detection, in-memory crops, batched CNN, overlay PNG per micrograph)
on N synthetic micrographs of a given size.

Peak memory is the process' maximum resident set (``ru_maxrss``) measured before the run
(model loaded, one micrograph synthesised) and after it: streaming keeps one micrograph in
memory at a time, so the increase should not grow with N. A model folder is trained first
(tiny CNN, 2 epochs on crops of 2 small micrographs) unless ``--model`` is given.

    .venv/bin/python benchmarks/bench_micrographs.py [--count 8] [--size 2048] [--model DIR]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import warnings
from pathlib import Path


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _train_tiny(root: Path) -> Path:
    from lipoclass.crossfit import fit_model
    from lipoclass.data import load_dataset
    from lipoclass.evaluate import CVConfig
    from lipoclass.micrograph import LabelImageSource, crop_micrographs
    from lipoclass.micrograph.crop import CropConfig
    from lipoclass.spec import build_spec
    from lipoclass.synth import synthesize_micrographs

    syn = synthesize_micrographs(
        "lamellarity",
        root / "train",
        count=2,
        size=768,
        seed=5,
        ratios="balanced",
        pixel_size_nm=1.0,
    )
    mics = sorted((syn / "micrographs").glob("*.tif"))
    src = LabelImageSource(syn / "labels", mics, syn / "annotations.csv")
    crop_micrographs(mics, root / "ds", src, CropConfig(surround=10))
    fit_model(
        load_dataset(root / "ds"),
        build_spec("tiny", epochs=2),
        CVConfig(folds=2),
        root / "model",
        progress=False,
    )
    return root / "model"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--model", default=None, help="model folder (default: train a tiny one)")
    ap.add_argument("--pixel-size", type=float, default=1.0)
    args = ap.parse_args()
    from lipoclass.micrograph import DetectSource
    from lipoclass.micrograph.predict import _predictor, predict_micrographs
    from lipoclass.predict import PredictConfig
    from lipoclass.synth import synthesize_micrographs

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = Path(tmp)
        model = Path(args.model) if args.model else _train_tiny(root)
        t0 = time.perf_counter()
        syn = synthesize_micrographs(
            "lamellarity",
            root / "syn",
            count=args.count,
            size=args.size,
            seed=9,
            pixel_size_nm=args.pixel_size,
        )
        t_synth = time.perf_counter() - t0
        mics = sorted((syn / "micrographs").glob("*.tif"))
        cfg = PredictConfig(n_boot=200)
        _predictor(model, cfg)  # loaded before the baseline, as in a run
        base = _rss_mib()
        t0 = time.perf_counter()
        res = predict_micrographs(
            model, mics, root / "out", DetectSource(), config=cfg, progress=False, verbose=False
        )
        secs = time.perf_counter() - t0
        peak = _rss_mib()
    mpix = args.size * args.size / 1e6
    print(
        f"{args.count} micrographs of {args.size} px ({mpix:.1f} Mpx each), model {model.name}"
        f" ({'tiny, trained here' if not args.model else args.model}); synthesis {t_synth:.0f} s"
    )
    print(f"particles classified: {res.n} ({res.edge_skipped} cut by the edge skipped)")
    print(
        f"time: {secs:.1f} s = {secs / args.count:.1f} s/micrograph, {res.n / secs:.1f} particles/s"
    )
    print(
        f"peak RSS: {base:.0f} MiB before the run, {peak:.0f} MiB after "
        f"(+{peak - base:.0f} MiB; one micrograph float32 = {4 * mpix:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
