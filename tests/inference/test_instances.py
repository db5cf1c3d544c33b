"""Instance separation: touching heads and crossing tails, the fragment rule, and the three methods."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from spermseg.inference.instances import InstanceOptions, estimate_heads, head_seeds, separate_instances


def _sperm(shape: tuple[int, int], head_rc: tuple[int, int], tail_end_rc: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """(head, tail) bool masks of one drawn sperm: an ellipse head (semi-axes 12 x 8) and a 4 px wide tail."""
    head = np.zeros(shape, np.uint8)
    tail = np.zeros(shape, np.uint8)
    r, c = head_rc
    cv2.ellipse(head, (c, r), (12, 8), 0, 0, 360, 1, -1)
    cv2.line(tail, (c + 11, r), (tail_end_rc[1], tail_end_rc[0]), 1, 4)
    return head.astype(bool), tail.astype(bool) & ~head.astype(bool)


def _crossing_scene() -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Two sperm whose heads touch and whose tails cross at ~60 degrees: full, head, per-sperm truth."""
    shape = (128, 140)
    ha, ta = _sperm(shape, (24, 30), (110, 125))
    hb, tb = _sperm(shape, (41, 30), (12, 135))
    assert (ha & hb).sum() == 0 and (cv2.dilate(ha.astype(np.uint8), np.ones((3, 3))) & hb).any()  # touching heads
    assert (ta & tb).sum() > 10  # crossing tails
    truth = [ha | ta, hb | (tb & ~ta)]
    return ha | hb | ta | tb, ha | hb, truth


def _best_iou(labels: np.ndarray, truth: np.ndarray) -> float:
    ids = [i for i in np.unique(labels[truth]) if i]
    return max(((labels == i) & truth).sum() / ((labels == i) | truth).sum() for i in ids)


def test_touching_heads_and_crossing_tails_give_two_whole_sperm() -> None:
    """The skeleton method: two sperm, each with its own whole tail (beyond the crossing, too)."""
    full, head, truth = _crossing_scene()
    labels = separate_instances(full, head)
    assert labels.dtype == np.uint16 and sorted(np.unique(labels)) == [0, 1, 2]
    for t in truth:
        assert _best_iou(labels, t) > 0.9
    # each far tail end belongs to the sperm of its head
    assert labels[108, 122] == labels[24, 30] and labels[14, 132] == labels[41, 30]
    # without a head mask, heads are estimated from the full mask alone
    est = separate_instances(full)
    assert len(np.unique(est)) == 3 and all(_best_iou(est, t) > 0.85 for t in truth)


def test_watershed_and_components_on_the_crossing_scene() -> None:
    """Components merge the pair; watershed separates heads but gives the far tail end to the nearer head."""
    full, head, truth = _crossing_scene()
    assert len(np.unique(separate_instances(full, head, InstanceOptions(method="components")))) == 2
    ws = separate_instances(full, head, InstanceOptions(method="watershed"))
    assert len(np.unique(ws)) == 3
    assert min(_best_iou(ws, t) for t in truth) < min(_best_iou(separate_instances(full, head), t) for t in truth)


def test_fragments_never_become_sperm() -> None:
    """A speck and a short headless piece far from any sperm are dropped; a long headless tail is kept; a small
    piece near a sperm joins it."""
    shape = (100, 160)
    h, t = _sperm(shape, (20, 20), (20, 120))
    full = h | t
    full[80:84, 10:14] = True  # speck: 16 px
    cv2.line(full_u8 := full.astype(np.uint8), (30, 70), (50, 70), 1, 4)  # short headless piece: ~20 px long
    cv2.line(full_u8, (20, 95), (150, 95), 1, 4)  # long free tail: 130 px
    full = full_u8.astype(bool)
    full[19:22, 124:128] = True  # touching the tail end
    labels = separate_instances(full, h)
    assert len(np.unique(labels)) == 3  # the sperm and the long free tail
    assert labels[80, 10] == 0 and labels[70, 40] == 0 and labels[95, 100] > 0 and labels[20, 126] == labels[20, 20]
    assert separate_instances(np.zeros((8, 8), bool)).max() == 0


def test_head_seeds_split_touching_heads_but_not_one_head() -> None:
    full, head, _ = _crossing_scene()
    assert head_seeds(head).max() == 2
    one = np.zeros((40, 40), np.uint8)
    cv2.ellipse(one, (20, 20), (13, 9), 30, 0, 360, 1, -1)
    assert head_seeds(one.astype(bool)).max() == 1
    assert estimate_heads(full).sum() == pytest.approx(head.sum(), rel=0.1)
    with pytest.raises(ValueError, match="unknown instance method"):
        separate_instances(full, head, InstanceOptions(method="nope"))  # type: ignore[arg-type]
