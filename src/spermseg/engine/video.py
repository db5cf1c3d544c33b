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
    """Write RGB uint8 frames (H, W, 3) to an MP4 (``mp4v``) or AVI (``MJPG``) file.

    Closing (also on an exception or interrupt, as a context manager) finalizes the container, so frames
    written before an interruption stay playable.
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]) -> None:
        import cv2

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
        height, width = size
        self._writer = cv2.VideoWriter(str(self.path), fourcc, float(fps), (int(width), int(height)))
        if not self._writer.isOpened():
            raise DataError(f"cannot write video {self.path}: no encoder for {self.path.suffix}; use .mp4 or .avi")
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        import cv2

        self._writer.write(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        self._writer.release()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
