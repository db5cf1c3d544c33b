"""Tiling covers and blends exactly; videos stream in batches and overlays write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spermseg.errors import DataError
from spermseg.inference.tiling import tile_starts, tiled_apply
from spermseg.inference.video import VideoWriter, iter_video_batches, video_info


@pytest.mark.parametrize(("size", "tile", "overlap"), [(100, 32, 8), (64, 64, 16), (65, 64, 0), (10, 64, 8)])
def test_tiles_cover_every_pixel(size: int, tile: int, overlap: int) -> None:
    starts = tile_starts(size, tile, overlap)
    covered = np.zeros(size, bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all()
    assert starts[-1] + min(tile, size) == size


def test_tiled_apply_is_exact_for_a_pointwise_function() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((150, 97), dtype=np.float32)
    calls = []

    def fn(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        return np.sqrt(batch)

    out = tiled_apply(fn, image, tile=64, overlap=16, batch_size=3)
    np.testing.assert_allclose(out, np.sqrt(image), atol=1e-6)
    assert all(s[1:] == (64, 64) and s[0] <= 3 for s in calls)


def _write_video(path: Path, n: int, size=(48, 64)) -> None:
    with VideoWriter(path, fps=10, size=size) as writer:
        for i in range(n):
            frame = np.full((*size, 3), (i * 20) % 255, np.uint8)
            writer.write(frame)


def test_video_round_trip_in_batches(tmp_path: Path) -> None:
    path = tmp_path / "v.avi"
    _write_video(path, 7)
    info = video_info(path)
    assert (info.height, info.width) == (48, 64)
    batches = list(iter_video_batches(path, batch_size=3))
    assert [b[0] for b in batches] == [0, 3, 6]
    frames = np.concatenate([b[1] for b in batches])
    assert frames.shape == (7, 48, 64) and frames.dtype == np.float32
    # MJPG is lossy but a flat gray frame survives within a few levels
    assert abs(frames[2].mean() - 40 / 255) < 0.03


def test_bad_video_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(DataError, match="bad.mp4"):
        list(iter_video_batches(bad))
    with pytest.raises(DataError, match="not found"):
        video_info(tmp_path / "missing.mp4")
