"""Helpers for the napari plugin tests: a deterministic 'dark line' ONNX model and synthetic frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np

THRESHOLD = 0.5


def write_dark_detector(path: Path, delta: float = 0.05, gain: float = 60.0) -> Path:
    """An ONNX graph with the interface of ``spermseg export`` that marks pixels darker than their surroundings.

    ``prob = sigmoid(gain * (mean_31x31(image) - mean_3x3(image) - delta)) * valid``: sperm in the synthetic frames
    are darker than the background, so this stands in for a trained network (deterministic, no training, instant).

    Args:
        path: the ``.onnx`` file to write.
        delta: darkness (in [0, 1] gray levels) that gives probability 0.5.
        gain: slope of the sigmoid.

    Returns:
        ``path``.
    """
    import onnx
    from onnx import TensorProto, helper

    shape = ["batch", 1, "h", "w"]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("image", "valid")]
    output = helper.make_tensor_value_info("prob", TensorProto.FLOAT, shape)
    consts = [helper.make_tensor(n, TensorProto.FLOAT, [], [v]) for n, v in (("delta", delta), ("gain", gain))]
    nodes = [
        helper.make_node("AveragePool", ["image"], ["bg"], kernel_shape=[31, 31], pads=[15] * 4, count_include_pad=0),
        helper.make_node("AveragePool", ["image"], ["sm"], kernel_shape=[3, 3], pads=[1] * 4, count_include_pad=0),
        helper.make_node("Sub", ["bg", "sm"], ["d"]),
        helper.make_node("Sub", ["d", "delta"], ["e"]),
        helper.make_node("Mul", ["e", "gain"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["p"]),
        helper.make_node("Mul", ["p", "valid"], ["prob"]),
    ]
    graph = helper.make_graph(nodes, "dark_detector", inputs, [output], initializer=consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    for key, value in (("spermseg_threshold", str(THRESHOLD)), ("spermseg_divisor", "1")):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    return path


def synthetic(n_frames: int, size: int = 256) -> tuple[np.ndarray, dict[str, float]]:
    """``n_frames`` consecutive synthetic frames (T, H, W) uint8 with 2 separable sperm in view, and calibration."""
    from spermseg.napari._core import synthetic_frames

    return synthetic_frames(n_frames, seed=0, video=0, size=size)
