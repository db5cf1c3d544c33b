"""``spermseg reproduce``: the paper's protocol end to end (8 resumable steps) and the report.

``--rerun STEPS`` re-runs finished steps; ``--force STEPS`` is its old name (hidden, kept for one release), since
``--force`` is a plain on/off flag in the other commands.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from spermseg.cli._common import add_alias, add_set_argument
from spermseg.config import parse_seeds

HELP = "run the paper's protocol end to end and write the report"
EXAMPLE = "spermseg reproduce --data data/segsperm --out runs/paper --preset cpu"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``spermseg reproduce``."""
    parser.add_argument("--data", required=True, help="dataset root (SegSperm layout: train, test, test_small)")
    parser.add_argument("--out", required=True, help="output directory (steps, runs, cache, report.html)")
    parser.add_argument(
        "--preset",
        default="paper",
        choices=("paper", "cpu", "cpu-small", "demo"),
        help="experiment size (default: paper; cpu-small is an old name of cpu; see docs/reproduce.md)",
    )
    parser.add_argument("--models", default=None, help="comma-separated base models (default: the preset's)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds of the base models, or a range 0-4")
    parser.add_argument(
        "--steps",
        default=None,
        help="comma-separated subset of: agreement, normalization, base, ensembles, raters, blur, "
        "qualitative, temporal (default: all; finished steps are skipped)",
    )
    parser.add_argument(
        "--rerun",
        default="",
        metavar="STEPS",
        help="comma-separated steps to re-run even when finished (default: none)",
    )
    add_alias(parser, "--force", dest="rerun")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the preset's)")
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default=None,
        help="inference precision of every scored prediction (default: fp32, as the paper)",
    )
    parser.add_argument("--config", default=None, help="YAML file with ReproduceConfig keys")
    add_set_argument(parser, "blur_kernels=[1,5,9]", what="a config key")
    parser.add_argument("--report-only", action="store_true", help="only re-render the report from finished steps")
    parser.add_argument(
        "--plan",
        action="store_true",
        help="write the unfinished base-model training runs as independent 'spermseg train' commands "
        "to OUT/plan/commands.txt (run them in parallel on several GPUs or a cluster), then exit",
    )


def build_config(args: argparse.Namespace) -> object:
    """The resolved :class:`ReproduceConfig` from the flags."""
    from spermseg.experiments.reproduce import reproduce_config

    overrides = list(args.set)
    overrides.append(f"data={Path(args.data).resolve()}")
    if args.models:
        overrides.append(f"models=[{args.models}]")
    if args.seeds:
        overrides.append(f"seeds={parse_seeds(args.seeds)}")
    if args.device:
        overrides.append(f"device={args.device}")
    if args.precision:
        overrides.append(f"precision={args.precision}")
    return reproduce_config(args.preset, yaml_path=args.config, overrides=overrides)


def print_summary(records: dict, md: Path, html: Path) -> None:
    """Time per step and the report's paths."""
    from spermseg.utils.progress import fmt_seconds

    print("\nstep            status       wall time  note")
    total = 0.0
    for name, rec in records.items():
        note = rec.reason if rec.status in ("unavailable", "failed") else ""
        if rec.finished and rec.result and rec.result.get("status") == "not_applicable":
            note = "not applicable: " + str(rec.result.get("reason", ""))
        if rec.finished and rec.wall_s:
            total += rec.wall_s
        print(f"{name:<15} {rec.status:<12} {fmt_seconds(rec.wall_s):>9}  {note}")
    print(f"{'total':<15} {'':<12} {fmt_seconds(total):>9}")
    print(f"\nreport: {html}\n        {md}")


def command_line(args: argparse.Namespace) -> str:
    """The command as typed, rebuilt from the parsed flags (``sys.argv`` is the host's when run in-process)."""
    parts = ["spermseg", "reproduce", "--data", str(args.data), "--out", str(args.out), "--preset", args.preset]
    for flag in ("models", "seeds", "steps", "rerun", "device", "precision", "config"):
        value = getattr(args, flag)
        if value:
            parts += [f"--{flag}", str(value)]
    for item in args.set:
        parts += ["--set", item]
    return " ".join(shlex.quote(p) for p in parts)


def run(args: argparse.Namespace) -> int:
    """Run ``spermseg reproduce``; exit 0 when every selected step finished, 1 otherwise."""
    from spermseg.experiments.reproduce import run_reproduce

    cfg = build_config(args)
    if args.plan:
        from spermseg.config import save_config
        from spermseg.experiments.reproduce import Reproduction

        Path(args.out).mkdir(parents=True, exist_ok=True)
        save_config(cfg, Path(args.out) / "config.yaml")
        cmds = Reproduction(cfg, args.out).plan_base_runs(Path(args.out) / "plan")
        print(f"{len(cmds)} unfinished training runs -> {Path(args.out) / 'plan' / 'commands.txt'}")
        return 0
    steps = [args.steps] if args.steps else None
    if args.report_only:
        steps = []
    force = [args.rerun] if args.rerun else []
    command = command_line(args)
    records, md, html = run_reproduce(cfg, args.out, steps=steps, force=force, command=command)
    print_summary(records, md, html)
    selected = set(records) if steps is None else {n for s in steps for n in s.split(",") if n}
    return 0 if all(records[n].finished for n in selected if n in records) else 1
