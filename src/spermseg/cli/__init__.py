"""The ``spermseg`` command: a dispatcher over one module per subcommand.

Each subcommand module in ``spermseg.cli`` defines:

* ``HELP``: a one-line description (the ``--help`` description),
* ``EXAMPLE``: one typical command line (shown under ``--help``),
* ``OUT_KIND`` (optional): ``"file"`` when ``--out`` names a file (default ``"dir"``); an ``--out`` that cannot be
  created (an existing file, or a path under a file) is refused before the command starts,
* ``add_arguments(parser: argparse.ArgumentParser) -> None``,
* ``run(args: argparse.Namespace) -> int``: a thin wrapper over a typed library function; returns the exit code.

Modules are imported only when their command runs, so ``spermseg --help`` is fast. User errors
(:class:`spermseg.errors.SpermsegError`) are printed as one line on stderr with exit code 2; so are operating-system
errors (disk full, permission denied), which are the user's environment rather than a bug.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from spermseg._version import __version__

# command name -> (module under spermseg.cli, one-line help). The help is duplicated here so that the top-level
# --help does not import every module.
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("data", "inspect and validate datasets (spermseg data check ROOT)"),
    "synth": ("synth", "generate a synthetic ICSI dataset with truth and three noisy raters"),
    "evaluate": ("evaluate", "score soft masks against a rater or an aggregate (AP, IoU, IoU', Brier)"),
    "agreement": ("agreement", "inter-rater agreement (paper Table 2)"),
    "models": ("models", "list the registered models with parameter counts and MACs"),
    "train": ("train", "train one base model or ensembling network"),
    "train-many": ("train_many", "train a grid of models x seeds, skipping finished runs"),
    "distill": ("distill", "train one small network on a teacher's soft masks (knowledge distillation)"),
    "summarize": ("summarize", "mean +- std per model over seeds (paper Table 3)"),
    "masks": ("masks", "cache the soft masks of trained base models"),
    "ensemble": ("ensemble", "train and evaluate ensembling networks (paper Section 4, Table 3)"),
    "reproduce": ("reproduce", "run the paper's protocol end to end and write the report"),
    "demo": ("demo", "synthetic data -> small reproduce run -> report (the main job)"),
    "predict": ("predict", "segment images, folders and videos with a trained model or bundle"),
    "bundle": ("bundle", "pack base models, an ensemble, normalization and threshold into one directory"),
    "export": ("export", "export a model bundle to ONNX"),
    "track": ("track", "track sperm across video frames and measure CASA kinematics"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spermseg",
        description="Whole-sperm segmentation for blurry ICSI microscopy: data, models, ensembling, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"spermseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI in-process. Returns the exit code (0 ok, 1 failure found, 2 user error)."""
    from spermseg.errors import SpermsegError

    # OpenMP's wait policy is left to the user (OMP_WAIT_POLICY): it used to be forced to PASSIVE here, which on an
    # idle 2-core CPU made 2-thread training 1.2x (unet, 256 crops) to 2.4x (the ensembling network, 96 crops)
    # slower, since sleeping threads are woken for every short kernel. On a machine shared with other busy jobs,
    # PASSIVE can be faster (docs/training.md).
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        args = parser.parse_args(argv)  # prints help/version or an 'invalid choice' error
        parser.print_help()
        return 0 if args.command is None and not argv else 2
    name = argv[0]
    module_name, help_text = COMMANDS[name]
    try:
        module = importlib.import_module(f"spermseg.cli.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"spermseg.cli.{module_name}":
            print(f"spermseg: command '{name}' is not available in this version", file=sys.stderr)
            return 2
        raise
    from spermseg.cli._common import check_out_path, configure_help

    sub = argparse.ArgumentParser(prog=f"spermseg {name}", description=getattr(module, "HELP", help_text))
    module.add_arguments(sub)
    configure_help(sub, getattr(module, "HELP", help_text), getattr(module, "EXAMPLE", None))
    args = sub.parse_args(argv[1:])
    try:
        if isinstance(getattr(args, "out", None), str | os.PathLike):
            check_out_path(args.out, "--out", kind=getattr(module, "OUT_KIND", "dir"))
        check_out_path(getattr(args, "json_out", None), "--json-out", kind="file")
        return int(module.run(args) or 0)
    except SpermsegError as exc:
        print(f"spermseg {name}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permissions, a path component that is a file: one line, no traceback
        where = f": {exc.filename}" if exc.filename else ""
        print(f"spermseg {name}: error: {exc.strerror or exc}{where}; check the path and free space", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spermseg {name}: interrupted", file=sys.stderr)
        return 130
