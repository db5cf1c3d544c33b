"""Inter-rater agreement (paper Table 2).

For every pair of raters on the same images: the strict IoU (symmetric) and IoU' of Eq. (1) (asymmetric: the
reference rater's mask is thinned and the other rater's mask is treated as the prediction), for the full sperm
and for each labelled part, with counts pooled over the images before dividing. Parts are compared directly
(head with head, tail with tail): both raters label the parts, so no region rule is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from spermseg.errors import DataError
from spermseg.metrics.overlap import IoUPrimeCounts, check_kernel, iou_prime_counts, skeleton
from spermseg.metrics.ranking import safe_ratio

__all__ = ["agreement", "agreement_from_masks", "format_agreement"]


def agreement_from_masks(
    masks: dict[str, dict[str, Sequence[np.ndarray]]], kernels: Sequence[int] = (3, 5)
) -> dict[str, Any]:
    """Agreement of raters given their masks.

    Args:
        masks: ``masks[rater][part]`` = list of bool (H, W) masks, one per image (same images for every rater);
            parts a rater lacks are simply absent.
        kernels: odd IoU' kernel sizes.

    Returns:
        ``{"raters", "parts", "kernels", "n_images", "iou": {part: {a: {b: IoU}}},
        "iou_prime": {"k": {part: {ref: {pred: IoU'}}}}, "r_prime": ..., "p_prime": ...}`` (same nesting as
        ``iou_prime``, giving R' and P'); the diagonal is 1.
    """
    kernels = [check_kernel(k) for k in kernels]
    raters = list(masks)
    if len(raters) < 2:
        raise DataError(f"agreement needs at least two raters, got {raters or 'none'}")
    parts = [p for p in ("full", "head", "tail") if all(p in masks[r] for r in raters)]
    n_images = {len(masks[r][p]) for r in raters for p in parts}
    if len(n_images) != 1:
        raise DataError(f"raters have different numbers of masks: {sorted(n_images)}")
    n = n_images.pop()
    out: dict[str, Any] = {"raters": raters, "parts": parts, "kernels": kernels, "n_images": n, "iou": {}}
    for name in ("iou_prime", "r_prime", "p_prime"):
        out[name] = {str(k): {p: {a: {} for a in raters} for p in parts} for k in kernels}
    for part in parts:
        table: dict[str, dict[str, float]] = {a: {a: 1.0} for a in raters}
        for a, b in combinations(raters, 2):
            inter = union = 0
            for ma, mb in zip(masks[a][part], masks[b][part]):
                inter += int(np.count_nonzero(ma & mb))
                union += int(np.count_nonzero(ma | mb))
            table[a][b] = table[b][a] = float(safe_ratio(inter, union, union == 0))
        out["iou"][part] = table
        for ref in raters:
            skels = [skeleton(m) for m in masks[ref][part]]
            for pred in raters:
                for k in kernels:
                    total = IoUPrimeCounts()
                    for mr, mp, sk in zip(masks[ref][part], masks[pred][part], skels):
                        total += iou_prime_counts(mp, mr, k, sk)
                    res = total.result()
                    out["iou_prime"][str(k)][part][ref][pred] = res["iou"]
                    out["r_prime"][str(k)][part][ref][pred] = res["r"]
                    out["p_prime"][str(k)][part][ref][pred] = res["p"]
    return out


def agreement(
    root: str | Path, split: str = "test_small", kernels: Sequence[int] = (3, 5), raters: Sequence[str] | None = None
) -> dict[str, Any]:
    """Inter-rater agreement of a dataset split (Table 2).

    Args:
        root: dataset folder (SegSperm or folders layout, see :mod:`spermseg.data.layouts`).
        split: the split with several raters (SegSperm: ``test_small``).
        kernels: odd IoU' kernel sizes.
        raters: raters to compare (default: every rater of the split).

    Returns:
        :func:`agreement_from_masks`'s dict plus ``"split"`` and ``"root"``.
    """
    from spermseg.data.arrays import load_split

    arrays = load_split(root, split, raters=raters, lazy=True)
    if len(arrays.raters) < 2:
        raise DataError(
            f"split '{split}' of {root} has {len(arrays.raters)} rater(s) ({', '.join(arrays.raters)}); agreement "
            "needs two or more (SegSperm: use --split test_small)"
        )
    masks: dict[str, dict[str, Sequence[np.ndarray]]] = {}
    for r in arrays.raters:
        masks[r] = {}
        for part in ("full", "head", "tail"):
            m = arrays.masks(r, part)
            if m is not None:
                masks[r][part] = list(m)
    out = agreement_from_masks(masks, kernels)
    return {"root": str(root), "split": split, **out}


def format_agreement(res: dict[str, Any]) -> str:
    """A readable Table 2: the symmetric IoU per pair, then one IoU' matrix per kernel and part."""
    raters = res["raters"]
    lines = [f"Inter-rater agreement: {res.get('split', '')} ({res['n_images']} images, raters {', '.join(raters)})"]
    pairs = list(combinations(raters, 2))
    lines.append("")
    lines.append("IoU".ljust(8) + "".join(f"{a} vs {b}".rjust(14) for a, b in pairs))
    for part in res["parts"]:
        lines.append(part.ljust(8) + "".join(f"{res['iou'][part][a][b]:14.4f}" for a, b in pairs))
    for k in res["kernels"]:
        lines.append("")
        lines.append(f"IoU' (Eq. 1), kernel {k}x{k}: row = reference rater, column = rater as prediction")
        for part in res["parts"]:
            mat = res["iou_prime"][str(k)][part]
            lines.append(part.ljust(8) + "".join(r.rjust(10) for r in raters))
            for ref in raters:
                lines.append(("  " + ref).ljust(8) + "".join(f"{mat[ref][p]:10.4f}" for p in raters))
    return "\n".join(lines)
