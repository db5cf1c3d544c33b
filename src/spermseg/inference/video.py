"""Video input/output for inference: frames streamed in batches (constant memory for any length).

Reading uses OpenCV's FFmpeg backend (MP4, AVI, MOV, MKV). Frames are converted to gray with the same BT.601
weights as still images (OpenCV's ``COLOR_BGR2GRAY``) and scaled to [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from spermseg.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v")


def is_video(path: str | Path) -> bool:
    """Whether ``path`` has a video suffix."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoInfo:
    """Frame count (as reported by the container; may be approximate), frames per second and frame size."""

    n_frames: int
    fps: float
    height: int
    width: int


def _open(path: Path):  # noqa: ANN202 - cv2.VideoCapture
    import cv2

    if not path.is_file():
        raise DataError(f"video not found: {path}")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(f"cannot open video {path}: unsupported codec or corrupt file; convert it to MP4 (H.264)")
    return cap


def video_info(path: str | Path) -> VideoInfo:
    """Read the container's frame count, fps and size without decoding the frames."""
    import cv2

    cap = _open(Path(path))
    try:
        return VideoInfo(
            n_frames=int(cap.get(cv2.CAP_PROP_FRAME_COUNT)),
            fps=float(cap.get(cv2.CAP_PROP_FPS)) or 25.0,
            height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
        )
    finally:
        cap.release()


def iter_video_batches(path: str | Path, batch_size: int = 8) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_frame_index, frames)`` with frames (b, H, W) float32 in [0, 1], b <= batch_size.

    Only one batch is in memory at a time. A video whose first frame cannot be decoded raises DataError.
    """
    import cv2

    path = Path(path)
    cap = _open(path)
    try:
        index = 0
        batch: list[np.ndarray] = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if frame.ndim == 3:
                frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            scale = 65535.0 if frame.dtype == np.uint16 else 255.0
            batch.append(frame.astype(np.float32) / scale)
            if len(batch) == batch_size:
                yield index, np.stack(batch)
                index += len(batch)
                batch = []
        if batch:
            yield index, np.stack(batch)
            index += len(batch)
        if index == 0:
            raise DataError(f"no frame could be decoded from {path}; the file is empty or corrupt")
    finally:
        cap.release()


class VideoWriter:
    """Write RGB uint8 frames (H, W, 3) to an H.264 MP4 (browsers play it) or a Motion-JPEG AVI.

    MP4 goes through imageio-ffmpeg's bundled FFmpeg with ``libx264``, ``yuv420p`` (the pixel format browsers and
    QuickTime decode) and ``+faststart`` (the index at the front, so playback starts before the download ends).
    yuv420p needs even sides, so an odd-sized frame gets one replicated row/column at the bottom/right rather
    than being rescaled. AVI (``MJPG``) uses OpenCV.

    The file is written under a hidden temporary name and renamed onto ``path`` when closed (also on an exception
    or interrupt, as a context manager), so ``path`` is never a truncated video: a killed run leaves only the
    hidden temporary file.
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int], *, crf: int = 18) -> None:
        import tempfile

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        height, width = int(size[0]), int(size[1])
        self.size = (height, width)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=self.path.suffix, dir=self.path.parent)
        import os

        os.close(fd)
        self._tmp = Path(tmp)
        self.frames = 0
        self._closed = False
        if self.path.suffix.lower() == ".avi":
            import cv2

            self._ffmpeg = None
            self._cv = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*"MJPG"), float(fps), (width, height))
            if not self._cv.isOpened():
                self._tmp.unlink(missing_ok=True)
                raise DataError(f"cannot write video {self.path}: no MJPG encoder; use .mp4")
            return
        if self.path.suffix.lower() not in (".mp4", ".m4v", ".mov"):
            self._tmp.unlink(missing_ok=True)
            raise DataError(f"cannot write video {self.path}: unsupported suffix {self.path.suffix}; use .mp4 or .avi")
        import imageio_ffmpeg

        self._cv = None
        self._even = (height + height % 2, width + width % 2)
        self._ffmpeg = imageio_ffmpeg.write_frames(
            str(self._tmp),
            (self._even[1], self._even[0]),
            fps=float(fps),
            codec="libx264",
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            quality=None,
            macro_block_size=1,  # no rescaling: the frame is padded to even sides above
            ffmpeg_log_level="error",
            output_params=["-crf", str(crf), "-preset", "veryfast", "-movflags", "+faststart"],
        )
        self._ffmpeg.send(None)  # start the encoder

    def write(self, rgb: np.ndarray) -> None:
        """Append one RGB uint8 frame (H, W, 3) of the size given at construction."""
        frame = np.ascontiguousarray(rgb, dtype=np.uint8)
        if frame.shape[:2] != self.size:
            raise DataError(f"video {self.path}: frame of size {frame.shape[:2]}, expected {self.size}")
        if self._cv is not None:
            import cv2

            self._cv.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        else:
            pad = ((0, self._even[0] - self.size[0]), (0, self._even[1] - self.size[1]), (0, 0))
            self._ffmpeg.send(np.ascontiguousarray(np.pad(frame, pad, mode="edge")) if any(p[1] for p in pad[:2])
                              else frame)  # fmt: skip
        self.frames += 1

    def close(self) -> None:
        """Finish the container and move it onto :attr:`path` (a video without frames is not kept)."""
        if self._closed:
            return
        self._closed = True
        import os

        try:
            if self._cv is not None:
                self._cv.release()
            else:
                self._ffmpeg.close()
            if self.frames:
                os.replace(self._tmp, self.path)
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def video_codec(path: str | Path) -> str:
    """The codec name of a video's first stream as FFmpeg reports it (e.g. ``h264``), for checks and tests."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        meta = next(reader)
    finally:
        reader.close()
    return str(meta.get("codec", "")).split(" ")[0]
