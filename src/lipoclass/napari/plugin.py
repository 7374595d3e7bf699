"""napari glue (needs ``lipoclass[napari]``): the reader, the label-image writer and the
magicgui widgets named in ``napari.yaml``. Everything they show or save is built by
``lipoclass.napari.layers``."""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lipoclass.errors import LipoclassError
from lipoclass.napari.layers import (
    LayerData,
    class_colormap,
    dataset_layers,
    is_particle_dataset,
    is_prediction_folder,
    prediction_layers,
    save_reviews,
    set_class,
    write_label_image,
)

__all__ = ["correct_widget", "get_reader", "predict_widget", "run_prediction", "write_labels"]


def get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """napari reader: a prediction folder or a particle dataset folder; None otherwise (napari
    then asks another reader)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if is_prediction_folder(path):
        return lambda p: prediction_layers(p[0] if isinstance(p, list) else p)
    if is_particle_dataset(path):
        return lambda p: dataset_layers(p[0] if isinstance(p, list) else p)
    return None


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """napari writer: a labels layer as an instance label image for ``crop --labels``."""
    return [str(write_label_image(path, data))]


def run_prediction(
    image: np.ndarray,
    model_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    pixel_size_nm: float | None = None,
    name: str = "micrograph",
) -> list[LayerData]:
    """Detect and classify the particles of ``image`` (H, W) with the model folder
    ``model_dir`` (``lipoclass predict`` with the detector) into the new folder ``out``;
    returns its labels layers (the image is already open)."""
    import tifffile

    from lipoclass.micrograph import DetectSource
    from lipoclass.micrograph.predict import predict_micrographs

    img = np.asarray(image)
    if img.ndim != 2:
        raise LipoclassError(f"{name}: a micrograph is a 2-D image, got {img.ndim}-D")
    out = Path(out)
    src = Path(tempfile.mkdtemp(prefix="lipoclass-napari-")) / f"{name}.tif"
    tifffile.imwrite(src, img)
    predict_micrographs(model_dir, [src], out, DetectSource(), pixel_size_nm=pixel_size_nm,
                        require_pixel_size=False, verbose=False, progress=False)  # fmt: skip
    return [ld for ld in prediction_layers(out) if ld[2] == "labels"]


def predict_widget() -> Any:
    """Dock widget: run detect + predict on an image layer with a chosen model folder."""
    from magicgui import magicgui
    from napari.layers import Image
    from napari.types import LayerDataTuple

    @magicgui(
        call_button="Detect and classify",
        model={"label": "model folder", "mode": "d"},
        out={"label": "result folder (new)", "mode": "d"},
        pixel_size_nm={"label": "pixel size (nm, 0: layer scale)", "min": 0.0, "max": 1e4},
    )
    def detect_and_classify(
        image: Image, model: Path, out: Path = Path(), pixel_size_nm: float = 0.0
    ) -> list[LayerDataTuple]:
        if image is None:
            raise LipoclassError("open a micrograph first")
        px = pixel_size_nm or (float(image.scale[-1]) if image.scale[-1] != 1 else None)
        dest = out if str(out) not in ("", ".") else Path(
            tempfile.mkdtemp(prefix="lipoclass-predict-")) / "prediction"  # fmt: skip
        return run_prediction(image.data, model, dest, px, image.name)  # type: ignore[return-value]

    return detect_and_classify


def recolour(layer: Any) -> None:
    """Colour a labels layer by each particle's corrected class (else predicted class)."""
    f = layer.features
    cls = [n or p for n, p in zip(f["new_label"], f["pred"])]
    layer.colormap = class_colormap(f["index"], cls, layer.metadata.get("classes", []))


def correct_widget() -> Any:
    """Dock widget: set the class of the selected particle (napari's picker or the label
    spin box selects it) and append the corrections to a reviews.csv."""
    from magicgui.types import FileDialogMode
    from magicgui.widgets import ComboBox, Container, FileEdit, LineEdit, PushButton
    from napari.layers import Labels

    layer_box = ComboBox(label="particles", choices=_labels_layers, nullable=True)
    cls_box = ComboBox(label="new class", choices=lambda _w: _class_choices(layer_box.value))
    who = LineEdit(label="reviewer", value=os.environ.get("USER", ""))
    path = FileEdit(label="reviews.csv", mode=FileDialogMode.OPTIONAL_FILE,
                    value=Path("reviews.csv"))  # fmt: skip
    set_btn = PushButton(text="Set class of selected particle")
    save_btn = PushButton(text="Save corrections")
    box = Container(widgets=[layer_box, cls_box, set_btn, who, path, save_btn])

    def _set() -> None:
        layer = layer_box.value
        if not isinstance(layer, Labels):
            raise LipoclassError("choose a particles layer")
        classes = layer.metadata.get("classes", [])
        layer.features = set_class(layer.features, layer.selected_label, cls_box.value, classes)
        recolour(layer)

    def _save() -> None:
        layer = layer_box.value
        if not isinstance(layer, Labels):
            raise LipoclassError("choose a particles layer")
        save_reviews(
            Path(str(path.value)), layer.features, layer.metadata.get("classes", []), who.value
        )

    set_btn.changed.connect(_set)
    save_btn.changed.connect(_save)
    layer_box.changed.connect(lambda _v: cls_box.reset_choices())
    return box


def _labels_layers(_widget: Any) -> list[Any]:
    from napari import current_viewer
    from napari.layers import Labels

    v = current_viewer()
    if v is None:
        return []
    return [ly for ly in v.layers if isinstance(ly, Labels) and "new_label" in ly.features]


def _class_choices(layer: Any) -> list[str]:
    from lipoclass.quantify import REVIEW_SPECIAL

    classes = list(layer.metadata.get("classes", [])) if layer is not None else []
    return [*classes, *REVIEW_SPECIAL]
