"""A bioimage.io model package (model format 0.5, ``rdf.yaml``) of a CNN model folder.

The package is a zip that the bioimage.io model zoo, ilastik, deepImageJ, Fiji and QuPath
read: ONNX weights of the whole cross-fitted ensemble (``export_onnx``: mean over the fold
models of softmax(logits / T), calibration baked in), input and output axes with the class
names as the output's channel names, test input and output tensors of real prepared
particles, a cover image, a README (documentation), authors, licence and the citation of
the design study. The particle preparation (crop to the mask, normalise, pad, resize) runs
before the model and cannot be written as bioimage.io preprocessing operations (the
statistics are taken over the mask before resizing), so the input tensor is a *prepared*
particle: the README and ``config.lipoclass.prep`` say exactly how to make one, and the test
input shows it. Writing needs only the core dependencies (PyYAML); checking a package with
``bioimageio.core`` needs the optional extra ``lipoclass[bioimageio]``."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lipoclass.errors import LipoclassError

__all__ = [
    "BIOIMAGEIO_FORMAT_VERSION",
    "DESIGN_STUDY",
    "PREP_KEYS",
    "BioimageioConfig",
    "export_bioimageio",
]

#: model format version written into rdf.yaml (0.5.x; bioimageio.spec >= 0.5.4 reads it)
BIOIMAGEIO_FORMAT_VERSION = "0.5.4"
#: model.json ``prep`` keys the package needs to document the preparation
PREP_KEYS = ("mode", "size", "aspect", "normalize")
#: the design study: LipNet architectures, masking and imbalance handling come from it
DESIGN_STUDY = {
    "text": (
        "Gryshkevych, S. (2016). Convolutional neural networks for classification of "
        "transmission electron microscopy imagery. MSc thesis (Master Programme in "
        "Computational Science), Uppsala University."
    ),
    "url": (
        "https://uu.diva-portal.org/smash/resultList.jsf?query=Convolutional+neural+networks"
        "+for+classification+of+transmission+electron+microscopy+imagery"
    ),
}
_FILES = ("weights.onnx", "test_input.npy", "test_output.npy", "sample_input.tif",
          "sample_output.tif", "cover.png", "README.md")  # fmt: skip


_TAGS = ("classification", "electron-microscopy", "tem", "cryo-em", "liposomes", "vesicles",
         "onnx", "lipoclass")  # fmt: skip


@dataclass(frozen=True)
class BioimageioConfig:
    """``n_test``: particles in the test tensors; ``seed`` picks them; ``authors``: names
    written as the package's authors; ``tolerance``: onnxruntime vs PyTorch check of the
    ONNX export; ``licence``: SPDX id of the package's licence."""

    n_test: int = 4
    seed: int = 0
    authors: tuple[str, ...] = ("lipoclass",)
    tolerance: float = 1e-4
    licence: str = "MIT"
    tags: tuple[str, ...] = field(default=_TAGS)

    def __post_init__(self) -> None:
        if not 1 <= int(self.n_test) <= 64:
            raise ValueError(f"n_test must be 1..64, got {self.n_test}")
        if not self.authors or not all(str(a).strip() for a in self.authors):
            raise ValueError("authors must name at least one author (no empty names)")
        if not self.tolerance > 0:
            raise ValueError(f"tolerance must be positive, got {self.tolerance}")


def _check_exportable(loaded: Any, model_dir: Path) -> dict[str, Any]:
    """The model.json ``prep`` record, checked: a CNN folder whose preparation is fully
    recorded (no key left to a default, no unresolved ``auto``)."""
    loaded.networks(  # LipoclassError unless the members are networks
        "bioimage.io export", "it needs handcrafted features no bioimage.io runtime computes"
    )
    raw = loaded.info.get("prep")
    missing = [k for k in PREP_KEYS if not isinstance(raw, dict) or k not in raw]
    if missing:
        raise LipoclassError(
            f"{model_dir / 'model.json'}: 'prep' lacks {', '.join(repr(k) for k in missing)}, "
            f"needed to document the particle preparation; retrain with 'lipoclass train'"
        )
    if raw["mode"] == "auto":
        raise LipoclassError(
            f"{model_dir / 'model.json'}: prep mode 'auto' was never resolved; retrain with "
            f"'lipoclass train'"
        )
    # the common scale (None: box resize; absent in folders from before it)
    return {**{k: raw[k] for k in PREP_KEYS}, "nm_per_px": raw.get("nm_per_px")}


