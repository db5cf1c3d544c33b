"""``spermseg ensemble``: select inputs, train and evaluate ensembling networks (paper Section 4, Table 3).

Subcommands::

    spermseg ensemble select --cache CACHE [--rank-on val]
    spermseg ensemble train  --cache CACHE --kind ens_att_v2 --select E3 --out RUN_DIR [--seed 0] [--set k=v]
                             [--stacking in-sample|oof --folds 5 --oof-test full|fold-avg]
    spermseg ensemble oof    --cache CACHE --select E3 [--folds 5 --oof-test full|fold-avg]
    spermseg ensemble eval   --cache CACHE --runs RUN_DIR ... [--data ROOT] --out DIR

``train`` resolves the selection (E1-E4 ranked on the validation split by default, or model ids/architectures),
then delegates to the training engine (same loop, resume, seeds, DDP, checkpoints) with the paper's ensembling
schedule, and records the selection in ``RUN_DIR/ensemble.json``. With ``--stacking oof`` it first builds (or
reuses) an out-of-fold cache ``CACHE/oof-k{K}-s{SEED}-{TEST}`` (:mod:`spermseg.ensembling.stacking`).

The library functions live in :mod:`spermseg.ensembling.ensemble_training`.

``oof`` only builds the out-of-fold cache (do this first, in one process, before training under ``torchrun``).

``eval`` scores the cached base models, ``avg`` for E1-E4 and the given ensemble runs, and writes Table 3
(``table3.md``, ``table3.json``) and all records (``evaluation.json``) into ``DIR``.
"""

from __future__ import annotations

import argparse
import json
import sys

from spermseg.cli._common import add_set_argument, positive_int

HELP = "train and evaluate ensembling networks (paper Section 4, Table 3)"
EXAMPLE = "spermseg ensemble train --cache cache --kind ens_att_v2 --select E3 --out runs/ens_att_v2/seed0"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    sel = sub.add_parser(
        "select",
        help="print the input selections E1-E4 of a mask cache",
        epilog="example:\n  spermseg ensemble select --cache cache --rank-on val",
    )
    sel.add_argument("--cache", required=True, metavar="CACHE", help="mask cache (spermseg masks)")
    _rank_arg(sel)
    sel.add_argument("--json", action="store_true", help="print the selections as JSON")

    tr = sub.add_parser(
        "train",
        help="train one ensembling network on cached soft masks",
        epilog="example:\n  spermseg ensemble train --cache cache --kind ens_att_v2 --select E3 --out runs/ens/seed0",
    )
    tr.add_argument("--cache", required=True, metavar="CACHE", help="in-sample mask cache (spermseg masks)")
    tr.add_argument("--kind", required=True, help="ens_s, ens_is, ens_concat, ens_att_v1 or ens_att_v2")
    tr.add_argument(
        "--select", default="E3", help="E1, E2, E3, E4 or comma-separated model ids/architectures (default: E3)"
    )
    _rank_arg(tr)
    tr.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory")
    tr.add_argument("--data", metavar="ROOT", help="dataset root (default: the one recorded in the cache)")
    tr.add_argument("--seed", type=int, default=None, help="training seed (default: the config's)")
    tr.add_argument("--preset", default="paper", help="training preset: paper, cpu or demo (default: paper)")
    tr.add_argument("--config", metavar="FILE", help="YAML file with training config overrides")
    add_set_argument(tr, "optim.lr=3e-4")
    tr.add_argument(
        "--stacking",
        choices=("in-sample", "oof"),
        default="in-sample",
        help="ensemble training inputs: the base models' own training-set masks (in-sample, the "
        "paper's way, default) or out-of-fold masks from k-fold cross-fitting by video (oof)",
    )
    _oof_args(tr)
    tr.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the config's)")
    tr.add_argument("--resume", action="store_true", help="continue an interrupted run")
    tr.add_argument("--force", action="store_true", help="retrain even when the run is finished")
    tr.add_argument(
        "--allow-validation-overlap",
        action="store_true",
        help="with in-sample stacking, train even when validation images were an input model's training images "
        "(warns; default: refuse, since selection and threshold would be optimistic)",
    )

    oof = sub.add_parser(
        "oof",
        help="build the out-of-fold mask cache of a selection (k-fold cross-fitting)",
        epilog="example:\n  spermseg ensemble oof --cache cache --select E3 --folds 5",
    )
    oof.add_argument("--cache", required=True, metavar="CACHE", help="in-sample mask cache (spermseg masks)")
    oof.add_argument("--select", default="E3", help="E1-E4 or comma-separated model ids/architectures (default: E3)")
    _rank_arg(oof)
    _oof_args(oof)
    oof.add_argument("--device", default="auto", help="device for the fold models' predictions (default: auto)")

    ev = sub.add_parser(
        "eval",
        help="evaluate avg and trained ensembles against the base models (Table 3)",
        epilog="example:\n  spermseg ensemble eval --cache cache --runs runs/ens/seed0 --out table3",
    )
    ev.add_argument("--cache", required=True, metavar="CACHE", help="in-sample mask cache")
    ev.add_argument("--runs", nargs="*", default=[], metavar="RUN_DIR", help="ensemble run directories")
    ev.add_argument("--data", metavar="ROOT", help="dataset root (default: the one recorded in the cache)")
    ev.add_argument("--split", default="test", help="evaluation split (default: test)")
    _rank_arg(ev)
    ev.add_argument("--rater", default=None, help="reference rater (default: the split's first, GT1)")
    ev.add_argument("--mode", choices=("fast", "exact"), default="fast", help="metric computation (default: fast)")
    ev.add_argument("--device", default="auto", help="device for ensemble inference (default: auto)")
    ev.add_argument("--batch-size", type=positive_int, default=4, help="images per forward pass (default: 4)")
    ev.add_argument("--out", required=True, metavar="DIR", help="output folder for table3.md/json, evaluation.json")
    ev.add_argument("--json", action="store_true", help="print table3.json on stdout instead of Markdown")


