"""Parameters of the synthetic ICSI generator.

Every random quantity is given as a ``(low, high)`` range sampled uniformly (per video, per sperm or per
object, as documented on each field). Lengths of biological structures are in micrometres and converted with
``pixel_size_um``; optical quantities (blur, halo) are in pixels because they describe the imaging system.
All sections are plain dataclasses, so ``spermseg.config.resolve_config(SynthConfig, overrides=[...])`` works,
e.g. ``--set sperm.count=[2,4] --set raters.gt2.tail_threshold=0.05``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Range = tuple[float, float]
IntRange = tuple[int, int]


@dataclass
class SpermConfig:
    """Shape, number, placement and motion of the sperm (sampled per sperm unless noted)."""

    count: IntRange = (3, 9)  # sperm per video (inclusive), sampled per video
    group_probability: float = 0.35  # chance per video of a group of touching/overlapping sperm
    group_size: IntRange = (2, 4)  # sperm in such a group (taken from ``count``)
    group_radius_um: float = 6.0  # heads of a group lie within this radius of a common point
    border_margin_um: float = 15.0  # swimming circles are centred up to this far outside the frame (cut sperm)
    head_length_um: Range = (4.0, 5.0)  # egg-shaped head, about 4-5 x 3 um
    head_width_um: Range = (2.6, 3.4)
    head_egg: Range = (0.05, 0.25)  # > 0: the head narrows toward the neck (egg shape)
    acrosome_lightness: Range = (0.0, 0.35)  # the front part of the head absorbs this much less
    midpiece_length_um: Range = (3.5, 5.0)  # the midpiece is labelled as tail (as in SegSperm)
    midpiece_width_um: Range = (0.9, 1.2)
    tail_length_um: Range = (40.0, 50.0)  # flagellum after the midpiece (about 45 um)
    tail_width_start_um: Range = (0.65, 0.85)  # the tail tapers linearly to tail_width_end_um
    tail_width_end_um: Range = (0.3, 0.45)
    head_density: Range = (0.8, 1.0)  # optical density (0..1) of the head, relative to the frame contrast
    tail_density_start: Range = (0.55, 0.8)  # optical density along the tail, start to end
    tail_density_end: Range = (0.2, 0.4)
    wave_amplitude_rad: Range = (0.15, 0.7)  # peak tangent angle of the travelling wave at the tail end
    wavelength_um: Range = (18.0, 40.0)  # of the travelling wave; its phase is random per sperm
    static_curvature_per_um: Range = (-0.02, 0.02)  # a constant bend of the flagellum
    beat_hz: Range = (1.0, 6.0)  # beat frequency in viscous PVP (slow); 0 for immotile sperm
    speed_um_s: Range = (1.0, 10.0)  # swimming speed along the head direction (slowed by PVP)
    turn_rate_rad_s: Range = (0.2, 0.8)  # magnitude (either sign): sperm near a surface swim in circles
    immotile_fraction: float = 0.3  # share of sperm that neither swim nor beat
    head_yaw_rad: Range = (0.0, 0.15)  # head wobble amplitude with the beat
    tail_points_per_um: float = 1.0  # centreline sampling (rendering precision vs speed)


@dataclass
class OpticsConfig:
    """Narrow depth of field and blur (sampled per video or sperm); pixel values hold at ``reference_pixel_size_um``.

    Blur is a property of the optics, so at a finer pixel size it spans more pixels: every ``*_px`` value here is
    multiplied by ``reference_pixel_size_um / pixel size`` of the video. The contrast mode (absorption, halo,
    relief) is drawn per video from :class:`AppearanceConfig`.
    """

    reference_pixel_size_um: float = 0.3  # the pixel size at which the *_px blur values below hold

    psf_sigma_px: Range = (0.6, 0.9)  # blur of an in-focus object
    focus_blur_px: Range = (0.0, 1.5)  # extra blur of the whole sperm from its focus offset (per sperm)
    defocus_tail_fraction: float = 0.15  # share of sperm far out of focus (focus blur up to focus_blur_far_px)
    focus_blur_far_px: Range = (2.0, 3.5)  # focus blur of those far-out-of-focus sperm
    tail_end_blur_px: Range = (1.0, 3.5)  # additional blur reached at the tail end (per sperm)
    tail_blur_exponent: Range = (1.5, 2.5)  # blur grows as (s / L) ** exponent along the tail
    halo_sigma_px: Range = (1.5, 3.5)  # how far the rim spreads beyond the blur
    tail_fade: Range = (0.0, 0.3)  # extra contrast loss toward the tail end, besides blur


@dataclass
class BackgroundConfig:
    """Homogeneous background with gradients, two regions, artifacts and debris (sampled per video)."""

    gradient: Range = (0.0, 0.12)  # peak-to-peak linear illumination change across the frame (fraction)
    texture: Range = (0.0, 0.03)  # amplitude of slow low-frequency intensity variations (fraction)
    flicker: Range = (0.0, 0.15)  # brightness change between frames of one video (fraction)
    flicker_period_s: Range = (2.0, 12.0)  # period of that brightness change
    region_probability: float = 0.5  # two regions of different mean separated by a pipette/dish edge
    region_offset: Range = (0.05, 0.2)  # absolute difference of their mean intensities (fraction of level)
    region_curved_probability: float = 0.5  # curved (arc) edge instead of a straight one
    region_edge_line: Range = (0.0, 0.12)  # contrast of a thin line along that edge
    lines: IntRange = (0, 2)  # thin straight or slightly curved lines (scratches, fibres)
    spills: IntRange = (0, 2)  # wide, faint, elongated smears
    stains: IntRange = (0, 3)  # irregular blobs
    head_debris: IntRange = (0, 4)  # small head-sized particles
    debris_contrast: Range = (0.2, 0.9)  # optical density of artifacts relative to a sperm head
    speck_size_um: Range = (0.2, 0.7)  # radius of the small dark particles of ``appearance.*.specks``


@dataclass
class ModeConfig:
    """One contrast mode: how a video's microscope turns optical density into intensity (sampled per video).

    Image factor ``1 - contrast * absorption * ((1 + halo) S - halo S_halo) + contrast * relief * dS/dn``
    (render.py), ``S`` the blurred optical density of the objects.
    """

    pixel_size_um: Range  # micrometres per pixel, drawn per video (unless ``SynthConfig.pixel_size_um`` is set)
    contrast: Range  # fractional darkening of an in-focus, fully dense object (before the absorption weight)
    absorption: Range  # weight of the absorption term; relief contrast sees mostly the gradient
    halo_strength: Range  # rim strength relative to the contrast (phase-like halo)
    dark_core_probability: float  # dark core + light rim; otherwise a light core + dark rim
    relief: Range  # directional derivative (Hoffman modulation / DIC shear), relative to the contrast
    tail_density_scale: Range  # multiplies the tail's optical density (stained heads absorb far more)
    defocus_scale: float  # multiplies focus and tail-end blur (a dried, stained smear lies flat: in focus)
    background_level: Range  # mean background intensity in [0, 1]
    noise_scale: float  # multiplies the camera noise of ``noise``
    specks: IntRange  # small dark particles (stain precipitate, dust): not sperm-like
    bubbles: IntRange  # air bubbles: light centre, dark ring (none under a coverslipped, dried smear)


def _phase() -> ModeConfig:
    # the original ICSI look: dark cores with light halos (or the reverse), a little relief; ICSI objectives
    # (20-40x) give about 0.15-0.35 um/px (SegSperm's heads are 15-20 px long: ~0.26 um/px)
    return ModeConfig(pixel_size_um=(0.15, 0.35), contrast=(0.18, 0.32), absorption=(1.0, 1.0),
                      halo_strength=(0.2, 0.8), dark_core_probability=0.75, relief=(0.0, 0.5),
                      tail_density_scale=(1.0, 1.0), defocus_scale=1.0,
                      background_level=(0.45, 0.7), noise_scale=1.0, specks=(0, 3), bubbles=(0, 2))  # fmt: skip


def _relief() -> ModeConfig:
    # Hoffman modulation contrast: one side bright, the other dark; faint relief lines for tails; smooth, quiet
    return ModeConfig(pixel_size_um=(0.15, 0.35), contrast=(0.2, 0.35), absorption=(0.1, 0.35),
                      halo_strength=(0.0, 0.1), dark_core_probability=1.0, relief=(4.0, 8.0),
                      tail_density_scale=(0.8, 1.2), defocus_scale=1.0,
                      background_level=(0.4, 0.65), noise_scale=0.5, specks=(0, 4), bubbles=(0, 2))  # fmt: skip


def _brightfield() -> ModeConfig:
    # stained bright-field smear (as spermparsing): very dark heads, grey tails, light background, many specks;
    # morphology is imaged at 60-100x: spermparsing's heads are 37-51 px long (~0.1 um/px)
    return ModeConfig(pixel_size_um=(0.08, 0.16), contrast=(0.65, 0.9), absorption=(1.0, 1.0),
                      halo_strength=(0.0, 0.15), dark_core_probability=1.0, relief=(0.0, 0.2),
                      tail_density_scale=(0.2, 0.45), defocus_scale=0.4,
                      background_level=(0.72, 0.92), noise_scale=1.0, specks=(5, 60), bubbles=(0, 0))  # fmt: skip


@dataclass
class AppearanceConfig:
    """The contrast mode of each video: one of ``phase``, ``relief``, ``brightfield``, or ``mix``.

    ``mix`` draws the mode per video with the probabilities ``mix_weights`` (phase, relief, brightfield):
    domain randomisation, so that one model meets ICSI relief contrast and stained bright-field alike.
    """

    mode: str = "mix"
    mix_weights: tuple[float, float, float] = (0.25, 0.25, 0.5)  # phase, relief, brightfield
    phase: ModeConfig = field(default_factory=_phase)
    relief: ModeConfig = field(default_factory=_relief)
    brightfield: ModeConfig = field(default_factory=_brightfield)


MODES: tuple[str, ...] = ("phase", "relief", "brightfield")


@dataclass
class NoiseConfig:
    """Camera noise (sampled per video; the noise itself is drawn per frame)."""

    shot: Range = (0.0005, 0.003)  # variance per unit intensity (Poisson-like)
    read: Range = (0.004, 0.012)  # standard deviation of additive Gaussian read noise


@dataclass
class RaterConfig:
    """A human rater: imprecise contours, truncated faint tails, missed faint sperm, rare false positives.

    ``tail_threshold`` and ``miss_threshold`` are in units of local contrast (fractional intensity change of the
    blurred object against the background), the quantity that makes a faint tail end or a blurry sperm hard to
    see.
    """

    width_bias_px: float = 0.0  # systematic dilation (> 0) or erosion (< 0) of the drawn outline, each side
    contour_noise_px: float = 0.7  # amplitude of smooth local dilation/erosion of a tail (kept within +-2 px)
    head_contour_noise_px: float = 1.0  # the same for head outlines (a few polygon clicks, coarser)
    contour_wavelength_px: float = 14.0  # how quickly the local dilation/erosion changes along the outline
    centerline_jitter_px: float = 0.6  # smooth sideways wandering of the drawn tail
    head_scale: float = 1.0  # systematic head size factor
    tail_threshold: float = 0.02  # the tail is followed while its contrast stays above this level
    tail_threshold_jitter: float = 0.35  # per-sperm log-normal spread of that level
    tail_end_overshoot_px: float = 0.0  # std of a random extra (or missing) length where the tail fades
    miss_threshold: float = 0.06  # sperm whose head contrast is below this level ...
    miss_probability: float = 0.5  # ... are missed with this probability
    base_miss_probability: float = 0.02  # any sperm
    cut_miss_probability: float = 0.3  # sperm whose head is outside the frame (only part of a tail visible)
    false_positive_probability: float = 0.02  # per sperm-like debris item ("raters rarely confuse debris")


def _gt1() -> RaterConfig:
    return RaterConfig(width_bias_px=0.6, tail_threshold=0.018)


def _gt2() -> RaterConfig:
    return RaterConfig(width_bias_px=0.4, tail_threshold=0.024, contour_noise_px=0.8, head_scale=0.97)


def _gt3() -> RaterConfig:
    return RaterConfig(width_bias_px=0.7, tail_threshold=0.014, centerline_jitter_px=0.7, head_scale=1.03)


@dataclass
class RatersConfig:
    """The three raters; GT1 labels every split, GT2 and GT3 only ``test_small``."""

    gt1: RaterConfig = field(default_factory=_gt1)
    gt2: RaterConfig = field(default_factory=_gt2)
    gt3: RaterConfig = field(default_factory=_gt3)

    def as_list(self) -> list[RaterConfig]:
        """The raters in order GT1, GT2, GT3."""
        return [self.gt1, self.gt2, self.gt3]


@dataclass
class SynthConfig:
    """All parameters of the generator; written to ``synth.json`` next to the data."""

    height: int = 512  # image size in pixels
    width: int = 512
    # micrometres per pixel of every video; None: drawn per video from its contrast mode's ``pixel_size_um`` range
    pixel_size_um: float | None = None
    fps: float = 25.0  # frame rate: time between frames of a video
    video_length: int = 300  # frames per video from which the dataset frames are drawn
    images_per_video: int = 10  # dataset images per video (SegSperm: 432 images from 40 videos)
    sperm: SpermConfig = field(default_factory=SpermConfig)
    optics: OpticsConfig = field(default_factory=OpticsConfig)
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    raters: RatersConfig = field(default_factory=RatersConfig)
    min_mask_width_px: float = 2.0  # truth tails are at least this wide, so that a thin tail stays connected
