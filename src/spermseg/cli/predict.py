"""``spermseg predict``: segment images, folders, glob patterns and videos with a trained model or bundle.

Examples:
    spermseg predict --model bundles/e3_att_v2 frames/ --out preds
    spermseg predict --model runs/unet/seed0 'data/**/*.png' --out preds --soft-format npy --tta
    spermseg predict --model model.onnx --backend onnx clip.mp4 --out preds --pixel-size 0.25
    spermseg predict --model runs/parts frames/ --out preds --instances --roi --label-format tif
"""

from __future__ import annotations

import argparse
import sys

from spermseg.cli._common import nonneg_int, positive_float, positive_int, unit_float

HELP = "segment images, folders, glob patterns and videos with a trained model, bundle or ONNX export"
EXAMPLE = "spermseg predict frames/ --model bundles/e3_att_v2 --out preds"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, glob patterns or videos")
    parser.add_argument(
        "--model",
        required=True,
        help="builtin (the model that ships with spermseg), a bundle or run directory, a checkpoint or an .onnx file",
    )
    parser.add_argument(
        "--out",
        required=True,
        help="output directory; it may not hold any input, and one that holds an earlier run's results is refused "
        "unless --overwrite or --append",
    )
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument(
        "--overwrite",
        dest="existing",
        action="store_const",
        const="overwrite",
        default="refuse",
        help="remove the earlier run's outputs in --out (the files its CSVs list) first",
    )
    existing.add_argument(
        "--append",
        dest="existing",
        action="store_const",
        const="append",
        help="add to the earlier run's results in --out; an input predicted again replaces its files and rows",
    )
    parser.add_argument("--threshold", type=unit_float, default=None, help="decision threshold (default: the model's)")
    parser.add_argument("--soft-format", choices=("png16", "npy"), default="png16", help="soft-mask file format")
    parser.add_argument("--batch-size", type=positive_int, default=4, help="frames per forward pass")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch", help="inference backend")
    parser.add_argument("--tta", action="store_true", help="average over flips (4x slower, smoother masks)")
    parser.add_argument(
        "--min-head-radius",
        type=float,
        default=None,
        metavar="PX",
        help="remove predicted pieces with no part this thick (detached tails, debris; docs/training.md); default: "
        "the radius the model measured on its training labels, 0 keeps every piece",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="inference precision: auto (bf16 on CUDA, float32 on the CPU; default), fp32 or bf16",
    )
    parser.add_argument(
        "--tile", type=nonneg_int, default=0, help="tile size in pixels for large images (0: whole image)"
    )
    parser.add_argument(
        "--tile-overlap", type=nonneg_int, default=64, help="overlap between tiles in pixels, less than --tile"
    )
    parser.add_argument("--pixel-size", type=positive_float, default=None, help="micrometres per pixel, for sperm.csv")
    parser.add_argument("--no-overlay", action="store_true", help="do not write overlay images/videos")
    parser.add_argument(
        "--instances",
        action="store_true",
        help="separate touching and crossing sperm: NAME_instances (16-bit labels = sperm.csv sperm_id)",
    )
    parser.add_argument("--roi", action="store_true", help="also an ImageJ ROI zip per image (implies --instances)")
    parser.add_argument("--label-format", choices=("png", "tif"), default="png", help="label image format")
    parser.add_argument(
        "--instance-method",
        choices=("skeleton", "watershed", "components"),
        default="skeleton",
        help="separation method (docs/instances.md; default skeleton)",
    )


def run(args: argparse.Namespace) -> int:
    from spermseg.inference.predict import PredictOptions, predict_inputs

    options = PredictOptions(
        threshold=args.threshold,
        soft_format=args.soft_format,
        batch_size=args.batch_size,
        device=args.device,
        backend=args.backend,
        tta=args.tta,
        precision=args.precision,
        tile=args.tile,
        tile_overlap=args.tile_overlap,
        pixel_size=args.pixel_size,
        overlay=not args.no_overlay,
        instances=args.instances or args.roi,
        roi=args.roi,
        label_format=args.label_format,
        instance_method=args.instance_method,
        existing=args.existing,
        min_head_radius=args.min_head_radius,
    )
    summary = predict_inputs(args.model, args.inputs, args.out, options)
    done = summary.n_images + summary.n_frames
    print(
        f"predicted {summary.n_images} images and {summary.n_frames} video frames in {summary.seconds:.1f} s "
        f"({summary.frames_per_second:.2f} frames/s) -> {summary.out}"
    )
    for path, why in summary.failed:
        print(f"spermseg predict: failed: {path}: {why}", file=sys.stderr)
    if summary.failed:
        print(f"spermseg predict: {len(summary.failed)} input(s) failed, {done} frame(s) written", file=sys.stderr)
        return 1
    return 0
