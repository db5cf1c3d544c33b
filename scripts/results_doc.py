"""Write the measured part of docs/results-spermparsing.md from a finished ``spermseg reproduce`` output folder.

The tables are copied from the run's own files (``summary.json``, ``steps.json``, ``report.md``), never retyped, and
replace what lies between ``<!-- BEGIN measured -->`` and ``<!-- END measured -->`` in the document; the text around
them (commands, diagnosis) is written by hand.

Usage:
    python scripts/results_doc.py RUN_DIR docs/results-spermparsing.md

Difference-map figures are not copied into the repository: they are drawn on the dataset's images, whose licence is
non-commercial; the document names their path in RUN_DIR/figures.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from spermseg.experiments.headline import headline_rows, verdict_line

BEGIN, END = "<!-- BEGIN measured -->", "<!-- END measured -->"
# Report sections copied whole (their numbers in report.md): base models, ensembles, raters/aggregates.
SECTIONS = ("3.", "4.", "5.")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    def cells(values: list[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"  # 'avg|E3' inside a table

    lines = [cells(headers), "|" + "---|" * len(headers)] + [cells(r) for r in rows]
    return "\n".join(lines)


def _sections(report: str) -> list[str]:
    """The report's sections whose heading starts with one of SECTIONS, demoted one level, images dropped."""
    parts = re.split(r"(?m)^## ", report)
    out = []
    for part in parts[1:]:
        if part.startswith(SECTIONS):
            text = "### " + part.strip()
            text = re.sub(r"(?m)^!\[.*\]\(.*\)\s*$", "", text)  # figures live in RUN_DIR/figures
            out.append(text.strip())
    return out


def measured_block(run_dir: Path) -> str:
    """The markdown that goes between the markers.

    Args:
        run_dir: a reproduce output folder with summary.json, steps.json and report.md.

    Returns:
        Markdown text (headline, verdict, wall time per step, Tables 3 and 4).
    """
    summary = json.loads((run_dir / "summary.json").read_text())
    steps = json.loads((run_dir / "steps.json").read_text())
    report = (run_dir / "report.md").read_text()
    blocks = []
    table = summary.get("headline")
    if table:
        heads, rows = headline_rows(table)
        blocks.append(
            f"**Headline ({table['split']} split vs {table['rater']}, mean ± std over seeds; `summary.json`).**\n\n"
            + _table(heads, rows)
            + f"\n\n**Verdict (computed by `spermseg.experiments.headline`):** {verdict_line(table)}"
        )
    step_rows = [[n, str(s.get("status")), f"{s['wall_s'] / 60:.1f}"] for n, s in steps.items() if s.get("wall_s")]
    total = sum((s.get("wall_s") or 0) for s in steps.values()) / 60
    step_rows.append(["**total**", "", f"**{total:.1f}**"])
    blocks.append("**Wall time per step (minutes, `steps.json`).**\n\n" + _table(["step", "status", "min"], step_rows))
    blocks.extend(_sections(report))
    return "\n\n".join(blocks)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[0], "\nusage: python scripts/results_doc.py RUN_DIR DOC.md", file=sys.stderr)
        return 2
    run_dir, doc = Path(argv[0]), Path(argv[1])
    text = doc.read_text() if doc.exists() else f"# Results on spermparsing\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        print(f"results_doc: {doc} has no {BEGIN} ... {END} markers; add them where the tables go", file=sys.stderr)
        return 2
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{measured_block(run_dir)}\n{END}{tail}")
    print(f"results_doc: wrote {doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
