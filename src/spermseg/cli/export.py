"""``spermseg export``: export a bundle (or one trained model) to ONNX as one graph.

Example:
    spermseg export --model bundles/e3_att_v2 --out e3_att_v2.onnx --check
"""

from __future__ import annotations

import argparse
import sys

from spermseg.cli._common import positive_int
from spermseg.errors import SpermsegError

HELP = "export a model bundle to ONNX (dynamic batch and spatial size) and check parity with PyTorch"
OUT_KIND = "file"
EXAMPLE = "spermseg export --model bundles/avg --out avg.onnx --check"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="builtin, a bundle directory, run directory or checkpoint")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument(
        "--opset", type=positive_int, default=18, help="ONNX opset version, 18 or newer (the exporter's minimum)"
    )
    parser.add_argument("--check", action="store_true", help="compare ONNX Runtime with PyTorch on random images")
    parser.add_argument(
        "--int8",
        action="store_true",
        help="also write OUT with .int8.onnx: static int8 quantization calibrated on --calibration frames",
    )
    parser.add_argument(
        "--calibration", default=None, metavar="DIR", help="folder of calibration images for --int8 (a few dozen)"
    )
    parser.add_argument(
        "--calibration-count", type=positive_int, default=32, help="at most this many calibration images (sorted)"
    )


def run(args: argparse.Namespace) -> int:
    from spermseg.inference.onnx import export_onnx, parity_check

    if args.int8 and not args.calibration:
        raise SpermsegError("--int8 needs --calibration DIR (a folder of images like the ones to segment)")
    out = export_onnx(args.model, args.out, opset=args.opset)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    if args.int8:
        from spermseg.data.io import read_image
        from spermseg.inference.predict import collect_inputs
        from spermseg.inference.quantize import int8_parity, quantize_onnx
        from spermseg.inference.video import is_video

        files = [f for f in collect_inputs([args.calibration]) if not is_video(f)]
        images = [read_image(f) for f in files[: args.calibration_count]]
        q = quantize_onnx(out, out.with_suffix(".int8.onnx"), images)
        print(f"wrote {q} ({q.stat().st_size / 1e6:.1f} MB, int8, calibrated on {len(images)} images)")
        parity = int8_parity(out, q, images)
        print(f"int8 parity on this CPU: mask IoU {parity.mask_iou:.4f}, mean |int8 - fp32| "
              f"{parity.mean_abs:.2e}, max {parity.max_abs:.2e} (over the calibration images)")  # fmt: skip
        if not parity.ok:
            print(f"error: {q} is not faithful to the float model on this CPU; use {out} (fp32) instead",
                  file=sys.stderr)  # fmt: skip
            return 1
    if args.check:
        diff = parity_check(args.model, out)
        print(f"parity: max |onnx - torch| = {diff:.2e} over sizes 64x64, 70x90, 2x96x128")
        return 0 if diff < 1e-4 else 1
    return 0
