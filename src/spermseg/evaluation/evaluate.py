"""``spermseg evaluate``: score a directory of soft masks against a rater or an aggregate of raters."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spermseg.errors import DataError
from spermseg.evaluation.aggregation import AGGREGATES, aggregate
from spermseg.metrics.accumulators import PARTS, SegmentationAccumulator

__all__ = ["SOFT_MASK_SUFFIXES", "evaluate_directory", "find_predictions", "format_result", "reference_masks"]

# Accepted soft-mask files, in the order they are looked for when several share a stem.
SOFT_MASK_SUFFIXES = (".npy", ".png", ".tif", ".tiff")


#: Stem suffix of the soft masks ``spermseg predict`` writes (``NAME_prob.png`` / ``NAME_prob.npy``).
PREDICT_SOFT_SUFFIX = "_prob"


def match_prediction_files(
    pred_dir: str | Path,
    names: Sequence[str],
    *,
    suffixes: Sequence[str],
    tag: str,
    what: str,
    hint: str,
    prefer_tagged: bool = False,
) -> list[Path]:
    """The prediction file of every image name, matched by stem: ``NAME.EXT`` or ``NAME{tag}.EXT``.

    The one matching rule of every ``spermseg evaluate`` mode (soft masks, instance and part label images).

    Args:
        pred_dir: the prediction folder.
        names: image file names, in order.
        suffixes: accepted file endings (lower case, with the dot).
        tag: the stem suffix ``spermseg predict`` writes (``_prob``, ``_instances``, ``_parts``).
        what: what a file holds, for messages ("soft mask", "instances image").
        hint: how to fix a missing prediction (end of the error message).
        prefer_tagged: take ``NAME{tag}`` when both it and ``NAME`` exist (else both is an error).

    Raises:
        DataError: the folder is missing, a prediction is missing, or an image has several candidate files.
    """
    folder = Path(pred_dir)
    if not folder.is_dir():
        raise DataError(f"prediction folder not found: {folder}; pass --pred DIR with one {what} per image")
    by_stem: dict[str, list[Path]] = {}
    for f in folder.iterdir():
        if f.is_file() and f.suffix.lower() in suffixes:
            by_stem.setdefault(f.stem, []).append(f)
    out, missing = [], []
    for name in names:
        stem = Path(name).stem
        tagged, plain = by_stem.get(stem + tag, []), by_stem.get(stem, [])
        found = (tagged or plain) if prefer_tagged else plain + tagged
        if not found:
            missing.append(name)
        elif len(found) > 1:
            raise DataError(
                f"several {what}s for image {name} in {folder}: {', '.join(sorted(f.name for f in found))}; keep one"
            )
        else:
            out.append(found[0])
    if missing:
        raise DataError(
            f"{len(missing)} of {len(names)} images have no {what} in {folder} (first: {missing[0]}); {hint}"
        )
    return out


def find_predictions(pred_dir: str | Path, names: Sequence[str]) -> list[Path]:
    """The soft-mask file of every image name, matched by stem.

    ``12_0034_1.png`` is matched by ``12_0034_1.npy|.png|.tif`` or by ``12_0034_1_prob.png|.npy`` (what
    ``spermseg predict --out DIR`` writes, in either soft format), so a predict folder is scored as written.

    Raises:
        DataError: the folder is missing, a prediction is missing, or a stem has several soft-mask files.
    """
    return match_prediction_files(
        pred_dir,
        names,
        suffixes=SOFT_MASK_SUFFIXES,
        tag=PREDICT_SOFT_SUFFIX,
        what="soft mask",
        hint=f"write one file per image named like the image or NAME{PREDICT_SOFT_SUFFIX} "
        f"({', '.join(SOFT_MASK_SUFFIXES)}), as 'spermseg predict --out DIR' does",
    )


def reference_masks(arrays: Any, rater: str) -> dict[str, list[np.ndarray] | None]:
    """``{"full", "head", "tail"}`` reference masks of a loaded split for a rater or an aggregate name.

    Args:
        arrays: a :class:`spermseg.data.arrays.SplitArrays`.
        rater: a rater of the split (e.g. ``GT1``) or one of :data:`AGGREGATES` (over every rater of the split).

    Returns:
        per part, one bool (H, W) mask per image, or None when the part is not labelled.
    """
    if rater in AGGREGATES:
        if len(arrays.raters) < 2:
            raise DataError(
                f"--rater {rater} aggregates several raters but split '{arrays.split}' has only "
                f"{', '.join(arrays.raters)}; use a split with several raters (SegSperm: test_small)"
            )
        out: dict[str, list[np.ndarray] | None] = {}
        for part in PARTS:
            per_rater = [arrays.masks(r, part) for r in arrays.raters]
            out[part] = None if any(m is None for m in per_rater) else aggregate(per_rater, rater)
        return out
    if rater not in arrays.raters:
        raise DataError(
            f"unknown --rater {rater} for split '{arrays.split}'; choose one of "
            f"{', '.join([*arrays.raters, *AGGREGATES])}"
        )
    return {p: (None if (m := arrays.masks(rater, p)) is None else list(m)) for p in PARTS}


def evaluate_directory(
    pred_dir: str | Path,
    gt_root: str | Path,
    split: str = "test",
    rater: str = "GT1",
    kernels: Sequence[int] = (3, 5),
    per_image: bool = False,
    exact: bool = False,
) -> dict[str, Any]:
    """Score the soft masks in ``pred_dir`` against ``rater`` (or an aggregate) of ``split`` in ``gt_root``.

    Args:
        pred_dir: one soft mask per image (float32 ``.npy``, 16-bit PNG, 8-bit PNG), named like the image.
        gt_root: dataset folder.
        split: split to score.
        rater: ``GT1``... or ``union``, ``majority``, ``intersection``, ``staple``.
        kernels: odd IoU' kernel sizes.
        per_image: mean and std over images instead of pooled pixels.
        exact: sort-based measures (AP equals scikit-learn) instead of the 2**16-bin histograms.

    Returns:
        ``{"n_images", "rater", "mode", "split", "full": M, "head": M | None, "tail": M | None}`` (see
        :mod:`spermseg.metrics.accumulators`; per-image results add ``"std"`` and ``"images"``).
    """
    from spermseg.data.arrays import load_split
    from spermseg.data.io import read_soft_mask
    from spermseg.data.layouts import open_dataset

    dataset = open_dataset(gt_root)
    available = dataset.split(split).raters
    if rater not in AGGREGATES and rater not in available:
        raise DataError(
            f"unknown --rater {rater} for split '{split}' of {gt_root}; choose one of "
            f"{', '.join([*available, *AGGREGATES])}"
        )
    arrays = load_split(dataset, split, raters=None if rater in AGGREGATES else [rater], lazy=True)
    refs = reference_masks(arrays, rater)
    files = find_predictions(pred_dir, arrays.names)
    acc = SegmentationAccumulator("exact" if exact else "fast", tuple(kernels), parts=True, per_image=per_image)
    for i, (name, path) in enumerate(zip(arrays.names, files)):
        prob = read_soft_mask(path)
        ref = {p: (None if refs[p] is None else refs[p][i]) for p in PARTS}
        if prob.shape != ref["full"].shape:
            raise DataError(
                f"soft mask {path} has shape {prob.shape} but the reference of {name} is {ref['full'].shape}; "
                "predict at the image's size"
            )
        acc.update(prob, ref, name=name)
    res = acc.result()
    return {"rater": rater, "split": split, **res}


def format_result(res: dict[str, Any]) -> str:
    """A readable table of an evaluation result (parts as columns)."""
    parts = [p for p in PARTS if res.get(p) is not None]
    head = f"{res['n_images']} images, split {res.get('split', '?')}, reference {res['rater']}, mode {res['mode']}"
    if res.get("per_image"):
        head += " (mean over images)"
    lines = [head, "measure".ljust(22) + "".join(p.rjust(10) for p in parts)]

    def fmt(v: Any) -> str:
        return "      null" if v is None or (isinstance(v, float) and v != v) else f"{v:10.4f}"

    for key in ("ap", "iou_0.5", "iou_opt", "t_opt", "brier", "brier_pos", "brier_neg"):
        lines.append(key.ljust(22) + "".join(fmt(res[p][key]) for p in parts))
    first = res[parts[0]] if parts else {}
    for name in ("iou_prime_opt", "iou_prime_0.5"):
        for k in first.get(name, {}):
            for sub in ("r", "p", "iou"):
                label = f"{name.replace('iou_prime', 'IoU')}[k={k}].{sub}"
                lines.append(label.ljust(22) + "".join(fmt(res[p][name][k][sub]) for p in parts))
    return "\n".join(lines)
