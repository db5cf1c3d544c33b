"""The head / tail scoring regions."""

from __future__ import annotations

import numpy as np

from spermseg.metrics import part_regions


def test_nearest_part_and_ties_go_to_head() -> None:
    head = np.zeros((5, 9), bool)
    tail = np.zeros((5, 9), bool)
    head[2, 1] = True
    tail[2, 7] = True
    hr, tr = part_regions(head, tail)
    # column 4 is equidistant (3 px) from both: head; columns 0..4 head, 5..8 tail
    assert hr[:, :5].all() and not hr[:, 5:].any()
    assert tr[:, 5:].all() and not tr[:, :5].any()
    # a diagonal tie: (0, 4) is sqrt(13) from both
    assert hr[0, 4]


def test_far_false_positive_charged_to_nearest_part() -> None:
    head = np.zeros((30, 30), bool)
    tail = np.zeros((30, 30), bool)
    head[5:8, 5:8] = True
    tail[20, 10:25] = True
    hr, tr = part_regions(head, tail)
    assert hr[0, 0] and not tr[0, 0]  # top-left corner is nearer to the head
    assert tr[29, 29] and not hr[29, 29]
    assert not (hr & tr).any() and (hr | tr).all()  # a partition


def test_no_sperm_both_regions_are_the_image_and_single_part() -> None:
    z = np.zeros((6, 6), bool)
    hr, tr = part_regions(z, z)
    assert hr.all() and tr.all()
    t = z.copy()
    t[2, 2] = True
    hr, tr = part_regions(z, t)  # tail only: everything is tail region
    assert not hr.any() and tr.all()


def test_overlapping_labels_belong_to_both_and_deterministic() -> None:
    rng = np.random.default_rng(0)
    head = rng.random((64, 64)) < 0.01
    tail = rng.random((64, 64)) < 0.02
    tail[head] = rng.random(int(head.sum())) < 0.5  # some pixels labelled both
    hr, tr = part_regions(head, tail)
    assert hr[head].all() and tr[tail].all()
    for _ in range(5):  # exact ties must not flicker between calls
        hr2, tr2 = part_regions(head, tail)
        assert np.array_equal(hr, hr2) and np.array_equal(tr, tr2)
    # against SciPy's exact EDT
    from scipy import ndimage

    dh = ndimage.distance_transform_edt(~head) ** 2
    dt = ndimage.distance_transform_edt(~tail) ** 2
    np.testing.assert_array_equal(hr, np.rint(dh) <= np.rint(dt))
