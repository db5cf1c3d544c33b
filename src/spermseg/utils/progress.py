"""Progress reporting: a tqdm bar on a terminal, plain lines in a log, nothing when disabled.

A log file (stderr redirected, a batch job, CI) must not fill with thousands of carriage-return updates, so
without a terminal :func:`progress` prints one line every ``every`` units (default: every 10 % of a known
total, or every 100 units) and a last line when it closes.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar

T = TypeVar("T")


class LineProgress:
    """The subset of the tqdm interface used here, printing plain lines to stderr instead of redrawing a bar.

    Args:
        iterable: optional iterable to wrap.
        desc: label at the start of each line.
        total: expected number of units (None when unknown).
        unit: unit name (``file``, ``img``, ``step``).
        every: print a line every this many units.
        file: where to print (default: ``sys.stderr`` at print time, so pytest's capture sees it).
    """

    disable = False  # tqdm's attribute: callers skip postfix work when a bar is disabled

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        desc: str = "",
        total: int | None = None,
        unit: str = "it",
        every: int | None = None,
        file: IO[str] | None = None,
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.desc, self.total, self.unit = iterable, desc, total, unit
        self.every = max(1, every if every is not None else (math.ceil(total / 10) if total else 100))
        self.n = 0
        self._printed = 0
        self._postfix = ""
        self._file = file
        self._start = time.perf_counter()
        self._closed = False

    def _line(self) -> str:
        elapsed = time.perf_counter() - self._start
        count = f"{self.n}/{self.total}" if self.total else str(self.n)
        rate = f", {self.n / elapsed:.2f} {self.unit}/s" if elapsed > 0 and self.n else ""
        post = f", {self._postfix}" if self._postfix else ""
        return f"{self.desc or 'progress'}: {count} {self.unit}{rate}{post} ({fmt_seconds(elapsed)})"

    def _print(self, text: str) -> None:
        out = self._file or sys.stderr
        print(text, file=out, flush=True)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units; print a line when a multiple of ``every`` was crossed."""
        self.n += n
        if self.n // self.every > self._printed // self.every:
            self._printed = self.n
            self._print(self._line())

    def set_postfix(self, **kwargs: Any) -> None:
        """Values shown at the end of the next line (e.g. ``frames_per_s=3.2``)."""
        self._postfix = ", ".join(f"{k}={v}" for k, v in kwargs.items())

    def set_description(self, desc: str) -> None:
        """Replace the label."""
        self.desc = desc

    def write(self, text: str, file: IO[str] | None = None) -> None:
        """Print a message line (tqdm.write's signature)."""
        print(text, file=file or self._file or sys.stderr, flush=True)

    def close(self) -> None:
        """Print the last count once, unless the last line already showed it."""
        if not self._closed and self.n and self.n != self._printed:
            self._printed = self.n
            self._print(self._line())
        self._closed = True

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            return
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(
    iterable: Iterable[T] | None = None,
    *,
    desc: str = "",
    total: int | None = None,
    disable: bool | None = None,
    unit: str = "it",
    every: int | None = None,
    **kwargs: Any,
) -> Any:
    """Progress over ``iterable`` (or ``total`` units updated by hand) on stderr.

    Args:
        iterable: what to iterate over, or None and call ``update(n)``.
        desc: label.
        total: expected units.
        disable: True: silent; None or False: a tqdm bar when stderr is a terminal, else one plain line every
            ``every`` units (:class:`LineProgress`).
        unit: unit name.
        every: units between two lines without a terminal (default: 10 % of ``total``, or 100).
        **kwargs: passed to tqdm.

    Returns:
        A tqdm bar or a :class:`LineProgress`; both have ``update``, ``set_postfix``, ``set_description``,
        ``write``, ``close`` and ``disable``.
    """
    from tqdm.auto import tqdm

    if disable:
        return tqdm(iterable, desc=desc, total=total, disable=True, unit=unit, **kwargs)
    if not sys.stderr.isatty():
        return LineProgress(iterable, desc=desc, total=total, unit=unit, every=every)
    return tqdm(iterable, desc=desc, total=total, disable=False, unit=unit, dynamic_ncols=True, leave=False, **kwargs)


def fmt_seconds(s: float | None) -> str:
    """A duration for people: ``12.3 s``, ``4 min 05 s`` or ``2 h 03 min`` (``-`` for None)."""
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    return f"{m} min {sec:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"
