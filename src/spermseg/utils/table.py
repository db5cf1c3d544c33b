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


def _line(columns: tuple[str, ...] | list[str], row: dict[str, Any]) -> str:
    return ",".join(fmt_cell(row.get(c)) for c in columns)


def write_rows_csv(path: str | Path, columns: tuple[str, ...] | list[str], rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` (dicts keyed by ``columns``; missing keys empty) as CSV atomically."""
    from spermseg.utils.atomic import atomic_write_text

    lines = [",".join(columns)] + [_line(columns, r) for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


class RowWriter:
    """Stream rows into the CSV that :func:`write_rows_csv` would write, holding none of them in memory.

    Rows go to a hidden temporary file beside ``path`` (:func:`spermseg.utils.atomic.atomic_path`), which
    :meth:`close` renames onto ``path``: a reader never sees half a table, and a long video's rows never sit in
    memory (``spermseg track``).
    """

    def __init__(self, path: str | Path, columns: tuple[str, ...] | list[str]) -> None:
        from spermseg.utils.atomic import atomic_path

        self.columns = tuple(columns)
        self._ctx = atomic_path(path)
        self._fh = open(self._ctx.__enter__(), "w", encoding="utf-8", newline="")  # noqa: SIM115 - see close()
        self._fh.write(",".join(self.columns) + "\n")
        self.n_rows = 0

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Append ``rows`` (dicts keyed by the columns; missing keys empty)."""
        self._fh.writelines(_line(self.columns, r) + "\n" for r in rows)
        self.n_rows += len(rows)

    def close(self) -> None:
        """Finish the file and rename it onto ``path`` (idempotent)."""
        if self._fh.closed:
            return
        self._fh.close()
        self._ctx.__exit__(None, None, None)


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
