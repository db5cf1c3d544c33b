"""Per-sperm (instance) measures: panoptic quality PQ = SQ x RQ, count error, and COCO mask AP.

Matching (Kirillov et al., "Panoptic Segmentation", CVPR 2019): a predicted instance and a reference instance
match when their IoU is > 0.5; such a match is unique (two instances of one image cannot both overlap a third by
more than half), so no assignment problem is solved. Over a set of images (pooled, as panoptic evaluation does):

* ``TP`` matched pairs, ``FP`` unmatched predictions, ``FN`` unmatched reference instances;
* ``SQ = sum(IoU over TP) / TP``, ``RQ = TP / (TP + FP / 2 + FN / 2)``, ``PQ = SQ * RQ``;
* undefined values (no instance on either side: ``TP + FP + FN = 0``; SQ without TP) are ``nan``;
* the count error of an image is ``n_pred - n_ref`` (reported as mean, mean absolute and per image).

COCO mask AP (AP over IoU 0.50:0.05:0.95, and AP50) comes from pycocotools' ``COCOeval`` with ``iouType="segm"``,
one category, its default 101-point interpolation and up to 100 detections per image. COCO matches at IoU >=
threshold while PQ needs IoU > 0.5, so a prediction at IoU exactly 0.5 counts for AP50 but not for PQ. Label
images carry no confidence: every instance scores 1 unless per-instance scores are given, so AP then measures the
ranking-free precision/recall trade-off of one operating point.

Label images are (H, W) integer arrays: 0 = background, any other value = one instance (ids need not be
consecutive).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spermseg.data.labels import relabel_sequential

__all__ = ["MATCH_IOU", "Matching", "PanopticAccumulator", "coco_mask_ap", "iou_table", "match_instances",
           "panoptic_from_counts", "relabel_sequential"]  # fmt: skip

MATCH_IOU = 0.5


@dataclass(frozen=True)
class Matching:
    """Instance matching of one image.

    Attributes:
        pairs: (pred_id, ref_id, iou) of every match (IoU > 0.5), sorted by pred_id.
        pred_ids: ids of the predicted instances (sorted).
        ref_ids: ids of the reference instances (sorted).
    """

    pairs: list[tuple[int, int, float]]
    pred_ids: list[int]
    ref_ids: list[int]

    @property
    def tp(self) -> int:
        return len(self.pairs)

    @property
    def fp(self) -> int:
        return len(self.pred_ids) - len(self.pairs)

    @property
    def fn(self) -> int:
        return len(self.ref_ids) - len(self.pairs)


def _ids_and_areas(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids, areas = np.unique(labels[labels > 0], return_counts=True)
    return ids.astype(np.int64), areas.astype(np.int64)


def iou_table(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every overlapping (pred, ref) instance pair, from one joint histogram (linear in pixels).

    Args:
        pred: (H, W) predicted label image.
        ref: (H, W) reference label image.

    Returns:
        ``(pred_id, ref_id, iou)`` arrays of equal length, one entry per pair sharing at least one pixel.
    """
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape or pred.ndim != 2:
        raise ValueError(f"label images must be (H, W) of one shape, got {pred.shape} and {ref.shape}")
    p_ids, p_areas = _ids_and_areas(pred)
    r_ids, r_areas = _ids_and_areas(ref)
    both = (pred > 0) & (ref > 0)
    if not both.any():
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float64)
    pv = pred[both].astype(np.int64)
    rv = ref[both].astype(np.int64)
    key = pv * (int(rv.max()) + 1) + rv
    keys, inter = np.unique(key, return_counts=True)
    pk, rk = keys // (int(rv.max()) + 1), keys % (int(rv.max()) + 1)
    pa = p_areas[np.searchsorted(p_ids, pk)]
    ra = r_areas[np.searchsorted(r_ids, rk)]
    return pk, rk, inter / (pa + ra - inter)


def match_instances(pred: np.ndarray, ref: np.ndarray) -> Matching:
    """Match the instances of two label images (IoU > 0.5, unique by construction).

    Args:
        pred: (H, W) predicted label image (0 = background).
        ref: (H, W) reference label image.

    Returns:
        The :class:`Matching`.
    """
    pk, rk, iou = iou_table(pred, ref)
    keep = iou > MATCH_IOU
    pairs = [(int(p), int(r), float(v)) for p, r, v in zip(pk[keep], rk[keep], iou[keep])]
    pairs.sort()
    return Matching(pairs, _ids_and_areas(np.asarray(pred))[0].tolist(), _ids_and_areas(np.asarray(ref))[0].tolist())


def panoptic_from_counts(tp: int, fp: int, fn: int, iou_sum: float) -> dict[str, float]:
    """``{"pq", "sq", "rq"}`` from pooled counts (nan where undefined, see the module docstring)."""
    denom = tp + 0.5 * fp + 0.5 * fn
    rq = tp / denom if denom > 0 else float("nan")
    sq = iou_sum / tp if tp > 0 else (float("nan") if denom == 0 else 0.0)
    pq = sq * rq if denom > 0 else float("nan")
    return {"pq": pq, "sq": sq, "rq": rq}


