"""AP, IoU curve and IoU_opt: exact equals scikit-learn, fast (histogram) close to exact, brute-force sweeps."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from spermseg.metrics import ScoreHistogram, average_precision, iou_at, iou_curve, iou_opt, precision_recall_curve


def _random(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = rng.random(n).astype(np.float32)
    y = rng.random(n) < s**2  # informative but noisy
    return s, y


@pytest.mark.parametrize("seed", range(5))
def test_exact_ap_equals_sklearn_random(seed: int) -> None:
    s, y = _random(5000, seed)
    assert abs(average_precision(s, y, "exact") - average_precision_score(y, s)) < 1e-9
    assert abs(average_precision(s, y, "fast") - average_precision_score(y, s)) < 1e-4


@pytest.mark.parametrize(
    "case",
    ["ties", "few_levels", "all_positive", "single_positive", "constant_scores", "zeros_and_ones", "anti"],
)
def test_ap_adversarial(case: str) -> None:
    rng = np.random.default_rng(7)
    n = 3000
    if case == "ties":
        s = np.round(rng.random(n), 1)
        y = rng.random(n) < s
    elif case == "few_levels":
        s = rng.integers(0, 3, n) / 2.0
        y = rng.random(n) < 0.3
    elif case == "all_positive":
        s = rng.random(n)
        y = np.ones(n, bool)
    elif case == "single_positive":
        s = rng.random(n)
        y = np.zeros(n, bool)
        y[17] = True
    elif case == "constant_scores":
        s = np.full(n, 0.25)
        y = rng.random(n) < 0.2
    elif case == "zeros_and_ones":
        s = (rng.random(n) < 0.5).astype(float)
        y = rng.random(n) < 0.5
    else:  # perfectly wrong ranking
        y = rng.random(n) < 0.3
        s = np.where(y, 0.1, 0.9) + rng.random(n) * 0.01
    ref = average_precision_score(y, s)
    assert abs(average_precision(s, y, "exact") - ref) < 1e-9
    if case == "anti":
        # 3000 scores squeezed into two intervals of width 0.01: 2^16 bins merge neighbours (error ~2e-4, see
        # docs/evaluation.md); a finer histogram restores the bound
        assert abs(average_precision(s, y, "fast", n_bins=2**20) - ref) < 1e-4
    elif case == "single_positive":
        assert abs(average_precision(s, y, "fast") - ref) < 1e-4
    else:  # few distinct values, each in its own bin: fast is exact
        assert abs(average_precision(s, y, "fast") - ref) < 1e-9


def test_ap_no_positive_is_nan_where_sklearn_warns() -> None:
    """Documented difference: scikit-learn returns 0 with a warning, we return NaN (undefined)."""
    s = np.random.default_rng(0).random(100)
    y = np.zeros(100, bool)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert average_precision_score(y, s) == 0.0
    assert any("No positive" in str(w.message) for w in caught)
    assert math.isnan(average_precision(s, y, "exact"))
    assert math.isnan(average_precision(s, y, "fast"))


def test_fast_equals_exact_for_16bit_scores() -> None:
    rng = np.random.default_rng(3)
    s = (rng.integers(0, 65536, 20000) / 65535).astype(np.float32)
    y = rng.random(20000) < s
    assert average_precision(s, y, "fast") == pytest.approx(average_precision(s, y, "exact"), abs=1e-12)
    assert iou_opt(s, y, "fast")[0] == pytest.approx(iou_opt(s, y, "exact")[0], abs=1e-12)


def _brute_iou_opt(s: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    best, best_t = -1.0, float("nan")
    for t in sorted(set(s.tolist()), reverse=True):
        iou = iou_at(s, y, t)
        if iou > best:
            best, best_t = iou, t
    return best, best_t


@pytest.mark.parametrize("seed", range(4))
def test_iou_opt_equals_brute_force_sweep(seed: int) -> None:
    rng = np.random.default_rng(seed)
    s = np.round(rng.random(400), 2)  # ties on purpose
    y = rng.random(400) < s
    best, t = iou_opt(s, y, "exact")
    b_best, b_t = _brute_iou_opt(s, y)
    assert best == pytest.approx(b_best, abs=1e-15) and t == b_t
    # fast mode sweeps bin edges: the same optimum for 2-decimal scores (all in distinct bins)
    f_best, f_t = iou_opt(s, y, "fast")
    assert f_best == pytest.approx(b_best, abs=1e-15)
    assert abs(f_t - b_t) < 2**-16
    # the curve's maximum is IoU_opt and every point is the IoU at its threshold
    th, curve = iou_curve(s, y, "exact")
    assert curve.max() == pytest.approx(best)
    for j in (0, len(th) // 2, len(th) - 1):
        assert curve[j] == pytest.approx(iou_at(s, y, th[j]))


def test_iou_opt_empty_reference_prefers_predicting_nothing() -> None:
    s = np.array([0.1, 0.4, 0.3])
    y = np.zeros(3, bool)
    best, t = iou_opt(s, y, "exact")
    assert best == 1.0 and t > 0.4
    assert iou_at(s, y, t) == 1.0
    best_f, t_f = iou_opt(s, y, "fast")
    assert best_f == 1.0 and iou_at(s, y, t_f) == 1.0


def test_precision_recall_curve_matches_sklearn() -> None:
    from sklearn.metrics import precision_recall_curve as sk_prc

    s, y = _random(2000, 11)
    p, r, t = precision_recall_curve(s, y, "exact")
    sp, sr, st = sk_prc(y, s)
    # sklearn: increasing thresholds plus a final (1, 0) point; ours: decreasing thresholds
    np.testing.assert_allclose(p[::-1], sp[:-1])
    np.testing.assert_allclose(r[::-1], sr[:-1])
    np.testing.assert_allclose(t[::-1], st)


def test_histogram_streams_and_merges() -> None:
    s, y = _random(10000, 5)
    whole = ScoreHistogram()
    whole.update(s, y)
    a, b = ScoreHistogram(), ScoreHistogram()
    a.update(s[:3000], y[:3000])
    b.update(s[3000:], y[3000:])
    a.merge(b)
    np.testing.assert_array_equal(a.pos, whole.pos)
    np.testing.assert_array_equal(a.tot, whole.tot)
    assert a.count_at(0.5) == (int(np.count_nonzero(y & (s >= 0.5))), int(np.count_nonzero(s >= 0.5)))
