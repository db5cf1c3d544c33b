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
