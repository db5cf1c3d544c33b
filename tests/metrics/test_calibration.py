"""Brier and stratified Brier scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spermseg.metrics import BrierAccumulator, brier_scores


def test_brier_by_hand() -> None:
    s = np.array([0.9, 0.2, 0.0, 0.6])
    y = np.array([True, False, False, True])
    res = brier_scores(s, y)
    assert res["brier"] == pytest.approx((0.01 + 0.04 + 0.0 + 0.16) / 4)
    assert res["brier_pos"] == pytest.approx((0.01 + 0.16) / 2)
    assert res["brier_neg"] == pytest.approx(0.04 / 2)


def test_brier_pools_and_empty_strata() -> None:
    acc = BrierAccumulator()
    acc.update(np.array([0.5, 0.5]), np.array([False, False]))
    assert math.isnan(acc.result()["brier_pos"])
    acc.update(np.array([1.0]), np.array([True]))
    res = acc.result()
    assert res["brier"] == pytest.approx(0.5 / 3) and res["brier_pos"] == 0.0
    assert math.isnan(BrierAccumulator().result()["brier"])
