"""Flags shared by several commands: ``--json`` / ``--json-out FILE`` and ``--set KEY=VALUE`` overrides."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_json_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--json`` (print the result as JSON on stdout) and ``--json-out FILE`` (also write it to FILE)."""
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    parser.add_argument("--json-out", default=None, metavar="FILE", help="also write the JSON result to FILE")


def emit_json(args: argparse.Namespace, result: Any) -> bool:
    """Write ``result`` to ``--json-out`` (atomically) and print it with ``--json`` (NaN as null).

    Returns:
        True when it was printed (the caller then prints no table).
    """
    from spermseg.utils.atomic import atomic_write_json, nan_to_none

    if getattr(args, "json_out", None):
        atomic_write_json(args.json_out, result)
    if getattr(args, "json", False):
        print(json.dumps(nan_to_none(result), indent=2, sort_keys=True, default=str))
        return True
    return False


def add_set_argument(
    parser: argparse.ArgumentParser, example: str, *, what: str = "a config value", dest: str = "set"
) -> None:
    """Add the repeatable ``--set KEY=VALUE`` override (values parsed as YAML), e.g. ``example='optim.lr=3e-4'``."""
    parser.add_argument("--set", dest=dest, action="append", default=[], metavar="KEY=VALUE",
                        help=f"override {what}, e.g. --set {example} (repeatable)")  # fmt: skip
