"""Sample data (File > Open Sample > spermseg): frames from ``spermseg synth``'s generator, with calibration.

The calibration (the pixel size the generator drew for the video, 25 frames per second) travels in
``layer.metadata["spermseg"]``, which the "Segment sperm" widget reads to fill its pixel size and frame rate.
"""

from __future__ import annotations

from spermseg.napari import _core
from spermseg.napari.layers import META_KEY, LayerDataTuple

STACK_FRAMES = 20


def synthetic_frame(size: int = 512, seed: int = 0, video: int = 0) -> list[LayerDataTuple]:
    """One synthetic ICSI frame (uint8, ``size`` x ``size``).

    Args:
        size: height and width in pixels.
        seed, video: the generator's seed and video index.

    Returns:
        One Image ``LayerDataTuple``.
    """
    frames, calibration = _core.synthetic_frames(1, seed=seed, video=video, size=size)
    return [(frames[0], {"name": "synthetic sperm", "metadata": {META_KEY: calibration}}, "image")]


def synthetic_stack(
    n_frames: int = STACK_FRAMES, size: int = 512, seed: int = 0, video: int = 0
) -> list[LayerDataTuple]:
    """A short synthetic time series (T, H, W) uint8 of swimming and beating sperm, 25 frames per second.

    Args:
        n_frames: number of consecutive frames.
        size: height and width in pixels.
        seed, video: the generator's seed and video index.

    Returns:
        One Image ``LayerDataTuple`` (axis 0 is time).
    """
    frames, calibration = _core.synthetic_frames(n_frames, seed=seed, video=video, size=size)
    return [(frames, {"name": "synthetic sperm video", "metadata": {META_KEY: calibration}}, "image")]
