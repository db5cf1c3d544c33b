"""IoU and IoU' (Eq. 1): hand-counted examples, self-agreement, border rule, OpenCV == SciPy, grey morphology."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import ndimage
from skimage.morphology import skeletonize

from spermseg.metrics import IoUPrimeHistogram, dilate, erode, iou, iou_prime, skeleton
from spermseg.metrics.overlap import iou_prime_counts, offset_bins


def _hand_drawn() -> tuple[np.ndarray, np.ndarray]:
    """9 x 11 image: a 1-px reference line (row 4, cols 2..8), a 3x3 predicted block on its left end and a lone
    false-positive pixel."""
    ref = np.zeros((9, 11), bool)
    ref[4, 2:9] = True
    pred = np.zeros((9, 11), bool)
    pred[3:6, 2:5] = True
    pred[0, 10] = True
    return pred, ref


def test_hand_counted_k3() -> None:
    pred, ref = _hand_drawn()
    assert np.array_equal(skeleton(ref), ref)  # a 1-px line is its own skeleton
    # t(Mr) & d(Mp): row 4, cols 2..5 -> 4 of 7 skeleton pixels; e(Mp) = the block's centre (4, 3), inside d(Mr)
    res = iou_prime(pred, ref, 3)
    assert res["r"] == pytest.approx(4 / 7)
    assert res["p"] == pytest.approx(1.0)
    assert res["iou"] == pytest.approx(4 / 7)
    # strict IoU: 3 common pixels, union 7 + 10 - 3
    assert iou(pred, ref) == pytest.approx(3 / 14)


def test_hand_counted_k5_erosion_empty_gives_zero() -> None:
    pred, ref = _hand_drawn()
    res = iou_prime(pred, ref, 5)
    # d(Mp, 5) covers cols 0..6 of row 4 -> 5 of 7; a 3x3 block does not survive a 5x5 erosion: P' = 0
    assert res["r"] == pytest.approx(5 / 7)
    assert res["p"] == 0.0 and res["iou"] == 0.0


def test_hand_counted_precision_and_image_border() -> None:
    pred, ref = _hand_drawn()
    pred[6:9, 7:10] = True  # a 3x3 false positive far from the line: its centre (7, 8) survives erosion
    pred[7:9, 0:3] = True  # a 2x3 block on the bottom border: eroded away (outside pixels are background)
    res = iou_prime(pred, ref, 3)
    assert res["r"] == pytest.approx(4 / 7)
    assert res["p"] == pytest.approx(1 / 2)
    r, p = 4 / 7, 1 / 2
    assert res["iou"] == pytest.approx(r * p / (r + p - r * p))  # = 4/11
    assert res["iou"] == pytest.approx(4 / 11)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [3, 5, 7])
def test_self_iou_prime_is_one_when_erosion_nonempty(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    m = ndimage.binary_opening(rng.random((48, 48)) < 0.45, iterations=1)
    m = ndimage.binary_dilation(m, iterations=int(rng.integers(0, 3)))
    res = iou_prime(m, m, k)
    if erode(m, k).any():
        assert res == {"r": 1.0, "p": 1.0, "iou": 1.0}
    else:
        assert res["p"] == 0.0 and res["iou"] == 0.0


def test_thin_mask_with_itself() -> None:
    m = np.zeros((20, 20), bool)
    m[10, 2:18] = True  # 1-px line: its 3x3 erosion is empty
    assert iou_prime(m, m, 3) == {"r": 1.0, "p": 0.0, "iou": 0.0}


def test_empty_cases() -> None:
    z = np.zeros((10, 10), bool)
    m = z.copy()
    m[3:7, 3:7] = True
    assert iou(z, z) == 1.0 and iou_prime(z, z, 3) == {"r": 1.0, "p": 1.0, "iou": 1.0}  # both empty
    assert iou(m, z) == 0.0 and iou_prime(m, z, 3)["iou"] == 0.0  # empty reference, something predicted
    assert iou(z, m) == 0.0 and iou_prime(z, m, 3) == {"r": 0.0, "p": 0.0, "iou": 0.0}  # empty prediction


@pytest.mark.parametrize("k", [1, 3, 5, 7])
def test_opencv_morphology_equals_scipy_with_background_border(k: int) -> None:
    rng = np.random.default_rng(k)
    for _ in range(5):
        m = rng.random((33, 40)) < 0.6
        m[0, :] = True  # foreground on the border: the border rule matters
        st = np.ones((k, k), bool)
        np.testing.assert_array_equal(dilate(m, k), ndimage.binary_dilation(m, st, border_value=0))
        np.testing.assert_array_equal(erode(m, k), ndimage.binary_erosion(m, st, border_value=0))


def test_skeleton_on_bounding_box_equals_full_image() -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        m = np.zeros((64, 64), np.uint8)
        cv2.line(m, tuple(int(v) for v in rng.integers(5, 60, 2)), tuple(int(v) for v in rng.integers(5, 60, 2)), 1, 4)
        cv2.circle(m, tuple(int(v) for v in rng.integers(10, 54, 2)), 5, 1, -1)
        np.testing.assert_array_equal(skeleton(m.astype(bool)), skeletonize(m.astype(bool)))
    assert not skeleton(np.zeros((8, 8), bool)).any()


@pytest.mark.parametrize("k", [3, 5])
def test_grey_morphology_sweep_equals_binarized_counts(k: int) -> None:
    """The histogram path (offset bins, grey erosion / windowed max) gives the literal counts at every threshold,
    including t = 0 and with a region outside which nothing is predicted."""
    rng = np.random.default_rng(k)
    ref = np.zeros((40, 40), bool)
    cv2.line(ref.view(np.uint8), (3, 5), (36, 30), 1, 3)
    scores = np.clip(cv2.GaussianBlur(ref.astype(np.float32), (7, 7), 2) + rng.random(ref.shape) * 0.3, 0, 1)
    scores = (np.round(scores * 255) / 255).astype(np.float32)  # 8-bit levels, 0 included
    region = np.zeros_like(ref)
    region[:, :25] = True
    restricted = np.where(region, scores, -1.0).astype(np.float32)
    h = IoUPrimeHistogram(k, n_bins=256)
    h.update(restricted, ref)
    rec_num = np.cumsum(h.rec_hist[::-1])[::-1]
    prec_num = np.cumsum(h.dref_hist[::-1])[::-1]
    prec_den = np.cumsum(h.ero_hist[::-1])[::-1]
    for i in (0, 1, 30, 64, 128, 200, 256):
        pred = (restricted >= i / 256) & region
        c = iou_prime_counts(pred, ref, k)
        assert (rec_num[i], prec_num[i], prec_den[i]) == (c.rec_num, c.prec_num, c.prec_den), i
    assert h.rec_den == int(skeleton(ref).sum())
    ob = offset_bins(restricted, 256)
    assert ob.min() == 0 and ob.max() <= 257


def test_kernel_must_be_odd() -> None:
    m = np.ones((5, 5), bool)
    with pytest.raises(ValueError, match="odd"):
        iou_prime(m, m, 4)
