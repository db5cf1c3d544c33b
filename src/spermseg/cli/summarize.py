"""``spermseg summarize DIR``: mean +- std per model over seeds, like the paper's Table 3.

Reads every ``result.json`` under DIR (as written by ``spermseg train`` / ``train-many``), groups the runs by
model (ensembles by kind and inputs) and reports AP, IoU_0.5, IoU_opt and t_opt as mean +- sample standard
deviation (ddof=1; none for a single run) over seeds, sorted by mean AP. The scores come from the test split when
every run of the model has one (``data.test_split``, as in Table 3), otherwise from the validation split; the
``source`` column says which.
"""

from __future__ import annotations

import argparse
from typing import Any

from spermseg.training.summary import METRICS, summarize  # noqa: F401 - the library part

HELP = "mean +- std per model over seeds (paper Table 3)"
EXAMPLE = "spermseg summarize runs/"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", help="directory with run directories (searched recursively)")
    parser.add_argument(
        "--split",
        choices=("auto", "test", "validation"),
        default="auto",
        help="which scores to summarize (default auto: test when every run has it)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    parser.add_argument("--json-out", default=None, metavar="FILE", help="also write the JSON summary to FILE")


def format_table(summary: dict[str, Any]) -> str:
    """The summary as a fixed-width text table (one row per model, mean +- std)."""
    header = f"{'model':<28} {'n':>2} {'source':<10} " + " ".join(f"{k:>17}" for k in METRICS)
    lines = [header, "-" * len(header)]
    for label, e in summary["models"].items():
        cells = []
        for key in METRICS:
            v = e[key]
            std = "-" if v and v["std"] is None else f"{v['std']:.4f}" if v else ""
            cells.append(f"{v['mean']:.4f} +- {std:>6}" if v else f"{'-':>17}")
        lines.append(f"{label:<28} {e['n']:>2} {e['source']:<10} " + " ".join(f"{c:>17}" for c in cells))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from spermseg.cli._common import emit_json

    summary = summarize(args.dir, args.split)
    if not emit_json(args, summary):
        print(format_table(summary))
    return 0
