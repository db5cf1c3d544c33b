"""``spermseg bundle``: pack base models, an optional ensembling network, normalization and threshold.

Examples:
    spermseg bundle --base runs/att_unet/s0 runs/unet3p/s0 runs/unet/s0 --ensemble runs/ens_att_v2_E3/s0 --out m
    spermseg bundle --ensemble runs/ens_att_v2_E3/s0 --out m      # base models from the ensemble's mask cache
    spermseg bundle --base runs/unet/s0 runs/fpn/s0 --out avg     # average of two models
"""

from __future__ import annotations

import argparse
import json

from spermseg.cli._common import unit_float

HELP = "pack base models, an ensembling network, normalization and threshold into one directory"
EXAMPLE = "spermseg bundle --base runs/unet/seed0 runs/att_unet/seed0 --out bundles/avg"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", nargs="*", default=[], metavar="RUN_DIR", help="base-model runs or checkpoints")
    parser.add_argument("--ensemble", default=None, metavar="RUN_DIR", help="ensembling-network run or checkpoint")
    parser.add_argument("--out", required=True, metavar="MODEL_DIR", help="bundle directory to write")
    parser.add_argument("--threshold", type=unit_float, default=None, help="decision threshold (default: see docs)")


def run(args: argparse.Namespace) -> int:
    from spermseg.inference.bundle import create_bundle, read_bundle_manifest

    out = create_bundle(args.base, args.out, ensemble=args.ensemble, threshold=args.threshold)
    manifest = read_bundle_manifest(out)
    members = ", ".join(f"{m['role']}:{m['model']}" for m in manifest["members"])
    print(f"bundle {out}: {manifest['combine']} of {members}; threshold {manifest['threshold']:.4f} "
          f"({manifest['threshold_source']})")  # fmt: skip
    print(json.dumps({"bundle": str(out), "combine": manifest["combine"], "threshold": manifest["threshold"]}))
    return 0
