"""Screenshot of napari with a lipoclass prediction folder open (docs/images/napari_prediction.png).

Run under a display or Xvfb, e.g.
``xvfb-run -a .venv/bin/python scripts/napari_screenshot.py lipoclass-micrograph-demo/report``."""

import sys
from pathlib import Path

import napari

folder = Path(sys.argv[1])
out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("docs/images/napari_prediction.png")
viewer = napari.Viewer(show=True)
viewer.window.resize(1200, 800)
viewer.open(str(folder), plugin="lipoclass")
viewer.window.add_plugin_dock_widget("lipoclass", "Correct particle classes")
labels = next(ly for ly in viewer.layers if isinstance(ly, napari.layers.Labels))
viewer.layers.selection.active = labels
viewer.reset_view()
viewer.screenshot(str(out), canvas_only=False, flash=False)
viewer.close()
print(out)
