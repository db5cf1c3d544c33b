"""Export a model bundle (base models + ensemble + normalization) to ONNX as one graph, and run it.

The graph maps raw images (B, 1, H, W) in [0, 1] to probabilities (B, 1, H, W), with dynamic batch size and
dynamic H and W that are multiples of the bundle's *divisor* (the least common multiple of its members' padding
divisors, recorded in the model's metadata as ``spermseg_divisor``). :func:`onnx_session`'s callers pad any
other size centrally (reflect) and crop back, exactly as the PyTorch models do internally, so both backends see
the same pixels. (Exporting the padding itself would need data-dependent shapes, which ONNX export specializes
on the sample size.)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from spermseg.errors import CheckpointError, SpermsegError

MAX_SIDE = 8192


def bundle_divisor(predictor: Any) -> int:
    """Least common multiple of the padding divisors of every member network."""
    divisor = 1
    for module in predictor.modules():
        d = getattr(module, "divisor", None)
        if isinstance(d, int) and d > 0:
            divisor = math.lcm(divisor, d)
    return divisor


def export_onnx(model: str | Path, out: str | Path, *, opset: int = 18) -> Path:
    """Export a bundle, run directory or checkpoint to ``out`` (``.onnx``), written atomically.

    Args:
        model: what :func:`spermseg.engine.bundle.load_predictor` accepts.
        out: the ``.onnx`` file to write.
        opset: ONNX opset version.

    Returns:
        The path written.
    """
    import onnx
    import torch
    from torch.export import Dim

    from spermseg import __version__
    from spermseg.engine.bundle import load_predictor
    from spermseg.utils.atomic import atomic_path

    predictor = load_predictor(model).float().eval()
    divisor = bundle_divisor(predictor)
    sample = torch.rand(1, 1, 2 * divisor, 2 * divisor, generator=torch.Generator().manual_seed(0))
    blocks = MAX_SIDE // divisor
    shapes = {"x": {0: Dim("batch", min=1, max=4096), 2: divisor * Dim("h_blocks", min=1, max=blocks),
                    3: divisor * Dim("w_blocks", min=1, max=blocks)}}  # fmt: skip
    out = Path(out)
    with atomic_path(out) as tmp:
        try:
            program = torch.onnx.export(
                predictor, (sample,), dynamo=True, input_names=["image"], output_names=["prob"],
                dynamic_shapes=shapes, opset_version=opset, verbose=False,
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - the exporter raises many types; the user needs one clear line
            raise SpermsegError(
                f"ONNX export of {model} failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
            ) from exc
        proto = program.model_proto
        meta = {
            "spermseg_version": __version__,
            "spermseg_threshold": str(predictor.threshold),
            "spermseg_divisor": str(divisor),
            "spermseg_combine": predictor.combine,
            "spermseg_normalizations": json.dumps(predictor.base_normalizations),
        }
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save_model(proto, str(tmp))
    return out


def _metadata(path: str | Path) -> dict[str, str]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)


def onnx_threshold(path: str | Path) -> float:
    """The decision threshold stored in an exported model (0.5 when absent)."""
    return float(_metadata(path).get("spermseg_threshold", 0.5))


def onnx_session(path: str | Path, device: str = "cpu") -> Any:
    """An ONNX Runtime session for an exported bundle (CUDA provider when asked and available)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ONNX model not found: {path}; create it with 'spermseg export'")
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise SpermsegError("--device cuda with --backend onnx needs onnxruntime-gpu; install it or use cpu")
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(str(path), providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise CheckpointError(f"cannot load ONNX model {path}: {str(exc).splitlines()[0]}") from None


def pad_to_divisor(batch: np.ndarray, divisor: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Pad (B, H, W) centrally to multiples of ``divisor`` (reflect, replicate when too small), as the models do.

    Returns:
        The padded batch and ``(top, left, H, W)`` to crop back.
    """
    from spermseg.models.blocks import central_padding

    h, w = batch.shape[-2:]
    top, bottom = central_padding(h, divisor)
    left, right = central_padding(w, divisor)
    if not (top or bottom or left or right):
        return batch, (0, 0, h, w)
    mode = "reflect" if min(h, w) > max(top, bottom, left, right) else "edge"
    return np.pad(batch, ((0, 0), (top, bottom), (left, right)), mode=mode), (top, left, h, w)


def parity_check(model: str | Path, onnx_path: str | Path, sizes: tuple[tuple[int, int, int], ...] = ()) -> float:
    """Max absolute difference of soft masks between PyTorch and ONNX Runtime on random images of several sizes."""
    from spermseg.engine.bundle import load_predictor
    from spermseg.engine.predict import onnx_backend, torch_backend

    torch_fn = torch_backend(load_predictor(model), "cpu")
    onnx_fn = onnx_backend(onnx_path, "cpu")
    rng = np.random.default_rng(0)
    worst = 0.0
    for shape in sizes or ((1, 64, 64), (1, 70, 90), (2, 96, 128)):
        batch = rng.random(shape, dtype=np.float32)
        worst = max(worst, float(np.abs(torch_fn(batch) - onnx_fn(batch)).max()))
    return worst
