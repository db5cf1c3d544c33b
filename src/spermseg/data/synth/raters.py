"""Models of human raters: noisy head/tail/full masks drawn from a rendered frame.

A rater follows what is visible: it outlines each head and traces each tail with a smoothly varying local
dilation or erosion (|offset| <= 2 px) and a slightly wandering stroke, stops tracing a tail where its contrast
falls below the rater's level (so the blurry tail ends are where raters disagree most), sometimes misses a faint
or out-of-focus sperm or one whose head is outside the frame, and rarely labels sperm-like debris.
"""

from __future__ import annotations

import math

import numpy as np

from spermseg.data.synth.config import RaterConfig
from spermseg.data.synth.render import Frame, SpermFootprint

#: Local dilation/erosion of a rater's outline is kept within this many pixels (per side).
MAX_OFFSET_PX = 2.0


def smooth_noise(
    rng: np.random.Generator,
    x: np.ndarray,
    length: float,
    wavelength: float,
    amplitude: float,
    *,
    periodic: bool = False,
) -> np.ndarray:
    """A smooth random function: Gaussian values at knots ``wavelength`` apart, linearly interpolated.

    Args:
        rng: generator.
        x: (M,) positions where to evaluate (0 .. ``length``; angles 0 .. 2 pi when ``periodic``).
        length: extent of the domain (pixels, or 2 pi when periodic).
        wavelength: knot spacing in the units of ``x`` (clamped so that there are at least 4 knots).
        amplitude: standard deviation of the values.
        periodic: wrap around (for outlines).

    Returns:
        (M,) float32 values.
    """
    n = max(4, int(math.ceil(length / max(wavelength, 1e-6))) + 1)
    knots = rng.standard_normal(n) * amplitude
    if periodic:
        pos = np.linspace(0.0, length, n, endpoint=False)
        return np.interp(x, pos, knots, period=length).astype(np.float32)
    pos = np.linspace(0.0, length, n)
    return np.interp(x, pos, knots).astype(np.float32)


def tail_end(fp: SpermFootprint, threshold: float) -> float:
    """Arc length at which a rater stops tracing the tail: where its contrast first drops below ``threshold``.

    The midpiece is always followed when visible at all; returns the full length when the tail never fades.
    """
    pose = fp.pose
    vis = fp.tail_visibility
    below = np.nonzero(vis < threshold)[0]
    if below.size == 0:
        return float(pose.s[-1])
    i = int(below[0])
    if i == 0:
        return 0.0
    # linear interpolation between the last visible and the first invisible vertex
    v0, v1 = float(vis[i - 1]), float(vis[i])
    frac = (v0 - threshold) / max(v0 - v1, 1e-9)
    return float(pose.s[i - 1] + frac * (pose.s[i] - pose.s[i - 1]))


def rate_frame(frame: Frame, rater: RaterConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw one rater's masks of a frame.

    Args:
        frame: the rendered frame (its footprints).
        rater: the rater's parameters.
        rng: the generator of this (frame, rater) pair.

    Returns:
        ``{"full", "head", "tail"}`` -> (H, W) bool; tail excludes head, full = head | tail.
    """
    h, w = frame.image.shape
    head = np.zeros(h * w, dtype=bool)
    tail = np.zeros(h * w, dtype=bool)
    for fp in frame.sperm:
        # every sperm consumes the same random draws, so one sperm's fate does not shift the others'
        u_miss = rng.random()
        thr = rater.tail_threshold * math.exp(rater.tail_threshold_jitter * rng.standard_normal())
        overshoot = rater.tail_end_overshoot_px * rng.standard_normal() if rater.tail_end_overshoot_px else 0.0
        sub = np.random.default_rng(rng.integers(0, 2**63))
        if fp.tail is None and fp.head is None:
            continue
        p_keep = 1.0 - rater.base_miss_probability
        if fp.head_visibility < rater.miss_threshold:
            p_keep *= 1.0 - rater.miss_probability
        if not fp.head_inside:
            p_keep *= 1.0 - rater.cut_miss_probability
        if u_miss >= p_keep:
            continue
        if fp.head is not None:
            _draw_head(head, fp, rater, sub)
        if fp.tail is not None:
            _draw_tail(tail, fp, rater, sub, tail_end(fp, thr) + overshoot)
    for deb in frame.debris:
        u = rng.random()
        sub = np.random.default_rng(rng.integers(0, 2**63))
        if u >= rater.false_positive_probability:
            continue
        if deb.part == "head" and deb.head is not None:
            off = _clip_offset(
                rater.width_bias_px
                + smooth_noise(sub, deb.head.theta, 2 * math.pi, 1.0, rater.head_contour_noise_px, periodic=True)
            )
            head[deb.head.idx[deb.head.sd <= off]] = True
        elif deb.part == "tail" and deb.tail is not None:
            # a rater who mistakes a line for a tail traces a tail-long piece of it
            f = deb.tail
            start = sub.uniform(0.0, max(float(f.s.max()) - 60.0, 0.0))
            sel = (f.s >= start) & (f.s <= start + sub.uniform(30.0, 120.0))
            half = 0.5 * deb.width + rater.width_bias_px
            tail[f.idx[sel & (np.abs(f.d) <= half)]] = True
    head2 = head.reshape(h, w)
    tail2 = tail.reshape(h, w) & ~head2
    return {"full": head2 | tail2, "head": head2, "tail": tail2}


def _clip_offset(x: np.ndarray | float) -> np.ndarray:
    return np.clip(x, -MAX_OFFSET_PX, MAX_OFFSET_PX)


def _draw_head(out: np.ndarray, fp: SpermFootprint, rater: RaterConfig, rng: np.random.Generator) -> None:
    """Outline the head with a smooth local dilation/erosion around it (periodic in the polar angle)."""
    f = fp.head
    assert f is not None
    perimeter = math.pi * (fp.pose.head_length + fp.pose.head_width) / 2
    wl = 2 * math.pi * rater.contour_wavelength_px / max(perimeter, 1e-6)
    scale_off = (rater.head_scale - 1.0) * fp.pose.head_width / 2
    off = _clip_offset(
        rater.width_bias_px
        + scale_off
        + smooth_noise(rng, f.theta, 2 * math.pi, wl, rater.head_contour_noise_px, periodic=True)
    )
    out[f.idx[f.sd <= off]] = True


def _draw_tail(out: np.ndarray, fp: SpermFootprint, rater: RaterConfig, rng: np.random.Generator, s_end: float) -> None:
    """Trace the tail up to ``s_end`` with a wandering stroke of locally varying width."""
    f = fp.tail
    assert f is not None
    if s_end <= 0.0:
        return
    pose = fp.pose
    length = float(pose.s[-1])
    width = np.interp(f.s, pose.s, fp.mask_width).astype(np.float32)
    dil = _clip_offset(
        rater.width_bias_px + smooth_noise(rng, f.s, length, rater.contour_wavelength_px, rater.contour_noise_px)
    )
    shift = smooth_noise(rng, f.s, length, rater.contour_wavelength_px * 1.5, rater.centerline_jitter_px)
    # the stroke never gets thinner than one pixel
    half = np.maximum(0.5 * width + dil, 0.5)
    sel = (np.abs(f.d - shift) <= half) & (f.s <= s_end)
    out[f.idx[sel]] = True
