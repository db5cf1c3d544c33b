"""Sperm tracking: per-frame detections linked across frames, kinematics per track, files for other tools.

One streaming pass, in memory that does not grow with the number of frames:

    frames (video / TIFF stack / folder, :mod:`~spermseg.inference.stacks`) -> segmentation (the ``predict``
    machinery: :func:`spermseg.inference.predict.build_batch_fn`) -> instances and heads
    (:mod:`~spermseg.inference.detection`) -> linking -> label stack page, overlay frame, track rows

or, with ``--masks``, per-frame masks (binary or instance label images, sorted by name) instead of the first two.
Each frame's rows go straight to ``tracks.csv``; a track's head samples are kept only while the linker can still
extend it (:class:`OpenTracks`), then its kinematics row is computed and the samples dropped.

**Linking** uses trackpy's Crocker-Grier linker (``trackpy.linking.Linker``) frame by frame: each head joins the
track whose last position is within ``max_speed_um_s / fps`` (the search range), resolving competing candidates
by minimal total squared displacement over the subnetwork; a track whose head is missed for up to ``gap_frames``
frames (``memory``) keeps its id when the head reappears within range (gap closing). trackpy was chosen over
laptrack because its linker works online (ids are final when the frame is linked, so the label stack and the
overlay are written in the same pass, in constant memory) and it brings one small dependency (pandas, which
motmetrics needs anyway) against laptrack's pydantic/pooch/requests stack; laptrack's global LAP gap closing
would need all coordinates before any id is known. Measured: benchmarks/bench_track.py and docs/tracking.md.

Outputs in ``out`` (:func:`track`): ``tracks.csv`` (one row per sperm per frame,
:data:`~spermseg.inference.track_outputs.TRACK_COLUMNS`), ``kinematics.csv`` (one row per track,
:data:`spermseg.kinematics.KINEMATICS_COLUMNS`), ``labels.tif`` (uint16 ImageJ TYX stack, ids = track ids),
``overlay.mp4`` (H.264), ``first_frame.png`` (for the report) and ``track.json`` (calibration and its sources,
counts, config, and the error of a truncated input).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spermseg.errors import ConfigError, DataError, SpermsegError
from spermseg.inference.stacks import StackInfo, TruncatedInputError
from spermseg.kinematics import KINEMATICS_COLUMNS, KinematicsConfig, track_kinematics


@dataclass
class TrackConfig:
    """Tracking parameters (``--set KEY=VALUE``; physical units, converted with the stack's calibration)."""

    max_speed_um_s: float = 100.0  # search range per frame = max_speed / fps (fast human sperm: ~100 um/s)
    gap_frames: int = 12  # a head missed (or hidden under another) for up to this many frames keeps its track
    head_radius_um: float = 0.9  # opening radius that removes tails and keeps heads (~3 um wide)
    min_head_area_um2: float = 3.0  # smaller head parts are specks, not sperm
    trail_frames: int = 50  # overlay trail length
    batch_size: int = 4  # segmentation batch
    threshold: float | None = None  # segmentation threshold (default: the model's)
    overlay: bool = True
    kinematics: KinematicsConfig = field(default_factory=KinematicsConfig)


def validate(cfg: TrackConfig) -> None:
    """Reject impossible values with one line naming the key."""
    for key in ("max_speed_um_s", "head_radius_um", "min_head_area_um2"):
        if not getattr(cfg, key) > 0:
            raise ConfigError(f"{key} must be > 0, got {getattr(cfg, key)}")
    if cfg.gap_frames < 0 or cfg.batch_size < 1 or cfg.trail_frames < 0:
        raise ConfigError("gap_frames and trail_frames must be >= 0 and batch_size >= 1")
    if cfg.threshold is not None and not 0 <= cfg.threshold <= 1:
        raise ConfigError(f"threshold must be in [0, 1], got {cfg.threshold}")
    if cfg.kinematics.vap_window_s <= 0:
        raise ConfigError("kinematics.vap_window_s must be > 0")


#: A frame source yields (index, image (H, W) float32 in [0, 1] or None, mask or labels (H, W)).
FrameItems = Iterator[tuple[int, "np.ndarray | None", np.ndarray]]


class HeadLinker:
    """trackpy's online linker on head positions (pixels); ``link`` returns the track id (1..) of each head.

    With ``predict`` (default), each open track's next position is extrapolated at its recent velocity (its
    positions over the last ``velocity_frames`` frames) before the linker compares distances: trackpy's
    ``predictor`` hook, the idea of its ``predict`` module for the online linker. Two heads that pass each other
    then keep their ids where nearest-neighbour linking swaps them (the nearer head of the next frame is the
    other sperm's).
    """

    def __init__(self, search_range_px: float, memory: int, *, predict: bool = True, velocity_frames: int = 3) -> None:
        import logging
        from collections import deque

        try:
            from trackpy.linking.linking import Linker
        except ImportError:
            raise SpermsegError("spermseg track needs trackpy: pip install 'spermseg[tracking]'") from None

        logging.getLogger("trackpy").setLevel(logging.WARNING)  # trackpy logs one INFO line per frame
        self._linker = Linker(search_range_px, memory=memory, predictor=self._predict if predict else None)
        self._started = False
        self._memory = memory
        self._history: dict[int, deque] = {}  # trackpy track id -> recent (frame, position)
        self._deque = lambda: deque(maxlen=velocity_frames + 1)

    def _velocity(self, track_id: int) -> np.ndarray | float:
        h = self._history.get(track_id)
        if not h or len(h) < 2:
            return 0.0
        (t0, p0), (t1, p1) = h[0], h[-1]
        return (p1 - p0) / (t1 - t0)

    def _predict(self, t: int, points: list[Any]) -> Iterator[np.ndarray]:
        for p in points:
            yield p.pos + self._velocity(p.track.id) * (t - p.t)

    def link(self, frame: int, xy: np.ndarray) -> list[int]:
        coords = np.asarray(xy, float).reshape(-1, 2)
        if not self._started:
            if not len(coords):
                return []  # trackpy cannot start on an empty frame
            self._linker.init_level(coords, frame)
            self._started = True
        else:
            self._linker.next_level(coords, frame)
        raw = [int(p) for p in self._linker.particle_ids]
        for tid, pos in zip(raw, coords):
            self._history.setdefault(tid, self._deque()).append((frame, pos))
        for tid in [k for k, h in self._history.items() if h[-1][0] < frame - self._memory - 1]:
            del self._history[tid]  # ended: the linker cannot extend it any more
        ids = [tid + 1 for tid in raw]
        if ids and max(ids) > 65535:
            raise DataError("more than 65535 tracks: the uint16 label stack cannot hold them")
        return ids


@dataclass
class TrackResult:
    """What :func:`track` did."""

    out: Path
    info: StackInfo
    n_frames: int = 0
    n_tracks: int = 0
    n_detections: int = 0
    seconds: float = 0.0
    error: str | None = None
    files: dict[str, str] = field(default_factory=dict)


def _relabel(labels: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """Instance labels -> track ids (instances without a track become 0)."""
    lut = np.zeros(int(labels.max()) + 1 if labels.size else 1, np.uint16)
    for lab, tid in mapping.items():
        if lab < lut.size:
            lut[lab] = tid
    return lut[labels]


def track(
    items: FrameItems,
    info: StackInfo,
    out: str | Path,
    cfg: TrackConfig | None = None,
    *,
    on_frame: Callable[[int], None] | None = None,
) -> TrackResult:
    """Detect, link and write every output (module docstring) for one frame source.

    Args:
        items: the frames (see :data:`FrameItems`); a :class:`TruncatedInputError` from it ends the pass.
        info: calibration; ``fps`` and ``pixel_size_um`` must be set.
        out: output folder (created).
        cfg: parameters.
        on_frame: called with each processed frame index (progress).

    Returns:
        A :class:`TrackResult`; ``error`` holds the message of a truncated input, whose processed frames are kept.
    """
    from spermseg.config import config_to_dict
    from spermseg.data.io import write_image
    from spermseg.inference.detection import detect, frame_instances, options_for
    from spermseg.inference.track_outputs import TRACK_COLUMNS, LabelStackWriter, OverlayWriter
    from spermseg.utils.atomic import atomic_write_json
    from spermseg.utils.table import RowWriter, write_rows_csv

    cfg = cfg or TrackConfig()
    validate(cfg)
    if not info.fps or not info.pixel_size_um:
        raise DataError(f"{info.path}: frame rate and pixel size are needed for tracking (--fps, --pixel-size)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    px, fps = float(info.pixel_size_um), float(info.fps)
    opt = options_for(px, cfg.head_radius_um, cfg.min_head_area_um2)
    linker = HeadLinker(cfg.max_speed_um_s / fps / px, cfg.gap_frames)
    result = TrackResult(out=out, info=info)
    stack = LabelStackWriter(out / "labels.tif", px, fps)
    overlay: OverlayWriter | None = None
    tracks_csv = RowWriter(out / "tracks.csv", TRACK_COLUMNS)
    open_tracks = OpenTracks(fps, cfg.kinematics, cfg.gap_frames)
    start = time.perf_counter()
    truncated: TruncatedInputError | None = None
    try:
        try:
            for index, image, mask in items:
                labels = frame_instances(mask, opt)
                dets = detect(labels, opt)
                ids = linker.link(index, np.array([[d.x, d.y] for d in dets]))
                track_ids = _relabel(labels, {d.label: t for d, t in zip(dets, ids)})
                stack.write(track_ids)
                if cfg.overlay:
                    if overlay is None:
                        overlay = OverlayWriter(out / "overlay.mp4", fps, labels.shape, cfg.trail_frames)
                    overlay.write(index, image, track_ids, {t: (d.x, d.y) for d, t in zip(dets, ids)})
                if result.n_frames == 0:
                    first = image if image is not None else np.where(labels > 0, 0.35, 0.63)
                    write_image(out / "first_frame.png", np.asarray(first, np.float32))
                rows = sorted((_row(t, index, d, fps, px) for d, t in zip(dets, ids)), key=lambda r: r["track_id"])
                tracks_csv.write(rows)
                open_tracks.add(rows)
                open_tracks.close_ended(index)
                result.n_frames += 1
                result.n_detections += len(dets)
                if on_frame is not None:
                    on_frame(index)
        except TruncatedInputError as exc:
            truncated = exc
            result.error = str(exc)
    finally:
        if overlay is not None:
            overlay.close()
        written = stack.close()
        tracks_csv.close()
        kin = open_tracks.finish_all()
        write_rows_csv(out / "kinematics.csv", KINEMATICS_COLUMNS, kin)
        result.n_tracks = len(kin)
        result.seconds = time.perf_counter() - start
        result.files = {"tracks": "tracks.csv", "kinematics": "kinematics.csv"}
        if written is not None:
            result.files["labels"] = written.name
        if overlay is not None and overlay.video.frames:
            result.files["overlay"] = "overlay.mp4"
        atomic_write_json(out / "track.json", _summary(result, cfg, config_to_dict))
    if truncated is not None:
        raise truncated
    return result


def _row(track_id: int, frame: int, d: Any, fps: float, px: float) -> dict[str, Any]:
    return {
        "track_id": track_id,
        "frame": frame,
        "time_s": frame / fps,
        "head_x": d.x,
        "head_y": d.y,
        "head_x_um": d.x * px,
        "head_y_um": d.y * px,
        "tail_length_um": d.tail_length_px * px,
        "tail_angle_rad": d.tail_angle,
        "area_px": d.area,
    }


class OpenTracks:
    """Head samples of the tracks that the linker can still extend; the others are measured and dropped.

    trackpy keeps a head that found no successor for ``memory`` further frames (gap closing), so a track last
    seen at frame ``L`` can be extended up to frame ``L + memory + 1`` and no later. After frame ``i``, every track
    with ``L < i - memory`` is therefore complete: its kinematics row is computed and its samples freed. Memory
    holds the open tracks' samples and one row per finished track, whatever the video's length.
    """

    def __init__(self, fps: float, cfg: KinematicsConfig, memory: int) -> None:
        self.fps, self.cfg, self.memory = fps, cfg, int(memory)
        self.samples: dict[int, list[tuple[float, float, float, float, float]]] = {}
        self.last: dict[int, int] = {}
        self.done: dict[int, dict[str, Any]] = {}

    def add(self, rows: list[dict[str, Any]]) -> None:
        """Append tracks.csv rows (``track_id``, ``frame``, ``head_*_um``, ``tail_*``) to their open tracks."""
        for r in rows:
            tid = int(r["track_id"])
            if tid in self.done:  # would mean the gap-closing rule above is not trackpy's
                raise RuntimeError(f"track {tid} was extended at frame {r['frame']} after it was closed")
            self.samples.setdefault(tid, []).append(
                (r["frame"], r["head_x_um"], r["head_y_um"], r["tail_angle_rad"], r["tail_length_um"])
            )
            self.last[tid] = int(r["frame"])

    def close_ended(self, frame: int) -> None:
        """Measure the tracks that no frame after ``frame`` can extend."""
        for tid in [t for t, last in self.last.items() if last < frame - self.memory]:
            self._finish(tid)

    def finish_all(self) -> list[dict[str, Any]]:
        """Measure the tracks still open; returns every kinematics.csv row, by track id."""
        for tid in list(self.samples):
            self._finish(tid)
        return [self.done[t] for t in sorted(self.done)]

    def _finish(self, tid: int) -> None:
        s = np.array(self.samples.pop(tid), float)  # (n, 5) in frame order
        del self.last[tid]
        k = track_kinematics(s[:, 0], s[:, 1:3], self.fps, self.cfg, tail_angle=s[:, 3], tail_length_um=s[:, 4])
        self.done[tid] = {"track_id": tid, **k}


def _summary(result: TrackResult, cfg: TrackConfig, to_dict: Callable[[Any], dict]) -> dict[str, Any]:
    info = result.info
    return {
        "input": str(info.path),
        "kind": info.kind,
        "frames_announced": info.n_frames,
        "frames_processed": result.n_frames,
        "size": [info.height, info.width],
        "fps": info.fps,
        "fps_source": info.fps_source,
        "pixel_size_um": info.pixel_size_um,
        "pixel_size_source": info.pixel_size_source,
        "n_tracks": result.n_tracks,
        "n_detections": result.n_detections,
        "seconds": round(result.seconds, 3),
        "error": result.error,
        "files": result.files,
        "linker": "trackpy.linking.Linker (Crocker-Grier), search range "
        f"{cfg.max_speed_um_s / info.fps / info.pixel_size_um:.2f} px, memory {cfg.gap_frames} frames"
        if info.fps and info.pixel_size_um
        else "trackpy",
        "config": to_dict(cfg),
    }


# ----------------------------------------------------------------------------------------------------------------
# Frame sources
# ----------------------------------------------------------------------------------------------------------------


def mask_items(files: list[Path]) -> FrameItems:
    """Per-frame masks (binary or instance labels) from files sorted by name; no images."""
    from spermseg.data.io import read_image_native

    for i, f in enumerate(files):
        try:
            arr = read_image_native(f)
        except DataError as exc:
            raise TruncatedInputError(f, i, str(exc)) from None
        if arr.dtype.kind == "f":
            raise DataError(f"mask {f} has float pixels; masks are binary (0/1, 0/255) or integer label images")
        yield i, None, arr


def mask_stack_info(folder: Path, fps: float | None, pixel_size: float | None) -> tuple[StackInfo, list[Path]]:
    """The info and sorted files of a folder of per-frame masks."""
    from spermseg.data.io import read_size
    from spermseg.inference.stacks import frame_files

    if not folder.is_dir():
        raise DataError(f"--masks {folder} is not a folder of per-frame mask images")
    files = frame_files(folder)
    if not files:
        raise DataError(f"--masks {folder} holds no image files")
    h, w = read_size(files[0])
    info = StackInfo(
        folder,
        "masks",
        len(files),
        h,
        w,
        fps=fps,
        fps_source="flag" if fps else None,
        pixel_size_um=pixel_size,
        pixel_size_source="flag" if pixel_size else None,
    )
    return info, files


def model_items(stack: Any, model: str | Path, cfg: TrackConfig, device: str = "auto") -> FrameItems:
    """Segment a :class:`~spermseg.inference.stacks.Stack` in batches with a model (bundle, run dir or checkpoint)."""
    from spermseg.inference.predict import PredictOptions, build_batch_fn

    fn, threshold = build_batch_fn(
        model, PredictOptions(batch_size=cfg.batch_size, device=device, threshold=cfg.threshold)
    )
    for first, frames in stack.batches(cfg.batch_size):
        probs = fn(frames)
        for j in range(len(frames)):
            yield first + j, frames[j], probs[j] >= threshold


def track_source(
    source: str | Path,
    out: str | Path,
    cfg: TrackConfig | None = None,
    *,
    model: str | Path | None = None,
    masks: bool = False,
    fps: float | None = None,
    pixel_size: float | None = None,
    device: str = "auto",
    show_progress: bool | None = None,
    force: bool = False,
) -> TrackResult:
    """Track one input: a video / stack / frame folder segmented by ``model``, or (``masks``) a folder of masks.

    Args:
        source: the input (see :func:`spermseg.inference.stacks.open_stack`) or, with ``masks``, the mask folder.
        out: output folder; one that holds an earlier run (``track.json``) is refused unless ``force``.
        cfg: parameters.
        model: bundle, run directory, checkpoint or ``builtin`` (not with ``masks``).
        fps, pixel_size: calibration flags (they override the metadata).
        device: inference device.
        show_progress: None: a bar on a terminal, lines otherwise; False: silent.
        force: replace an earlier run's outputs in ``out``.

    Raises:
        SpermsegError: bad input, options or calibration; :class:`TruncatedInputError` after the processed frames'
        outputs are written.
    """
    from spermseg.inference.stacks import open_stack
    from spermseg.utils.lock import exclusive_lock
    from spermseg.utils.progress import progress

    cfg = cfg or TrackConfig()
    validate(cfg)
    if masks:
        info, files = mask_stack_info(Path(source), fps, pixel_size)
        items: FrameItems = mask_items(files)
    else:
        if model is None:
            raise DataError("track needs --model MODEL to segment frames, or --masks DIR of existing masks")
        from spermseg.inference.bundle import resolve_model

        model = resolve_model(model)  # 'builtin' without weights fails here, before anything is written
        stack = open_stack(source, fps=fps, pixel_size=pixel_size)
        info = stack.info
        items = model_items(stack, model, cfg, device)
    if not info.fps:
        raise DataError(f"{info.path}: no frame rate in its metadata; pass --fps FRAMES_PER_SECOND")
    if not info.pixel_size_um:
        raise DataError(f"{info.path}: no pixel size in its metadata; pass --pixel-size MICROMETRES_PER_PIXEL")
    out = Path(out)
    if (out / "track.json").exists() and not force:
        raise DataError(f"{out} holds an earlier tracking run (track.json); choose another --out or pass --force")
    out.mkdir(parents=True, exist_ok=True)
    bar = progress(total=info.n_frames or None, desc=f"track {Path(source).name}", unit="frame",
                   disable=None if show_progress is None else not show_progress)  # fmt: skip
    try:
        with exclusive_lock(out / ".spermseg-track.lock", f"spermseg track into {out}"):
            return track(items, info, out, cfg, on_frame=lambda _i: bar.update(1))
    finally:
        bar.close()
