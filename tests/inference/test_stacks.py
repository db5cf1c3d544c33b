"""Stack readers (spermseg.inference.stacks): every page, calibration from OME/ImageJ metadata, truncation errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from spermseg.errors import DataError
from spermseg.inference.stacks import TruncatedInputError, open_stack


def _pages(n: int = 5, size: int = 32) -> np.ndarray:
    """n distinct uint16 pages: page k is filled with 1000 * (k + 1)."""
    return np.stack([np.full((size, size), 1000 * (k + 1), np.uint16) for k in range(n)])


def _read_all(stack) -> list[np.ndarray]:
    return [f for _i, f in stack.frames()]


def test_plain_five_page_tiff_reads_every_page_and_needs_flags(tmp_path: Path) -> None:
    """A 5-page TIFF gives 5 frames in order (not its first page); a plain TIFF has no calibration."""
    path = tmp_path / "five.tif"
    with tifffile.TiffWriter(path) as tif:
        for page in _pages():
            tif.write(page)
    stack = open_stack(path)
    assert stack.info.n_frames == 5 and stack.info.kind == "tiff"
    assert stack.info.fps is None and stack.info.pixel_size_um is None
    frames = _read_all(stack)
    assert [round(float(f.mean()) * 65535) for f in frames] == [1000, 2000, 3000, 4000, 5000]
    batches = list(open_stack(path, fps=10).batches(2))
    assert [b[0] for b in batches] == [0, 2, 4] and sum(len(b[1]) for b in batches) == 5


def test_ome_tiff_pixel_size_and_interval_from_metadata_flags_override(tmp_path: Path) -> None:
    """OME PhysicalSizeX 250 nm and TimeIncrement 40 ms -> 0.25 um and 25 fps (metadata); a flag wins."""
    path = tmp_path / "s.ome.tif"
    tifffile.imwrite(path, _pages(), metadata={"axes": "TYX", "PhysicalSizeX": 250, "PhysicalSizeXUnit": "nm",
                                                "TimeIncrement": 40, "TimeIncrementUnit": "ms"})  # fmt: skip
    info = open_stack(path).info
    assert info.kind == "ome-tiff" and info.n_frames == 5
    assert info.pixel_size_um == pytest.approx(0.25) and info.pixel_size_source == "metadata"
    assert info.fps == pytest.approx(25.0) and info.fps_source == "metadata"
    over = open_stack(path, pixel_size=0.5).info
    assert over.pixel_size_um == 0.5 and over.pixel_size_source == "flag" and over.fps_source == "metadata"


def test_imagej_tiff_calibration(tmp_path: Path) -> None:
    """ImageJ: XResolution 4 px/um -> 0.25 um per pixel; finterval 0.1 s -> 10 fps."""
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, _pages(), imagej=True, resolution=(4.0, 4.0),
                     metadata={"axes": "TYX", "unit": "um", "finterval": 0.1})  # fmt: skip
    info = open_stack(path).info
    assert info.kind == "imagej-tiff" and info.n_frames == 5
    assert info.pixel_size_um == pytest.approx(0.25) and info.fps == pytest.approx(10.0)


def test_truncated_tiff_yields_the_readable_frames_then_names_file_and_frame(tmp_path: Path) -> None:
    """A per-page TIFF cut at 60 %: the pages before the cut are yielded, then the error names file and frame."""
    path = tmp_path / "cut.tif"
    with tifffile.TiffWriter(path) as tif:
        for page in _pages(5, 64):
            tif.write(page)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    stack = open_stack(path, fps=5)
    got = []
    with pytest.raises(TruncatedInputError) as err:
        for i, _f in stack.frames():
            got.append(i)
    assert got == list(range(err.value.frame)) and 1 <= err.value.frame < 5
    assert str(path) in str(err.value) and f"frame {err.value.frame}" in str(err.value)


def test_multichannel_and_multiseries_stacks_are_refused(tmp_path: Path) -> None:
    """A 2-channel time series is not silently read as one channel."""
    path = tmp_path / "tc.tif"
    tifffile.imwrite(path, np.zeros((3, 2, 16, 16), np.uint16), imagej=True, metadata={"axes": "TCYX"})
    with pytest.raises(DataError, match="single-channel"):
        open_stack(path)


def test_folder_of_frames_in_natural_order(tmp_path: Path) -> None:
    """frame2 comes before frame10; every file is one frame."""
    from spermseg.data.io import write_image

    for k in (10, 2, 1):
        write_image(tmp_path / f"frame{k}.png", np.full((8, 8), k * 20, np.uint8))
    stack = open_stack(tmp_path, fps=5)
    assert [round(float(f.mean()) * 255) for f in _read_all(stack)] == [20, 40, 200]
    assert stack.info.fps_source == "flag"


def test_truncated_avi_names_the_first_missing_frame(tmp_path: Path) -> None:
    """An MJPG AVI cut at 60 % decodes fewer frames than its header announces: TruncatedInputError after them."""
    from spermseg.inference.video import VideoWriter

    path = tmp_path / "clip.avi"
    with VideoWriter(path, 25, (64, 64)) as w:
        for i in range(40):
            img = np.zeros((64, 64, 3), np.uint8)
            img[:, (i * 3) % 64] = 255
            w.write(img)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    stack = open_stack(path, pixel_size=0.3)
    n = 0
    with pytest.raises(TruncatedInputError) as err:
        for _i, _f in stack.frames():
            n += 1
    assert err.value.frame == n and 0 < n < 40 and "clip.avi" in str(err.value)
