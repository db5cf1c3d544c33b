"""Ground-truth aggregation: the three heuristics by hand, STAPLE against SimpleITK."""

from __future__ import annotations

import numpy as np
import pytest

from spermseg.errors import SpermsegError
from spermseg.evaluation import aggregate, aggregate_masks, staple


def test_heuristics_by_hand() -> None:
    a = np.array([[1, 1, 0, 0]], bool)
    b = np.array([[1, 0, 1, 0]], bool)
    c = np.array([[1, 1, 0, 0]], bool)
    assert aggregate_masks([a, b, c], "union").tolist() == [[True, True, True, False]]
    assert aggregate_masks([a, b, c], "majority").tolist() == [[True, True, False, False]]
    assert aggregate_masks([a, b, c], "intersection").tolist() == [[True, False, False, False]]
    # two raters: majority means both (more than half)
    assert aggregate_masks([a, b], "majority").tolist() == [[True, False, False, False]]
    out = aggregate([[a, b], [b, b], [c, a]], "union")
    assert len(out) == 2 and out[1].tolist() == [[True, True, True, False]]
    with pytest.raises(SpermsegError, match="unknown aggregation"):
        aggregate_masks([a], "mean")


def _raters(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.zeros((40, 48), bool)
    truth[8:30, 10:22] = True
    truth[20:24, 22:44] = True
    masks = [truth ^ (rng.random(truth.shape) < f) for f in (0.02, 0.06, 0.12)]
    masks[2][20:24, 30:44] = False  # a rater that misses the tail end
    return masks


@pytest.mark.parametrize("seed", range(3))
def test_staple_equals_simpleitk(seed: int) -> None:
    sitk = pytest.importorskip("SimpleITK")
    masks = _raters(seed)
    ours = staple(masks)
    flt = sitk.STAPLEImageFilter()
    ref = sitk.GetArrayFromImage(flt.Execute([sitk.GetImageFromArray(m.astype(np.uint8)) for m in masks]))
    np.testing.assert_allclose(ours.probability, ref, atol=1e-9)
    np.testing.assert_allclose(ours.sensitivity, flt.GetSensitivity(), atol=1e-9)
    np.testing.assert_allclose(ours.specificity, flt.GetSpecificity(), atol=1e-9)
    assert ours.iterations == flt.GetElapsedIterations()
    np.testing.assert_array_equal(aggregate_masks(masks, "staple"), ours.probability >= 0.5)


def test_staple_ranks_raters_and_degenerate_inputs() -> None:
    ours = staple(_raters(0))
    assert ours.sensitivity[0] > ours.sensitivity[2]  # the careless rater is detected
    z = np.zeros((5, 5), bool)
    assert not staple([z, z]).probability.any()  # nobody marks anything: no NaN, nothing positive
