"""napari plugin: segment, separate, measure and track sperm in the viewer (``pip install 'spermseg[napari]'``).

* :func:`segment_layers` (:mod:`~spermseg.napari.layers`): image or stack -> napari layer data, no Qt needed;
* :mod:`~spermseg.napari.reader`: opens what ``spermseg predict`` / ``spermseg track`` wrote, with their tables;
* :mod:`~spermseg.napari.sample`: a synthetic frame and a short synthetic stack;
* :mod:`~spermseg.napari.widget`: the "Segment sperm" dock widget (the only module that imports Qt and napari).

The contributions are declared in ``napari.yaml`` (npe2). Importing this package imports neither Qt nor napari.
"""

from __future__ import annotations

from typing import Any

__all__ = ["segment_layers"]


def __getattr__(name: str) -> Any:
    if name == "segment_layers":
        from spermseg.napari.layers import segment_layers

        return segment_layers
    raise AttributeError(f"module 'spermseg.napari' has no attribute '{name}'")
