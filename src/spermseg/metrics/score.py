"""The one scoring function of the project and the one mean +- std.

:func:`score` is what training validation, the mask cache, Table 3 and the reproduce steps call: soft masks
against references through :class:`~spermseg.metrics.accumulators.SegmentationAccumulator`, returning its result
(the ``spermseg evaluate`` JSON form). :func:`full_scores` picks the full-sperm scalars from it. :func:`mean_std`
summarizes a metric over seeds (sample standard deviation, as the paper's Table 3).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from spermseg.metrics.accumulators import SegmentationAccumulator

#: The full-sperm scalars that select epochs, rank cache entries and fill Table 3 (``t_opt``: IoU_opt's threshold).
SCORE_KEYS: tuple[str, ...] = ("ap", "iou_0.5", "iou_opt", "t_opt")


def score(
    probs: Iterable[np.ndarray],
    refs: Sequence[Any],
    *,
    parts: bool = False,
    kernels: tuple[int, ...] = (),
    mode: str = "fast",
) -> dict[str, Any]:
    """Score soft masks against references.

    Args:
        probs: soft masks, each (H, W) float in [0, 1] (cast to float32), as many as ``refs``.
        refs: with ``parts``, per image a dict ``{"full": m, "head": m, "tail": m}`` (parts may be missing); else a
            bool (H, W) full-sperm mask per image.
        parts: score head and tail too.
        kernels: IoU' kernel sizes (``()``: no IoU', the fast validation setting).
        mode: ``fast`` (2**16-bin histogram) or ``exact``.

    Returns:
        The accumulator's result: ``{"n_images", "mode", "full": M, "head": M|None, "tail": M|None}``.

    Raises:
        ValueError: when ``probs`` and ``refs`` differ in length.
    """
    acc = SegmentationAccumulator(mode=mode, kernels=kernels, parts=parts)
    for prob, ref in zip(probs, refs, strict=True):
        acc.update(np.asarray(prob, dtype=np.float32), ref if parts else np.asarray(ref, dtype=bool))
    return acc.result()


def full_scores(result: Mapping[str, Any], keys: Sequence[str] = SCORE_KEYS) -> dict[str, float]:
    """The full-sperm values of ``keys`` in a :func:`score` result, as floats (keys it lacks or holds None: left out).

    Args:
        result: a :func:`score` (or accumulator) result.
        keys: which metrics.

    Returns:
        ``{key: float}``.
    """
    full = result.get("full") or {}
    return {k: float(full[k]) for k in keys if k in full and full[k] is not None}


def mean_std(values: Iterable[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof=1) of the finite values; None, NaN and infinities are dropped.

    Args:
        values: one value per seed (or run).

    Returns:
        ``{"mean", "std", "n"}``: ``mean`` None without values, ``std`` None for fewer than two (undefined).
    """
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else None, "n": len(vals)}