def _oof_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--folds", type=positive_int, default=5, help="folds for out-of-fold stacking (default: 5)")
    parser.add_argument("--fold-seed", type=int, default=0, help="fold-assignment seed (default: 0)")
    parser.add_argument(
        "--oof-test",
        choices=("full", "fold-avg"),
        default="full",
        help="test-time inputs of out-of-fold stacking: the base models trained on all folds (full, "
        "default) or the average of the fold models (fold-avg)",
    )
    parser.add_argument(
        "--oof-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for the fold retrainings of the base models (repeatable)",
    )


def _rank_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rank-on",
        choices=("val", "train", "test"),
        default="val",
        help="split that ranks the base models for E2/E3 and picks seeds: val (held-out "
        "validation, default), train, or test (LEAKS test labels; the paper's way)",
    )


def run(args: argparse.Namespace) -> int:
    return {"select": _select, "train": _train, "oof": _oof, "eval": _eval}[args.action](args)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr)


def _select(args: argparse.Namespace) -> int:
    from spermseg.data.mask_store import load_manifest
    from spermseg.ensembling.selection import all_selections

    selections = all_selections(load_manifest(args.cache), rank_on=args.rank_on)
    if args.json:
        print(json.dumps({k: v.to_dict() for k, v in selections.items()}, indent=2))
        return 0
    for name, sel in selections.items():
        leak = "  (LEAKS test labels)" if sel.leaks_test else ""
        print(f"{name} (ranked on {sel.rank_on}): {', '.join(sel.model_ids)}{leak}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from spermseg.ensembling.ensemble_training import train_ensemble

    prov = train_ensemble(
        args.cache,
        args.kind,
        args.out,
        select=args.select,
        rank_on=args.rank_on,
        data_root=args.data,
        seed=args.seed,
        preset=args.preset,
        config=args.config,
        overrides=args.set,
        stacking=args.stacking,
        folds=args.folds,
        fold_seed=args.fold_seed,
        oof_test=args.oof_test,
        oof_overrides=args.oof_set,
        device=args.device,
        resume=args.resume,
        force=args.force,
        log=_say,
        allow_validation_overlap=args.allow_validation_overlap,
    )
    sel = prov["selection"]
    print(f"trained {args.kind}|{sel['name']} on {', '.join(sel['model_ids'])} ({prov['stacking']}) -> {args.out}")
    return 0


def _oof(args: argparse.Namespace) -> int:
    from spermseg.data.mask_store import load_manifest
    from spermseg.ensembling.ensemble_training import build_oof
    from spermseg.ensembling.selection import select_inputs

    selection = select_inputs(load_manifest(args.cache), args.select, rank_on=args.rank_on)
    out = build_oof(
        args.cache,
        selection.model_ids,
        folds=args.folds,
        fold_seed=args.fold_seed,
        oof_test=args.oof_test,
        oof_overrides=args.oof_set,
        device=args.device,
        log=_say,
    )
    manifest = load_manifest(out)
    for model_id in selection.model_ids:
        entries = manifest["models"][model_id]["entries"]
        oof_ap = entries.get("train", {}).get("metrics", {}).get("ap")
        print(f"{model_id}: out-of-fold train AP {oof_ap if oof_ap is None else round(oof_ap, 4)}")
    print(f"out-of-fold cache -> {out}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from spermseg.ensembling.table3 import evaluate_ensembles, render_markdown, write_table3

    evaluation = evaluate_ensembles(
        args.cache,
        args.runs,
        args.data,
        split=args.split,
        rank_on=args.rank_on,
        rater=args.rater,
        mode=args.mode,
        device=args.device,
        batch_size=args.batch_size,
        log=_say,
    )
    table = write_table3(evaluation, args.out)
    if args.json:
        print(json.dumps(table, indent=2))
    else:
        print(render_markdown(table))
    return 0
