"""Per-sperm measurements on hand-drawn masks with known answers."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from spermseg.inference.morphometry import as_table, measure_instances, measure_sperm, skeleton_length


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


def _drawn_sperm() -> tuple[np.ndarray, np.ndarray]:
    """Labels and part codes of one sperm with known dimensions (ellipse head 2a=40, 2b=24 px; acrosome = left
    half of the head; two vacuoles of radius 2; midpiece 30 x 5 px; tail to x = 150, 3 px wide)."""
    parts = np.zeros((80, 180), np.uint8)
    cv2.ellipse(parts, (40, 40), (20, 12), 0, 0, 360, 2, -1)
    parts[:, :40][parts[:, :40] == 2] = 1
    cv2.circle(parts, (48, 36), 2, 3, -1)
    cv2.circle(parts, (48, 45), 2, 3, -1)
    parts[38:43, 61:91] = 4
    parts[39:42, 91:151] = 5
    return (parts > 0).astype(np.uint16) * 7, parts


def test_who_measures_on_a_drawn_sperm_with_parts() -> None:
    """Head length/width/area/ellipticity/perimeter, acrosome and vacuole shares, midpiece, tail, units."""
    labels, parts = _drawn_sperm()
    (m,) = measure_sperm(labels, parts, pixel_size_um=0.1)
    head = np.isin(parts, (1, 2, 3))
    assert m.sperm_id == 7 and m.head_area == head.sum()
    assert m.head_length == pytest.approx(40, abs=1.5) and m.head_width == pytest.approx(24, abs=1.5)
    assert m.head_ellipticity == pytest.approx(40 / 24, rel=0.05)
    ramanujan = math.pi * (3 * (20 + 12) - math.sqrt((3 * 20 + 12) * (20 + 3 * 12)))
    assert m.head_perimeter == pytest.approx(ramanujan, rel=0.06)
    assert m.acrosome_share == pytest.approx(0.5, abs=0.03)
    assert m.vacuole_count == 2 and m.vacuole_share == pytest.approx((parts == 3).sum() / head.sum())
    assert m.midpiece_length == pytest.approx(30, abs=4) and m.midpiece_width == pytest.approx(5, abs=1)
    assert m.tail_length == pytest.approx(150 - 61, abs=6)  # midpiece + principal piece, from the head's edge
    assert not m.touches_border and not m.touches_other and m.contact_px == 0
    assert m.head_length_um == pytest.approx(m.head_length * 0.1) and m.head_area_um2 == pytest.approx(
        m.head_area * 0.01
    )


def test_border_and_contact_between_two_labelled_sperm() -> None:
    labels, parts = _drawn_sperm()
    labels[39:42, 151:180] = 9  # another sperm's tail touching the first tail's end and the border
    parts[39:42, 151:180] = 5
    ms = {m.sperm_id: m for m in measure_sperm(labels, parts)}
    assert ms[7].touches_other and ms[9].touches_other and ms[7].contact_px == 3
    assert ms[9].touches_border and not ms[7].touches_border and math.isnan(ms[9].acrosome_share)
    table = as_table(list(ms.values()))
    assert table["sperm_id"] == [7, 9] and len(table["tail_length"]) == 2


def test_measurement_time_is_about_linear_in_pixels() -> None:
    """An all-ones mask used to take quadratic time (thinning a thick blob); 4x the pixels must stay < 8x the time."""
    import time

    def seconds(n: int) -> float:
        t0 = time.perf_counter()
        measure_instances(np.ones((n, n), bool))
        return time.perf_counter() - t0

    seconds(100)
    small, large = min(seconds(300) for _ in range(2)), min(seconds(600) for _ in range(2))
    assert large < 8 * small + 0.05