@dataclass
class PanopticAccumulator:
    """Streams label-image pairs and pools PQ/SQ/RQ, the count error and (optionally) COCO mask AP.

    Args:
        coco: also collect run-length encoded masks for :func:`coco_mask_ap` (memory: a few kB per instance).
    """

    coco: bool = True
    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou_sum: float = 0.0
    images: list[dict[str, Any]] = field(default_factory=list)
    _gt: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _dt: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _shapes: list[tuple[int, int]] = field(default_factory=list, repr=False)

    def update(
        self,
        pred: np.ndarray,
        ref: np.ndarray,
        name: str | None = None,
        scores: dict[int, float] | None = None,
    ) -> dict[str, Any]:
        """Add one image.

        Args:
            pred: (H, W) predicted label image.
            ref: (H, W) reference label image.
            name: image name for the per-image list.
            scores: optional confidence per predicted id (COCO AP ranking); default 1.

        Returns:
            That image's row: ``{"name", "n_pred", "n_ref", "count_error", "tp", "fp", "fn", "pq", "sq", "rq"}``.
        """
        m = match_instances(pred, ref)
        iou_sum = sum(v for _, _, v in m.pairs)
        self.tp += m.tp
        self.fp += m.fp
        self.fn += m.fn
        self.iou_sum += iou_sum
        row: dict[str, Any] = {
            "name": name if name is not None else str(len(self.images)),
            "n_pred": len(m.pred_ids),
            "n_ref": len(m.ref_ids),
            "count_error": len(m.pred_ids) - len(m.ref_ids),
            "tp": m.tp,
            "fp": m.fp,
            "fn": m.fn,
            **panoptic_from_counts(m.tp, m.fp, m.fn, iou_sum),
        }
        self.images.append(row)
        if self.coco:
            image_id = len(self._shapes) + 1
            self._shapes.append((int(pred.shape[0]), int(pred.shape[1])))
            self._gt.extend(_rle_records(ref, image_id))
            self._dt.extend(_rle_records(pred, image_id, scores or {}))
        return row

    def result(self) -> dict[str, Any]:
        """Pooled measures: ``{"n_images", "pq", "sq", "rq", "tp", "fp", "fn", "n_pred", "n_ref",
        "count_error_mean", "count_abs_error_mean", "ap", "ap50", "images"}`` (AP keys only with ``coco``)."""
        errors = np.array([r["count_error"] for r in self.images], np.float64)
        out: dict[str, Any] = {
            "n_images": len(self.images),
            **panoptic_from_counts(self.tp, self.fp, self.fn, self.iou_sum),
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "n_pred": int(sum(r["n_pred"] for r in self.images)),
            "n_ref": int(sum(r["n_ref"] for r in self.images)),
            "count_error_mean": float(errors.mean()) if errors.size else float("nan"),
            "count_abs_error_mean": float(np.abs(errors).mean()) if errors.size else float("nan"),
        }
        if self.coco:
            out.update(_coco_eval(self._gt, self._dt, self._shapes))
        out["images"] = list(self.images)
        return out


def _rle_records(labels: np.ndarray, image_id: int, scores: dict[int, float] | None = None) -> list[dict[str, Any]]:
    """COCO annotation records (RLE masks) of every instance of a label image; with ``scores``: detections."""
    from pycocotools import mask as mask_utils
    from scipy import ndimage as ndi

    labels = np.asarray(labels)
    out: list[dict[str, Any]] = []
    if not labels.any():
        return out
    ids = np.unique(labels[labels > 0])
    boxes = ndi.find_objects(labels.astype(np.int32))  # ids are at most 65535: one slot per id is cheap
    for i in ids.tolist():
        sl = boxes[i - 1]
        full = np.zeros(labels.shape, np.uint8, order="F")
        full[sl] = labels[sl] == i
        rle = mask_utils.encode(full)
        rec = {"image_id": image_id, "category_id": 1, "segmentation": rle, "area": float(mask_utils.area(rle))}
        rec["bbox"] = mask_utils.toBbox(rle).tolist()
        if scores is not None:
            rec["score"] = float(scores.get(i, 1.0))
        else:
            rec["iscrowd"] = 0
        out.append(rec)
    return out


def _coco_eval(gt: list[dict[str, Any]], dt: list[dict[str, Any]], shapes: list[tuple[int, int]]) -> dict[str, float]:
    """COCO mask AP and AP50 of collected records (nan without reference instances)."""
    import contextlib
    import io

    if not gt:
        return {"ap": float("nan"), "ap50": float("nan")}
    if not dt:
        return {"ap": 0.0, "ap50": 0.0}
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images = [{"id": i + 1, "height": h, "width": w} for i, (h, w) in enumerate(shapes)]
    gt_recs = [{**r, "id": k + 1} for k, r in enumerate(gt)]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and the summary table
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": gt_recs, "categories": [{"id": 1, "name": "sperm"}]}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([{**r, "id": k + 1} for k, r in enumerate(dt)])
        ev = COCOeval(coco_gt, coco_dt, iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ap, ap50 = float(ev.stats[0]), float(ev.stats[1])
    # COCOeval writes -1 where a value is undefined
    return {"ap": ap if ap >= 0 else float("nan"), "ap50": ap50 if ap50 >= 0 else float("nan")}


def coco_mask_ap(
    preds: list[np.ndarray], refs: list[np.ndarray], scores: list[dict[int, float]] | None = None
) -> dict[str, float]:
    """COCO mask ``{"ap", "ap50"}`` of lists of predicted and reference (H, W) label images."""
    acc = PanopticAccumulator(coco=True)
    for i, (p, r) in enumerate(zip(preds, refs, strict=True)):
        acc.update(p, r, scores=None if scores is None else scores[i])
    res = acc.result()
    return {"ap": res["ap"], "ap50": res["ap50"]}
