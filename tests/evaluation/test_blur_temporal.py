"""Blur robustness (Fig. 12) and temporal consistency (Fig. 14)."""

from __future__ import annotations

import numpy as np
import pytest

from spermseg.evaluation import blur_image, blur_robustness, blur_sigma, temporal_consistency


def test_sigma_rule() -> None:
    assert blur_sigma(1) == 0.0
    assert blur_sigma(3) == pytest.approx(0.8) and blur_sigma(5) == pytest.approx(1.1)
    sig = [blur_sigma(n) for n in range(1, 16)]
    assert all(b > a for a, b in zip(sig, sig[1:]))  # strictly increasing
    with pytest.raises(ValueError):
        blur_sigma(0)


def test_blur_image_matches_opencv_and_identity() -> None:
    import cv2

    rng = np.random.default_rng(0)
    img = rng.random((32, 32)).astype(np.float32)
    np.testing.assert_array_equal(blur_image(img, 1), img)
    # OpenCV's GaussianBlur with the formula's sigma (its sigma=0 path uses fixed tables for sizes up to 9)
    np.testing.assert_allclose(blur_image(img, 7), cv2.GaussianBlur(img, (7, 7), 1.4), atol=1e-6)
    np.testing.assert_allclose(blur_image(img, 15), cv2.GaussianBlur(img, (15, 15), 0), atol=1e-6)
    assert blur_image(img, 4).std() < blur_image(img, 3).std()  # even sizes blur too, between their neighbours
    assert blur_image(img, 4).std() > blur_image(img, 5).std()


def test_blur_robustness_degrades_with_blur() -> None:
    ref = np.zeros((48, 48), bool)
    ref[20:23, 5:43] = True  # a thin "tail"
    images = [ref.astype(np.float32)]
    res = blur_robustness(lambda ims: np.stack(ims), images, [ref], sizes=(1, 5, 15), kernels=(3,))
    assert list(res) == [1, 5, 15]
    assert res[1]["full"]["iou_0.5"] == 1.0 and res[1]["sigma"] == 0.0
    assert res[15]["full"]["iou_0.5"] < res[5]["full"]["iou_0.5"] <= 1.0


def test_temporal_consistency() -> None:
    a = np.zeros((10, 10))
    a[2:6, 2:6] = 0.9
    b = np.zeros((10, 10))
    b[2:6, 2:4] = 0.9  # half of the mask vanishes
    res = temporal_consistency([a, a, b, np.zeros((10, 10)), np.zeros((10, 10))])
    assert res["iou"] == [1.0, 0.5, 0.0, 1.0]  # identical, half kept, all lost, both empty
    assert res["kept"] == [1.0, 0.5, 0.0, 1.0]
    assert res["mean_iou"] == pytest.approx(0.625) and res["min_iou"] == 0.0
    assert np.isnan(temporal_consistency([a])["mean_iou"])
