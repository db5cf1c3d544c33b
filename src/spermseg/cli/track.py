"""``spermseg track``: follow every sperm through a video or stack and measure its motility (CASA kinematics).

Examples:
    spermseg track clip.mp4 --model runs/unet/seed0 --pixel-size 0.3 --out tracks/clip
    spermseg track stack.ome.tif --model bundles/e3 --out tracks/stack          (calibration from OME metadata)
    spermseg track --masks videos/01/truth/full --fps 25 --pixel-size 0.3 --out tracks/01 --truth videos/01/truth

Writes tracks.csv, kinematics.csv, labels.tif (uint16, ids = track ids), overlay.mp4, track.json and report.html
per input (several inputs: one sub-folder each). A truncated input keeps its processed frames and exits with 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spermseg.cli._common import add_json_arguments, add_set_argument, emit_json, positive_float

HELP = "track sperm across frames and measure CASA kinematics (VCL, VSL, VAP, ALH, BCF, beat frequency)"
EXAMPLE = "spermseg track clip.mp4 --model runs/unet/seed0 --pixel-size 0.3 --out tracks/clip"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs", nargs="*", metavar="VIDEO_OR_STACK", help="videos, TIFF/OME-TIFF stacks, frame folders"
    )
    parser.add_argument(
        "--model", default=None, help="builtin, a bundle directory, run directory or checkpoint to segment with"
    )
    parser.add_argument(
        "--masks",
        type=Path,
        default=None,
        metavar="DIR",
        help="track existing per-frame masks (binary or instance labels, sorted by name) instead",
    )
    parser.add_argument("--out", required=True, help="output folder (one sub-folder per input when several)")
    parser.add_argument("--fps", type=positive_float, default=None, help="frames per second (overrides metadata)")
    parser.add_argument("--pixel-size", type=positive_float, default=None, metavar="UM",
                        help="micrometres per pixel (overrides OME/ImageJ metadata)")  # fmt: skip
    parser.add_argument(
        "--truth",
        type=Path,
        default=None,
        metavar="DIR",
        help="a synthetic video's truth folder (tracks.csv, kinematics.csv): score the tracks",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--config", type=Path, default=None, metavar="FILE", help="YAML with TrackConfig values")
    add_set_argument(parser, "gap_frames=5", what="a tracking parameter (kinematics.* for the WHO thresholds)")
    parser.add_argument("--force", action="store_true", help="replace an earlier tracking run in --out")
    parser.add_argument("--no-report", action="store_true", help="do not write report.html")
    add_json_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from spermseg.config import resolve_config
    from spermseg.errors import SpermsegError
    from spermseg.inference.stacks import TruncatedInputError
    from spermseg.inference.tracking import TrackConfig, track_source

    if bool(args.masks) == bool(args.inputs):
        raise SpermsegError("give VIDEO_OR_STACK inputs with --model, or --masks DIR (not both)")
    if args.masks and args.model:
        raise SpermsegError("--masks tracks existing masks; it takes no --model")
    cfg = resolve_config(TrackConfig, yaml_path=args.config, overrides=list(args.set))
    sources = [args.masks] if args.masks else list(args.inputs)
    out = Path(args.out)
    results, code = [], 0
    for src in sources:
        dest = out if len(sources) == 1 else out / Path(src).name.split(".")[0]
        try:
            res = track_source(src, dest, cfg, model=args.model, masks=bool(args.masks), fps=args.fps,
                               pixel_size=args.pixel_size, device=args.device, force=args.force)  # fmt: skip
            error = None
        except TruncatedInputError as exc:  # outputs of the processed frames are written: report them too
            res, error, code = None, str(exc), 1
            print(f"spermseg track: error: {exc}", file=sys.stderr)
        results.append(_finish(dest, args, error, res))
    if not emit_json(args, results if len(results) > 1 else results[0]):
        for r in results:
            ev = r.get("evaluation") or {}
            extra = (f"; identity-consistent {ev['identity_consistent']:.3f}, MOTA {ev['mota']:.3f}, "
                     f"IDF1 {ev['idf1']:.3f}") if ev else ""  # fmt: skip
            print(f"{r['out']}: {r['frames_processed']} frames, {r['n_tracks']} tracks{extra}")
    sys.stdout.flush()
    return code


def _finish(dest: Path, args: argparse.Namespace, error: str | None, res: object) -> dict:
    """Score against the truth and write the report for one input's outputs (also after a truncated input)."""
    import json

    summary = json.loads((dest / "track.json").read_text())
    summary["out"] = str(dest)
    if args.truth is not None:
        from spermseg.evaluation.tracking import evaluate_tracks

        summary["evaluation"] = evaluate_tracks(dest, args.truth, write=True)
    if not args.no_report:
        from spermseg.experiments.track_report import write_track_report

        summary["report"] = str(write_track_report(dest))
    return summary
