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
    """A speck and a short headless piece far from any sperm are dropped; a long headless tail is dropped by
    default (raters of whole sperm do not label it) and kept with keep_headless; a small piece near a sperm joins
    it."""
    shape = (100, 160)
    h, t = _sperm(shape, (20, 20), (20, 120))
    full = h | t
    full[80:84, 10:14] = True  # speck: 16 px
    cv2.line(full_u8 := full.astype(np.uint8), (30, 70), (50, 70), 1, 4)  # short headless piece: ~20 px long
    cv2.line(full_u8, (20, 95), (150, 95), 1, 4)  # long free tail: 130 px
    full = full_u8.astype(bool)
    full[19:22, 124:128] = True  # touching the tail end
    kept = separate_instances(full, h, InstanceOptions(keep_headless=True))
    assert len(np.unique(kept)) == 3  # the sperm and the long free tail
    assert kept[80, 10] == 0 and kept[70, 40] == 0 and kept[95, 100] > 0 and kept[20, 126] == kept[20, 20]
    whole = separate_instances(full, h)  # the default: a sperm has a head
    assert len(np.unique(whole)) == 2 and whole[95, 100] == 0 and whole[20, 126] == whole[20, 20] > 0
    assert separate_instances(np.zeros((8, 8), bool)).max() == 0


def test_a_tail_no_head_reaches_joins_no_sperm() -> None:
    """A long headless tail crossing a sperm's tail (a sperm the raters did not label, its head outside the image)
    is nobody's: the sperm keeps its own tail only, and the crossing tail becomes background instead of being
    handed to the nearest sperm (orphan_px; 0 restores the old rule). A headless piece as long as that near a
    sperm's tail end does not join it either."""
    shape = (140, 200)
    h, t = _sperm(shape, (70, 20), (70, 190))  # horizontal sperm
    other = np.zeros(shape, np.uint8)
    cv2.line(other, (110, 2), (130, 137), 1, 4)  # a steep headless tail crossing it
    full = h | t | other.astype(bool)
    labels = separate_instances(full, h)
    truth = h | t
    assert sorted(np.unique(labels)) == [0, 1]
    assert _best_iou(labels, truth) > 0.9
    assert labels[10, 111] == 0 and labels[130, 129] == 0  # both ends of the crossing tail
    old = separate_instances(full, h, InstanceOptions(orphan_px=0))
    assert old[10, 111] == old[70, 20] and _best_iou(old, truth) < 0.8  # the old rule: the sperm took it
    # a disconnected 60 px headless tail 8 px beyond the tail end (within join_distance, not straight on)
    far = np.zeros(shape, np.uint8)
    cv2.line(far, (196, 60), (196, 0), 1, 4)
    piece = separate_instances(h | t | far.astype(bool), h)
    assert piece[30, 196] == 0 and piece[70, 20] > 0


def test_head_seeds_split_touching_heads_but_not_one_head() -> None:
    full, head, _ = _crossing_scene()
    assert head_seeds(head).max() == 2
    one = np.zeros((40, 40), np.uint8)
    cv2.ellipse(one, (20, 20), (13, 9), 30, 0, 360, 1, -1)
    assert head_seeds(one.astype(bool)).max() == 1
    assert estimate_heads(full).sum() == pytest.approx(head.sum(), rel=0.1)
    with pytest.raises(ValueError, match="unknown instance method"):
        separate_instances(full, head, InstanceOptions(method="nope"))  # type: ignore[arg-type]


def _labels_at(labels: np.ndarray, points: list[tuple[int, int]]) -> list[int]:
    return [int(labels[r, c]) for r, c in points]


def test_tail_passing_over_another_head_keeps_both_sides() -> None:
    """A tail that runs over another sperm's head is cut by that head; the pieces are paired through it."""
    shape = (120, 220)
    ha, ta = _sperm(shape, (60, 20), (60, 210))  # long horizontal tail
    hb = np.zeros(shape, np.uint8)
    cv2.ellipse(hb, (110, 60), (8, 12), 0, 0, 360, 1, -1)  # upright head on A's tail
    hb = hb.astype(bool)
    tb = np.zeros(shape, np.uint8)
    cv2.line(tb, (110, 71), (110, 118), 1, 4)  # B's own tail leaves its lower tip
    tb = tb.astype(bool) & ~hb
    full = ha | ta | hb | tb
    labels = separate_instances(full, ha | hb)
    a, b = labels[60, 20], labels[60, 110]
    assert a != b and a > 0 and b > 0
    assert _labels_at(labels, [(60, 80), (60, 140), (60, 200)]) == [a, a, a]  # both sides of B's head
    assert _labels_at(labels, [(90, 110), (115, 110)]) == [b, b]
    off = separate_instances(full, ha | hb, InstanceOptions(head_pass_px=0))
    assert off[60, 200] != off[60, 20]  # without the pairing through heads the far side is lost


