"""Flags and checks shared by several commands.

* ``--json`` / ``--json-out FILE`` and the repeatable ``--set KEY=VALUE`` override;
* argparse value types that reject impossible numbers with a usage error (``positive_int``, ...);
* hidden aliases (:func:`add_alias`): an old flag spelling kept working for one release, absent from ``--help``;
* :func:`check_out_path`: an ``--out`` that is an existing file or lies under a file is a one-line user error;
* :class:`HelpFormatter`: ``--help`` shows defaults and keeps the example epilog as written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from spermseg.errors import SpermsegError


def add_json_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--json`` (print the result as JSON on stdout) and ``--json-out FILE`` (also write it to FILE)."""
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    parser.add_argument("--json-out", default=None, metavar="FILE", help="also write the JSON result to FILE")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """``--out RUN_DIR``, ``--seed`` and ``--resume``: the same flags in every command that writes a training run."""
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: the config's seed, 0)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in RUN_DIR")


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


# ----------------------------------------------------------------------------------------------------------------
# Value types: argparse turns their ArgumentTypeError into 'spermseg CMD: error: argument --x: ...', exit 2
# ----------------------------------------------------------------------------------------------------------------


def _number(text: str, kind: type, low: float, inclusive: bool) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a{'n integer' if kind is int else ' number'}") from None
    if value != value or (value < low if inclusive else value <= low):  # NaN is never valid
        raise argparse.ArgumentTypeError(f"must be {'>=' if inclusive else '>'} {low:g}, got {text}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (batch sizes, counts of workers, folds)."""
    return _number(text, int, 1, True)


def nonneg_int(text: str) -> int:
    """An integer >= 0 (image counts, tile sizes where 0 means 'off')."""
    return _number(text, int, 0, True)


def positive_float(text: str) -> float:
    """A finite number > 0 (pixel sizes in micrometres)."""
    value = _number(text, float, 0.0, False)
    if value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def unit_float(text: str) -> float:
    """A number in [0, 1] (decision thresholds on probabilities)."""
    value = _number(text, float, 0.0, True)
    if value > 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


# ----------------------------------------------------------------------------------------------------------------
# Hidden aliases and required options that may be given under an old spelling
# ----------------------------------------------------------------------------------------------------------------


def add_alias(parser: argparse.ArgumentParser, *flags: str, dest: str, **kwargs: Any) -> None:
    """Accept ``flags`` as a hidden old spelling of the option stored in ``dest`` (not shown by ``--help``).

    Args:
        parser: the command's parser.
        flags: the old option strings, e.g. ``"--gt"``.
        dest: the destination of the new option.
        **kwargs: the same ``nargs``/``type``/``action`` as the new option.
    """
    parser.add_argument(*flags, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs)


def require(args: argparse.Namespace, dest: str, flag: str, example: str) -> Any:
    """The value of a required option that also has a hidden alias (argparse cannot require either of two).

    Raises:
        SpermsegError: when neither spelling was given.
    """
    value = getattr(args, dest, None)
    if value is None or value == []:
        raise SpermsegError(f"{flag} is required, e.g. {flag} {example}")
    return value


# ----------------------------------------------------------------------------------------------------------------
# Output paths
# ----------------------------------------------------------------------------------------------------------------


def check_out_path(path: str | Path | None, flag: str = "--out", *, kind: str = "dir") -> None:
    """Refuse an output path that cannot be created: an existing file (for a folder), a folder (for a file),
    or a path under an existing file.

    Args:
        path: the value of the flag (None: nothing to check).
        flag: the flag's name, for the message.
        kind: ``"dir"`` (an output folder) or ``"file"`` (an output file).

    Raises:
        SpermsegError: one line naming the path and how to fix it.
    """
    if path is None or str(path) == "":
        return
    p = Path(path)
    if kind == "dir" and p.exists() and not p.is_dir():
        raise SpermsegError(f"{flag} {p} is an existing file, not a folder; choose a folder path")
    if kind == "file" and p.is_dir():
        raise SpermsegError(f"{flag} {p} is an existing folder; give a file path, e.g. {p / 'out'}")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise SpermsegError(f"{flag} {p} lies under {parent}, which is a file; choose a path in a folder")
            break


# ----------------------------------------------------------------------------------------------------------------
# --help
# ----------------------------------------------------------------------------------------------------------------


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends ``(default: X)`` to options whose help does not already say it; keeps the epilog's layout."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or "default" in text.lower()
            or default in (None, False, True, "", [], argparse.SUPPRESS)
        ):
            return text
        return text + " (default: %(default)s)"


def configure_help(parser: argparse.ArgumentParser, description: str, example: str | None) -> None:
    """Give ``parser`` and its nested subcommand parsers the shared formatter, a description and an example."""
    parser.formatter_class = HelpFormatter
    parser.description = parser.description or description
    if example and not parser.epilog:
        parser.epilog = "example:\n  " + example.strip().replace("\n", "\n  ")
    for action in parser._actions:  # nested subcommands (data check, ensemble train, ...)
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                configure_help(sub, helps.get(name) or description, None)
