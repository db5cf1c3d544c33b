"""CASA sperm kinematics (WHO laboratory manual, 6th ed., 2021, section 3.5 / CASA definitions) on head paths.

Pure numpy functions on one track: times ``t`` (s) and head positions ``xy`` (N, 2) in micrometres. This module
is a leaf (numpy only) so that the synthetic generator's truth (:mod:`spermseg.data.synth.truth`) and the tracker
(:mod:`spermseg.inference.tracking`) compute every measure with the same code.

Definitions (``dt`` the frame interval, ``T`` the elapsed time of the path):

* **VCL** (curvilinear velocity): the length of the point-to-point head path divided by ``T``.
* **VSL** (straight-line velocity): the distance between the first and the last position divided by ``T``.
* **Average path**: the centred moving average of the curvilinear path over ``w`` consecutive frames,
  ``w = max(3, odd(round(vap_window_s / dt)))``, kept only where the window is complete (the first and last
  ``w // 2`` frames have no average position; shrinking windows at the ends would bend the path toward them).
  Gaps (missed frames inside a track) are filled by linear interpolation first, so the window is in time.
* **VAP** (average-path velocity): the length of the average path divided by its own elapsed time.
* **LIN** = VSL / VCL, **STR** = VSL / VAP, **WOB** = VAP / VCL (ratios in [0, 1] for smooth paths).
* **ALH** (amplitude of lateral head displacement): the signed distance of each curvilinear position from the
  average path (perpendicular to the average path's local direction); ALH is twice the mean over complete half-cycles
  (runs of one sign between two crossings; all runs when there are fewer than three) of the largest absolute
  distance, i.e. the peak-to-peak width of the lateral excursion.
  A sinusoid of amplitude ``A`` about a straight line has ALH = 2 A.
* **BCF** (beat-cross frequency): the number of times the curvilinear path crosses the average path (sign
  changes of that distance) per second. A sinusoid of frequency ``f`` crosses twice per period: BCF = 2 f.
* **beat_hz** (flagellar beat frequency): the dominant frequency of a tail-shape angle over time
  (:func:`beat_frequency`): linearly detrended (slow turning), Hann window, zero-padded FFT peak with parabolic
  interpolation, searched in ``[beat_min_hz, min(beat_max_hz, Nyquist)]``; 0.0 when the angle's oscillation is
  smaller than ``beat_min_amplitude_rad`` (no beat: an immotile tail), NaN when there are too few samples. Frames
  whose traced tail is shorter than ``beat_min_tail_fraction`` x the track's median tail length are left out
  (interpolated): there the tail was cut at a crossing or lost to another sperm, and its "tip" is not the tip; a
  running median over ``beat_detrend_s`` (1 s) is subtracted too, for the stretches where a wrong tail end was
  traced for several frames (level shifts); beats slower than about 1 Hz are weakened by it (set 0 for them).
* **class** (:func:`classify`): WHO 6th ed. grades with configurable thresholds: ``immotile`` (no tail beat and
  VCL below ``immotile_max_vcl_um_s``), ``progressive`` (active and VAP >= ``progressive_min_vap_um_s``,
  the 6th edition's 5 um/s lower bound of grade b, and STR >= ``progressive_min_str``), else ``non-progressive``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Columns of kinematics.csv (one row per track), in order.
KINEMATICS_COLUMNS: tuple[str, ...] = (
    "track_id",
    "n_frames",
    "vcl_um_s",
    "vsl_um_s",
    "vap_um_s",
    "lin",
    "str",
    "wob",
    "alh_um",
    "bcf_hz",
    "beat_hz",
    "tail_length_um",
    "class",
)
CLASSES: tuple[str, ...] = ("progressive", "non-progressive", "immotile")


@dataclass
class KinematicsConfig:
    """Smoothing and WHO classification thresholds (``--set kinematics.KEY=VALUE``)."""

    vap_window_s: float = 0.2  # average-path window (5 frames at 25 fps, the usual CASA 5-point smoothing)
    progressive_min_vap_um_s: float = 5.0  # WHO 6th ed.: progressive (grades a+b) from 5 um/s
    progressive_min_str: float = 0.0  # optional straightness requirement (0: circles count, as in the manual)
    immotile_max_vcl_um_s: float = 3.0  # below this VCL and without a tail beat a sperm is immotile
    beat_min_hz: float = 0.5
    beat_max_hz: float = 30.0
    beat_min_amplitude_rad: float = 0.08  # peak tail-angle oscillation below this: no beat
    beat_detrend_s: float = 1.0  # running-median detrend of the tail angle (level shifts after crossings)
    beat_min_tail_fraction: float = 0.7  # frames whose traced tail is shorter than this x the track's median are
    # left out of the beat (the tail was cut at a crossing or lost to another sperm: its "tip" angle is not the tip's)
    min_frames: int = 5  # shorter tracks get NaN measures and class ""


def _regular(t: np.ndarray, values: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``values`` (N, ...) at ``t`` onto the regular grid ``t[0] + k dt`` (linear interpolation)."""
    n = int(round((t[-1] - t[0]) / dt)) + 1
    grid = t[0] + dt * np.arange(n)
    if values.ndim == 1:
        return grid, np.interp(grid, t, values)
    return grid, np.stack([np.interp(grid, t, values[:, k]) for k in range(values.shape[1])], 1)


