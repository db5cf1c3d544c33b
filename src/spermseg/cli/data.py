"""``spermseg data check --data ROOT``: list and validate a dataset, printing every problem found.

Per split it prints the image count, image sizes (W x H), raters and their parts, and groups; then every
problem, one line each. Every file is decoded exactly once. Exit code 0 when there are no errors (warnings
allowed), 1 when there are errors, 2 when ROOT is not a dataset at all.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spermseg.data.check import check_dataset, format_report  # noqa: F401 - the library part

HELP = "inspect and validate datasets (spermseg data check --data ROOT)"
EXAMPLE = "spermseg data check --data data/segsperm"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = sub.add_parser(
        "check",
        help="validate a dataset and summarize its splits, raters, parts and groups",
        epilog="example:\n  spermseg data check --data data/segsperm --json-out check.json",
    )
    check.add_argument(
        "--data", type=Path, default=None, metavar="ROOT", help="dataset folder, SegSperm or folders layout (required)"
    )
    check.add_argument("root", type=Path, nargs="?", default=None, help=argparse.SUPPRESS)  # old positional spelling
    check.add_argument(
        "--binarize-threshold",
        type=float,
        default=None,
        metavar="T",
        help="accept non-binary masks, foreground = value/max > T (T in [0, 1)); default: masks must be 0/1 or 0/255",
    )
    check.add_argument("--groups-csv", type=Path, default=None, help="name,group file (default: ROOT/groups.csv)")
    check.add_argument("--structure-only", action="store_true", help="list files only; do not decode any pixel")
    check.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    check.add_argument("--json-out", type=Path, default=None, metavar="FILE", help="also write the JSON report")


def run(args: argparse.Namespace) -> int:
    from spermseg.cli._common import emit_json

    if args.action != "check":  # pragma: no cover - argparse enforces the choices
        return 2
    from spermseg.cli._common import require
    from spermseg.errors import DataError

    if args.data is None:
        args.data = args.root  # the old positional spelling
    root = require(args, "data", "--data", "data/segsperm")
    if args.binarize_threshold is not None and not 0.0 <= args.binarize_threshold < 1.0:
        raise DataError(f"--binarize-threshold must be in [0, 1), got {args.binarize_threshold}")
    report = check_dataset(
        root, args.binarize_threshold, args.groups_csv, decode=not args.structure_only, show_progress=True
    )
    if not emit_json(args, report):
        print(format_report(report))
    sys.stdout.flush()
    return 0 if report["ok"] else 1
