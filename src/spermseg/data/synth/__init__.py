"""Synthetic ICSI data: blurry gray sperm frames, exact part masks, three noisy raters, and videos.

Modules (one idea each):

* :mod:`~spermseg.data.synth.config` - :class:`SynthConfig`, every parameter with its random range,
* :mod:`~spermseg.data.synth.scene` - a video's sperm, debris and imaging conditions; sperm pose at time t,
* :mod:`~spermseg.data.synth.fields` - vectorized sub-pixel distance fields of polylines and blobs,
* :mod:`~spermseg.data.synth.render` - one frame: image, truth masks, what the raters see,
* :mod:`~spermseg.data.synth.raters` - human rater models (contours, faint tail ends, misses, false positives),
* :mod:`~spermseg.data.synth.dataset` - the SegSperm layout on disk, videos, ``synth.json``.

Example:
    >>> from spermseg.data.synth import SynthConfig, generate_dataset
    >>> generate_dataset("/tmp/s", SynthConfig(), n_train=40, n_test=12, n_test_small=6, seed=1)  # doctest: +SKIP
"""

from __future__ import annotations

from spermseg.data.synth.config import (
    BackgroundConfig,
    NoiseConfig,
    OpticsConfig,
    RaterConfig,
    RatersConfig,
    SpermConfig,
    SynthConfig,
)
from spermseg.data.synth.dataset import generate_dataset, render_item, scene_for
from spermseg.data.synth.raters import rate_frame
from spermseg.data.synth.render import Frame, render_frame
from spermseg.data.synth.scene import Scene, sample_scene, sperm_pose

__all__ = [
    "BackgroundConfig",
    "Frame",
    "NoiseConfig",
    "OpticsConfig",
    "RaterConfig",
    "RatersConfig",
    "Scene",
    "SpermConfig",
    "SynthConfig",
    "generate_dataset",
    "rate_frame",
    "render_frame",
    "render_item",
    "sample_scene",
    "scene_for",
    "sperm_pose",
]
