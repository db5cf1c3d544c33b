"""Deprecated: the engine's modules moved to their pipeline stage (issue 13); these names stay for one release.

``spermseg.training`` (trainer, config, losses, schedules, distributed, parts, state), ``spermseg.models.checkpoints``,
``spermseg.inference`` (forward, bundle, predict, onnx, tiling, video, stacks, instances, tracking, ...) and
``spermseg.ensembling.mask_cache``.
"""

from __future__ import annotations

from spermseg._moved import install

_INFERENCE = [
    "bundle",
    "predict",
    "predict_outputs",
    "tiling",
    "video",
    "stacks",
    "instances",
    "tracing",
    "morphometry",
    "label_outputs",
    "detection",
    "tracking",
    "track_outputs",
]

install(
    {
        **{
            f"spermseg.engine.{m}": f"spermseg.training.{m}"
            for m in ["trainer", "config", "losses", "schedules", "distributed", "parts"]
        },
        **{f"spermseg.engine.{m}": f"spermseg.inference.{m}" for m in _INFERENCE},
        "spermseg.engine.checkpoints": "spermseg.models.checkpoints",
        "spermseg.engine.inference": "spermseg.inference.forward",
        "spermseg.engine.onnx_export": "spermseg.inference.onnx",
        "spermseg.engine.mask_cache": "spermseg.ensembling.mask_cache",
    }
)
