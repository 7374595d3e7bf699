"""The napari plugin in a real viewer (Qt under Xvfb through pytest-xvfb): the npe2 manifest,
the reader through ``viewer.open``, the detect + predict widget and the correction widget.
Skipped when napari (the extra ``lipoclass[napari]``) is not installed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")
if not os.environ.get("DISPLAY") and shutil.which("Xvfb") is None:  # Qt would abort the run
    pytest.skip("no display and no Xvfb (scripts/setup.sh installs xvfb)", allow_module_level=True)

from test_napari import CLASSES, PX, make_prediction  # noqa: E402

MANIFEST = Path(__file__).parents[1] / "src" / "lipoclass" / "napari" / "napari.yaml"


@pytest.fixture(autouse=True)
def _plugin_registered():
    """The installed entry point registers the manifest; a checkout run with PYTHONPATH
    registers it from the source tree."""
    import npe2

    pm = npe2.PluginManager.instance()
    if "lipoclass" not in pm._manifests:
        pm.register(npe2.PluginManifest.from_file(MANIFEST))
    yield


def test_manifest_is_valid():
    import npe2

    mf = npe2.PluginManifest.from_file(MANIFEST)
    assert mf.name == "lipoclass"
    kinds = {c.python_name.split(":")[1] for c in mf.contributions.commands}
    assert kinds == {"get_reader", "write_labels", "predict_widget", "correct_widget"}
    mf.validate_imports()  # every python_name resolves


def test_viewer_opens_prediction_folder_and_corrects(make_napari_viewer_proxy, tmp_path):
    from lipoclass.napari.plugin import correct_widget, recolour
    from lipoclass.review.store import read_decisions

    out, _mic, _m = make_prediction(tmp_path)
    viewer = make_napari_viewer_proxy()
    viewer.open(str(out), plugin="lipoclass")
    img, lab = viewer.layers
    assert isinstance(lab, napari.layers.Labels) and lab.name.endswith("particles")
    np.testing.assert_allclose(img.scale, (PX, PX))
    assert "pred" in lab.features and "p_uncertain" in lab.features
    lab.selected_label = 1
    w = correct_widget()
    w[0].reset_choices()
    assert lab in w[0].choices and img not in w[0].choices
    w[0].value = lab
    new = next(c for c in CLASSES if c != lab.features["pred"].iloc[0])
    w[1].value = new
    w[2].changed.emit(True)  # "Set class of selected particle"
    assert lab.features["new_label"].iloc[0] == new
    recolour(lab)
    w[3].value = "ana"
    w[4].value = tmp_path / "reviews.csv"
    w[5].changed.emit(True)  # "Save corrections"
    got = read_decisions(tmp_path / "reviews.csv", ids=set(lab.features["id"]),
                         labels=set(CLASSES))  # fmt: skip
    assert [(d.queue, d.new_label, d.reviewer) for d in got] == [("napari", new, "ana")]
    # the writer through napari's save: an instance label image equal to the layer
    import tifffile

    saved = napari.save_layers(str(tmp_path / "edited.tif"), [lab], plugin="lipoclass")
    assert saved == [str(tmp_path / "edited.tif")]
    np.testing.assert_array_equal(tifffile.imread(saved[0]), lab.data)


def test_predict_widget_adds_particles_layer(make_napari_viewer_proxy, tmp_path):
    from lipoclass.micrograph import read_micrograph
    from lipoclass.napari.plugin import predict_widget

    _out, mic, model = make_prediction(tmp_path)
    m = read_micrograph(mic)
    viewer = make_napari_viewer_proxy()
    viewer.add_image(m.image, name="mic", scale=(PX, PX))
    w = predict_widget()
    w.reset_choices()
    layers = w(image=viewer.layers["mic"], model=model, out=tmp_path / "res")
    assert [ld[2] for ld in layers] == ["labels"]
    assert (tmp_path / "res" / "particles.csv").is_file()
    data, kw, _ = layers[0]
    assert data.shape == m.image.shape and len(kw["features"]) == int(data.max())
    # the widget's return value became a layer of the viewer (the detector's particles)
    assert [ly.name for ly in viewer.layers] == ["mic", "mic particles"]
    assert isinstance(viewer.layers[1], napari.layers.Labels)
