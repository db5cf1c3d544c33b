"""``spermseg agreement``: inter-rater agreement of a dataset split (paper Table 2).

Examples:
    spermseg agreement --data data/segsperm                # test_small, IoU and IoU' with kernels 3 and 5
    spermseg agreement --data data/segsperm --kernel 3 --json

The dataset was a positional ``ROOT`` before; that spelling still works for one release (hidden).
"""

from __future__ import annotations

import argparse

from spermseg.cli._common import add_json_arguments, emit_json, require

HELP = "inter-rater agreement (paper Table 2)"
EXAMPLE = "spermseg agreement --data data/segsperm --split test_small"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=None, metavar="ROOT", help="dataset folder (required)")
    parser.add_argument("root", nargs="?", default=None, help=argparse.SUPPRESS)  # the old positional spelling
    parser.add_argument("--split", default="test_small", help="split with several raters (default: test_small)")
    parser.add_argument(
        "--kernel", type=int, nargs="+", default=[3, 5], metavar="K", help="odd IoU' kernel sizes (default: 3 5)"
    )
    add_json_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from spermseg.errors import SpermsegError
    from spermseg.evaluation.agreement import agreement, format_agreement

    try:
        args.data = args.data or args.root
        res = agreement(require(args, "data", "--data", "data/segsperm"), split=args.split, kernels=tuple(args.kernel))
    except ValueError as exc:
        raise SpermsegError(str(exc)) from None
    if not emit_json(args, res):
        print(format_agreement(res))
    return 0
