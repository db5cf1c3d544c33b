"""Time series of frames for tracking: videos, multi-page TIFF / OME-TIFF / ImageJ stacks and folders of frames.

Every reader streams (one batch in memory) and reads *all* of its input: a stack is never silently reduced to its
first page, and an input this module cannot read whole is refused with one line saying why.

* **Videos** (MP4/AVI/MOV/MKV, :mod:`spermseg.inference.video`): fps from the container.
* **TIFF stacks**: every full-resolution page of the file's one image series (tifffile). OME-TIFF: pixel size from
  ``Pixels/@PhysicalSizeX`` (+ unit) and the frame interval from ``@TimeIncrement`` (+ unit); ImageJ TIFF: pixel size
  from the XResolution tag with the ``unit`` of the ImageJ description, the interval from ``finterval`` (or
  ``fps``). Plain TIFFs carry no trusted calibration (72 dpi is a default, not a measurement). Stacks with several
  series, channels (C > 1) or both Z and T are refused. RGB pages become gray with BT.601 weights.
* **Folders of frames**: the image files sorted by name, one frame each (``--fps`` needed).

Calibration: a flag (``fps`` / ``pixel_size`` arguments) overrides the metadata (a wrong calibration can be
corrected); otherwise the metadata is used; :class:`StackInfo` records which (``*_source``).

Truncation: a video that decodes fewer frames than its container announces, a TIFF whose page chain or pixel
data is cut (tifffile reports an invalid offset), or an unreadable frame file raise :class:`TruncatedInputError`
naming the file and the first missing frame *after* every readable frame before it has been yielded, so callers
keep the processed frames.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from spermseg.errors import DataError

_LENGTH_UM = {"m": 1e6, "mm": 1e3, "cm": 1e4, "um": 1.0, "µm": 1.0, "micron": 1.0, "microns": 1.0, "nm": 1e-3}
_TIME_S = {"s": 1.0, "sec": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "min": 60.0, "h": 3600.0}


class TruncatedInputError(DataError):
    """An input that ends before its announced length or has an unreadable frame (exit code 1 in the CLI).

    Attributes:
        path: the file (or, for a folder, the frame file).
        frame: index of the first frame that could not be read; frames before it were yielded.
    """

    def __init__(self, path: Path, frame: int, reason: str) -> None:
        super().__init__(
            f"{path}: frame {frame} cannot be read ({reason}); the {frame} frames before it were processed"
        )
        self.path, self.frame = path, frame


@dataclass(frozen=True)
class StackInfo:
    """What is known about a stack before it is read.

    Attributes:
        path: the input (file or folder).
        kind: ``video``, ``ome-tiff``, ``imagej-tiff``, ``tiff`` or ``frames``.
        n_frames: frames announced (exact for TIFF and folders; the container's count for videos).
        height, width: frame size.
        fps, fps_source: frames per second and where it came from (``metadata``, ``flag``, ``container`` or None).
        pixel_size_um, pixel_size_source: micrometres per pixel and its source (``metadata``, ``flag`` or None).
    """

    path: Path
    kind: str
    n_frames: int
    height: int
    width: int
    fps: float | None = None
    fps_source: str | None = None
    pixel_size_um: float | None = None
    pixel_size_source: str | None = None


def _calibrate(info: StackInfo, fps: float | None, pixel_size: float | None) -> StackInfo:
    """Apply the flags over the metadata (see the module docstring)."""
    if fps is not None:
        info = replace(info, fps=float(fps), fps_source="flag")
    if pixel_size is not None:
        info = replace(info, pixel_size_um=float(pixel_size), pixel_size_source="flag")
    return info


def _finite_positive(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) and value > 0 else None


# ----------------------------------------------------------------------------------------------------------------
# TIFF metadata
# ----------------------------------------------------------------------------------------------------------------


def ome_calibration(xml: str) -> tuple[float | None, float | None]:
    """(pixel size in um, frame interval in s) from OME-XML; None where absent or in an unknown unit."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, None
    pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
    if pixels is None:
        return None, None
    size = interval = None
    if pixels.get("PhysicalSizeX"):
        scale = _LENGTH_UM.get(pixels.get("PhysicalSizeXUnit", "µm"))
        size = float(pixels.get("PhysicalSizeX")) * scale if scale else None
    if pixels.get("TimeIncrement"):
        scale = _TIME_S.get(pixels.get("TimeIncrementUnit", "s"))
        interval = float(pixels.get("TimeIncrement")) * scale if scale else None
    return _finite_positive(size), _finite_positive(interval)


def imagej_calibration(tif: object) -> tuple[float | None, float | None]:
    """(pixel size in um, frame interval in s) of an ImageJ TIFF (XResolution + ``unit``, ``finterval``/``fps``)."""
    meta = getattr(tif, "imagej_metadata", None) or {}
    size = interval = None
    unit = str(meta.get("unit", "")).replace("\\u00B5", "µ").strip()
    scale = _LENGTH_UM.get(unit)
    tag = tif.pages[0].tags.get("XResolution")  # type: ignore[attr-defined]
    if scale and tag is not None:
        num, den = tag.value
        if num > 0:
            size = scale * den / num  # XResolution = pixels per unit
    if meta.get("finterval"):
        interval = float(meta["finterval"]) * _TIME_S.get(str(meta.get("tunit", "s")).replace("sec", "s"), 1.0)
    elif meta.get("fps"):
        interval = 1.0 / float(meta["fps"])
    return _finite_positive(size), _finite_positive(interval)


class _TiffLog(logging.Handler):
    """Collects tifffile's error log lines: they are how a cut page chain shows up (tifffile keeps going)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _to_float(arr: np.ndarray, path: Path, frame: int) -> np.ndarray:
    """A stored page (H, W) or (H, W, C) -> gray float32 in [0, 1] (the rules of :mod:`spermseg.data.io`)."""
    from spermseg.data import io

    arr = io._check_shape(np.asarray(arr), path, f"frame {frame} of")
    scale = io._scale_of(arr, path, "image")
    gray = io._color_to_gray(arr) if arr.ndim == 3 else arr.astype(np.float32)
    if arr.dtype.kind == "f" and not np.isfinite(gray).all():
        raise DataError(f"{path}: frame {frame} has NaN/Inf pixels; fix the stack")
    return np.clip(gray / np.float32(scale), 0.0, 1.0) if scale != 1.0 else np.clip(gray, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------------------------
# Stacks
# ----------------------------------------------------------------------------------------------------------------


class Stack:
    """A streamed time series of gray frames; :attr:`info` describes it, :meth:`frames` reads it once."""

    def __init__(self, info: StackInfo) -> None:
        self.info = info

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(index, frame)`` with frame (H, W) float32 in [0, 1], in order, every frame."""
        raise NotImplementedError

    def batches(self, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_index, frames)`` with frames (b, H, W) float32, b <= batch_size."""
        batch: list[np.ndarray] = []
        first = 0
        try:
            for index, frame in self.frames():
                if not batch:
                    first = index
                batch.append(frame)
                if len(batch) == batch_size:
                    yield first, np.stack(batch)
                    batch = []
        except TruncatedInputError:
            if batch:  # the frames read before the cut are processed too, as the error message says
                yield first, np.stack(batch)
            raise
        if batch:
            yield first, np.stack(batch)


class VideoStack(Stack):
    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        from spermseg.inference.video import iter_video_batches

        n = 0
        try:
            for first, batch in iter_video_batches(self.info.path, 8):
                for j, frame in enumerate(batch):
                    yield first + j, frame
                    n = first + j + 1
        except DataError as exc:  # no frame at all
            raise TruncatedInputError(self.info.path, 0, str(exc).split(": ", 1)[-1]) from None
        if self.info.n_frames > 0 and n < self.info.n_frames:
            raise TruncatedInputError(
                self.info.path, n, f"the container announces {self.info.n_frames} frames; the file is cut or corrupt"
            )


class TiffStack(Stack):
    def __init__(self, info: StackInfo, damaged: str | None, by_pages: bool = False) -> None:
        super().__init__(info)
        self.damaged, self.by_pages = damaged, by_pages

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        import tifffile

        path = self.info.path
        with tifffile.TiffFile(path) as tif:
            pages = _full_pages(tif) if self.by_pages else None
            for i in range(self.info.n_frames):
                try:
                    arr = pages[i].asarray() if pages is not None else tif.asarray(key=i, series=0)
                except Exception as exc:  # tifffile raises many types on cut data
                    raise TruncatedInputError(path, i, str(exc).splitlines()[0] or type(exc).__name__) from None
                yield i, _to_float(arr, path, i)
        if self.damaged:
            raise TruncatedInputError(path, self.info.n_frames, self.damaged)


class FolderStack(Stack):
    def __init__(self, info: StackInfo, files: list[Path]) -> None:
        super().__init__(info)
        self.files = files

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        from spermseg.data.io import read_image

        for i, f in enumerate(self.files):
            try:
                img = read_image(f)
            except DataError as exc:
                raise TruncatedInputError(f, i, str(exc)) from None
            if img.shape != (self.info.height, self.info.width):
                raise DataError(f"{f}: frame {i} is {img.shape[1]}x{img.shape[0]}, the first frame "
                                f"{self.info.width}x{self.info.height}; a stack has one frame size")  # fmt: skip
            yield i, img


def _same_planes(series: list) -> bool:
    """Whether every series is one 2-D (or RGB) page of the same shape and dtype: a stack written page by page."""
    first = series[0]
    return all(len(s.pages) == 1 and s.shape == first.shape and s.dtype == first.dtype and len(s.shape) in (2, 3)
               and s.axes in ("YX", "YXS") for s in series)  # fmt: skip


def _full_pages(tif: object) -> list:
    return [p for p in tif.pages if not getattr(p, "is_reduced", False)]  # type: ignore[attr-defined]


def frame_files(folder: Path) -> list[Path]:
    """The image files of a folder sorted by name (natural order: ``frame2`` before ``frame10``)."""
    from spermseg.data.io import is_image_file

    def key(p: Path) -> list:
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]

    return sorted((p for p in folder.iterdir() if p.is_file() and is_image_file(p)), key=key)


def _open_tiff(path: Path) -> Stack:
    import tifffile

    log = _TiffLog()
    logger = logging.getLogger("tifffile")
    logger.addHandler(log)
    try:
        with tifffile.TiffFile(path) as tif:
            series = [s for s in tif.series if not getattr(s, "is_reduced", False)]
            pages = _full_pages(tif)
            damaged = "; ".join(dict.fromkeys(log.messages)) or None
            by_pages = False
            if damaged:
                # the series metadata of a cut file is not to be trusted: read the pages that survive, then fail
                n, first = len(pages), pages[0]
                kind, size, interval = "tiff", None, None
                shape = first.shape
            else:
                if len(series) > 1 and _same_planes(series):
                    # one series per page (e.g. pages written one by one by tifffile): the pages are the frames
                    by_pages = True
                elif len(series) != 1:
                    raise DataError(f"{path} holds {len(series)} image series; spermseg reads one time series per "
                                    "file: export each series as its own file")  # fmt: skip
                s = series[0]
                dims = {a: d for a, d in zip(s.axes, s.shape) if a not in "YXS" and d > 1}
                if by_pages:
                    dims = {"I": len(pages)}
                if len(dims) > 1 or any(a == "C" for a in dims):
                    raise DataError(f"{path} is a {s.axes} stack of shape {s.shape}; spermseg reads a single-channel "
                                    "time series (one of T, Z, I, Q): split channels or dimensions first")  # fmt: skip
                n = int(next(iter(dims.values()), 1))
                shape = tuple(d for a, d in zip(s.axes, s.shape) if a in "YX")
                if tif.is_ome:
                    kind, (size, interval) = "ome-tiff", ome_calibration(tif.ome_metadata or "")
                elif tif.is_imagej:
                    kind, (size, interval) = "imagej-tiff", imagej_calibration(tif)
                else:
                    kind, size, interval = "tiff", None, None
    except DataError:
        raise
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"cannot read stack {path}: not a readable TIFF ({reason})") from None
    finally:
        logger.removeHandler(log)
    info = StackInfo(
        path,
        kind,
        n,
        int(shape[0]),
        int(shape[1]),
        fps=1.0 / interval if interval else None,
        fps_source="metadata" if interval else None,
        pixel_size_um=size,
        pixel_size_source="metadata" if size else None,
    )
    return TiffStack(info, damaged, by_pages=by_pages or bool(damaged))


def open_stack(path: str | Path, *, fps: float | None = None, pixel_size: float | None = None) -> Stack:
    """Open a video, a TIFF stack or a folder of frames (see the module docstring).

    Args:
        path: the input.
        fps: frames per second (overrides the metadata; needed for folders and uncalibrated TIFFs).
        pixel_size: micrometres per pixel (overrides the metadata).

    Returns:
        A :class:`Stack`; its :attr:`~Stack.info` holds the calibration and its sources.

    Raises:
        DataError: a missing or unsupported input (one line naming it).
    """
    from spermseg.data.io import TIFF_SUFFIXES, read_size
    from spermseg.inference.video import is_video, video_info

    p = Path(path)
    if p.is_dir():
        files = frame_files(p)
        if not files:
            raise DataError(f"folder {p} holds no image files (PNG/TIFF/JPEG/BMP) to read as frames")
        h, w = read_size(files[0])
        return _calibrated(FolderStack(StackInfo(p, "frames", len(files), h, w), files), fps, pixel_size)
    if not p.exists():
        raise DataError(f"input not found: {p}")
    if is_video(p):
        v = video_info(p)
        info = StackInfo(p, "video", v.n_frames, v.height, v.width, fps=v.fps, fps_source="container")
        return _calibrated(VideoStack(info), fps, pixel_size)
    if p.suffix.lower() in TIFF_SUFFIXES:
        return _calibrated(_open_tiff(p), fps, pixel_size)
    raise DataError(f"{p}: not a video (MP4/AVI/MOV/MKV), TIFF stack or folder of frames")


def _calibrated(stack: Stack, fps: float | None, pixel_size: float | None) -> Stack:
    stack.info = _calibrate(stack.info, fps, pixel_size)
    return stack
