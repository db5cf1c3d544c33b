"""A video's scene: the sperm, the static debris and the imaging conditions, sampled once per video.

A scene is pure data drawn from one ``numpy.random.Generator``; :func:`sperm_pose` then gives the geometry of a
sperm at any time ``t`` (seconds), so that frames of one video show the same sperm swimming and beating, and
dataset frames and video frames of the same video agree. Coordinates are pixels, ``x`` = column, ``y`` = row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spermseg.data.synth.config import MODES, ModeConfig, Range, SynthConfig


def _u(rng: np.random.Generator, r: Range) -> float:
    """One uniform sample from a ``(low, high)`` range (``low == high`` gives the constant)."""
    lo, hi = float(r[0]), float(r[1])
    return lo if hi <= lo else float(rng.uniform(lo, hi))


def _ui(rng: np.random.Generator, r: tuple[int, int]) -> int:
    """One integer sample from an inclusive ``(low, high)`` range."""
    lo, hi = int(r[0]), int(r[1])
    return lo if hi <= lo else int(rng.integers(lo, hi + 1))


@dataclass
class Sperm:
    """One sperm: fixed shape parameters (pixels) and its motion (pixels, radians, seconds)."""

    neck: tuple[float, float]  # neck position at t = 0
    heading: float  # direction the head points to at t = 0 (radians)
    speed: float  # px / s
    turn_rate: float  # rad / s
    head_length: float
    head_width: float
    egg: float
    acrosome: float
    midpiece_length: float
    midpiece_width: float
    tail_length: float  # flagellum without the midpiece
    tail_width_start: float
    tail_width_end: float
    head_density: float
    midpiece_density: float
    tail_density_start: float
    tail_density_end: float
    wave_amplitude: float  # rad
    wavenumber: float  # rad / px
    wave_phase: float
    curvature: float  # rad / px
    beat_omega: float  # rad / s
    yaw: float
    yaw_phase: float
    focus_blur: float  # px
    focus_drift: float  # px, amplitude of a slow focus change
    focus_period: float  # s
    focus_phase: float
    tail_end_blur: float  # px
    tail_blur_exponent: float
    tail_fade: float
    n_points: int  # centreline vertices from the neck to the tail tip


@dataclass
class Debris:
    """A static artifact. ``kind`` is one of line, spill, stain, head, bubble.

    Strokes (line, spill) use ``points`` (N, 2) and ``width``; blobs (stain, head, bubble) use ``center``,
    ``axes`` (semi-axes), ``angle``, ``egg`` and ``harmonics`` (radial modulation, (K, 2) amplitude/phase for
    orders 2..K+1). ``sperm_like`` names the part a rater may mistake it for ("head", "tail" or "").
    """

    kind: str
    density: float
    blur: float
    points: np.ndarray | None = None
    width: float = 0.0
    center: tuple[float, float] = (0.0, 0.0)
    axes: tuple[float, float] = (1.0, 1.0)
    angle: float = 0.0
    egg: float = 0.0
    harmonics: np.ndarray | None = None
    sperm_like: str = ""


@dataclass
class Scene:
    """Everything fixed within one video."""

    height: int
    width: int
    sperm: list[Sperm]
    debris: list[Debris]
    # background
    level: float
    gradient: tuple[float, float]  # intensity change per pixel along x and y (fraction of level)
    texture: np.ndarray  # (k, k) coefficients of low-frequency cosines (fraction of level)
    flicker: float
    flicker_period: float
    flicker_phase: float
    region: dict[str, float] = field(default_factory=dict)  # empty: no second region
    # imaging: pixel size and contrast mode (config.AppearanceConfig)
    pixel_size_um: float = 0.3
    mode: str = "phase"
    psf: float = 0.7
    contrast: float = 0.25
    absorption: float = 1.0  # weight of the absorption term (relief contrast sees mostly the gradient)
    polarity: float = 1.0  # +1 dark core with light rim, -1 the reverse
    halo: float = 0.5
    halo_sigma: float = 2.0
    relief: float = 0.0
    relief_angle: float = 0.0
    # camera
    shot: float = 0.001
    read: float = 0.008
    # per-video results that do not change between frames (e.g. the static background), filled on first use
    cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    footprints: list[Any] = field(default_factory=list, repr=False, compare=False)  # sperm-like debris, rendered


@dataclass
class SpermPose:
    """The geometry of one sperm at one time.

    Attributes:
        points: (N, 2) centreline from the neck (index 0) to the tail tip, pixels (x, y).
        s: (N,) arc length from the neck, pixels.
        width: (N,) physical width (midpiece, then a tapering tail), pixels.
        density: (N,) optical density.
        blur: (N,) Gaussian blur sigma, pixels (grows toward the tail end).
        head_center, head_axis: centre of the head and unit vector from the neck toward the head tip.
        head_length, head_width, head_egg, head_density, head_blur, acrosome: head shape and appearance.
        midpiece_length: arc length at which the midpiece ends.
    """

    points: np.ndarray
    s: np.ndarray
    width: np.ndarray
    density: np.ndarray
    blur: np.ndarray
    head_center: tuple[float, float]
    head_axis: tuple[float, float]
    head_length: float
    head_width: float
    head_egg: float
    head_density: float
    head_blur: float
    acrosome: float
    midpiece_length: float


def sample_scene(cfg: SynthConfig, rng: np.random.Generator) -> Scene:
    """Draw one video's scene.

    Args:
        cfg: generator parameters.
        rng: the video's generator (e.g. ``np.random.default_rng([seed, video_id, 0])``).

    Returns:
        A :class:`Scene` for frames of size ``(cfg.height, cfg.width)``.
    """
    h, w = int(cfg.height), int(cfg.width)
    bg, op, nz = cfg.background, cfg.optics, cfg.noise
    mode = scene_mode(cfg, rng)
    look: ModeConfig = getattr(cfg.appearance, mode)
    px = _u(rng, look.pixel_size_um) if cfg.pixel_size_um is None else float(cfg.pixel_size_um)
    blur_scale = op.reference_pixel_size_um / px  # the same optics span more pixels at a finer pixel size
    level = _u(rng, look.background_level)
    grad = _u(rng, bg.gradient)
    gdir = rng.uniform(0, 2 * math.pi)
    diag = math.hypot(h, w)
    gradient = (grad * math.cos(gdir) / diag, grad * math.sin(gdir) / diag)
    texture = (rng.standard_normal((6, 6)) * _u(rng, bg.texture)).astype(np.float32)
    region: dict[str, float] = {}
    if rng.random() < bg.region_probability:
        region = _sample_region(rng, h, w, bg.region_curved_probability)
        region["offset"] = _u(rng, bg.region_offset) * rng.choice([-1.0, 1.0])
        region["line"] = _u(rng, bg.region_edge_line) * rng.choice([-1.0, 1.0])
    scene = Scene(
        height=h,
        width=w,
        sperm=[],
        debris=[],
        level=level,
        gradient=gradient,
        texture=texture,
        flicker=_u(rng, bg.flicker),
        flicker_period=_u(rng, bg.flicker_period_s),
        flicker_phase=rng.uniform(0, 2 * math.pi),
        region=region,
        pixel_size_um=px,
        mode=mode,
        psf=_u(rng, op.psf_sigma_px) * blur_scale,
        contrast=_u(rng, look.contrast),
        absorption=_u(rng, look.absorption),
        polarity=1.0 if rng.random() < look.dark_core_probability else -1.0,
        halo=_u(rng, look.halo_strength),
        halo_sigma=_u(rng, op.halo_sigma_px) * blur_scale,
        relief=_u(rng, look.relief),
        relief_angle=rng.uniform(0, 2 * math.pi),
        shot=_u(rng, nz.shot) * look.noise_scale**2,
        read=_u(rng, nz.read) * look.noise_scale,
    )
    tail_scale = _u(rng, look.tail_density_scale)
    scene.sperm = _sample_sperm(cfg, rng, h, w, px, blur_scale * look.defocus_scale, tail_scale)
    scene.debris = _sample_debris(cfg, rng, h, w, px, scene.psf, blur_scale, look.bubbles)
    scene.debris += _sample_specks(cfg, rng, h, w, px, scene.psf, look.specks)
    return scene


def scene_mode(cfg: SynthConfig, rng: np.random.Generator) -> str:
    """The contrast mode of one video: ``appearance.mode``, or a draw from ``mix_weights`` for ``mix``."""
    mode = cfg.appearance.mode
    if mode != "mix":
        return mode
    weights = np.asarray(cfg.appearance.mix_weights, dtype=float)
    return MODES[int(rng.choice(len(MODES), p=weights / weights.sum()))]


def _sample_region(rng: np.random.Generator, h: int, w: int, curved_p: float) -> dict[str, float]:
    """A straight or circular edge crossing the frame (pipette or dish border)."""
    cx, cy = rng.uniform(0.2 * w, 0.8 * w), rng.uniform(0.2 * h, 0.8 * h)
    ang = rng.uniform(0, 2 * math.pi)
    nx, ny = math.cos(ang), math.sin(ang)
    if rng.random() < curved_p:
        radius = rng.uniform(0.8, 3.0) * max(h, w)
        # the circle passes through (cx, cy) with its centre along the normal
        return {
            "kind": 1.0,
            "cx": cx - nx * radius,
            "cy": cy - ny * radius,
            "radius": radius,
            "edge": rng.uniform(1.0, 6.0),
        }
    return {"kind": 0.0, "nx": nx, "ny": ny, "c": nx * cx + ny * cy, "edge": rng.uniform(1.0, 6.0)}


def _sample_sperm(
    cfg: SynthConfig, rng: np.random.Generator, h: int, w: int, px: float, defocus_scale: float, tail_scale: float
) -> list[Sperm]:
    """The sperm of a scene; ``defocus_scale`` multiplies focus blurs (pixels), ``tail_scale`` tail densities."""
    sc, op = cfg.sperm, cfg.optics
    n = _ui(rng, sc.count)
    margin = sc.border_margin_um / px
    # a group: heads around one point, so that heads touch and tails cross
    n_group = 0
    gx = gy = 0.0
    if n >= 2 and rng.random() < sc.group_probability:
        n_group = min(n, _ui(rng, sc.group_size))
        gx, gy = rng.uniform(0.15 * w, 0.85 * w), rng.uniform(0.15 * h, 0.85 * h)
    out: list[Sperm] = []
    for i in range(n):
        heading = rng.uniform(0, 2 * math.pi)
        head_length = _u(rng, sc.head_length_um) / px
        motile = rng.random() >= sc.immotile_fraction
        speed = _u(rng, sc.speed_um_s) / px if motile else 0.0
        turn = _u(rng, sc.turn_rate_rad_s) * (1.0 if rng.random() < 0.5 else -1.0) if motile else 0.0
        if i < n_group:
            r = sc.group_radius_um / px * math.sqrt(rng.random())
            a = rng.uniform(0, 2 * math.pi)
            hx, hy = gx + r * math.cos(a), gy + r * math.sin(a)
            neck = (hx - math.cos(heading) * head_length / 2, hy - math.sin(heading) * head_length / 2)
        else:
            # the centre of the swimming circle lies in (or just outside) the frame, so a sperm stays in view
            # for the whole video instead of leaving it after a few seconds
            cx, cy = rng.uniform(-margin, w + margin), rng.uniform(-margin, h + margin)
            rad = speed / turn if turn else 0.0
            neck = (cx + rad * math.sin(heading), cy - rad * math.cos(heading))
        tail_length = _u(rng, sc.tail_length_um) / px
        midpiece_length = _u(rng, sc.midpiece_length_um) / px
        total_um = (tail_length + midpiece_length) * px
        far = rng.random() < op.defocus_tail_fraction
        head_density = _u(rng, sc.head_density)
        tail_start = _u(rng, sc.tail_density_start)
        out.append(
            Sperm(
                neck=neck,
                heading=heading,
                speed=speed,
                turn_rate=turn,
                head_length=head_length,
                head_width=_u(rng, sc.head_width_um) / px,
                egg=_u(rng, sc.head_egg),
                acrosome=_u(rng, sc.acrosome_lightness),
                midpiece_length=midpiece_length,
                midpiece_width=_u(rng, sc.midpiece_width_um) / px,
                tail_length=tail_length,
                tail_width_start=_u(rng, sc.tail_width_start_um) / px,
                tail_width_end=_u(rng, sc.tail_width_end_um) / px,
                head_density=head_density,
                midpiece_density=0.5 * (head_density + tail_start) * tail_scale,
                tail_density_start=tail_start * tail_scale,
                tail_density_end=_u(rng, sc.tail_density_end) * tail_scale,
                wave_amplitude=_u(rng, sc.wave_amplitude_rad),
                wavenumber=2 * math.pi / (_u(rng, sc.wavelength_um) / px),
                wave_phase=rng.uniform(0, 2 * math.pi),
                curvature=_u(rng, sc.static_curvature_per_um) * px,
                beat_omega=2 * math.pi * _u(rng, sc.beat_hz) if motile else 0.0,
                yaw=_u(rng, sc.head_yaw_rad) if motile else 0.0,
                yaw_phase=rng.uniform(0, 2 * math.pi),
                focus_blur=(_u(rng, op.focus_blur_far_px) if far else _u(rng, op.focus_blur_px)) * defocus_scale,
                focus_drift=rng.uniform(0.0, 0.4) * defocus_scale,
                focus_period=rng.uniform(3.0, 15.0),
                focus_phase=rng.uniform(0, 2 * math.pi),
                tail_end_blur=_u(rng, op.tail_end_blur_px) * defocus_scale,
                tail_blur_exponent=_u(rng, op.tail_blur_exponent),
                tail_fade=_u(rng, op.tail_fade),
                n_points=max(8, int(round(total_um * sc.tail_points_per_um)) + 1),
            )
        )
    return out


def _sample_debris(
    cfg: SynthConfig,
    rng: np.random.Generator,
    h: int,
    w: int,
    px: float,
    psf: float,
    blur_scale: float,
    bubbles: tuple[int, int],
) -> list[Debris]:
    """Static artifacts; ``blur_scale`` converts their pixel blurs and line widths at the reference pixel size."""
    bg = cfg.background
    out: list[Debris] = []

    def density() -> float:
        return _u(rng, bg.debris_contrast)

    def blur(extra: float) -> float:
        return math.hypot(psf, rng.uniform(0.0, extra) * blur_scale)

    for _ in range(_ui(rng, bg.lines)):
        length = rng.uniform(0.3, 1.5) * max(h, w)
        pts = _random_curve(rng, h, w, length, bend=rng.uniform(0.0, 0.4), n=24)
        # short thin lines look like tails to a tired rater
        out.append(
            Debris(
                "line",
                density() * 0.7,
                blur(1.5),
                points=pts,
                width=rng.uniform(0.6, 1.8) * blur_scale,
                sperm_like="tail" if length < 0.6 * max(h, w) else "",
            )
        )
    for _ in range(_ui(rng, bg.spills)):
        length = rng.uniform(15.0, 60.0) / px
        pts = _random_curve(rng, h, w, length, bend=rng.uniform(0.2, 1.2), n=16)
        out.append(Debris("spill", density() * 0.25, blur(3.0), points=pts, width=rng.uniform(1.5, 4.0) / px))
    for _ in range(_ui(rng, bg.stains)):
        r = rng.uniform(2.0, 8.0) / px
        out.append(
            Debris(
                "stain",
                density() * 0.5,
                blur(3.0),
                center=_inside(rng, h, w),
                axes=(r, r * rng.uniform(0.5, 1.0)),
                angle=rng.uniform(0, math.pi),
                # a wavy, irregular outline: harmonic amplitudes fall with the order
                harmonics=np.stack([rng.uniform(0, 0.15, 4) / np.arange(1, 5), rng.uniform(0, 2 * math.pi, 4)], 1),
            )
        )
    for _ in range(_ui(rng, bg.head_debris)):
        a = rng.uniform(1.0, 2.5) / px
        out.append(
            Debris(
                "head",
                density(),
                blur(2.0),
                center=_inside(rng, h, w),
                axes=(a, a * rng.uniform(0.6, 1.0)),
                angle=rng.uniform(0, math.pi),
                egg=rng.uniform(0.0, 0.2),
                sperm_like="head",
            )
        )
    for _ in range(_ui(rng, bubbles)):
        r = rng.uniform(3.0, 15.0) / px
        out.append(
            Debris("bubble", density(), blur(1.0), center=_inside(rng, h, w), axes=(r, r), width=rng.uniform(1.0, 2.5))
        )
    return out


def _sample_specks(
    cfg: SynthConfig, rng: np.random.Generator, h: int, w: int, px: float, psf: float, count: tuple[int, int]
) -> list[Debris]:
    """Small round dark particles (stain precipitate, dust), drawn after the other debris (their own stream)."""
    bg = cfg.background
    out: list[Debris] = []
    for _ in range(_ui(rng, count)):
        r = max(_u(rng, bg.speck_size_um) / px, 0.7)
        out.append(
            Debris(
                "stain",
                _u(rng, bg.debris_contrast) * 0.6,
                math.hypot(psf, rng.uniform(0.0, 1.0)),
                center=_inside(rng, h, w),
                axes=(r, r * rng.uniform(0.6, 1.0)),
                angle=rng.uniform(0, math.pi),
            )
        )
    return out


def _inside(rng: np.random.Generator, h: int, w: int) -> tuple[float, float]:
    return (float(rng.uniform(0, w)), float(rng.uniform(0, h)))


def _random_curve(rng: np.random.Generator, h: int, w: int, length: float, bend: float, n: int) -> np.ndarray:
    """A smooth curve of the given length through a random point of the frame, (n, 2) float64."""
    cx, cy = _inside(rng, h, w)
    ang = rng.uniform(0, 2 * math.pi)
    u = np.linspace(-0.5, 0.5, n)
    psi = ang + bend * np.sin(2 * math.pi * u * rng.uniform(0.3, 1.0) + rng.uniform(0, 2 * math.pi))
    step = length / (n - 1)
    xy = np.cumsum(np.stack([np.cos(psi), np.sin(psi)], 1) * step, axis=0)
    xy -= xy[n // 2]
    return xy + np.array([cx, cy])


def sperm_pose(sp: Sperm, t: float, psf: float) -> SpermPose:
    """The geometry of a sperm at time ``t``.

    The neck moves on a circle (speed, turn rate), the head points along the swimming direction, and the
    flagellum's tangent angle carries a travelling wave whose amplitude grows toward the tail end; the centreline
    is the integral of that tangent, so its arc length is exact.

    Args:
        sp: the sperm.
        t: time in seconds.
        psf: the in-focus blur of the video (pixels).

    Returns:
        Its :class:`SpermPose`.
    """
    heading = sp.heading + sp.turn_rate * t
    if abs(sp.turn_rate) > 1e-9:
        rad = sp.speed / sp.turn_rate
        nx = sp.neck[0] + rad * (math.sin(heading) - math.sin(sp.heading))
        ny = sp.neck[1] - rad * (math.cos(heading) - math.cos(sp.heading))
    else:
        nx = sp.neck[0] + sp.speed * t * math.cos(heading)
        ny = sp.neck[1] + sp.speed * t * math.sin(heading)
    phase = sp.beat_omega * t
    head_angle = heading + sp.yaw * math.sin(phase + sp.yaw_phase)
    total = sp.midpiece_length + sp.tail_length
    s = np.linspace(0.0, total, sp.n_points)
    frac = s / total
    envelope = 0.25 + 0.75 * frac
    psi = (
        head_angle
        + math.pi
        + sp.curvature * s
        + sp.wave_amplitude * envelope * np.sin(sp.wavenumber * s - phase + sp.wave_phase)
    )
    step = total / (sp.n_points - 1)
    # trapezoid integration of the unit tangent; the first point is the neck
    tx, ty = np.cos(psi), np.sin(psi)
    dx = np.concatenate([[0.0], np.cumsum((tx[1:] + tx[:-1]) * 0.5 * step)])
    dy = np.concatenate([[0.0], np.cumsum((ty[1:] + ty[:-1]) * 0.5 * step)])
    points = np.stack([nx + dx, ny + dy], 1)

    in_mid = s <= sp.midpiece_length
    tf = np.clip((s - sp.midpiece_length) / sp.tail_length, 0.0, 1.0)
    width = np.where(in_mid, sp.midpiece_width, sp.tail_width_start + (sp.tail_width_end - sp.tail_width_start) * tf)
    density = np.where(
        in_mid,
        sp.midpiece_density,
        (sp.tail_density_start + (sp.tail_density_end - sp.tail_density_start) * tf) * (1.0 - sp.tail_fade * tf),
    )
    focus = max(0.0, sp.focus_blur + sp.focus_drift * math.sin(2 * math.pi * t / sp.focus_period + sp.focus_phase))
    defocus = focus + sp.tail_end_blur * frac**sp.tail_blur_exponent
    blur = np.sqrt(psf**2 + defocus**2)
    ax, ay = math.cos(head_angle), math.sin(head_angle)
    half = sp.head_length / 2
    return SpermPose(
        points=points,
        s=s,
        width=width,
        density=density,
        blur=blur,
        head_center=(nx + ax * half, ny + ay * half),
        head_axis=(ax, ay),
        head_length=sp.head_length,
        head_width=sp.head_width,
        head_egg=sp.egg,
        head_density=sp.head_density,
        head_blur=math.hypot(psf, focus),
        acrosome=sp.acrosome,
        midpiece_length=sp.midpiece_length,
    )
