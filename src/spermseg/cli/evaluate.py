"""``spermseg evaluate``: score a folder of soft masks against a rater or an aggregate of raters.

Examples:
    spermseg evaluate --pred preds/ --data data/segsperm --split test
    spermseg evaluate --pred preds/ --data data/segsperm --split test_small --rater majority --json
    spermseg evaluate --pred preds/ --data data/segsperm --exact --per-image --json-out eval.json
    spermseg evaluate --instances --pred preds/ --data data/spermparsing --split test     (PQ, SQ, RQ, COCO AP)
    spermseg evaluate --target parts --pred preds/ --data data/spermparsing --split test  (IoU per part, mIoU)

``--gt`` is the old name of ``--data`` (hidden, kept for one release).
"""

from __future__ import annotations

import argparse

from spermseg.cli._common import add_alias, add_json_arguments, emit_json, require

HELP = "score soft masks against a rater or an aggregate (AP, IoU, IoU', Brier); instances (PQ) and parts (mIoU)"
EXAMPLE = "spermseg evaluate --pred preds/ --data data/segsperm --split test"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pred",
        required=True,
        metavar="DIR",
        help="one soft mask per image, named like the image (.npy float32, 16-bit or 8-bit PNG)",
    )
    parser.add_argument(
        "--data", default=None, metavar="ROOT", help="dataset folder with the reference masks (required)"
    )
    add_alias(parser, "--gt", dest="data")
    parser.add_argument("--split", default="test", help="split to score (default: test)")
    parser.add_argument(
        "--rater",
        default="GT1",
        help="reference: a rater (GT1, GT2, ...) or an aggregate of all raters: union, majority, "
        "intersection, staple (default: GT1)",
    )
    parser.add_argument(
        "--kernel", type=int, nargs="+", default=[3, 5], metavar="K", help="odd IoU' kernel sizes (default: 3 5)"
    )
    parser.add_argument("--per-image", action="store_true", help="mean and std over images instead of pooled pixels")
    parser.add_argument(
        "--exact",
        action="store_true",
        help="sort-based measures (AP equals scikit-learn) instead of 2^16-bin histograms",
    )
    parser.add_argument(
        "--instances",
        action="store_true",
        help="score NAME_instances label images against the rater's instances: PQ, SQ, RQ, COCO mask AP/AP50 "
        "and the count error per image (--rater must be one rater)",
    )
    parser.add_argument(
        "--target",
        choices=("binary", "parts"),
        default="binary",
        help="binary: soft masks (default); parts: NAME_parts label images, IoU per part and mIoU",
    )
    add_json_arguments(parser)
    parser.add_argument(
        "--per-image-list",
        action="store_true",
        help="with --per-image, keep every image's result in the JSON (default: summary only)",
    )


def run(args: argparse.Namespace) -> int:
    from spermseg.errors import SpermsegError
    from spermseg.evaluation.evaluate import evaluate_directory, format_result

    if args.instances or args.target == "parts":
        return _run_labels(args)
    try:
        res = evaluate_directory(
            args.pred,
            require(args, "data", "--data", "data/segsperm"),
            split=args.split,
            rater=args.rater,
            kernels=tuple(args.kernel),
            per_image=args.per_image,
            exact=args.exact,
        )
    except ValueError as exc:  # invalid kernel sizes and similar argument errors
        raise SpermsegError(str(exc)) from None
    if args.per_image and not args.per_image_list:
        res.pop("images", None)
    if not emit_json(args, res):
        print(format_result(res))
    return 0


def _run_labels(args: argparse.Namespace) -> int:
    from spermseg.evaluation.instances import evaluate_instances, evaluate_parts, format_instances, format_parts

    if args.instances:
        res = evaluate_instances(
            args.pred, require(args, "data", "--data", "data/spermparsing"), split=args.split, rater=args.rater
        )
        text = format_instances(res)
    else:
        res = evaluate_parts(
            args.pred, require(args, "data", "--data", "data/spermparsing"), split=args.split, rater=args.rater
        )
        text = format_parts(res)
    if not args.per_image_list:
        res.pop("images", None)
    if not emit_json(args, res):
        print(text)
    return 0