def test_gap_in_a_tail_is_bridged() -> None:
    """A tail broken by a 20 px gap (beyond join_distance) continues straight across it."""
    shape = (60, 240)
    h, t = _sperm(shape, (30, 20), (30, 230))
    full = h | t
    full[:, 120:140] = False  # the segmentation lost 20 px of the tail
    labels = separate_instances(full, h)
    assert len(np.unique(labels)) == 2 and labels[30, 200] == labels[30, 20]
    assert separate_instances(full, h, InstanceOptions(adopt_px=0))[30, 200] == labels[30, 20]  # the gap rule alone
    off = separate_instances(full, h, InstanceOptions(gap_px=0, adopt_px=0))  # adopt_px bridges it too
    assert off[30, 200] != off[30, 20]


def test_own_tail_starts_at_the_neck() -> None:
    """A long tail of another sperm ending at a head's flank is not taken for that head's own (shorter) tail."""
    shape = (160, 200)
    hb = np.zeros(shape, np.uint8)
    cv2.ellipse(hb, (100, 40), (12, 8), 0, 0, 360, 1, -1)  # head B, major axis horizontal
    tb = np.zeros(shape, np.uint8)
    cv2.line(tb, (111, 40), (170, 40), 1, 4)  # B's own tail at its neck: ~60 px
    ha, ta = _sperm(shape, (140, 20), (140, 40))
    ta_u8 = np.zeros(shape, np.uint8)
    cv2.line(ta_u8, (31, 140), (100, 49), 1, 4)  # A's tail ends on B's lower flank: ~115 px
    hb_b = hb.astype(bool)
    full = hb_b | ha | tb.astype(bool) | ta_u8.astype(bool)
    labels = separate_instances(full, hb_b | ha)
    a, b = labels[140, 20], labels[40, 100]
    assert a != b and a > 0 and b > 0
    assert labels[40, 160] == b and labels[95, 65] == a


def test_options_scaled_to_another_image_scale() -> None:
    """scaled() multiplies the separation's lengths (not the size filters, the seed radius or the angles)."""
    from spermseg.inference.instances import InstanceOptions

    base = InstanceOptions()
    half = base.scaled(0.5)
    assert half.neck_gap_px == base.neck_gap_px / 2 and half.head_pass_px == base.head_pass_px / 2
    assert half.stub_px == base.stub_px / 2 and half.gap_px == base.gap_px / 2
    assert half.junction_merge == base.junction_merge / 2 and half.direction_px == 5
    assert (half.min_area, half.head_radius, half.min_tail_length) == (base.min_area, 5, base.min_tail_length)
    assert half.max_turn_deg == base.max_turn_deg and half.min_seed_radius == base.min_seed_radius


def test_a_broken_tail_continues_into_the_piece_beyond_a_crossing() -> None:
    """A tail broken just before another (headless) tail crosses it: its far piece starts at the crossing, where
    the gap rule (free ends only) cannot reach it and the crossing pairs the other tail straight through. The
    piece continues the traced tail straight, so it is adopted (adopt_px); without the rule it belongs to nobody."""
    shape = (120, 220)
    h, t = _sperm(shape, (60, 20), (60, 100))  # tail up to x = 100
    beyond = np.zeros(shape, np.uint8)
    cv2.line(beyond, (118, 60), (210, 60), 1, 4)  # the rest of the tail, after an 18 px gap
    cv2.line(beyond, (118, 2), (118, 117), 1, 4)  # a headless tail crossing where the piece starts
    full = h | t | beyond.astype(bool)
    labels = separate_instances(full, h)
    sperm = labels[60, 20]
    assert sperm > 0 and _labels_at(labels, [(60, 90), (60, 160), (60, 205)]) == [sperm] * 3
    assert labels[10, 118] == 0 and labels[110, 118] == 0  # the crossing tail stays nobody's
    off = separate_instances(full, h, InstanceOptions(adopt_px=0))
    assert off[60, 160] == 0 and off[60, 90] == off[60, 20]
