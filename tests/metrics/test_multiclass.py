"""Part IoU / mIoU against scikit-learn's jaccard_score and hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spermseg.metrics.multiclass import PartsAccumulator, confusion


def test_per_part_iou_equals_sklearn_pooled_over_images() -> None:
    """Pooled per-code IoU equals sklearn's jaccard on the concatenated pixels; mIoU averages codes 1-5."""
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    preds = [rng.integers(0, 6, (9, 11)) for _ in range(3)]
    refs = [np.where(rng.random((9, 11)) > 0.4, p, rng.integers(0, 6, (9, 11))) for p in preds]
    acc = PartsAccumulator()
    for p, r in zip(preds, refs):
        acc.update(p, r)
    res = acc.result()
    flat_p = np.concatenate([p.ravel() for p in preds])
    flat_r = np.concatenate([r.ravel() for r in refs])
    expected = sklearn_metrics.jaccard_score(flat_r, flat_p, labels=list(range(6)), average=None)
    assert list(res["parts"].values()) == pytest.approx(expected.tolist())
    assert res["miou"] == pytest.approx(expected[1:].mean()) and res["miou_bg"] == pytest.approx(expected.mean())
    head = sklearn_metrics.jaccard_score(np.isin(flat_r, [1, 2, 3]), np.isin(flat_p, [1, 2, 3]))
    assert res["head"] == pytest.approx(head)


def test_absent_part_is_nan_and_left_out_of_the_mean() -> None:
    ref = np.array([[0, 2, 2, 5]])
    pred = np.array([[0, 2, 5, 5]])
    res = PartsAccumulator().update(pred, ref)
    assert math.isnan(res["parts"]["vacuole"]) and math.isnan(res["parts"]["acrosome"])
    assert res["miou"] == pytest.approx((0.5 + 0.5) / 2) and res["full"] == 1.0
    empty = PartsAccumulator().update(np.zeros((2, 2)), np.zeros((2, 2)))
    assert math.isnan(empty["miou"]) and empty["parts"]["background"] == 1.0
    with pytest.raises(ValueError, match="codes"):
        confusion(np.full((1, 1), 6), np.zeros((1, 1)))
