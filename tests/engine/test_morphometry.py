"""Per-sperm measurements on hand-drawn masks with known answers."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from spermseg.engine.morphometry import measure_instances, skeleton_length


def _sperm(shape: tuple[int, int], head: tuple[int, int], tail_end: tuple[int, int], head_axes=(7, 5), tail_w=1):
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, head, head_axes, 0, 0, 360, 1, -1)
    cv2.line(mask, head, tail_end, 1, tail_w)
    return mask.astype(bool)


def test_skeleton_length_straight_diagonal_and_corner() -> None:
    line = np.zeros((20, 20), bool)
    line[5, 2:12] = True  # 10 pixels -> 9 unit links
    assert skeleton_length(line) == pytest.approx(9.0)
    diag = np.eye(6, dtype=bool)
    assert skeleton_length(diag) == pytest.approx(5 * math.sqrt(2))
    corner = np.zeros((5, 5), bool)
    corner[1, 1:4] = True
    corner[1:4, 3] = True  # an L: 2 + 2 orthogonal links, the diagonal shortcut is not counted
    assert skeleton_length(corner) == pytest.approx(4.0)
    assert skeleton_length(np.zeros((4, 4), bool)) == 0.0


def test_one_sperm_head_area_and_tail_length() -> None:
    mask = _sperm((80, 120), head=(20, 40), tail_end=(100, 40))
    (m,) = measure_instances(mask, pixel_size_um=0.5)
    assert m.head_found
    ellipse_area = math.pi * 7 * 5
    assert 0.6 * ellipse_area < m.head_area < 1.5 * ellipse_area
    # the tail runs from the head's edge (about x = 20 + 1.6 * 5) to x = 100
    assert 65 < m.tail_length < 85
    assert m.tail_length_um == pytest.approx(m.tail_length * 0.5)
    assert m.area_um2 == pytest.approx(m.area * 0.25)
    assert not m.touches_border
    assert abs(m.head_x - 20) <= 2 and abs(m.head_y - 40) <= 2


def test_two_instances_border_flag_and_specks() -> None:
    mask = _sperm((80, 120), head=(20, 20), tail_end=(119, 20)) | _sperm((80, 120), head=(30, 60), tail_end=(70, 60))
    mask[75:77, 5:7] = True  # a 4-pixel speck
    ms = measure_instances(mask)
    assert len(ms) == 2
    longer = max(ms, key=lambda m: m.tail_length)
    shorter = min(ms, key=lambda m: m.tail_length)
    assert longer.touches_border and not shorter.touches_border
    assert [m.instance for m in ms] == [1, 2]
    assert longer.area_um2 is None


def test_blob_without_tail_has_no_head_and_empty_mask_has_nothing() -> None:
    bar = np.zeros((40, 40), bool)
    bar[10:14, 5:35] = True  # uniform thickness: no thick end
    (m,) = measure_instances(bar)
    assert not m.head_found and m.head_area == 0
    assert measure_instances(np.zeros((10, 10), bool)) == []
