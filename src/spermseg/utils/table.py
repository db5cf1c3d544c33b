"""Small CSV tables (tracks, kinematics): floats with up to 6 decimals, NaN as an empty cell, atomic writes."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any


def fmt_cell(v: object) -> str:
    """One CSV cell: floats with up to 6 decimals (trailing zeros dropped), NaN/None empty, the rest ``str``."""
    if v is None:
        return ""
    if isinstance(v, float) or type(v).__name__.startswith("float"):
        f = float(v)  # type: ignore[arg-type]
        if not math.isfinite(f):
            return ""
        text = f"{f:.6f}".rstrip("0").rstrip(".")
        return text if text not in ("", "-0") else "0"
    return str(v)


def write_rows_csv(path: str | Path, columns: tuple[str, ...] | list[str], rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` (dicts keyed by ``columns``; missing keys empty) as CSV atomically."""
    from spermseg.utils.atomic import atomic_write_text

    lines = [",".join(columns)] + [",".join(fmt_cell(r.get(c)) for c in columns) for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_rows_csv(path: str | Path) -> list[dict[str, Any]]:
    """Read a CSV written by :func:`write_rows_csv`: numbers become int/float, empty cells NaN, the rest str."""

    def value(text: str) -> Any:
        if text == "":
            return float("nan")
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                return text

    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: value(v) for k, v in row.items()} for row in csv.DictReader(fh)]
