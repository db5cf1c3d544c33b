"""Progress bars (tqdm) that stay quiet when output is not a terminal or when disabled."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def progress(
    iterable: Iterable[T] | None = None,
    *,
    desc: str = "",
    total: int | None = None,
    disable: bool | None = None,
    unit: str = "it",
    **kwargs: Any,
) -> Any:
    """Wrap ``iterable`` in a tqdm bar on stderr; disabled automatically when stderr is not a TTY."""
    from tqdm.auto import tqdm

    if disable is None:
        disable = not sys.stderr.isatty()
    return tqdm(iterable, desc=desc, total=total, disable=disable, unit=unit, dynamic_ncols=True, leave=False, **kwargs)


def fmt_seconds(s: float | None) -> str:
    """A duration for people: ``12.3 s``, ``4 min 05 s`` or ``2 h 03 min`` (``-`` for None)."""
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    return f"{m} min {sec:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"
