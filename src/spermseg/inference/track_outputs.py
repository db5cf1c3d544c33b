"""What ``spermseg track`` writes, frame by frame in constant memory: the label stack, the overlay video, CSVs.

* :class:`LabelStackWriter`: each frame's uint16 labels (ids = track ids) are appended to a hidden raw file;
  :meth:`~LabelStackWriter.close` converts it page by page into an ImageJ hyperstack TIFF (``TYX``, pixel size
  in um, frame interval), which Fiji opens as a time series with its calibration and napari as a label stack.
  The TIFF needs its frame count up front, and a video's count is only known once it has been decoded; the raw
  file keeps memory constant where holding the stack would not.
* :class:`OverlayWriter`: the frame in gray, each sperm in its track's colour, its id and its trail of the last
  ``trail_frames`` head positions, to an H.264 MP4 (:class:`spermseg.inference.video.VideoWriter`).
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np

from spermseg.errors import DataError

TRACK_COLUMNS: tuple[str, ...] = (
    "track_id",
    "frame",
    "time_s",
    "head_x",
    "head_y",
    "head_x_um",
    "head_y_um",
    "tail_length_um",
    "tail_angle_rad",
    "area_px",
)


class LabelStackWriter:
    """Append uint16 label frames; :meth:`close` writes ``path`` as an ImageJ TYX TIFF (see the module docstring)."""

    def __init__(self, path: Path, pixel_size_um: float | None, fps: float | None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._raw_path = self.path.with_name(f".{self.path.name}.raw")
        self._raw = open(self._raw_path, "wb")  # noqa: SIM115 - closed in close()
        self.pixel_size_um, self.fps = pixel_size_um, fps
        self.shape: tuple[int, int] | None = None
        self.frames = 0

    def write(self, labels: np.ndarray) -> None:
        """Append one (H, W) frame of track ids (0 background)."""
        if self.shape is None:
            self.shape = labels.shape
        elif labels.shape != self.shape:
            raise DataError(f"{self.path}: frame of size {labels.shape}, expected {self.shape}")
        self._raw.write(np.ascontiguousarray(labels, dtype="<u2").tobytes())
        self.frames += 1

    def close(self) -> Path | None:
        """Write the TIFF (atomically) from the raw frames, one page in memory at a time; None without frames."""
        import tifffile

        from spermseg.utils.atomic import atomic_path

        self._raw.close()
        try:
            if not self.frames or self.shape is None:
                return None
            h, w = self.shape
            page_bytes = h * w * 2

            def pages():  # noqa: ANN202 - generator of (H, W) uint16
                with open(self._raw_path, "rb") as fh:
                    for _ in range(self.frames):
                        yield np.frombuffer(fh.read(page_bytes), dtype="<u2").reshape(h, w)

            meta: dict[str, object] = {"axes": "TYX"}
            kwargs: dict[str, object] = {}
            if self.pixel_size_um:
                meta["unit"] = "um"
                kwargs["resolution"] = (1.0 / self.pixel_size_um, 1.0 / self.pixel_size_um)
            if self.fps:
                meta["finterval"] = 1.0 / self.fps
            with atomic_path(self.path) as tmp, tifffile.TiffWriter(tmp, imagej=True) as tif:
                tif.write(pages(), shape=(self.frames, h, w), dtype=np.uint16, metadata=meta, **kwargs)
            return self.path
        finally:
            self._raw_path.unlink(missing_ok=True)


def track_color(track_id: int) -> tuple[int, int, int]:
    """A distinct, stable RGB colour per track id (golden-angle hues, full saturation)."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((track_id * 0.618033988749895) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


class OverlayWriter:
    """Draw ids, masks and trails on each frame and append it to an H.264 MP4."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int], trail_frames: int = 50) -> None:
        from spermseg.inference.video import VideoWriter

        self.video = VideoWriter(path, fps, size)
        self.trail_frames = int(trail_frames)
        self.trails: dict[int, deque[tuple[int, float, float]]] = {}

    def write(
        self, frame: int, image: np.ndarray | None, labels: np.ndarray, heads: dict[int, tuple[float, float]]
    ) -> None:
        """One frame: ``image`` (H, W) in [0, 1] or None (masks only: a gray stand-in), ``labels`` track ids,
        ``heads`` {track_id: (x, y)} of this frame."""
        import cv2

        h, w = labels.shape
        if image is None:
            gray = np.where(labels > 0, 90, 160).astype(np.uint8)
        else:
            gray = (np.clip(image, 0, 1) * 255).astype(np.uint8)
        rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
        ids = [int(i) for i in np.unique(labels) if i]
        if ids:
            lut = np.zeros((int(labels.max()) + 1, 3), np.float32)
            for i in ids:
                lut[i] = track_color(i)
            sel = labels > 0
            rgb[sel] = 0.6 * rgb[sel] + 0.4 * lut[labels[sel]]
        out = rgb.astype(np.uint8)
        for tid, (x, y) in heads.items():
            trail = self.trails.setdefault(tid, deque())
            trail.append((frame, x, y))
        for tid in list(self.trails):
            trail = self.trails[tid]
            while trail and trail[0][0] <= frame - self.trail_frames:
                trail.popleft()
            if not trail:
                del self.trails[tid]
                continue
            color = track_color(tid)
            pts = np.round(np.array([(x, y) for _, x, y in trail])).astype(np.int32)
            if len(pts) > 1:
                cv2.polylines(out, [pts.reshape(-1, 1, 2)], False, color, 1, cv2.LINE_AA)
            if tid in heads:
                x, y = heads[tid]
                org = (int(min(max(x + 6, 0), w - 20)), int(min(max(y - 6, 10), h - 2)))
                cv2.putText(out, str(tid), org, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
                cv2.putText(out, str(tid), org, cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)
        self.video.write(out)

    def close(self) -> None:
        self.video.close()
