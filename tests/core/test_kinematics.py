"""Kinematics on analytic paths against hand-computed values (spermseg.kinematics)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spermseg.kinematics import (
    KinematicsConfig,
    alh_bcf,
    average_path,
    beat_frequency,
    classify,
    track_kinematics,
    window_frames,
)


def test_straight_line_all_velocities_equal_and_no_lateral_motion() -> None:
    """A head moving at 20 um/s on a line: VCL = VSL = VAP = 20, LIN = STR = WOB = 1, ALH = BCF = 0."""
    frames = np.arange(50)
    xy = np.stack([20.0 * frames / 25.0, np.full(50, 3.0)], 1)
    k = track_kinematics(frames, xy, fps=25.0)
    for key in ("vcl_um_s", "vsl_um_s", "vap_um_s"):
        assert k[key] == pytest.approx(20.0, rel=1e-9)
    for key in ("lin", "str", "wob"):
        assert k[key] == pytest.approx(1.0, rel=1e-9)
    assert k["alh_um"] == 0.0 and k["bcf_hz"] == 0.0
    assert k["n_frames"] == 50 and k["class"] == "progressive"


def test_full_circle_vcl_is_the_inscribed_polygon_and_vsl_is_zero() -> None:
    """Radius 10 um, pi rad/s, 2 s at 25 fps: 50 chords of 2 R sin(pi / 50); back at the start, so VSL = 0."""
    frames = np.arange(51)
    a = math.pi * frames / 25.0
    xy = np.stack([10 * np.cos(a), 10 * np.sin(a)], 1)
    k = track_kinematics(frames, xy, fps=25.0)
    assert k["vcl_um_s"] == pytest.approx(50 * 20 * math.sin(math.pi / 50) / 2.0, rel=1e-9)  # 31.395
    assert k["vsl_um_s"] == pytest.approx(0.0, abs=1e-9)
    assert k["lin"] == pytest.approx(0.0, abs=1e-9)
    # a 5-frame average of a circle is a smaller concentric circle: VAP < VCL but close (cos(2pi/25)-ish)
    assert 0.95 * k["vcl_um_s"] < k["vap_um_s"] < k["vcl_um_s"]


def test_sinusoid_about_a_line_gives_alh_bcf_by_hand() -> None:
    """y = 2 sin(2 pi 4 t) while x = 30 t, 100 fps, t_k = (k + 0.25) / 100, k = 0..100, window 0.25 s = 25 frames.

    The 25-frame mean of one full period is 0, so the average path is the x axis and VAP = 30. Valid average points:
    k = 12..88 (77 points, 0.76 s). Zeros of the sine at k = 12.25, 24.75, ..., 87.25: 7 crossings -> BCF = 7/0.76.
    Complete half-cycles peak at k = 18.5, 31, 43.5, 56, 68.5, 81: three exactly on a sample (|y| = 2), three half
    a sample away (|y| = 2 cos(pi/25)), so ALH = 2 * mean = 2 (1 + cos(pi/25)).
    """
    frames = np.arange(101)
    t = (frames + 0.25) / 100.0
    xy = np.stack([30.0 * t, 2.0 * np.sin(2 * math.pi * 4 * t)], 1)
    cfg = KinematicsConfig(vap_window_s=0.25)
    assert window_frames(cfg.vap_window_s, 0.01) == 25
    k = track_kinematics(frames, xy, fps=100.0, cfg=cfg)
    assert k["vap_um_s"] == pytest.approx(30.0, rel=1e-9)
    assert k["bcf_hz"] == pytest.approx(7 / 0.76, rel=1e-9)
    assert k["alh_um"] == pytest.approx(2 * (1 + math.cos(math.pi / 25)), rel=1e-9)
    assert k["vsl_um_s"] == pytest.approx(30.0, rel=1e-9)  # y(t_100) = y(t_0): 8 full periods later
    steps = np.hypot(0.3, np.diff(xy[:, 1]))
    assert k["vcl_um_s"] == pytest.approx(steps.sum() / 1.0, rel=1e-12)
    assert k["wob"] == pytest.approx(30.0 / k["vcl_um_s"], rel=1e-9)


def test_average_path_keeps_only_complete_windows() -> None:
    """A 10-point path with a 5-point window has 6 average points, each the mean of its window."""
    xy = np.stack([np.arange(10.0) ** 2, np.zeros(10)], 1)
    avg = average_path(xy, 5)
    assert avg.shape == (6, 2)
    assert avg[0, 0] == pytest.approx(np.mean(np.arange(5.0) ** 2))
    assert average_path(xy[:4], 5).shape == (0, 2)


def test_alh_without_complete_half_cycles_uses_every_run() -> None:
    """Distances [1, 2, -1, -3]: two runs (peaks 2 and 3) -> ALH = 2 * 2.5; one crossing in 3 dt."""
    alh, bcf = alh_bcf(np.array([1.0, 2.0, -1.0, -3.0]), dt=0.5)
    assert alh == pytest.approx(5.0)
    assert bcf == pytest.approx(1 / 1.5)


def test_beat_frequency_of_a_turning_sinusoid() -> None:
    """A 3.7 Hz oscillation of 0.3 rad on top of a slow turn (0.5 rad/s), 3 s at 25 fps: 3.7 Hz within 0.05."""
    t = np.arange(75) / 25.0
    angle = 0.3 * np.sin(2 * math.pi * 3.7 * t + 1.0) + 0.5 * t
    assert beat_frequency(t, angle) == pytest.approx(3.7, abs=0.05)
    # missed frames are interpolated: every third frame dropped
    keep = np.arange(75) % 3 != 1
    assert beat_frequency(t[keep], angle[keep], dt=0.04) == pytest.approx(3.7, abs=0.1)


def test_beat_frequency_detrend_removes_level_shifts_of_a_wrong_tail_end() -> None:
    """A 3.2 Hz beat whose angle jumps by 1.5 rad for two stretches of 15 and 18 frames (the far end traced along
    another sperm after a crossing): the linear detrend alone finds the jumps' low frequency, the 1 s running
    median (it follows stretches longer than half its window) finds the beat; and frames with a short traced tail
    are left out by track_kinematics."""
    t = np.arange(75) / 25.0
    angle = 0.3 * np.sin(2 * math.pi * 3.2 * t)
    for a, b in ((0, 15), (40, 58)):
        angle[a:b] += 1.5
    assert abs(beat_frequency(t, angle) - 3.2) > 1.0
    assert beat_frequency(t, angle, detrend_s=1.0) == pytest.approx(3.2, abs=0.1)
    # a pure sinusoid is unchanged by the detrend; a peak at the band's edge is not interpolated out of it
    assert beat_frequency(t, 0.3 * np.sin(2 * math.pi * 3.2 * t), detrend_s=1.0) == pytest.approx(3.2, abs=0.05)
    assert beat_frequency(t, 0.5 * t**2, min_hz=0.5) >= 0.5
    # track_kinematics: 12 frames whose tail is traced 10 um long (another sperm took the rest) carry a wrong angle
    clean = 0.3 * np.sin(2 * math.pi * 3.2 * t)
    bad, length = clean.copy(), np.full(75, 50.0)
    bad[20:32], length[20:32] = 2.5, 10.0
    xy = np.stack([5.0 * t, np.zeros_like(t)], axis=1)
    cfg = KinematicsConfig(beat_detrend_s=0.0)
    kept = track_kinematics(np.arange(75), xy, 25.0, cfg, tail_angle=bad, tail_length_um=length)["beat_hz"]
    assert kept == pytest.approx(3.2, abs=0.15)
    off = KinematicsConfig(beat_detrend_s=0.0, beat_min_tail_fraction=0.0)
    used = track_kinematics(np.arange(75), xy, 25.0, off, tail_angle=bad, tail_length_um=length)["beat_hz"]
    assert abs(used - 3.2) > 0.15


def test_beat_frequency_no_beat_and_too_short() -> None:
    """An oscillation below the amplitude threshold is no beat (0.0); fewer than 8 samples are undefined (NaN)."""
    t = np.arange(75) / 25.0
    assert beat_frequency(t, 0.02 * np.sin(2 * math.pi * 3 * t), min_amplitude=0.08) == 0.0
    assert math.isnan(beat_frequency(t[:5], np.zeros(5)))


def test_classify_who_grades_with_config_thresholds() -> None:
    """Immotile: no beat and VCL below the limit; progressive from VAP 5 um/s; STR rule only when set."""
    cfg = KinematicsConfig()
    assert classify(0.5, 0.2, 0.1, 0.0, cfg) == "immotile"
    assert classify(0.5, 0.2, 0.1, 4.0, cfg) == "non-progressive"  # beating on the spot
    assert classify(30.0, 20.0, 0.3, 4.0, cfg) == "progressive"
    assert classify(30.0, 20.0, 0.3, 4.0, KinematicsConfig(progressive_min_str=0.8)) == "non-progressive"
    assert classify(30.0, 4.0, 0.9, 4.0, cfg) == "non-progressive"
    assert classify(float("nan"), 1.0, 1.0, 1.0, cfg) == ""


def test_short_track_has_undefined_measures() -> None:
    """Below min_frames every velocity is NaN and the class is empty."""
    k = track_kinematics(np.arange(3), np.zeros((3, 2)), fps=25.0)
    assert math.isnan(k["vcl_um_s"]) and k["class"] == "" and k["n_frames"] == 3
