"""Image, mask and soft-mask I/O: every format, colour conversion, and each malformed-file error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from spermseg.data import io
from spermseg.errors import DataError

RNG = np.random.default_rng(0)
GRAY8 = RNG.integers(0, 256, size=(24, 40), dtype=np.uint8)  # non-square on purpose
RGB8 = RNG.integers(0, 256, size=(24, 40, 3), dtype=np.uint8)
MASK = RNG.random((24, 40)) > 0.7


def _bt601(rgb: np.ndarray) -> np.ndarray:
    return (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255.0


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".tiff"])
def test_gray8_lossless_formats(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"img{suffix}"
    if suffix in io.TIFF_SUFFIXES:
        tifffile.imwrite(path, GRAY8)
    else:
        Image.fromarray(GRAY8).save(path)
    img = io.read_image(path)
    assert img.dtype == np.float32 and img.shape == (24, 40)
    np.testing.assert_allclose(img, GRAY8 / 255.0, atol=1e-6)
    assert io.read_image_native(path).dtype == np.uint8  # compact storage keeps the integers


def test_png16_and_tiff16(tmp_path: Path) -> None:
    g16 = RNG.integers(0, 65536, size=(24, 40), dtype=np.uint16)
    Image.fromarray(g16).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "a.tif", g16)
    for name in ("a.png", "a.tif"):
        native = io.read_image_native(tmp_path / name)
        assert native.dtype == np.uint16
        np.testing.assert_array_equal(native, g16)
        np.testing.assert_allclose(io.read_image(tmp_path / name), g16 / 65535.0, atol=1e-6)


def test_big_endian_tiff16(tmp_path: Path) -> None:
    g16 = RNG.integers(0, 65536, size=(8, 12), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "be.tif", g16, byteorder=">")
    np.testing.assert_allclose(io.read_image(tmp_path / "be.tif"), g16 / 65535.0, atol=1e-6)


def test_float_tiff(tmp_path: Path) -> None:
    f = RNG.random((10, 14)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", f)
    np.testing.assert_array_equal(io.read_image(tmp_path / "f.tif"), f)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_tiff_nan_inf_is_error(tmp_path: Path, bad: float) -> None:
    f = RNG.random((10, 14)).astype(np.float32)
    f[3, 4] = bad
    tifffile.imwrite(tmp_path / "bad.tif", f)
    with pytest.raises(DataError, match=r"bad\.tif.*NaN/Inf"):
        io.read_image(tmp_path / "bad.tif")


def test_float_tiff_out_of_range_is_error(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "big.tif", np.full((4, 4), 7.0, np.float32))
    with pytest.raises(DataError, match=r"big\.tif.*\[0, 1\]"):
        io.read_image(tmp_path / "big.tif")


@pytest.mark.parametrize(("suffix", "mode"), [(".png", "RGB"), (".png", "RGBA"), (".bmp", "RGB"), (".tif", "RGB")])
def test_color_to_gray_bt601(tmp_path: Path, suffix: str, mode: str) -> None:
    arr = RGB8 if mode == "RGB" else np.dstack([RGB8, RNG.integers(0, 256, (24, 40), dtype=np.uint8)])
    path = tmp_path / f"c{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, arr, photometric="rgb")
    else:
        Image.fromarray(arr, mode).save(path)
    np.testing.assert_allclose(io.read_image(path), _bt601(RGB8), atol=1e-5)  # alpha dropped, not blended


def test_jpeg_gray_and_rgb(tmp_path: Path) -> None:
    smooth = np.tile(np.linspace(0, 255, 40, dtype=np.float32), (24, 1)).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "g.jpg", quality=95)
    Image.fromarray(np.dstack([smooth] * 3)).save(tmp_path / "c.jpeg", quality=95)
    for name in ("g.jpg", "c.jpeg"):
        img = io.read_image(tmp_path / name)
        assert img.shape == (24, 40) and img.dtype == np.float32
        assert np.abs(img - smooth / 255.0).max() < 0.05  # lossy, but the same picture


def test_palette_png_image_uses_colours(tmp_path: Path) -> None:
    im = Image.fromarray(RGB8).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    im.save(tmp_path / "p.png")
    expected = _bt601(np.asarray(im.convert("RGB")))
    np.testing.assert_allclose(io.read_image(tmp_path / "p.png"), expected, atol=1e-5)


def test_truncated_png_is_error(tmp_path: Path) -> None:
    Image.fromarray(RGB8).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"t\.png.*truncated or corrupt"):
        io.read_image(tmp_path / "t.png")


def test_truncated_jpeg_is_error(tmp_path: Path) -> None:
    Image.fromarray(RGB8).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"t\.jpg"):
        io.read_image(tmp_path / "t.jpg")


def test_truncated_tiff_is_error(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "t.tif", RNG.integers(0, 65536, (64, 64), dtype=np.uint16))
    data = (tmp_path / "t.tif").read_bytes()
    (tmp_path / "t.tif").write_bytes(data[:100])
    with pytest.raises(DataError, match=r"t\.tif"):
        io.read_image(tmp_path / "t.tif")


def test_unreadable_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "junk.png").write_bytes(b"this is not an image at all")
    with pytest.raises(DataError, match=r"junk\.png.*not a recognised image"):
        io.read_image(tmp_path / "junk.png")
    with pytest.raises(DataError, match=r"nothere\.png"):
        io.read_mask(tmp_path / "nothere.png")


def test_mask_values(tmp_path: Path) -> None:
    Image.fromarray(MASK.astype(np.uint8) * 255).save(tmp_path / "m255.png")
    Image.fromarray(MASK.astype(np.uint8)).save(tmp_path / "m1.png")
    Image.fromarray(MASK).save(tmp_path / "mbool.png")  # bilevel mode "1"
    tifffile.imwrite(tmp_path / "m16.tif", MASK.astype(np.uint16) * 65535)
    tifffile.imwrite(tmp_path / "mf.tif", MASK.astype(np.float32))
    Image.fromarray(np.zeros((24, 40), np.uint8)).save(tmp_path / "empty.png")
    for name in ("m255.png", "m1.png", "mbool.png", "m16.tif", "mf.tif"):
        m = io.read_mask(tmp_path / name)
        assert m.dtype == np.bool_
        np.testing.assert_array_equal(m, MASK, err_msg=name)
    assert not io.read_mask(tmp_path / "empty.png").any()


def test_non_binary_mask_error_and_threshold(tmp_path: Path) -> None:
    vals = np.zeros((24, 40), np.uint8)
    vals[:, 10:20] = 100
    vals[:, 20:] = 255
    Image.fromarray(vals).save(tmp_path / "soft.png")
    with pytest.raises(DataError, match=r"soft\.png is not binary \(found 100;.*--binarize-threshold"):
        io.read_mask(tmp_path / "soft.png")
    m = io.read_mask(tmp_path / "soft.png", binarize_threshold=0.5)
    assert m[:, :20].sum() == 0 and m[:, 20:].all()
    m0 = io.read_mask(tmp_path / "soft.png", binarize_threshold=0.3)  # 100/255 = 0.39 > 0.3
    assert m0[:, 10:].all() and not m0[:, :10].any()
    mixed = (MASK.astype(np.uint8) * 255).copy()
    mixed[0, 0] = 1
    Image.fromarray(mixed).save(tmp_path / "mixed.png")
    with pytest.raises(DataError, match="1 and 255 mixed"):
        io.read_mask(tmp_path / "mixed.png")
    with pytest.raises(DataError, match="threshold"):
        io.read_mask(tmp_path / "soft.png", binarize_threshold=1.5)


def test_color_mask_uses_max_channel(tmp_path: Path) -> None:
    red = np.zeros((24, 40, 3), np.uint8)
    red[MASK, 0] = 255
    Image.fromarray(red).save(tmp_path / "red.png")
    np.testing.assert_array_equal(io.read_mask(tmp_path / "red.png"), MASK)


def test_float_mask_values(tmp_path: Path) -> None:
    f = MASK.astype(np.float32)
    f[0, 0] = 0.5
    tifffile.imwrite(tmp_path / "half.tif", f)
    with pytest.raises(DataError, match=r"half\.tif is not binary \(found 0.5"):
        io.read_mask(tmp_path / "half.tif")
    assert io.read_mask(tmp_path / "half.tif", binarize_threshold=0.4)[0, 0]
    m16 = MASK.astype(np.uint16) * 65535
    m16[0, 0] = 300
    tifffile.imwrite(tmp_path / "m16.tif", m16)
    with pytest.raises(DataError, match="found 300"):
        io.read_mask(tmp_path / "m16.tif")


def test_nan_float_mask_is_error(tmp_path: Path) -> None:
    f = MASK.astype(np.float32)
    f[0, 0] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", f)
    with pytest.raises(DataError, match=r"nan\.tif.*NaN/Inf"):
        io.read_mask(tmp_path / "nan.tif")


def test_write_read_roundtrips(tmp_path: Path) -> None:
    io.write_mask(tmp_path / "m.png", MASK)
    assert set(np.unique(np.asarray(Image.open(tmp_path / "m.png")))) <= {0, 255}
    np.testing.assert_array_equal(io.read_mask(tmp_path / "m.png"), MASK)
    with pytest.raises(DataError, match="jpg"):
        io.write_mask(tmp_path / "m.jpg", MASK)

    f = RNG.random((24, 40)).astype(np.float32)
    io.write_image(tmp_path / "i.png", f)
    np.testing.assert_allclose(io.read_image(tmp_path / "i.png"), np.round(f * 255) / 255, atol=1e-6)
    io.write_image(tmp_path / "u.png", GRAY8)
    np.testing.assert_array_equal(io.read_image_native(tmp_path / "u.png"), GRAY8)
    io.write_image(tmp_path / "rgb.png", RGB8)
    np.testing.assert_allclose(io.read_image(tmp_path / "rgb.png"), _bt601(RGB8), atol=1e-5)

    io.write_soft_mask(tmp_path / "s.png", f)
    assert Image.open(tmp_path / "s.png").mode.startswith("I")
    assert np.abs(io.read_soft_mask(tmp_path / "s.png") - f).max() <= 0.5 / 65535 + 1e-7
    io.write_soft_mask(tmp_path / "s.npy", f, fmt="npy")
    np.testing.assert_array_equal(io.read_soft_mask(tmp_path / "s.npy"), f)
    io.write_soft_mask(tmp_path / "s_noext", f, fmt="npy")  # written exactly at the given path
    np.testing.assert_array_equal(io.read_soft_mask(tmp_path / "s.npy"), np.load(tmp_path / "s_noext"))
    Image.fromarray((f * 255).round().astype(np.uint8)).save(tmp_path / "s8.png")
    np.testing.assert_allclose(io.read_soft_mask(tmp_path / "s8.png"), (f * 255).round() / 255, atol=1e-6)


def test_soft_mask_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="logits"):
        io.write_soft_mask(tmp_path / "x.npy", np.full((4, 4), 3.0), fmt="npy")
    np.save(tmp_path / "nan.npy", np.full((4, 4), np.nan, np.float32))
    with pytest.raises(DataError, match="NaN"):
        io.read_soft_mask(tmp_path / "nan.npy")
    np.save(tmp_path / "3d.npy", np.zeros((2, 4, 4), np.float32))
    with pytest.raises(DataError, match="shape"):
        io.read_soft_mask(tmp_path / "3d.npy")
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"bad\.npy"):
        io.read_soft_mask(tmp_path / "bad.npy")


def test_read_size_from_header(tmp_path: Path) -> None:
    Image.fromarray(GRAY8).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "a.tif", GRAY8)
    assert io.read_size(tmp_path / "a.png") == (24, 40)
    assert io.read_size(tmp_path / "a.tif") == (24, 40)


def test_png_cut_before_iend_is_error(tmp_path: Path) -> None:
    """Pillow decodes such a file silently when the pixel data is complete; the missing IEND gives it away."""
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "z.png")
    data = (tmp_path / "z.png").read_bytes()
    (tmp_path / "z.png").write_bytes(data[:-12])  # drop exactly the IEND chunk
    with pytest.raises(DataError, match=r"z\.png.*truncated"):
        io.read_mask(tmp_path / "z.png")
