"""Render one frame of a scene: the gray ICSI-like image, the exact part masks, and what the raters need.

Image model (all in fractions of the local background ``B``)::

    I = B * (1 - p * k * ((a + a h) * S - a h * S_halo) + a r * dS/dn) + noise

``S`` is the optical density of every object blurred by its own, spatially varying Gaussian (computed
analytically from the distance fields: a band of width ``w`` blurred by ``sigma`` has the cross-profile
``(erf((d + w/2) / (sqrt(2) sigma)) - erf((d - w/2) / (sqrt(2) sigma))) / 2``). ``S_halo`` is ``S`` convolved
with a Gaussian of the halo width, so ``S_halo - S`` is a rim that integrates to zero: a dark core with a light
halo for ``p = +1`` (or the reverse for ``p = -1``), as in phase contrast. ``a r * dS/dn`` is the relief of
Hoffman modulation / DIC (a directional derivative of the optical thickness along the shear angle) and ``k`` the
weight of absorption: the video's contrast mode (``phase``, ``relief``, ``brightfield``; config.ModeConfig) sets
``a``, ``k``, ``h`` and ``r``. Blur grows along each tail, so its contrast fades with the blur itself, not with an ad
hoc rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from spermseg.data.synth.fields import BlobField, PolylineField, blob_field, polyline_field
from spermseg.data.synth.scene import Debris, Scene, SpermPose, sperm_pose

_SQRT2 = math.sqrt(2.0)
_SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float32)


@dataclass
class SpermFootprint:
    """One rendered sperm, as the raters see it.

    Attributes:
        pose: its geometry at this time.
        tail: distance field of its centreline (midpiece + tail), or None when off the frame.
        head: distance field of its head, or None when off the frame.
        tail_visibility: (N,) contrast of the tail at each centreline vertex (fraction of the background).
        head_visibility: contrast of the head centre.
        mask_width: (N,) width of the truth mask at each vertex, pixels.
        head_inside: whether the head centre lies in the frame.
    """

    pose: SpermPose
    tail: PolylineField | None
    head: BlobField | None
    tail_visibility: np.ndarray
    head_visibility: float
    mask_width: np.ndarray
    head_inside: bool


@dataclass
class DebrisFootprint:
    """A sperm-like artifact a rater may label by mistake (``part`` is "head" or "tail")."""

    part: str
    tail: PolylineField | None = None
    head: BlobField | None = None
    width: float = 2.0


@dataclass
class Frame:
    """One rendered frame.

    Attributes:
        image: (H, W) uint8 gray image.
        truth: ``{"full", "head", "tail"}`` -> (H, W) bool exact masks (tail excludes head; full = head | tail),
            plus ``"instances"`` (uint16, sperm k of the scene = id k + 1 where visible; later sperm are drawn over
            earlier tails, heads over every tail) and ``"parts"`` (uint8 codes: 1 acrosome = front half of the head,
            2 nucleus, 4 midpiece = arc length <= the midpiece's, 5 tail; no vacuoles).
        sperm: footprints of the sperm (in scene order).
        debris: footprints of the sperm-like debris.
        brightness: the frame's background gain (flicker).
    """

    image: np.ndarray
    truth: dict[str, np.ndarray]
    sperm: list[SpermFootprint] = field(default_factory=list)
    debris: list[DebrisFootprint] = field(default_factory=list)
    brightness: float = 1.0


def band_profile(d: np.ndarray, w: np.ndarray | float, sigma: np.ndarray | float) -> np.ndarray:
    """Cross-profile of a band of width ``w`` blurred by a Gaussian of ``sigma`` at signed distance ``d``."""
    from scipy.special import erf

    ad = np.abs(d)
    k = 1.0 / (_SQRT2 * np.asarray(sigma, dtype=np.float32))
    hw = 0.5 * np.asarray(w, dtype=np.float32)
    return (0.5 * (erf((ad + hw) * k) - erf((ad - hw) * k))).astype(np.float32)


def edge_profile(sd: np.ndarray, sigma: np.ndarray | float) -> np.ndarray:
    """Blurred inside indicator of a region at signed distance ``sd`` (negative inside)."""
    from scipy.special import erfc

    return (0.5 * erfc(sd / (_SQRT2 * np.asarray(sigma, dtype=np.float32)))).astype(np.float32)


def peak_band(w: np.ndarray | float, sigma: np.ndarray | float) -> np.ndarray:
    """Centre value of :func:`band_profile`: how much of a thin band survives the blur."""
    from scipy.special import erf

    return erf(np.asarray(w, dtype=np.float64) / (2 * _SQRT2 * np.asarray(sigma, dtype=np.float64)))


def background(scene: Scene, t: float) -> tuple[np.ndarray, float]:
    """Background intensity at time ``t``: level, flicker, gradient, slow texture and the two regions.

    The spatial part is the same for every frame of a video, so it is computed once and kept on the scene.

    Returns:
        (H, W) float32 intensity and the flicker gain of this frame.
    """
    gain = 1.0 + scene.flicker * math.sin(2 * math.pi * t / scene.flicker_period + scene.flicker_phase)
    static = scene.cache.get("background")
    if static is None:
        static = scene.cache["background"] = _static_background(scene)
    return static * np.float32(scene.level * gain), gain


def _static_background(scene: Scene) -> np.ndarray:
    """``1 + relative variation`` of the background, (H, W) float32."""
    h, w = scene.height, scene.width
    xs = np.arange(w, dtype=np.float32)[None, :]
    ys = np.arange(h, dtype=np.float32)[:, None]
    rel = np.float32(scene.gradient[0]) * (xs - np.float32(w / 2)) + np.float32(scene.gradient[1]) * (
        ys - np.float32(h / 2)
    )
    # slow texture: a few low-frequency cosines (a low-rank product, cheaper than upsampling noise)
    k = scene.texture.shape[0]
    fy = np.cos(np.pi * (ys + 0.5) / h * np.arange(k, dtype=np.float32)[None, :]).astype(np.float32)  # (h, k)
    fx = np.cos(np.pi * (xs.T + 0.5) / w * np.arange(k, dtype=np.float32)[None, :]).astype(np.float32)  # (w, k)
    decay = 1.0 / (1.0 + np.arange(k, dtype=np.float32))
    rel = rel + fy @ (scene.texture * decay[:, None] * decay[None, :]) @ fx.T
    reg = scene.region
    if reg:
        if reg["kind"] > 0.5:
            d = np.sqrt((xs - np.float32(reg["cx"])) ** 2 + (ys - np.float32(reg["cy"])) ** 2) - np.float32(
                reg["radius"]
            )
        else:
            d = np.float32(reg["nx"]) * xs + np.float32(reg["ny"]) * ys - np.float32(reg["c"])
        step = np.clip(d / np.float32(reg["edge"]) + 0.5, 0.0, 1.0)
        rel = rel + np.float32(reg["offset"]) * step * step * (3 - 2 * step)
        if reg["line"] != 0.0:
            rel = rel - np.float32(reg["line"]) * np.exp(-0.5 * (d / 1.2) ** 2)
    return (1.0 + rel).astype(np.float32)


def render_frame(scene: Scene, t: float, rng: np.random.Generator, *, min_mask_width: float = 2.0) -> Frame:
    """Render the scene at time ``t``.

    Args:
        scene: the video's scene.
        t: time in seconds.
        rng: the frame's generator (used for the camera noise only, so geometry depends on ``t`` alone).
        min_mask_width: truth tails are at least this wide (pixels).

    Returns:
        The :class:`Frame`.
    """
    import cv2

    h, w = scene.height, scene.width
    dens = np.zeros(h * w, dtype=np.float32)  # S
    head_mask = np.zeros(h * w, dtype=bool)
    tail_mask = np.zeros(h * w, dtype=bool)
    instances = np.zeros(h * w, dtype=np.uint16)  # exact per-sperm truth (tails now, heads after the loop)
    codes = np.zeros(h * w, dtype=np.uint8)
    head_pixels: list[tuple[int, np.ndarray, np.ndarray]] = []
    hs2 = scene.halo_sigma**2
    a, halo = scene.contrast * scene.absorption, scene.halo
    # what the relief adds to a rater's impression of a band: its steepest slope (per pixel, as the kernel)
    relief_gain = scene.contrast * scene.relief / math.sqrt(2 * math.pi)
    sperm_out: list[SpermFootprint] = []

    for sp in scene.sperm:
        pose = sperm_pose(sp, t, scene.psf)
        blur_h = np.sqrt(pose.blur**2 + hs2)
        radius = 2.5 * pose.blur + 0.5 * np.maximum(pose.width, min_mask_width) + 2.5
        tail = polyline_field(pose.points, h, w, radius)
        mask_width = np.maximum(pose.width, min_mask_width)
        if tail is not None:
            wv = np.interp(tail.s, pose.s, pose.width).astype(np.float32)
            dv = np.interp(tail.s, pose.s, pose.density).astype(np.float32)
            bv = np.interp(tail.s, pose.s, pose.blur).astype(np.float32)
            dens[tail.idx] += dv * band_profile(tail.d, wv, bv)
            mw = np.interp(tail.s, pose.s, mask_width).astype(np.float32)
            inside = np.abs(tail.d) <= 0.5 * mw
            tail_mask[tail.idx[inside]] = True
            instances[tail.idx[inside]] = len(sperm_out) + 1
            codes[tail.idx[inside]] = np.where(tail.s[inside] <= pose.midpiece_length, 4, 5)
        a_h, b_h = pose.head_length / 2, pose.head_width / 2
        hb = pose.head_blur
        angle = math.atan2(pose.head_axis[1], pose.head_axis[0])
        head = blob_field(pose.head_center, (a_h, b_h), angle, h, w, 2.5 * hb + 2.5, egg=pose.head_egg)
        if head is not None:
            # acrosome: the front of the head (u > 0) absorbs less
            acro = np.clip((head.u + 0.1) / 0.4, 0.0, 1.0)
            hd = np.float32(pose.head_density) * (1.0 - np.float32(pose.acrosome) * acro)
            dens[head.idx] += hd * edge_profile(head.sd, hb)
            head_mask[head.idx[head.sd <= 0.0]] = True
            head_pixels.append((len(sperm_out) + 1, head.idx[head.sd <= 0.0], head.u[head.sd <= 0.0]))
        # contrast as a rater would judge it: the core darkening of an isolated straight band
        vis = (
            a
            * (
                (1 + halo) * pose.density * peak_band(pose.width, pose.blur)
                - halo * pose.density * peak_band(pose.width, blur_h)
            )
            + relief_gain * pose.density * peak_band(pose.width, pose.blur) / pose.blur
        )
        head_vis = relief_gain * pose.head_density / hb + (
            a
            * pose.head_density
            * (
                (1 + halo) * peak_band(pose.head_width, hb)
                - halo * peak_band(pose.head_width, math.sqrt(hb * hb + hs2))
            )
        )
        cx, cy = pose.head_center
        sperm_out.append(
            SpermFootprint(
                pose=pose,
                tail=tail,
                head=head,
                tail_visibility=vis,
                head_visibility=float(head_vis),
                mask_width=mask_width,
                head_inside=bool(0 <= cx < w and 0 <= cy < h),
            )
        )

    # debris is static: its densities and footprints are rendered once per video
    debris_dens = scene.cache.get("debris")
    if debris_dens is None:
        debris_dens = np.zeros(h * w, dtype=np.float32)
        scene.footprints = [fp for deb in scene.debris if (fp := _render_debris(deb, scene, debris_dens)) is not None]
        scene.cache["debris"] = debris_dens
    dens += debris_dens
    debris_out = list(scene.footprints)

    dens2 = dens.reshape(h, w)
    # the halo: the same densities blurred further (Gaussians compose, so this equals the analytic wider blur)
    halo_img = cv2.GaussianBlur(dens2, (0, 0), scene.halo_sigma, borderType=cv2.BORDER_REPLICATE)
    p = np.float32(scene.polarity)
    # factor = 1 - signal (+ relief), built in place to keep full-frame passes few
    factor = halo_img
    factor *= np.float32(a * halo) * p
    factor -= np.float32(a * (1 + halo)) * p * dens2
    factor += np.float32(1.0)
    if scene.relief > 0:
        ca, sa = math.cos(scene.relief_angle), math.sin(scene.relief_angle)
        kernel = np.float32(scene.relief * scene.contrast / 8.0) * (
            np.float32(ca) * _SOBEL_X + np.float32(sa) * _SOBEL_X.T
        )
        factor += cv2.filter2D(dens2, cv2.CV_32F, kernel, borderType=cv2.BORDER_REPLICATE)
    bg, gain = background(scene, t)
    img = factor
    img *= bg
    # shot noise (variance proportional to the intensity) and read noise
    std = np.maximum(img, 0.0)
    std *= np.float32(scene.shot)
    std += np.float32(scene.read**2)
    np.sqrt(std, out=std)
    std *= rng.standard_normal((h, w), dtype=np.float32)
    img += std
    img *= np.float32(255.0)
    image = np.clip(img, 0, 255, out=img).round().astype(np.uint8)

    head2 = head_mask.reshape(h, w)
    tail2 = tail_mask.reshape(h, w) & ~head2
    for k, idx, u in head_pixels:  # heads are drawn over tails
        instances[idx] = k
        codes[idx] = np.where(u > 0, 1, 2)
    truth = {
        "full": head2 | tail2,
        "head": head2,
        "tail": tail2,
        "instances": instances.reshape(h, w),
        "parts": codes.reshape(h, w),
    }
    return Frame(image=image, truth=truth, sperm=sperm_out, debris=debris_out, brightness=gain)


def _render_debris(deb: Debris, scene: Scene, dens: np.ndarray) -> DebrisFootprint | None:
    """Add one artifact to the density accumulator; return its footprint when it is sperm-like."""
    h, w = scene.height, scene.width
    d = np.float32(deb.density)
    if deb.kind in ("line", "spill"):
        assert deb.points is not None
        f = polyline_field(deb.points, h, w, 2.5 * deb.blur + deb.width / 2 + 2.5)
        if f is None:
            return None
        dens[f.idx] += d * band_profile(f.d, deb.width, deb.blur)
        if deb.sperm_like == "tail":
            return DebrisFootprint(part="tail", tail=f, width=max(deb.width, 2.0))
        return None
    angle = deb.angle
    b = blob_field(
        deb.center, deb.axes, angle, h, w, 2.5 * deb.blur + deb.width + 2.5, egg=deb.egg, harmonics=deb.harmonics
    )
    if b is None:
        return None
    if deb.kind == "bubble":
        # a light interior and a dark ring
        dens[b.idx] += d * (band_profile(b.sd, deb.width, deb.blur) - 0.6 * edge_profile(b.sd, deb.blur))
        return None
    dens[b.idx] += d * edge_profile(b.sd, deb.blur)
    if deb.sperm_like == "head":
        return DebrisFootprint(part="head", head=b)
    return None
