"""The whole-sperm filter: predicted pieces that cannot hold a head leave the mask, whole sperm stay untouched."""

from __future__ import annotations

import numpy as np
import pytest

from spermseg.data.labels import component_radii, inscribed_radii, thick_components, whole_sperm_scale
from spermseg.inference.postprocess import DEMOTE, suppress_headless, with_whole_sperm


def _sperm_and_loose_tail() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A soft map (64, 96) with a sperm (disk of radius 7 + a 2-px tail) and a detached 2-px tail; their masks."""
    import cv2

    sperm = np.zeros((64, 96), np.uint8)
    cv2.circle(sperm, (20, 32), 7, 1, -1)
    cv2.line(sperm, (27, 32), (60, 20), 1, 2)
    loose = np.zeros_like(sperm)
    cv2.line(loose, (50, 55), (90, 45), 1, 2)
    prob = np.full(sperm.shape, 0.02, np.float32)
    prob[sperm > 0] = 0.9
    prob[loose > 0] = np.linspace(0.6, 1.0, int(loose.sum()), dtype=np.float32)  # distinct values: order matters
    return prob, sperm > 0, loose > 0


def test_a_detached_tail_is_demoted_below_the_threshold_and_keeps_its_order() -> None:
    prob, sperm, loose = _sperm_and_loose_tail()
    out = suppress_headless(prob, 0.5, 4.0)
    assert np.array_equal(out[sperm], prob[sperm])  # the sperm, tail included, is untouched
    assert np.array_equal(out[~sperm & ~loose], prob[~sperm & ~loose])
    assert (out[loose] < 0.5).all() and out[loose].max() <= DEMOTE * 0.5 + 1e-7  # out of the binary mask
    np.testing.assert_allclose(out[loose], prob[loose] * DEMOTE * 0.5, rtol=1e-6)  # same order, above zero
    assert np.array_equal((out >= 0.5), sperm)


def test_radius_zero_an_empty_map_and_part_outputs_pass_unchanged() -> None:
    prob, _, _ = _sperm_and_loose_tail()
    assert np.array_equal(suppress_headless(prob, 0.5, 0.0), prob)
    empty = np.zeros((16, 16), np.float32)
    assert np.array_equal(suppress_headless(empty, 0.5, 3.0), empty)
    parts = np.random.default_rng(0).random((2, 6, 8, 8)).astype(np.float32)
    assert with_whole_sperm(lambda b: b, 0.5, 3.0)(parts) is parts
    identity = lambda b: b  # noqa: E731
    assert with_whole_sperm(identity, 0.5, None) is identity and with_whole_sperm(identity, 0.5, 0.0) is identity


def test_a_radius_above_every_piece_demotes_the_whole_sperm_too() -> None:
    prob, sperm, _ = _sperm_and_loose_tail()
    assert not (suppress_headless(prob, 0.5, 8.5) >= 0.5).any()  # the head's inscribed radius is ~7-8 px


def test_inscribed_radii_of_hand_made_shapes() -> None:
    m = np.zeros((40, 40), bool)
    m[5:26, 5:26] = True  # a 21x21 square: the centre is 11 px from the outside (distance to the nearest zero)
    m[30:33, 2:38] = True  # a 3-px bar: 2 px
    r = sorted(inscribed_radii(m).tolist())
    assert r == pytest.approx([2.0, 11.0], abs=0.05)
    assert inscribed_radii(np.zeros((5, 5), bool)).size == 0


@pytest.mark.parametrize("radius", [0.5, 1.0, 2.0, 2.2, 2**0.5, 5**0.5, 13**0.5, 4.0, 6.37, 8.3])
def test_the_erosion_finds_the_same_thick_pieces_as_the_exact_distance_transform(radius: float) -> None:
    """The filter's erosion shortcut against scipy's exact Euclidean distance (an independent reference), radii
    that are square roots of integers included (ties), pieces cut by the image border included."""
    from scipy import ndimage

    rng = np.random.default_rng(int(radius * 100))
    for k in range(20):
        smooth = ndimage.gaussian_filter(rng.random((48, 64)), rng.uniform(1.0, 3.5))
        mask = smooth > np.quantile(smooth, rng.uniform(0.3, 0.7))
        if k == 0:
            mask[:] = True  # one piece that is the whole frame: the outside counts as foreground
        lab, thick = thick_components(mask, radius)
        dist = ndimage.distance_transform_edt(mask)  # scipy, too, counts no background outside the frame
        ref = np.zeros_like(thick)
        ref[np.unique(lab[dist.astype(np.float32) >= radius])] = True
        ref[0] = False
        assert np.array_equal(thick, ref), (radius, k)
        assert np.array_equal(thick[1:], component_radii(mask)[1][1:] >= radius)
    assert not thick_components(np.zeros((5, 5), bool), 2.0)[1].any()


def test_whole_sperm_scale_separates_thick_heads_from_thin_tails_or_says_it_cannot() -> None:
    head = np.zeros((40, 40), bool)
    head[5:26, 5:26] = True
    tail = np.zeros((40, 40), bool)
    tail[30:33, 2:38] = True
    s = whole_sperm_scale([head], [tail])
    assert s["head_radius_p5"] == pytest.approx(11.0, abs=0.05) and s["tail_radius_p95"] == pytest.approx(2.0)
    assert s["min_head_radius"] == pytest.approx(6.5, abs=0.05)  # midway
    fat_tail = np.zeros((40, 40), bool)
    fat_tail[27:40, 2:38] = True  # as thick as the head: no radius tells them apart
    assert whole_sperm_scale([head], [fat_tail])["min_head_radius"] is None
    assert whole_sperm_scale([np.zeros((8, 8), bool)], [tail])["min_head_radius"] is None
