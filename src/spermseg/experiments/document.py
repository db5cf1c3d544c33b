"""The reproduction report's document model: sections of paragraphs, tables and figures (rendered twice, Markdown
and HTML, by :mod:`spermseg.experiments.report`), number formatting, and the context the step sections read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Display names of the aggregated ground truths (paper Fig. 6 names in brackets).
GT_VARIANT_NAMES = {
    "GT1": "GT1",
    "GT2": "GT2",
    "GT3": "GT3",
    "intersection": "intersection (full agreement)",
    "majority": "majority voting",
    "union": "union (feeling lucky)",
    "staple": "STAPLE",
}


@dataclass
class Table:
    """A table: ``rows`` of already formatted cells."""

    caption: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Figure:
    """A figure file (PNG) with its caption."""

    path: Path
    caption: str


@dataclass
class Section:
    """One report section (usually one step)."""

    title: str
    status: str = ""
    blocks: list[Table | Figure | str] = field(default_factory=list)
    anchor: str = ""


def fmt(v: Any, nd: int = 4) -> str:
    """A number with ``nd`` decimals; ``-`` for missing or non-finite values."""
    if v is None:
        return "-"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{f:.{nd}f}" if np.isfinite(f) else "-"


def fmt_ms(stat: Mapping[str, Any] | None, nd: int = 4) -> str:
    """``mean ± std`` from ``{"mean", "std", "n"}`` (std omitted for a single value)."""
    if not stat or stat.get("mean") is None:
        return "-"
    if stat.get("std") is None or stat.get("n", 2) < 2:
        return fmt(stat["mean"], nd)
    return f"{fmt(stat['mean'], nd)} ± {fmt(stat['std'], nd)}"


def fmt_delta(ours: Any, paper: Any, nd: int = 4) -> str:
    """Signed difference ``ours - paper``."""
    if ours is None or paper is None:
        return "-"
    d = float(ours) - float(paper)
    return f"{d:+.{nd}f}" if np.isfinite(d) else "-"


# ---------------------------------------------------------------------------------------------------------------
@dataclass
class ReportContext:
    """What every section reads besides its step's result: where figures go, whether to compare with the paper,
    and every step's result (a section may use another step's, e.g. the selections)."""

    out_dir: Path
    fig_dir: Path
    compare: bool
    results: dict[str, dict[str, Any]]
