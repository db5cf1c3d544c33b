"""``spermseg synth OUT``: generate a synthetic ICSI dataset (SegSperm layout) with truth and three raters.

Example::

    spermseg synth --out /tmp/s --train 40 --test 12 --test-small 6 --size 512 512 --seed 1
    spermseg synth --out /tmp/v --train 0 --test 0 --test-small 0 --videos 2 --frames 50
    spermseg synth --out /tmp/s --train 20 --set raters.gt2.tail_threshold=0.03 --set sperm.count=[1,3]

The output folder was a positional ``OUT`` before; that spelling still works for one release (hidden).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from spermseg.cli._common import add_set_argument, nonneg_int, positive_float, positive_int, require

HELP = "generate a synthetic ICSI dataset with truth and three noisy raters"
EXAMPLE = "spermseg synth --out data/synth --train 40 --test 12 --test-small 6 --seed 1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, default=None, metavar="OUT", help="output folder, required (empty, or see --overwrite)"
    )
    parser.add_argument("out_positional", type=Path, nargs="?", default=None, help=argparse.SUPPRESS)  # old spelling
    parser.add_argument(
        "--train", type=nonneg_int, default=40, metavar="N", help="training images, rater GT1 (default 40)"
    )
    parser.add_argument("--test", type=nonneg_int, default=12, metavar="M", help="test images, rater GT1 (default 12)")
    parser.add_argument(
        "--test-small",
        type=nonneg_int,
        default=6,
        metavar="K",
        help="images with raters GT1-GT3: the first K test images (default 6)",
    )
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="image size (512 512)")
    parser.add_argument("--seed", type=int, default=0, help="seed; the same seed gives byte-identical files")
    parser.add_argument("--videos", type=int, default=0, metavar="V", help="also write V videos of consecutive frames")
    parser.add_argument("--frames", type=int, default=50, metavar="F", help="frames per video (default 50)")
    parser.add_argument("--no-mp4", action="store_true", help="write video frames as PNG only, no MP4")
    parser.add_argument(
        "--pixel-size",
        type=positive_float,
        default=None,
        metavar="UM",
        help="micrometres per pixel, the same for every video (default: drawn per video by contrast mode)",
    )
    parser.add_argument(
        "--images-per-video", type=int, default=None, metavar="N", help="dataset images drawn from each video (10)"
    )
    parser.add_argument("--config", type=Path, default=None, metavar="FILE", help="YAML with SynthConfig values")
    add_set_argument(parser, "appearance.mode=brightfield", what="a parameter")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous synthetic dataset in OUT")
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="processes (one video each); output does not depend on it",
    )
    parser.add_argument("--json", action="store_true", help="print the manifest (synth.json) on stdout")


def run(args: argparse.Namespace) -> int:
    from spermseg.config import resolve_config
    from spermseg.data.synth import SynthConfig, generate_dataset

    overrides = list(args.set)
    if args.size is not None:
        overrides += [f"height={args.size[0]}", f"width={args.size[1]}"]
    if args.pixel_size is not None:
        # one fixed pixel size for every video instead of the default per-video range
        overrides.append(f"pixel_size_um={args.pixel_size}")
    if args.images_per_video is not None:
        overrides.append(f"images_per_video={args.images_per_video}")
    if args.out is None:
        args.out = args.out_positional
    require(args, "out", "--out", "data/synth")
    cfg = resolve_config(SynthConfig, yaml_path=args.config, overrides=overrides)
    manifest = generate_dataset(
        args.out,
        cfg,
        n_train=args.train,
        n_test=args.test,
        n_test_small=args.test_small,
        seed=args.seed,
        n_videos=args.videos,
        n_frames=args.frames if args.videos else 0,
        mp4=not args.no_mp4,
        overwrite=args.overwrite,
        workers=args.workers,
    )
    if args.json:
        print(json.dumps(manifest, indent=2, sort_keys=True))
    else:
        splits = manifest["splits"]
        parts = [f"{s}: {len(splits[s]['images'])} images from {len(splits[s]['videos'])} videos" for s in splits]
        scale = "pixel size per video" if cfg.pixel_size_um is None else f"{cfg.pixel_size_um} um/px"
        print(f"wrote {args.out} ({'; '.join(parts)}; {cfg.height}x{cfg.width}, {scale}, {cfg.appearance.mode})")
        for v in manifest["videos"]:
            print(f"video {v['id']}: {v['frames']} frames" + (f", {v['mp4']}" if v["mp4"] else ", no MP4"))
    sys.stdout.flush()
    return 0
