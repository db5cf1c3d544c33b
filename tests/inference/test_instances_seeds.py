"""Separation rules found on spermparsing validation (issue 15): head-thick seeds, gaps and stubs at the neck,
and segments two heads start on."""

from __future__ import annotations

import cv2
import numpy as np

from spermseg.inference.instances import InstanceOptions, estimate_heads, head_seeds, separate_instances
from spermseg.inference.tracing import _absorb_stubs


def _head(shape: tuple[int, int], rc: tuple[int, int], axes: tuple[int, int] = (14, 10)) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    cv2.ellipse(out, (rc[1], rc[0]), axes, 0, 0, 360, 1, -1)
    return out.astype(bool)


def _line(shape: tuple[int, int], a: tuple[int, int], b: tuple[int, int], width: int = 4) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    cv2.line(out, (a[1], a[0]), (b[1], b[0]), 1, width)
    return out.astype(bool)


def test_a_thick_midpiece_is_not_a_second_head() -> None:
    """A midpiece thick enough to survive the opening (12 px wide, inscribed radius ~6) but thinner than a head
    (radius ~10), behind a thin neck, is no seed: the sperm stays whole instead of splitting at the midpiece."""
    shape = (60, 200)
    head = _head(shape, (30, 24))
    mid = _line(shape, (30, 48), (30, 70), width=12)
    full = head | mid | _line(shape, (30, 30), (30, 190))
    opened = estimate_heads(full)
    assert head_seeds(opened, min_radius=0).max() == 2  # the opening keeps the midpiece as a second blob
    assert head_seeds(opened, min_radius=8).max() == 1
    labels = separate_instances(full)
    assert labels.max() == 1 and labels[30, 180] == labels[30, 24] == labels[30, 50]
    old = separate_instances(full, options=InstanceOptions(min_seed_radius=0))
    assert old.max() == 2 and old[30, 50] != old[30, 24]


def test_a_tail_detached_at_the_neck_still_starts_at_its_head() -> None:
    """The segmentation leaves a 5 px gap at A's neck, and B's tail crosses A's: A keeps its tail (before, the
    3 px reach missed it and the watershed gave it to B through the crossing)."""
    shape = (130, 220)
    ha = _head(shape, (30, 24), (12, 9))
    ta = _line(shape, (30, 42), (30, 210))  # A's head ends at column 36
    hb = _head(shape, (110, 120), (9, 12))
    tb = _line(shape, (97, 120), (4, 120))  # B's tail runs up across A's
    full = ha | ta | hb | tb
    labels = separate_instances(full)
    a, b = labels[30, 24], labels[110, 120]
    assert a != b and a > 0 and b > 0
    assert labels[30, 200] == a and labels[30, 60] == a and labels[10, 120] == b
    old = separate_instances(full, options=InstanceOptions(neck_gap_px=0))
    assert old[30, 200] != old[30, 24]


def test_a_segment_between_two_heads_is_shared() -> None:
    """Two sperm whose tails meet end to end (one skeleton segment from one head to the other): each keeps the
    part next to its head, instead of the first head taking the whole line."""
    shape = (60, 260)
    ha = _head(shape, (30, 20), (12, 9))
    hb = _head(shape, (30, 240), (12, 9))
    full = ha | hb | _line(shape, (30, 30), (30, 230))
    labels = separate_instances(full)
    a, b = labels[30, 20], labels[30, 240]
    assert a != b and labels[30, 50] == a and labels[30, 210] == b
    old = separate_instances(full, options=InstanceOptions(split_shared=False))
    assert old[30, 50] == old[30, 210]


def test_absorb_stubs_attaches_a_fork_next_to_a_head() -> None:
    """A fork joined to a head by a segment shorter than stub_px belongs to the head; a long segment or a stub
    between two heads attaches nothing."""
    segments = np.array([[1, 1, 0, 2, 2, 2, 2, 2, 0, 3, 3]])
    near_crossing = np.array([[0, 1, 1, 1, 0, 0, 0, 2, 2, 3, 3]])
    reach_head = np.array([[1, 1, 0, 1, 0, 0, 0, 0, 0, 1, 2]])
    at_head = np.zeros(4, np.int64)
    _absorb_stubs(segments, near_crossing, reach_head, at_head, stub_px=4)
    assert at_head.tolist() == [0, 1, 0, 0]  # crossing 1 via stub 1; segment 2 is long; stub 3 has two heads


def test_the_midpiece_picks_the_tip_the_own_tail_leaves_from() -> None:
    """With a midpiece mask beside one tip of the head, only that tip scores as the neck (the neck rule alone
    scores both tips of the major axis alike)."""
    from scipy import ndimage as ndi

    from spermseg.inference.tracing import _head_axes, _neck_score, _neck_sides

    shape = (60, 120)
    seeds = _head(shape, (30, 60)).astype(np.int32)
    midpiece = _line(shape, (30, 76), (30, 86), width=6) & ~seeds.astype(bool)
    dist, (iy, ix) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    axes = _head_axes(seeds)
    sides = _neck_sides(midpiece, dist, seeds[iy, ix], 9.0, axes)
    axis = axes[1]
    right, left = np.array([30.0, 76.0]), np.array([30.0, 44.0])
    out_right, out_left = np.array([0.0, 1.0]), np.array([0.0, -1.0])
    assert _neck_score(right, out_right, axis) > 0.9 and _neck_score(left, out_left, axis) > 0.9
    assert _neck_score(right, out_right, axis, sides[1]) > 0.9
    assert _neck_score(left, out_left, axis, sides[1]) == 0.0
    assert _neck_sides(np.zeros(shape, bool), dist, seeds[iy, ix], 9.0, axes) == {}
