"""``spermseg agreement``: inter-rater agreement of a dataset split (paper Table 2).

Examples:
    spermseg agreement data/segsperm                       # test_small, IoU and IoU' with kernels 3 and 5
    spermseg agreement data/segsperm --kernel 3 --json
"""

from __future__ import annotations

import argparse
import json

HELP = "inter-rater agreement (paper Table 2)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", metavar="ROOT", help="dataset folder")
    parser.add_argument("--split", default="test_small", help="split with several raters (default: test_small)")
    parser.add_argument(
        "--kernel", type=int, nargs="+", default=[3, 5], metavar="K", help="odd IoU' kernel sizes (default: 3 5)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--json-out", default=None, metavar="FILE", help="also write the JSON result to FILE")


def run(args: argparse.Namespace) -> int:
    from spermseg.errors import SpermsegError
    from spermseg.evaluation.agreement import agreement, format_agreement
    from spermseg.utils.atomic import atomic_write_json, nan_to_none

    try:
        res = agreement(args.root, split=args.split, kernels=tuple(args.kernel))
    except ValueError as exc:
        raise SpermsegError(str(exc)) from None
    if args.json_out:
        atomic_write_json(args.json_out, res)
    if args.json:
        print(json.dumps(nan_to_none(res), indent=2, sort_keys=True))
    else:
        print(format_agreement(res))
    return 0