def path_length(xy: np.ndarray) -> float:
    """Length of the polyline through ``xy`` (N, 2)."""
    return float(np.hypot(*np.diff(xy, axis=0).T).sum()) if len(xy) > 1 else 0.0


def vcl(t: np.ndarray, xy: np.ndarray) -> float:
    """Curvilinear velocity: path length / elapsed time (NaN for fewer than two positions)."""
    span = float(t[-1] - t[0]) if len(t) > 1 else 0.0
    return path_length(xy) / span if span > 0 else float("nan")


def vsl(t: np.ndarray, xy: np.ndarray) -> float:
    """Straight-line velocity: first-to-last distance / elapsed time."""
    span = float(t[-1] - t[0]) if len(t) > 1 else 0.0
    return float(np.hypot(*(xy[-1] - xy[0]))) / span if span > 0 else float("nan")


def window_frames(vap_window_s: float, dt: float) -> int:
    """The odd average-path window in frames, at least 3."""
    w = max(3, int(round(vap_window_s / dt)))
    return w if w % 2 else w + 1


def average_path(xy: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of a regularly sampled path (N, 2) over ``window`` points (odd): (N - window + 1, 2).

    Only complete windows are kept, so the result is empty when ``N < window``.
    """
    if len(xy) < window:
        return np.zeros((0, 2))
    kernel = np.full(window, 1.0 / window)
    return np.stack([np.convolve(xy[:, k], kernel, mode="valid") for k in range(2)], 1)


def lateral_distance(xy: np.ndarray, avg: np.ndarray, window: int) -> np.ndarray:
    """Signed distance of each curvilinear position from the average path, (len(avg),).

    Position ``i + window // 2`` is compared with average point ``i``, perpendicular to the average path's local
    direction (central differences; the ends use one-sided ones).
    """
    h = window // 2
    pts = xy[h : h + len(avg)]
    if len(avg) < 2:
        return np.zeros(len(avg))
    tangent = np.gradient(avg, axis=0)
    norm = np.hypot(tangent[:, 0], tangent[:, 1])
    norm[norm == 0] = 1.0
    tangent /= norm[:, None]
    rel = pts - avg
    return tangent[:, 0] * rel[:, 1] - tangent[:, 1] * rel[:, 0]


def alh_bcf(d: np.ndarray, dt: float) -> tuple[float, float]:
    """ALH (twice the mean half-cycle peak of ``|d|``) and BCF (sign changes per second) of lateral distances."""
    if len(d) < 3:
        return float("nan"), float("nan")
    # round-off of a straight path (1e-16 um) is no lateral motion and must not count as crossings
    signs = np.where(np.abs(d) > 1e-9, np.sign(d), 0.0)
    nz = signs != 0
    if not nz.any():
        return 0.0, 0.0
    s = signs[nz]
    crossings = int(np.count_nonzero(s[1:] != s[:-1]))
    # half-cycles: runs of one sign among the non-zero distances
    mag = np.abs(d[nz])
    edges = np.flatnonzero(s[1:] != s[:-1]) + 1
    runs = np.split(mag, edges)
    # the first and last runs are cut by the ends of the path: use complete half-cycles when there are any
    runs = runs[1:-1] if len(runs) > 2 else runs
    peaks = [float(run.max()) for run in runs if run.size]
    duration = dt * (len(d) - 1)
    return 2.0 * float(np.mean(peaks)), crossings / duration


def beat_frequency(
    t: np.ndarray,
    angle: np.ndarray,
    *,
    min_hz: float = 0.5,
    max_hz: float = 30.0,
    min_amplitude: float = 0.08,
    dt: float | None = None,
    detrend_s: float = 0.0,
) -> float:
    """Dominant frequency (Hz) of a tail-shape angle over time.

    Args:
        t: (N,) times in seconds (increasing; gaps are interpolated).
        angle: (N,) angle in radians (unwrapped here; NaN samples are dropped).
        min_hz, max_hz: search band (clipped to the Nyquist frequency).
        min_amplitude: peak oscillation (sqrt(2) x the detrended standard deviation) below which there is no beat.
        dt: frame interval (default: the median step of ``t``).
        detrend_s: also subtract a running median over this many seconds (0: off). It removes level shifts, e.g.
            stretches where the tail's far end was traced along another sperm after a crossing, which otherwise
            put their power at the bottom of the band; oscillations slower than about 1 / detrend_s are
            weakened with them.

    Returns:
        The frequency, 0.0 for no beat, NaN for fewer than 8 valid samples.
    """
    ok = np.isfinite(angle)
    t, angle = np.asarray(t, float)[ok], np.unwrap(np.asarray(angle, float)[ok])
    if len(t) < 8:
        return float("nan")
    dt = float(dt) if dt else float(np.median(np.diff(t)))
    grid, a = _regular(t, angle, dt)
    window = int(round(detrend_s / dt)) | 1  # odd
    if detrend_s > 0 and 3 <= window < len(a):
        padded = np.pad(a, window // 2, mode="edge")
        a = a - np.median(np.lib.stride_tricks.sliding_window_view(padded, window), axis=1)
    a = a - np.polyval(np.polyfit(grid - grid[0], a, 1), grid - grid[0])  # slow turning is not a beat
    if math.sqrt(2.0) * float(a.std()) < min_amplitude:
        return 0.0
    n = len(a)
    nfft = 1 << int(math.ceil(math.log2(16 * n)))
    spec = np.abs(np.fft.rfft(a * np.hanning(n), nfft))
    freqs = np.fft.rfftfreq(nfft, dt)
    band = (freqs >= min_hz) & (freqs <= min(max_hz, 0.5 / dt))
    if not band.any():
        return float("nan")
    k = int(np.flatnonzero(band)[np.argmax(spec[band])])
    if 0 < k < len(spec) - 1 and band[k - 1] and band[k + 1]:  # parabolic interpolation of an inner peak
        y0, y1, y2 = spec[k - 1], spec[k], spec[k + 1]
        den = y0 - 2 * y1 + y2
        k = k + (0.5 * (y0 - y2) / den if den != 0 else 0.0)
    return float(k * (freqs[1] - freqs[0]))


def classify(vcl_um_s: float, vap_um_s: float, str_: float, beat_hz: float, cfg: KinematicsConfig) -> str:
    """WHO 6th ed. motility grade: ``progressive``, ``non-progressive`` or ``immotile`` ("" when undefined)."""
    if not math.isfinite(vcl_um_s):
        return ""
    beating = math.isfinite(beat_hz) and beat_hz > 0
    if not beating and vcl_um_s < cfg.immotile_max_vcl_um_s:
        return "immotile"
    vap_ok = math.isfinite(vap_um_s) and vap_um_s >= cfg.progressive_min_vap_um_s
    str_ok = cfg.progressive_min_str <= 0 or (math.isfinite(str_) and str_ >= cfg.progressive_min_str)
    return "progressive" if vap_ok and str_ok else "non-progressive"


def _ratio(a: float, b: float) -> float:
    return a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else float("nan")


def track_kinematics(
    frames: np.ndarray,
    xy_um: np.ndarray,
    fps: float,
    cfg: KinematicsConfig | None = None,
    *,
    tail_angle: np.ndarray | None = None,
    tail_length_um: np.ndarray | None = None,
    beat_hz: float | None = None,
) -> dict[str, float | int | str]:
    """Every kinematics.csv measure of one track (without ``track_id``).

    Args:
        frames: (N,) increasing frame indices (gaps allowed).
        xy_um: (N, 2) head positions in micrometres.
        fps: frames per second.
        cfg: smoothing and thresholds.
        tail_angle: (N,) tail-shape angle per frame (NaN where unmeasured), for ``beat_hz``.
        tail_length_um: (N,) tail length per frame (NaN where unmeasured); the median is reported.
        beat_hz: a known beat frequency (the generator's truth) instead of ``tail_angle``.

    Returns:
        ``{n_frames, vcl_um_s, vsl_um_s, vap_um_s, lin, str, wob, alh_um, bcf_hz, beat_hz, tail_length_um, class}``.
    """
    cfg = cfg or KinematicsConfig()
    frames = np.asarray(frames, float)
    xy = np.asarray(xy_um, float)
    nan = float("nan")
    out: dict[str, float | int | str] = {k: nan for k in KINEMATICS_COLUMNS[1:-1]}
    out["n_frames"], out["class"] = len(frames), ""
    if tail_length_um is not None and np.isfinite(tail_length_um).any():
        out["tail_length_um"] = float(np.nanmedian(tail_length_um))
    if beat_hz is not None:  # known (the generator's truth): defined whatever the track's length
        out["beat_hz"] = float(beat_hz)
    if len(frames) < max(2, cfg.min_frames):
        return out
    dt = 1.0 / fps
    t = frames * dt
    _, reg = _regular(t, xy, dt)
    out["vcl_um_s"], out["vsl_um_s"] = vcl(t, xy), vsl(t, xy)
    window = window_frames(cfg.vap_window_s, dt)
    avg = average_path(reg, window)
    if len(avg) >= 2:
        out["vap_um_s"] = path_length(avg) / (dt * (len(avg) - 1))
        out["alh_um"], out["bcf_hz"] = alh_bcf(lateral_distance(reg, avg, window), dt)
    if beat_hz is None and tail_angle is not None:
        angle = np.asarray(tail_angle, float)
        if tail_length_um is not None and np.isfinite(tail_length_um).any() and cfg.beat_min_tail_fraction > 0:
            length = np.asarray(tail_length_um, float)
            angle = np.where(length >= cfg.beat_min_tail_fraction * np.nanmedian(length), angle, np.nan)
        out["beat_hz"] = beat_frequency(
            t,
            angle,
            min_hz=cfg.beat_min_hz,
            max_hz=cfg.beat_max_hz,
            min_amplitude=cfg.beat_min_amplitude_rad,
            dt=dt,
            detrend_s=cfg.beat_detrend_s,
        )
    v_cl, v_sl, v_ap = (float(out[k]) for k in ("vcl_um_s", "vsl_um_s", "vap_um_s"))
    out["lin"], out["str"], out["wob"] = _ratio(v_sl, v_cl), _ratio(v_sl, v_ap), _ratio(v_ap, v_cl)
    out["class"] = classify(v_cl, v_ap, float(out["str"]), float(out["beat_hz"]), cfg)
    return out
