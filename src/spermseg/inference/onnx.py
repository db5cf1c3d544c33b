"""Export a model bundle (base models + ensemble + normalization) to ONNX as one graph, and run it.

The graph maps raw images ``image`` (B, 1, H, W) in [0, 1] and a 0/1 map ``valid`` of the same shape to
probabilities (B, 1, H, W), with dynamic batch size and dynamic H and W that are multiples of the bundle's
*divisor* (the least common multiple of its members' padding divisors, recorded in the model's metadata as
``spermseg_divisor``). The ONNX backend (:func:`onnx_backend`) pads any other size
centrally (reflect) exactly as the PyTorch models do internally, marks the real pixels in ``valid`` so that
normalization statistics ignore the padding, and crops back: both backends compute on the same pixels.
(Exporting the padding itself would need data-dependent shapes, which ONNX export specializes on the sample.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from spermseg.errors import CheckpointError, SpermsegError
from spermseg.inference.backends import BatchFn

MAX_SIDE = 8192
MIN_OPSET = 18  # torch.onnx's dynamo exporter writes opset 18 at least: a lower request was silently ignored


def check_opset(opset: int) -> None:
    """Refuse an opset the exporter cannot write (below :data:`MIN_OPSET` or newer than the installed onnx).

    Raises:
        SpermsegError: naming the valid range.
    """
    import onnx

    newest = int(onnx.defs.onnx_opset_version())
    if not MIN_OPSET <= int(opset) <= newest:
        raise SpermsegError(
            f"--opset {opset} cannot be exported: use {MIN_OPSET} to {newest} (torch.onnx writes opset "
            f">= {MIN_OPSET}; the installed onnx {onnx.__version__} knows up to {newest})"
        )


def export_onnx(model: str | Path, out: str | Path, *, opset: int = 18) -> Path:
    """Export a bundle, run directory or checkpoint to ``out`` (``.onnx``), written atomically.

    Args:
        model: what :func:`spermseg.inference.bundle.load_predictor` accepts.
        out: the ``.onnx`` file to write.
        opset: ONNX opset version.

    Returns:
        The path written.
    """
    import onnx
    import torch
    from torch.export import Dim

    from spermseg._version import __version__
    from spermseg.inference.bundle import load_predictor
    from spermseg.utils.atomic import atomic_path

    check_opset(opset)
    predictor = load_predictor(model).float().eval()
    divisor = predictor.divisor
    sample = torch.rand(1, 1, 2 * divisor, 2 * divisor, generator=torch.Generator().manual_seed(0))
    blocks = MAX_SIDE // divisor
    dims = {0: Dim("batch", min=1, max=4096), 2: divisor * Dim("h_blocks", min=1, max=blocks),
            3: divisor * Dim("w_blocks", min=1, max=blocks)}  # fmt: skip
    shapes = {"x": dims, "valid": dims}
    out = Path(out)
    with atomic_path(out) as tmp:
        try:
            program = torch.onnx.export(
                predictor, (sample, torch.ones_like(sample)), dynamo=True, input_names=["image", "valid"],
                output_names=["prob"],
                dynamic_shapes=shapes, opset_version=opset, verbose=False,
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - the exporter raises many types; the user needs one clear line
            raise SpermsegError(
                f"ONNX export of {model} failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
            ) from exc
        proto = program.model_proto
        written = next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        if written != int(opset):
            raise SpermsegError(
                f"the ONNX exporter wrote opset {written} instead of the requested {opset}; use --opset {written}"
            )
        meta = {
            "spermseg_version": __version__,
            "spermseg_threshold": str(predictor.threshold),
            "spermseg_divisor": str(divisor),
            "spermseg_combine": predictor.combine,
            "spermseg_normalizations": json.dumps(predictor.base_normalizations),
            "spermseg_min_head_radius": json.dumps(predictor.min_head_radius),
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


def onnx_min_head_radius(path: str | Path) -> float | None:
    """The whole-sperm radius stored in an exported model (``None`` when absent: no filtering)."""
    value = json.loads(_metadata(path).get("spermseg_min_head_radius", "null"))
    return None if value is None else float(value)


def narrowest_conv(path: str | Path) -> int | None:
    """The fewest output channels of any convolution in an ONNX graph whose output has more than one channel
    (the 1-channel logit heads are left out), or ``None`` when it has none. Float and int8 (QDQ) graphs alike:
    the weights' first dimension is read from the initializers."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    dims = {init.name: list(init.dims) for init in proto.graph.initializer}
    # in a QDQ graph a Conv's weight is the output of a DequantizeLinear whose input is the stored initializer
    dequant = {n.output[0]: n.input[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    widths = []
    for node in proto.graph.node:
        if node.op_type in ("Conv", "QLinearConv") and len(node.input) > 1:
            w = node.input[3] if node.op_type == "QLinearConv" else node.input[1]
            shape = dims.get(dequant.get(w, w))
            if shape and len(shape) == 4 and shape[0] > 1:
                widths.append(int(shape[0]))
    return min(widths) if widths else None


#: ONNX Runtime's CPU provider computes convolutions in a blocked channel layout (NCHWc) at its highest graph
#: optimization level, padding channels to the block (8 or 16 floats with AVX2 / AVX-512) and reordering tensors
#: around every op without a blocked kernel (transposed convolutions, concatenations). A network with layers
#: narrower than the smallest block pays for padding and reorders. Measured on the raw network at 512x512, batch 2,
#: 2 cores, two runs each: a ``unet`` of width 4 ran 7-15 % faster without the blocked layout on a Xeon with AMX
#: (62.7 / 63.8 against 58.6 / 55.7 frames/s) and 10-29 % on an AVX2-only EPYC (29.9 / 36.7 against 27.3 / 28.4),
#: while width 8 and ``fpn`` width 8 gave 13-38 % fewer frames/s without it on both.
NCHWC_MIN_CHANNELS = 8
OPTIMIZATIONS = ("auto", "all", "extended")


def onnx_session(path: str | Path, device: str = "cpu", optimization: str = "auto") -> Any:
    """An ONNX Runtime session for an exported bundle (CUDA provider when asked and available).

    Args:
        path: the ``.onnx`` file.
        device: ``cpu`` or ``cuda[:N]``.
        optimization: ONNX Runtime's graph optimization level: ``all`` (blocked NCHWc layout on the CPU),
            ``extended`` (everything but the layout) or ``auto``: ``extended`` on the CPU for graphs with a
            convolution narrower than :data:`NCHWC_MIN_CHANNELS` channels, ``all`` otherwise.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ONNX model not found: {path}; create it with 'spermseg export'")
    if optimization not in OPTIMIZATIONS:
        raise SpermsegError(f"unknown ONNX optimization '{optimization}'; choose one of {', '.join(OPTIMIZATIONS)}")
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise SpermsegError("--device cuda with --backend onnx needs onnxruntime-gpu; install it or use cpu")
        providers.insert(0, "CUDAExecutionProvider")
    opts = ort.SessionOptions()
    try:
        if optimization == "auto":
            narrow = narrowest_conv(path)
            optimization = "extended" if narrow is not None and narrow < NCHWC_MIN_CHANNELS else "all"
        levels = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        }
        opts.graph_optimization_level = levels[optimization]
        return ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise CheckpointError(f"cannot load ONNX model {path}: {str(exc).splitlines()[0]}") from None


def onnx_backend(path: str | Path, device: str = "cpu", optimization: str = "auto") -> BatchFn:
    """Run an exported bundle (``spermseg export``) with ONNX Runtime, padding to its divisor and cropping back
    (``optimization``: :func:`onnx_session`)."""
    import torch

    from spermseg.models.blocks import pad_to_divisor

    session = onnx_session(path, device, optimization)
    divisor = int(session.get_modelmeta().custom_metadata_map.get("spermseg_divisor", 1))

    def run(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))[:, None]
        padded, (top, left, h, w) = pad_to_divisor(x, divisor)  # the same padding as the PyTorch pipeline
        valid = np.zeros(padded.shape, dtype=np.float32)
        valid[..., top : top + h, left : left + w] = 1.0
        out = session.run(None, {"image": padded.numpy(), "valid": valid})[0]
        return out[:, 0, top : top + h, left : left + w]

    return run


def parity_check(model: str | Path, onnx_path: str | Path, sizes: tuple[tuple[int, int, int], ...] = ()) -> float:
    """Max absolute difference of soft masks between PyTorch and ONNX Runtime on random images of several sizes."""
    from spermseg.inference.backends import torch_backend
    from spermseg.inference.bundle import load_predictor

    torch_fn = torch_backend(load_predictor(model), "cpu")
    onnx_fn = onnx_backend(onnx_path, "cpu")
    rng = np.random.default_rng(0)
    worst = 0.0
    for shape in sizes or ((1, 64, 64), (1, 70, 90), (2, 96, 128)):
        batch = rng.random(shape, dtype=np.float32)
        worst = max(worst, float(np.abs(torch_fn(batch) - onnx_fn(batch)).max()))
    return worst
