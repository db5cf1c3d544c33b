"""int8 export (``spermseg export --int8``): calibrated, close to the float model, metadata kept, refusals clear."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from spermseg.cli import main
from spermseg.inference.onnx import onnx_backend, onnx_threshold
from spermseg.models import create_model
from spermseg.models.checkpoints import save_checkpoint


def _frame(seed: int, size=(64, 80)) -> np.ndarray:
    """A gray frame with a dark 'sperm' (ellipse + line) on a noisy light background, uint8."""
    rng = np.random.default_rng(seed)
    img = rng.normal(170, 8, size).clip(0, 255).astype(np.uint8)
    cv2.ellipse(img, (25, 30), (6, 4), 0, 0, 360, 60, -1)
    cv2.line(img, (25, 30), (75, 15 + seed % 10), 90, 1)
    return img


def _export_int8(tmp_path: Path, width: int, meta: dict, calibration_frames: int) -> Path:
    """A unet of ``width`` saved with ``meta`` and exported as TMP/m.onnx and its int8 twin TMP/m.int8.onnx."""
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "run" / "best", create_model("unet", width=width), meta)
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(calibration_frames):
        cv2.imwrite(str(calib / f"c{i}.png"), _frame(i))
    out = tmp_path / "m.onnx"
    argv = ["export", "--model", str(tmp_path / "run"), "--out", str(out), "--int8", "--calibration", str(calib)]
    assert main(argv) == 0
    return out


def test_int8_export_keeps_metadata_and_stays_close_to_float(tmp_path: Path) -> None:
    meta = {"normalization": "minmax", "threshold": 0.37, "whole_sperm": {"min_head_radius": 3.5}}
    out = _export_int8(tmp_path, 4, meta, 6)
    q = tmp_path / "m.int8.onnx"
    assert q.is_file() and q.stat().st_size < out.stat().st_size
    assert onnx_threshold(q) == pytest.approx(0.37)
    from spermseg.inference.onnx import onnx_min_head_radius

    assert onnx_min_head_radius(q) == pytest.approx(3.5)
    batch = np.stack([_frame(10 + i).astype(np.float32) / 255 for i in range(3)])
    ref, got = onnx_backend(out)(batch), onnx_backend(q)(batch)
    assert got.shape == ref.shape and np.isfinite(got).all()
    # stated tolerance: int8 activations (256 levels per tensor) move probabilities by ~1e-3 on average
    assert np.abs(got - ref).mean() < 0.02 and np.abs(got - ref).max() < 0.25
    assert not np.array_equal(got, ref)  # it really is another (quantized) graph
    from spermseg.inference.onnx import _metadata

    assert _metadata(q)["spermseg_int8_weight_bits"] == "7"  # reduce_range: no int16 saturation without VNNI


def test_export_reports_int8_parity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """export --int8 measures the quantized model against the float one on this CPU and says so."""
    _export_int8(tmp_path, 4, {"normalization": "minmax"}, 3)
    assert "int8 parity on this CPU: mask IoU" in capsys.readouterr().out


def test_int8_parity_flags_a_model_that_is_not_the_float_one(tmp_path: Path) -> None:
    """The parity check is exact for the same graph and fails a graph that computes other masks."""
    from spermseg.inference.onnx import export_onnx
    from spermseg.inference.quantize import int8_parity

    frames = [_frame(20 + i).astype(np.float32) / 255 for i in range(3)]
    torch.manual_seed(0)
    model = create_model("unet", width=4)
    save_checkpoint(tmp_path / "r0" / "best", model, {"threshold": 0.5})
    with torch.no_grad():  # the same network with its logits negated: every mask flips
        model.head.weight.neg_()
        model.head.bias.neg_()
    save_checkpoint(tmp_path / "r1" / "best", model, {"threshold": 0.5})
    paths = [export_onnx(tmp_path / f"r{k}", tmp_path / f"m{k}.onnx") for k in (0, 1)]
    same = int8_parity(paths[0], paths[0], frames)
    assert same.mean_abs == 0 and same.mask_iou == 1 and same.ok
    other = int8_parity(paths[0], paths[1], frames)
    assert other.mean_abs > 0 and other.mask_iou < 0.95 and not other.ok


def test_int8_without_calibration_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_checkpoint(tmp_path / "run" / "best", create_model("unet", width=4), {"normalization": "minmax"})
    assert main(["export", "--model", str(tmp_path / "run"), "--out", str(tmp_path / "m.onnx"), "--int8"]) == 2
    assert "--calibration" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()  # refused before anything is written


@pytest.mark.parametrize("width, level", [(4, "extended"), (8, "all")])
def test_auto_optimization_drops_the_blocked_layout_only_for_narrow_graphs(
    tmp_path: Path, width: int, level: str
) -> None:
    """ONNX Runtime's NCHWc layout pads channels to its block (8 or 16): a graph with 4-channel layers runs without
    it; float and int8 graphs are read alike, and every level computes the same probabilities."""
    import onnxruntime as ort

    from spermseg.inference.onnx import NCHWC_MIN_CHANNELS, narrowest_conv, onnx_session

    out = _export_int8(tmp_path, width, {"normalization": "minmax"}, 2)
    for graph in (out, tmp_path / "m.int8.onnx"):
        assert narrowest_conv(graph) == width
        chosen = onnx_session(graph).get_session_options().graph_optimization_level
        expected = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED if width < NCHWC_MIN_CHANNELS else (
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL)  # fmt: skip
        assert chosen == expected, level
    batch = np.stack([_frame(10 + i).astype(np.float32) / 255 for i in range(2)])
    a, b = onnx_backend(out, optimization="all")(batch), onnx_backend(out, optimization="extended")(batch)
    np.testing.assert_allclose(a, b, atol=1e-4)
    with pytest.raises(Exception, match="choose one of auto, all, extended"):
        onnx_session(out, optimization="fastest")
