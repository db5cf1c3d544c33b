"""``spermseg distill``: train one small network on a teacher's soft masks (``spermseg train`` with a teacher).

Examples:
    spermseg distill --teacher bundles/e3_att_v2 --student unet --width 8 --data ROOT --out runs/student --preset cpu
    spermseg distill --teacher bundles/e3 --student unet --width 8 --data ROOT --out RUN --label-weight 0.3
    spermseg distill --teacher bundles/e3 --student unet --width 8 --data frames/ --out RUN   # images, no labels
    spermseg distill --teacher bundles/e3 --student unet --width 8 --data ROOT --out RUN --source online

``--data`` is a dataset (its labels validate the student and, with ``--label-weight``, join the target) or a folder
of images without labels (the teacher's binary masks then stand in for labels in validation). The run directory is
an ordinary one: ``spermseg bundle --base RUN``, ``export``, ``predict`` take it. Method: docs/training.md,
"Distillation".
"""

from __future__ import annotations

import argparse

from spermseg.cli._common import add_run_arguments, unit_float

HELP = "train one small network on a teacher's soft masks (knowledge distillation; labels optional)"
EXAMPLE = "spermseg distill --teacher bundles/e3 --student unet --width 8 --data ROOT --out runs/student --preset cpu"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from spermseg.cli.train import add_common_arguments

    add_common_arguments(parser)
    parser.add_argument(
        "--teacher", required=True, metavar="BUNDLE", help="the teacher: a bundle, run directory, checkpoint or builtin"
    )
    parser.add_argument("--student", default="unet", metavar="NAME", help="student network (spermseg models)")
    parser.add_argument("--width", type=int, default=None, metavar="W", help="student width (default: the preset's)")
    add_run_arguments(parser)
    parser.add_argument(
        "--label-weight",
        type=unit_float,
        default=None,
        metavar="W",
        help="share of the labels in the target, (1 - W) teacher + W label (default 0: the teacher alone)",
    )
    parser.add_argument(
        "--source",
        choices=("cache", "online"),
        default=None,
        help="cache: the teacher runs once, its soft masks follow the crops (default); online: on every batch",
    )
    parser.add_argument("--cache", default=None, metavar="CACHE", help="the teacher's mask cache (shared by students)")
    parser.add_argument("--init", default=None, metavar="builtin|RUN_DIR|BUNDLE", help="the student's start weights")
    parser.add_argument("--json", action="store_true", help="print result.json to stdout")
    parser.add_argument("--json-out", default=None, metavar="FILE", help="also write result.json to FILE")


def run(args: argparse.Namespace) -> int:
    from spermseg.cli._common import emit_json
    from spermseg.cli.train import build_config
    from spermseg.training.distill import is_labelled
    from spermseg.training.trainer import train

    extra: dict[str, object] = {"distill.teacher": str(args.teacher)}
    for key, value in (("model.width", args.width), ("distill.label_weight", args.label_weight),
                       ("distill.source", args.source), ("distill.cache", args.cache)):  # fmt: skip
        if value is not None:
            extra[key] = value
    cfg = build_config(args, model=args.student, seed=args.seed, extra=extra)
    if not is_labelled(cfg.data.root, cfg.data.train_split) and cfg.data.test_split:  # type: ignore[attr-defined]
        # images without labels: nothing to test on (the preset's test split does not exist there)
        extra["data.test_split"] = ""
        cfg = build_config(args, model=args.student, seed=args.seed, extra=extra)
    out = train(cfg, args.out, resume=args.resume, force=args.force, preset_name=args.preset)  # type: ignore[arg-type]
    emit_json(args, out.result)
    return 0
