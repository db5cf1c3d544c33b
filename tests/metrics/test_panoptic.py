"""Panoptic quality, count error and COCO mask AP against an independent implementation and hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spermseg.metrics.panoptic import (
    PanopticAccumulator,
    coco_mask_ap,
    match_instances,
    panoptic_from_counts,
    relabel_sequential,
)


def _reference_pq(preds: list[np.ndarray], refs: list[np.ndarray]) -> dict[str, float]:
    """Independent PQ: explicit per-pair boolean IoUs and an optimal assignment (scipy), kept where IoU > 0.5."""
    from scipy.optimize import linear_sum_assignment

    tp = fp = fn = 0
    iou_sum = 0.0
    for pred, ref in zip(preds, refs):
        p_ids = [i for i in np.unique(pred) if i != 0]
        r_ids = [i for i in np.unique(ref) if i != 0]
        table = np.zeros((len(p_ids), len(r_ids)))
        for a, p in enumerate(p_ids):
            for b, r in enumerate(r_ids):
                inter = np.logical_and(pred == p, ref == r).sum()
                union = np.logical_or(pred == p, ref == r).sum()
                table[a, b] = inter / union
        rows, cols = linear_sum_assignment(-table) if table.size else ([], [])
        matched = [(a, b) for a, b in zip(rows, cols) if table[a, b] > 0.5]
        tp += len(matched)
        fp += len(p_ids) - len(matched)
        fn += len(r_ids) - len(matched)
        iou_sum += sum(table[a, b] for a, b in matched)
    rq = tp / (tp + fp / 2 + fn / 2)
    sq = iou_sum / tp
    return {"pq": sq * rq, "sq": sq, "rq": rq}


def _random_scene(rng: np.random.Generator, h: int = 40, w: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Reference rectangles and a perturbed prediction (shifted, split, merged and spurious instances)."""
    ref = np.zeros((h, w), np.uint16)
    pred = np.zeros((h, w), np.uint16)
    for k in range(1, 7):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        dy, dx = rng.integers(3, 9, 2)
        ref[y : y + dy, x : x + dx] = k
        sy, sx = rng.integers(-2, 3, 2)
        pid = 10 + k if rng.random() > 0.2 else 10  # some merged into id 10
        pred[max(y + sy, 0) : y + sy + dy, max(x + sx, 0) : x + sx + dx] = pid
    pred[rng.random((h, w)) > 0.97] = 99  # speckle instance
    return pred, ref


def test_pq_matches_independent_implementation_on_random_scenes() -> None:
    """Pooled PQ/SQ/RQ equal an assignment-based implementation on scenes with overlaps, merges and specks."""
    rng = np.random.default_rng(0)
    scenes = [_random_scene(rng) for _ in range(12)]
    acc = PanopticAccumulator(coco=False)
    for pred, ref in scenes:
        acc.update(pred, ref)
    res = acc.result()
    expected = _reference_pq([p for p, _ in scenes], [r for _, r in scenes])
    for key in ("pq", "sq", "rq"):
        assert res[key] == pytest.approx(expected[key], abs=1e-12)
    assert 0 < res["pq"] < 1 and res["fp"] > 0 and res["fn"] > 0  # the scenes exercise every term


def test_hand_made_matching_and_counts() -> None:
    """IoU exactly 0.5 is not a match; ids need not match or be consecutive; count error is n_pred - n_ref."""
    ref = np.zeros((4, 8), np.uint16)
    ref[:, 0:4] = 1  # 16 px
    ref[:, 4:8] = 2  # 16 px
    pred = np.zeros_like(ref)
    pred[:, 0:4] = 50  # IoU 1 with ref 1
    pred[:2, 4:8] = 7  # IoU 8/16 = 0.5 with ref 2: not a match
    pred[2:, 6:8] = 9  # IoU 4/16
    m = match_instances(pred, ref)
    assert m.pairs == [(50, 1, 1.0)] and (m.tp, m.fp, m.fn) == (1, 2, 1)
    acc = PanopticAccumulator(coco=False)
    row = acc.update(pred, ref, name="x")
    assert row["count_error"] == 1 and row["rq"] == pytest.approx(1 / (1 + 1 + 0.5))
    assert acc.result()["pq"] == pytest.approx(1.0 / 2.5)


def test_empty_cases() -> None:
    """Both empty: undefined (nan); only predictions: PQ 0; only reference: PQ 0, count error negative."""
    z = np.zeros((5, 5), np.uint16)
    one = z.copy()
    one[1:3, 1:3] = 4
    assert all(math.isnan(v) for v in panoptic_from_counts(0, 0, 0, 0.0).values())
    acc = PanopticAccumulator()
    acc.update(z, z)
    res = acc.result()
    assert math.isnan(res["pq"]) and math.isnan(res["ap"]) and res["count_error_mean"] == 0
    acc = PanopticAccumulator()
    acc.update(one, z)
    assert acc.result()["pq"] == 0 and math.isnan(acc.result()["sq"]) is False and acc.result()["rq"] == 0
    acc = PanopticAccumulator()
    acc.update(z, one)
    res = acc.result()
    assert res["pq"] == 0 and res["count_error_mean"] == -1 and res["ap"] == 0


def test_coco_ap_hand_made() -> None:
    """One of two reference instances found exactly (score 0.9) plus a spurious one (0.8): AP = 51/101.

    COCO interpolates precision at 101 recall points; recall 0..0.5 has precision 1, higher recall is never
    reached, at every IoU threshold.
    """
    ref = np.zeros((10, 10), np.uint16)
    ref[0:4, 0:4] = 1
    ref[6:10, 6:10] = 2
    pred = np.zeros_like(ref)
    pred[0:4, 0:4] = 3
    pred[6:10, 0:3] = 4
    res = coco_mask_ap([pred], [ref], scores=[{3: 0.9, 4: 0.8}])
    assert res["ap"] == pytest.approx(51 / 101) and res["ap50"] == pytest.approx(51 / 101)
    assert coco_mask_ap([ref], [ref]) == pytest.approx({"ap": 1.0, "ap50": 1.0})


def test_relabel_sequential() -> None:
    lab = np.array([[0, 9, 9], [4, 0, 70000 - 69990]], dtype=np.int64)
    out = relabel_sequential(lab)
    assert out.dtype == np.uint16 and out.tolist() == [[0, 1, 1], [2, 0, 3]]