def _test_particles(
    loaded: Any, cfg: BioimageioConfig, dataset: str | os.PathLike[str] | None
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Up to ``cfg.n_test`` real prepared particles (of ``dataset``, else of the training
    dataset model.json records). Returns (x (B,1,S,S), aux (B,K) | None, where)."""
    from lipoclass.data import load_dataset
    from lipoclass.export.onnx import _real_particles, _recorded_dataset
    from lipoclass.models import size_features

    if dataset is not None:
        where, opt = Path(dataset), "--dataset "
    else:
        path, _fp = _recorded_dataset(loaded.info)
        if path is None or not (Path(path) / "particles.csv").is_file():
            what = "records no training dataset" if path is None else f"names {path}, not found"
            raise LipoclassError(
                f"{loaded.path}: model.json {what}; the package needs real test particles: "
                f"give --dataset DATASET"
            )
        where, opt = Path(path), ""
    try:
        ds = load_dataset(where)
    except LipoclassError as exc:
        raise LipoclassError(f"{opt}{exc}") from None
    x, meta = _real_particles(ds, loaded.prep, cfg.n_test, np.random.default_rng(cfg.seed))
    if not len(x):
        raise LipoclassError(f"{opt}{where}: no particle can be prepared in mode "
                             f"'{loaded.prep.mode}'")  # fmt: skip
    aux = size_features(meta).astype(np.float32) if loaded.needs_aux else None
    return x.astype(np.float32), aux, str(ds.root)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cover_png(x: np.ndarray, probs: np.ndarray, classes: tuple[str, ...], title: str) -> bytes:
    """A 2:1 cover: the test particles with their predicted class and probability."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(len(x), 8)
    cols = max(4, (n + 1) // 2)
    fig, axes = plt.subplots(2, cols, figsize=(2 * cols, cols), dpi=100)  # 2:1 figure
    for i, ax in enumerate(np.ravel(axes)):
        ax.axis("off")
        if i < n:
            ax.imshow(x[i, 0], cmap="gray")
            k = int(probs[i].argmax())
            ax.set_title(f"{classes[k]} {probs[i, k]:.2f}", fontsize=10)
    fig.suptitle(title, fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


_PREP_TEXT = {
    "masked": "cut to the bounding box of the particle's mask, pixels outside the mask set to "
    "0 (after normalisation)",
    "crop": "cut to the bounding box of the particle's mask (surroundings inside the box kept)",
    "surround": "the whole particle crop (the particle with its surroundings)",
}
_NORM_TEXT = {
    "zscore": "mean 0, standard deviation 1 over the pixels the model sees (the mask in "
    "'masked' mode), computed before padding and resizing",
    "minmax": "mapped to [0, 1] by the minimum and maximum over the pixels the model sees",
    "none": "raw pixel values (float32)",
}


def _validation_text(loaded: Any) -> str:
    """The cross-validation figures of the model folder's metrics.json (the out-of-fold
    predictions of the very fold models in this package), or a note when it is absent."""
    import json

    try:
        m = json.loads((Path(loaded.path) / "metrics.json").read_text())
        cells = [f"{k.replace('_', ' ')} {float(m[k]):.3f}"
                 + (f" (fold std {float(m[k + '_std']):.3f})" if k + "_std" in m else "")
                 for k in ("balanced_accuracy", "macro_f1", "accuracy") if k in m]  # fmt: skip
    except (OSError, ValueError, TypeError, KeyError):
        cells = []
    if not cells:
        return ("The model folder holds no cross-validation figures (metrics.json); "
                "evaluate it with 'lipoclass cv' before use.")  # fmt: skip
    n = m.get("n_particles", "?")
    return (
        f"{m.get('folds', '?')}-fold cross-validation on {n} labelled particles (each "
        f"particle predicted by the fold model that did not see it): {'; '.join(cells)}. "
        "Per-class figures and confusion matrix: metrics.json of the model folder."
    )


def _scale_steps(prep: dict[str, Any], s: int) -> str:
    """Steps 3-4 of the preparation text: box resize, or resampling to the common scale."""
    nm = prep.get("nm_per_px")
    if nm is not None:
        return (
            f"3. resample by (the particle's pixel size in nm / {nm:g}) with scikit-image "
            "(bilinear, Gaussian antialiasing when shrinking): one input pixel is "
            f"{nm:g} nm for every particle (a pixel size is required);\n"
            f"4. centre-crop or zero-pad to {s} x {s} px."
        )
    pad = prep["aspect"] == "pad"
    return (
        f"3. aspect `{prep['aspect']}`: "
        + ("pad the shorter side symmetrically with 0" if pad else "resize each axis independently")
        + f";\n4. resize to {s} x {s} px (antialiased bilinear, PIL)."
    )


def _readme(loaded: Any, prep: dict[str, Any], name: str, source: str) -> str:
    classes = ", ".join(f"`{c}`" for c in loaded.classes)
    s = prep["size"]
    aux = ""
    if loaded.needs_aux:
        from lipoclass.models import AUX_FEATURES

        aux = (
            f"\nA second input `aux` (batch, {len(AUX_FEATURES)}) holds size features of each "
            f"particle: {', '.join(AUX_FEATURES)} (`lipoclass.models.size_features`).\n"
        )
    return f"""# {name}

A particle classifier for transmission electron microscopy (TEM, cryo-TEM) images, exported
by lipoclass (`lipoclass export MODEL --format bioimageio`). It sorts one
particle (a liposome or vesicle) per input into the classes {classes}.

## Model

{loaded.n_members} cross-fitted fold models of architecture `{loaded.info.get("model")}` (the
k models of one stratified k-fold cross-validation), averaged inside the ONNX graph: the
output is the mean over the fold models{" and the 8 flips/quarter turns" if loaded.tta else ""}
of softmax(logits / T) with the temperature T = {loaded.temperature:.4g} fitted on the
out-of-fold predictions, i.e. calibrated class probabilities (each row sums to 1).
{f"lipoclass flags a particle for review when its top probability is below {loaded.review_threshold:.3g}." if loaded.review_threshold is not None else ""}

## Input: a prepared particle

`input` (batch, channel = 1, y = {s}, x = {s}) float32. The preparation runs before the model
and cannot be expressed with the bioimage.io preprocessing operations (its statistics are
taken over the particle's mask before resizing), so a caller prepares each particle as
lipoclass does (`lipoclass.data.prepare.prepare_arrays`, settings in
`config.lipoclass.prep`):

1. input mode `{prep["mode"]}`: {_PREP_TEXT.get(prep["mode"], prep["mode"])};
2. intensity normalisation `{prep["normalize"]}`: {_NORM_TEXT.get(prep["normalize"], "")};
{_scale_steps(prep, s)}
{aux}
`test_input.npy` holds real particles prepared this way (from `{source}`) and
`test_output.npy` the model's probabilities for them.

## Output

`probabilities` (batch, channel): one channel per class, named after the class.

## Validation

{_validation_text(loaded)}

## Limitations

The model knows only the particles it was trained on (imaging conditions, magnification,
sample type); check it on an annotated sample of your own data (`lipoclass cv`) first.

## Citation

{DESIGN_STUDY["text"]}
"""  # noqa: E501


def _rdf_inputs(loaded: Any, prep: dict[str, Any], sha: dict[str, str]) -> list[dict[str, Any]]:
    """rdf.yaml ``inputs``: the prepared particle, and the size features where the model
    takes them."""
    from lipoclass.models import AUX_FEATURES

    s = int(prep["size"])
    inputs: list[dict[str, Any]] = [
        {
            "id": "input",
            "description": f"one prepared particle per batch entry ({s} x {s} px, see the "
            f"README: mode {prep['mode']}, normalisation {prep['normalize']})",
            "axes": [
                {"type": "batch"},
                {"type": "channel", "channel_names": ["particle"]},
                {"type": "space", "id": "y", "size": s},
                {"type": "space", "id": "x", "size": s},
            ],
            "test_tensor": {"source": "test_input.npy", "sha256": sha["test_input.npy"]},
            "sample_tensor": {"source": "sample_input.tif", "sha256": sha["sample_input.tif"]},
            "data": {"type": "float32"},
            "preprocessing": [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}],
        }
    ]
    if loaded.needs_aux:
        inputs.append({
            "id": "aux",
            "description": "size features of each particle (lipoclass.models.size_features)",
            "axes": [{"type": "batch"},
                     {"type": "channel", "channel_names": list(AUX_FEATURES)}],
            "test_tensor": {"source": "test_aux.npy", "sha256": sha["test_aux.npy"]},
            "data": {"type": "float32"},
        })  # fmt: skip
    return inputs


def _rdf_outputs(loaded: Any, sha: dict[str, str]) -> list[dict[str, Any]]:
    """rdf.yaml ``outputs``: the calibrated class probabilities."""
    return [
        {
            "id": "probabilities",
            "description": "calibrated class probabilities (mean over the fold models)",
            "axes": [{"type": "batch"},
                     {"type": "channel", "channel_names": list(loaded.classes)}],
            "test_tensor": {"source": "test_output.npy", "sha256": sha["test_output.npy"]},
            "sample_tensor": {"source": "sample_output.tif",
                              "sha256": sha["sample_output.tif"]},
            "data": {"type": "float32", "range": [0.0, 1.0]},
        }
    ]  # fmt: skip


def _rdf(
    loaded: Any,
    prep: dict[str, Any],
    cfg: BioimageioConfig,
    shapes: dict[str, tuple[int, ...]],
    sha: dict[str, str],
    name: str,
    source: str,
) -> dict[str, Any]:
    """The rdf.yaml content (model format 0.5)."""
    from lipoclass import __version__

    inputs = _rdf_inputs(loaded, prep, sha)
    outputs = _rdf_outputs(loaded, sha)
    return {
        "type": "model",
        "format_version": BIOIMAGEIO_FORMAT_VERSION,
        "name": name,
        "description": (
            f"Classifies prepared TEM particle images into {', '.join(loaded.classes)} "
            f"(calibrated mean of {loaded.n_members} cross-fitted {loaded.info.get('model')} "
            f"fold models; lipoclass)"
        ),
        "authors": [{"name": a} for a in cfg.authors],
        "cite": [dict(DESIGN_STUDY)],
        "license": cfg.licence,
        "documentation": "README.md",
        "covers": ["cover.png"],
        "tags": list(cfg.tags),
        "version": "0.1.0",
        "inputs": inputs,
        "outputs": outputs,
        "weights": {
            "onnx": {
                "source": "weights.onnx",
                "sha256": sha["weights.onnx"],
                "opset_version": 17,
            }
        },
        "config": {
            "lipoclass": {
                "version": __version__,
                "model": loaded.info.get("model"),
                "classes": list(loaded.classes),
                "prep": prep,
                "members": loaded.n_members,
                "temperature": loaded.temperature,
                "tta": loaded.tta,
                "review_threshold": loaded.review_threshold,
                "test_particles_from": source,
                "test_shapes": {k: list(v) for k, v in shapes.items()},
            }
        },
    }


def _package_name(loaded: Any) -> str:
    model = str(loaded.info.get("model") or "cnn")
    return f"lipoclass {model} particle classifier ({len(loaded.classes)} classes)"


def export_bioimageio(
    model_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: BioimageioConfig | None = None,
    dataset: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the bioimage.io model package (zip with rdf.yaml) of the CNN model folder
    ``model_dir`` to ``out``, atomically. Test tensors are real prepared particles of
    ``dataset`` (else of the training dataset model.json records); the ONNX weights are
    checked against PyTorch (``export_onnx``). A stack folder (``--recipe auto``) packages
    its best CNN candidate, said in a printed line and recorded in ``rdf.yaml`` (``config``
    ``lipoclass`` ``exported_from``). LipoclassError (one line, nothing written)
    for an SVM folder, a model.json without the preparation settings, no real particles or
    an unwritable ``out``."""
    import yaml

    from lipoclass.ensemble import load_model
    from lipoclass.export.onnx import ExportConfig, export_onnx, load_onnx
    from lipoclass.outputs import check_output_file

    cfg = config or BioimageioConfig()
    root = Path(model_dir)
    dest = check_output_file(out)
    if dest.suffix.lower() != ".zip":
        raise LipoclassError(f"{dest}: a bioimage.io package is a .zip file (e.g. model.zip)")
    # a stack folder (--recipe auto): its best CNN base, said and recorded (docs/deployment.md)
    loaded, used = load_model(root).network_model(
        "bioimage.io export", "not in the package (its features are computed in Python)",
        "it needs handcrafted features no bioimage.io runtime computes",
    )  # fmt: skip
    if used is not None:
        print(f"note: {used['note']}; the package holds that candidate, not the folder")
        root = loaded.path
    prep = _check_exportable(loaded, root)
    x, aux, source = _test_particles(loaded, cfg, dataset)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp_zip = staging.with_suffix(".zip")
    try:
        staging.mkdir()
        onnx_cfg = ExportConfig(tolerance=cfg.tolerance, seed=cfg.seed)
        with contextlib.redirect_stdout(io.StringIO()) as said:  # names the staging file
            export_onnx(root, staging / "weights.onnx", onnx_cfg, dataset=dataset)
        print("".join(ln for ln in said.getvalue().splitlines(True) if "vs PyTorch" in ln), end="")
        probs = load_onnx(staging / "weights.onnx").predict_proba_arrays(x, aux)
        np.save(staging / "test_input.npy", x)
        np.save(staging / "test_output.npy", probs.astype(np.float32))
        import tifffile

        tifffile.imwrite(staging / "sample_input.tif", x[:1])  # (1,1,S,S) for a human
        tifffile.imwrite(staging / "sample_output.tif", probs[:1].astype(np.float32))  # (1,C)
        files = list(_FILES)
        shapes = {"input": x.shape, "probabilities": probs.shape}
        if aux is not None:
            np.save(staging / "test_aux.npy", aux)
            files.append("test_aux.npy")
            shapes["aux"] = aux.shape
        name = _package_name(loaded)
        (staging / "cover.png").write_bytes(_cover_png(x, probs, loaded.classes, name))
        (staging / "README.md").write_text(_readme(loaded, prep, name, source), encoding="utf-8")
        sha = {f: _sha256(staging / f) for f in files}
        rdf = _rdf(loaded, prep, cfg, shapes, sha, name, source)
        if used is not None:  # the package is one candidate of a stack folder: say which
            rdf["config"]["lipoclass"]["exported_from"] = used
            rdf["description"] += f". {used['note']}"
        text = yaml.safe_dump(rdf, sort_keys=False, allow_unicode=True, width=100)
        (staging / "rdf.yaml").write_text(text, encoding="utf-8")
        with zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for f in ["rdf.yaml", *files]:
                zf.write(staging / f, arcname=f)
        os.replace(tmp_zip, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        tmp_zip.unlink(missing_ok=True)
    print(f"bioimage.io model package: {dest} ({len(x)} test particles of {source})")
    return dest
