"""``lipoclass demo micrographs``: synthesise training micrographs, detect the liposomes,
carry the known classes over to the detected outlines, crop, train LipNet-4 briefly, then
detect and classify the liposomes of new micrographs (another seed, other class shares)
and write the micrograph report (``index.html``). Each finished step is reused on a rerun."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

__all__ = ["MICROGRAPH_DEMO", "run_micrograph_demo"]

#: sizes of the demo (within 5 minutes on 2 cores, docs/micrographs.md): enough training
#: micrographs (about 2,300 crops, 200 of the rare class) and epochs for informative shares,
#: and 8 new micrographs (about 500 particles) reported as ONE sample ("new"), so the
#: sample's own interval is not too wide (each micrograph still gets its own row in
#: micrograph_shares.csv)
MICROGRAPH_DEMO = {"train_count": 60, "test_count": 8, "size": 768, "pixel_size_nm": 1.2,
                   "density": 0.3, "epochs": 40, "folds": 3}  # fmt: skip
_TRAIN_RATIOS = {"unilamellar": 0.5, "multilamellar": 0.4, "uncertain": 0.1}
_TEST_RATIOS = {"unilamellar": 0.75, "multilamellar": 0.2, "uncertain": 0.05}


def _step(name: str, t0: float) -> None:
    print(f"[demo] {name} ({time.perf_counter() - t0:.0f} s)", flush=True)


def run_micrograph_demo(out: str | os.PathLike[str], seed: int = 0) -> Path:
    """Run the micrograph demo into ``out`` (new, empty, or an earlier micrograph demo) and
    return the report's path (``out/report/index.html``)."""
    import numpy as np

    from lipoclass.micrograph import (
        DetectConfig,
        DetectSource,
        crop_micrographs,
        detect_particles,
        match_instances,
        read_label_image,
        read_micrograph,
        transfer_labels,
        write_label_image,
    )
    from lipoclass.micrograph.annotations import LabelImageSource
    from lipoclass.micrograph.crop import CropConfig
    from lipoclass.micrograph.predict import predict_micrographs
    from lipoclass.outputs import check_output_folder
    from lipoclass.synth import synthesize_micrographs

    out = check_output_folder(out, allow_existing_kind="micrograph demo", marker="train")
    out.mkdir(parents=True, exist_ok=True)
    d = MICROGRAPH_DEMO
    t0 = time.perf_counter()
    train, test = out / "train", out / "new"
    common = {"size": d["size"], "density": d["density"], "pixel_size_nm": d["pixel_size_nm"]}
    if not train.exists():
        synthesize_micrographs("lamellarity", train, count=int(d["train_count"]), seed=seed,
                               ratios=_TRAIN_RATIOS, **common)  # type: ignore[arg-type]  # fmt: skip
    if not test.exists():
        synthesize_micrographs("lamellarity", test, count=int(d["test_count"]), seed=seed + 1,
                               ratios=_TEST_RATIOS, **common)  # type: ignore[arg-type]  # fmt: skip
    _step("synthesised training and new micrographs", t0)
    mics = sorted((train / "micrographs").glob("*.tif"))
    det, ds = out / "detected", out / "crops"
    if not ds.exists():
        table: dict[str, dict[int, str]] = {}
        with (train / "annotations.csv").open() as fh:
            for r in csv.DictReader(fh):
                table.setdefault(r["micrograph"], {})[int(r["instance"])] = r["label"]
        det.mkdir(exist_ok=True)
        recalls, rows = [], []
        for p in mics:
            mic = read_micrograph(p)
            found = detect_particles(mic.image, DetectConfig(), mic.pixel_size_nm)
            truth = read_label_image(train / "labels" / p.name)
            recalls.append(match_instances(truth, found).recall)
            kept, classes = transfer_labels(truth, table.get(p.stem, {}), found)
            write_label_image(det / p.name, kept, mic.pixel_size_nm)
            rows += [(p.stem, i, lab) for i, lab in sorted(classes.items())]
        with (det / "classes.csv").open("w", newline="") as fh:
            csv.writer(fh).writerows([("micrograph", "instance", "label"), *rows])
        print(f"[demo] detection recall on the training micrographs: {np.mean(recalls):.2f}")
        source = LabelImageSource(det, mics, det / "classes.csv")
        print(crop_micrographs(mics, ds, source, CropConfig(surround=20)).text())
    _step("detected, labelled from the truth, cropped", t0)
    model = out / "model"
    if not (model / "model.json").is_file():
        from lipoclass.crossfit import fit_model
        from lipoclass.data import load_dataset
        from lipoclass.evaluate import CVConfig
        from lipoclass.spec import build_spec

        spec = build_spec("lipnet4", epochs=int(d["epochs"]))
        fit_model(load_dataset(ds), spec, CVConfig(folds=int(d["folds"]), seed=seed), model)
    _step("trained LipNet-4", t0)
    report = out / "report"
    new_mics = sorted((test / "micrographs").glob("*.tif"))
    predict_micrographs(model, new_mics, report, DetectSource(), progress=False,
                        samples={p.stem: "new" for p in new_mics})  # fmt: skip
    _step("predicted the new micrographs", t0)
    return report / "index.html"
