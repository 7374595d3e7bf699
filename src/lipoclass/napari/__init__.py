"""napari plugin of lipoclass (optional extra ``lipoclass[napari]``; manifest ``napari.yaml``).

``lipoclass.napari.layers`` builds the layer data (pure functions, no napari import);
``lipoclass.napari.plugin`` holds the napari glue: reader, writer and the magicgui widgets.
See docs/napari.md."""

from lipoclass.napari.layers import *  # noqa: F403
from lipoclass.napari.layers import __all__ as __all__
