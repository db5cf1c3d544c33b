"""``spermseg evaluate --instances`` / ``--target parts``: score label images against a rater's label images.

Predictions are matched to the images by stem: ``NAME_instances.png|.tif`` (what ``spermseg predict
--instances`` writes) or ``NAME.png|.tif`` for instances, ``NAME_parts.png|.tif`` or ``NAME.png|.tif`` for parts.
Measures: :mod:`spermseg.metrics.panoptic` (PQ, SQ, RQ, count error, COCO mask AP/AP50) and
:mod:`spermseg.metrics.multiclass` (IoU per part, mIoU, head/tail/full derived from the parts).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spermseg.errors import DataError

LABEL_SUFFIXES = (".png", ".tif", ".tiff")


def find_label_predictions(pred_dir: str | Path, names: Sequence[str], kind: str) -> list[Path]:
    """The predicted label image of every image name (``NAME_{kind}.*``, else ``NAME.*``).

    Raises:
        DataError: missing folder, a missing prediction, or several candidates for one image.
    """
    from spermseg.evaluation.evaluate import match_prediction_files

    return match_prediction_files(
        pred_dir,
        names,
        suffixes=LABEL_SUFFIXES,
        tag=f"_{kind}",
        what=f"{kind} image",
        hint=f"write NAME_{kind}.png per image, as 'spermseg predict' does",
        prefer_tagged=True,
    )


def _load_reference(gt_root: str | Path, split: str, rater: str, kind: str) -> Any:
    from spermseg.data.arrays import load_split
    from spermseg.data.layouts import open_dataset

    dataset = open_dataset(gt_root)
    sp = dataset.split(split)
    if rater not in sp.raters:
        raise DataError(f"unknown --rater {rater} for split '{split}' of {gt_root}; choose one of {sp.raters}")
    if kind not in sp.labels(rater):
        raise DataError(
            f"rater {rater} of split '{split}' has no {kind} label images (SPLIT/{rater}_{kind}/ or ROOT/{kind}/); "
            "see docs/instances.md"
        )
    return load_split(dataset, split, raters=[rater], parts=(), labels=(kind,), lazy=True)


def evaluate_instances(
    pred_dir: str | Path, gt_root: str | Path, split: str = "test", rater: str = "GT1", *, coco: bool = True
) -> dict[str, Any]:
    """Panoptic quality, count error and COCO mask AP of ``NAME_instances`` images against ``rater``.

    Returns:
        ``{"split", "rater", "n_images", "pq", "sq", "rq", "tp", "fp", "fn", "n_pred", "n_ref",
        "count_error_mean", "count_abs_error_mean", "ap", "ap50", "images": [per-image rows]}``.
    """
    from spermseg.data.labels import read_labels
    from spermseg.metrics.panoptic import PanopticAccumulator

    arrays = _load_reference(gt_root, split, rater, "instances")
    files = find_label_predictions(pred_dir, arrays.names, "instances")
    refs = arrays.labels(rater, "instances")
    acc = PanopticAccumulator(coco=coco)
    for i, (name, path) in enumerate(zip(arrays.names, files)):
        pred, ref = read_labels(path, "instances"), refs[i]
        _check_shape(pred, ref, path, name)
        acc.update(pred, ref, name=name)
    return {"split": split, "rater": rater, **acc.result()}


def evaluate_parts(
    pred_dir: str | Path, gt_root: str | Path, split: str = "test", rater: str = "GT1"
) -> dict[str, Any]:
    """IoU per part, mIoU and derived head/tail/full IoU of ``NAME_parts`` images against ``rater``."""
    from spermseg.data.labels import read_labels
    from spermseg.metrics.multiclass import PartsAccumulator

    arrays = _load_reference(gt_root, split, rater, "parts")
    files = find_label_predictions(pred_dir, arrays.names, "parts")
    refs = arrays.labels(rater, "parts")
    acc = PartsAccumulator()
    for i, (name, path) in enumerate(zip(arrays.names, files)):
        pred, ref = read_labels(path, "parts"), refs[i]
        _check_shape(pred, ref, path, name)
        acc.update(pred, ref, name=name)
    return {"split": split, "rater": rater, **acc.result()}


def _check_shape(pred: Any, ref: Any, path: Path, name: str) -> None:
    if pred.shape != ref.shape:
        raise DataError(f"{path} has shape {pred.shape} but the reference of {name} is {ref.shape}")


def _fmt(v: Any) -> str:
    return "null" if v is None or (isinstance(v, float) and v != v) else f"{v:.4f}"


def format_instances(res: dict[str, Any]) -> str:
    """Readable summary of :func:`evaluate_instances`."""
    lines = [
        f"{res['n_images']} images, split {res['split']}, reference {res['rater']}: "
        f"{res['n_pred']} predicted / {res['n_ref']} reference sperm",
        f"PQ {_fmt(res['pq'])}  SQ {_fmt(res['sq'])}  RQ {_fmt(res['rq'])}  (TP {res['tp']}, FP {res['fp']}, "
        f"FN {res['fn']}; match: IoU > 0.5)",
        f"count error per image: mean {_fmt(res['count_error_mean'])}, mean absolute "
        f"{_fmt(res['count_abs_error_mean'])}",
    ]
    if "ap" in res:
        lines.append(f"COCO mask AP {_fmt(res['ap'])}  AP50 {_fmt(res['ap50'])}")
    return "\n".join(lines)


def format_parts(res: dict[str, Any]) -> str:
    """Readable summary of :func:`evaluate_parts`."""
    lines = [f"{res['n_images']} images, split {res['split']}, reference {res['rater']}"]
    lines += [f"  IoU {name:<10} {_fmt(v)}" for name, v in res["parts"].items()]
    lines.append(f"mIoU (5 parts) {_fmt(res['miou'])}  with background {_fmt(res['miou_bg'])}")
    lines.append(f"derived: head {_fmt(res['head'])}  tail {_fmt(res['tail'])}  full {_fmt(res['full'])}")
    return "\n".join(lines)
