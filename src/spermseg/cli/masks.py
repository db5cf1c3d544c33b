"""``spermseg masks``: cache the soft masks of trained base models (inputs of the ensembling networks).

Example::

    spermseg masks --runs runs/att_unet_s0 runs/unet3p_s0 runs/unet_s0 --data DATA --splits train,test --out CACHE
    spermseg masks --runs att=runs/att_unet_s0 ...      # explicit model ids

``--models`` is the old name of ``--runs`` (hidden, kept for one release): ``--models`` means model names in the
other commands.

Re-running skips what is cached; an entry whose checkpoint or data changed is rebuilt (``--force`` rebuilds all).
See :mod:`spermseg.ensembling.mask_cache` for the format.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spermseg.cli._common import add_alias, positive_int, require
from spermseg.errors import SpermsegError

HELP = "cache the soft masks of trained base models"
EXAMPLE = "spermseg masks --runs runs/unet/seed0 runs/att_unet/seed0 --data DATA --splits train,test --out cache"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runs",
        nargs="+",
        default=None,
        metavar="RUN_DIR",
        help="base-model run directories (or checkpoints), required; ID=RUN_DIR sets the model id "
        "(default: the run directory's name)",
    )
    add_alias(parser, "--models", dest="runs", nargs="+")
    parser.add_argument("--data", required=True, metavar="ROOT", help="dataset root")
    parser.add_argument("--splits", default="train,test", help="comma-separated splits to cache (default: train,test)")
    parser.add_argument("--out", required=True, metavar="CACHE", help="cache directory (created or updated)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--batch-size", type=positive_int, default=4, help="images per forward pass (default: 4)")
    parser.add_argument("--tta", action="store_true", help="average predictions over flips (test-time augmentation)")
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="inference precision of the cached masks (default: fp32, as the paper scored; bf16 is faster on GPUs)",
    )
    parser.add_argument("--rater", default=None, help="reference rater for the cached scores (default: first rater)")
    parser.add_argument("--force", action="store_true", help="rebuild every entry, even fresh ones")
    parser.add_argument("--json", action="store_true", help="print the manifest summary as JSON on stdout")
    parser.add_argument("--json-out", metavar="FILE", help="write the manifest summary as JSON to FILE")


def parse_models(items: list[str]) -> tuple[list[Path], list[str] | None]:
    """Split ``ID=RUN_DIR`` items into paths and ids (ids None when none was given; all or none must have one)."""
    paths: list[Path] = []
    ids: list[str] = []
    for item in items:
        if "=" in item and not Path(item).exists():
            model_id, path = item.split("=", 1)
            ids.append(model_id)
            paths.append(Path(path))
        else:
            paths.append(Path(item))
    if ids and len(ids) != len(paths):
        raise SpermsegError("give an id to every model (ID=RUN_DIR) or to none")
    return paths, (ids or None)


def summary(manifest: dict) -> dict:
    """Per model id: architecture, seed and per-split AP / IoU_opt (what ``--json`` prints)."""
    out = {}
    for model_id, info in manifest["models"].items():
        out[model_id] = {
            "model": info.get("model"),
            "seed": info.get("seed"),
            "splits": {
                s: {k: e.get("metrics", {}).get(k) for k in ("ap", "iou_0.5", "iou_opt")}
                for s, e in info.get("entries", {}).items()
            },
        }
    return {"models": out, "last_build": manifest.get("last_build", {})}


def run(args: argparse.Namespace) -> int:
    from spermseg.cli._common import emit_json
    from spermseg.ensembling.mask_cache import build_cache

    paths, ids = parse_models(require(args, "runs", "--runs", "runs/unet/seed0 runs/att_unet/seed0"))
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    if not splits:
        raise SpermsegError("no splits given; use e.g. --splits train,test")
    quiet = args.json
    manifest = build_cache(
        paths,
        args.data,
        splits,
        args.out,
        model_ids=ids,
        device=args.device,
        batch_size=args.batch_size,
        tta=args.tta,
        precision=args.precision,
        force=args.force,
        rater=args.rater,
        log=None if quiet else (lambda m: print(m, file=sys.stderr)),
    )
    info = summary(manifest)
    if emit_json(args, info):
        return 0
    built, skipped = manifest["last_build"]["built"], manifest["last_build"]["skipped_fresh"]
    print(f"mask cache {args.out}: built {len(built)}, fresh (skipped) {len(skipped)}")
    print(f"{'model id':<28} {'architecture':<14} " + " ".join(f"{s + ' AP':>12}" for s in splits))
    for model_id, row in info["models"].items():
        aps = [row["splits"].get(s, {}).get("ap") for s in splits]
        cells = " ".join(f"{a:>12.4f}" if isinstance(a, float) else f"{'-':>12}" for a in aps)
        print(f"{model_id:<28} {row['model'] or '?':<14} {cells}")
    return 0
