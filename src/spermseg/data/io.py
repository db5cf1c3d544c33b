"""Reading and writing images, binary masks and soft masks.

Everything that touches pixels on disk goes through this module, so every reader shares one set of rules:

* **Images** (:func:`read_image`) come back as float32 (H, W) arrays in [0, 1]: 8-bit values / 255, 16-bit
  values / 65535, float TIFFs as they are (they must be finite and lie in [0, 1]). Colour images are converted
  to gray with the ITU-R BT.601 luma weights ``0.299 R + 0.587 G + 0.114 B`` (computed in float, not rounded);
  an alpha channel is dropped.
* **Masks** (:func:`read_mask`) come back as bool (H, W). Without a threshold the stored values must be a
  subset of {0, 1} or of {0, 255} (16-bit: {0, 65535}; bilevel PNGs and float TIFFs: {0, 1}); any non-zero
  value is foreground. With ``binarize_threshold=T`` (T in [0, 1)) a pixel is foreground when its value scaled
  to [0, 1] (as for images) is greater than T. Colour masks use the maximum over the colour channels, so a red
  annotation on black counts as foreground.
* **Soft masks** (:func:`read_soft_mask`, :func:`write_soft_mask`) are float32 (H, W) probabilities in [0, 1],
  stored as ``.npy`` (exact) or 16-bit PNG (value * 65535, rounded: error <= 7.7e-6).

Formats: PNG (8/16-bit, gray, gray+alpha, palette, RGB, RGBA), TIFF (8/16-bit integer, float32/64, gray or
colour, one page: a multi-page TIFF stack raises a DataError naming the file and its page count rather than
being read as its first page), JPEG and BMP. Unreadable, truncated or corrupt files raise
:class:`~spermseg.errors.DataError` naming the file. Pixels are decoded completely (``PIL.Image.load``), so a
truncated file is detected when it is read, not later in training.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np

from spermseg.errors import DataError

#: File suffixes recognised as images (lower case). Masks use the same readers.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES: tuple[str, ...] = (".tif", ".tiff")
#: ITU-R BT.601 luma weights for R, G, B.
GRAY_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)

PathLike = str | os.PathLike[str]
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND"


def is_image_file(path: PathLike) -> bool:
    """True when ``path`` has one of :data:`IMAGE_SUFFIXES` (case-insensitive) and is not a hidden file."""
    p = Path(path)
    return p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


# ----------------------------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------------------------


def _decode(path: Path, *, kind: str) -> np.ndarray:
    """Decode a file into its stored values: (H, W) or (H, W, C) with C in {2, 3, 4}, dtype as stored.

    Palette PNGs return their palette indices when ``kind == "mask"`` (label images) and RGB(A) colours
    otherwise.
    """
    if not path.is_file():
        raise DataError(f"{kind} file not found: {path}; check the path and the dataset layout")
    if path.suffix.lower() in TIFF_SUFFIXES:
        return _decode_tiff(path, kind=kind)
    import io as _bytes_io

    from PIL import Image, UnidentifiedImageError

    try:
        data = path.read_bytes()  # one read; the decoder then works from memory
    except OSError as exc:
        raise DataError(f"cannot read {kind} {path}: {exc.strerror or exc}; check its permissions") from None
    if data.startswith(_PNG_SIGNATURE) and _PNG_IEND not in data[-64:]:
        # libpng/Pillow decode a PNG whose last chunks are cut off without complaint when the pixel data happens
        # to be complete; a missing IEND chunk is the reliable sign of a truncated file.
        raise DataError(f"cannot read {kind} {path}: truncated or corrupt file (PNG without IEND); re-export it")
    if data.startswith(_PNG_SIGNATURE) and len(data) > 26 and data[25] == 0 and data[24] in (8, 16):
        # Gray 8/16-bit PNG (SegSperm's images and masks): OpenCV's decoder needs ~35% less CPU than Pillow's.
        # libpng errors make it return None; Pillow then decodes the file again and reports the error.
        import cv2

        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is not None and arr.ndim == 2:
            return _check_shape(arr, path, kind)
    try:
        with Image.open(_bytes_io.BytesIO(data)) as im:
            im.load()  # decode every pixel now: truncated data raises here
            mode = im.mode
            if mode == "P":
                if kind == "mask":
                    arr = np.asarray(im)
                else:
                    arr = np.asarray(im.convert("RGBA" if "transparency" in im.info else "RGB"))
            elif mode in ("CMYK", "YCbCr", "HSV", "LAB"):
                arr = np.asarray(im.convert("RGB"))
            elif mode == "PA":
                arr = np.asarray(im.convert("RGBA"))
            else:
                arr = np.asarray(im)
    except UnidentifiedImageError:
        raise DataError(
            f"cannot read {kind} {path}: not a recognised image file (PNG, TIFF, JPEG or BMP) or a truncated "
            "header; re-export it"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"cannot read {kind} {path}: truncated or corrupt file ({reason}); re-export or remove it"
        ) from None
    if mode == "I" and arr.dtype.kind == "i":
        # Some Pillow versions open 16-bit PNGs as 32-bit integer mode "I"; map back to uint16 when it fits.
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise DataError(f"cannot read {kind} {path}: 32-bit integer pixels are not supported; save as 8/16-bit")
        arr = arr.astype(np.uint16)
    return _check_shape(np.ascontiguousarray(arr), path, kind)


def _tiff_pages(tif: object) -> int:
    """Number of full-resolution pages (reduced-resolution thumbnails and previews do not count)."""
    return sum(1 for page in tif.pages if not getattr(page, "is_reduced", False))  # type: ignore[attr-defined]


def _multipage_error(path: Path, kind: str, n_pages: int) -> DataError:
    # One page of a stack must never pass for the whole file: stacks are read whole by spermseg.inference.stacks
    # (spermseg track); everywhere an image is one image (training, evaluation, predict) they are refused.
    return DataError(
        f"cannot read {kind} {path}: it is a multi-page TIFF ({n_pages} pages), not supported as a single {kind} "
        "(training, evaluation, predict read one image per file); save each page as its own file (ImageJ: Image > "
        "Stacks > Stack to Images), or track the stack with 'spermseg track'"
    )


def _decode_tiff(path: Path, *, kind: str) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            n_pages = _tiff_pages(tif)
            if n_pages > 1:
                raise _multipage_error(path, kind, n_pages)
            page = tif.pages[0]
            arr = page.asarray()
            planar_separate = arr.ndim == 3 and int(getattr(page, "planarconfig", 1)) == 2
    except DataError:
        raise
    except Exception as exc:  # tifffile raises many types (TiffFileError, ValueError, struct.error, ...)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"cannot read {kind} {path}: truncated or corrupt TIFF ({reason}); re-export or remove it"
        ) from None
    if planar_separate:  # (C, H, W) -> (H, W, C)
        arr = np.moveaxis(arr, 0, -1)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    return _check_shape(np.ascontiguousarray(arr), path, kind)


def _check_shape(arr: np.ndarray, path: Path, kind: str) -> np.ndarray:
    if arr.dtype.byteorder not in ("=", "|"):  # big-endian 16-bit (PIL "I;16B", some TIFFs) -> native
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (2, 3, 4)):
        raise DataError(
            f"cannot read {kind} {path}: unsupported pixel layout {arr.shape}; expected one gray or RGB(A) image"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"cannot read {kind} {path}: the image is empty ({arr.shape[1]}x{arr.shape[0]})")
    if arr.dtype.kind not in "uif" and arr.dtype != np.bool_:
        raise DataError(f"cannot read {kind} {path}: unsupported pixel type {arr.dtype}")
    return arr


def _scale_of(arr: np.ndarray, path: Path, kind: str) -> float:
    """Divisor that maps stored values to [0, 1]: 255 (8-bit), 65535 (16-bit), 1 (bool/float)."""
    if arr.dtype == np.uint8:
        return 255.0
    if arr.dtype == np.uint16:
        return 65535.0
    if arr.dtype.kind == "f" or arr.dtype == np.bool_:
        return 1.0
    if arr.dtype == np.int8 or arr.dtype == np.int16:
        raise DataError(f"cannot read {kind} {path}: signed integer pixels ({arr.dtype}) are not supported")
    raise DataError(f"cannot read {kind} {path}: {arr.dtype} pixels are not supported; save as 8/16-bit or float")


def _color_to_gray(arr: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (H, W) float32 with BT.601 weights; C=2 is gray+alpha, C=4 drops alpha."""
    if arr.shape[-1] == 2:
        return arr[..., 0].astype(np.float32)
    r, g, b = (arr[..., i].astype(np.float32) for i in range(3))
    return GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b


def read_image_native(path: PathLike) -> np.ndarray:
    """Read an image as gray in a compact dtype: uint8 or uint16 for gray integer files, float32 otherwise.

    Gray 8/16-bit files keep their stored integers (4x/2x less memory than float32); colour files are converted
    to gray (BT.601) and scaled to [0, 1] float32; float files are returned as float32 after checking they are
    finite and within [0, 1]. Use :func:`to_float` to obtain the values of :func:`read_image`.

    Args:
        path: image file.

    Returns:
        (H, W) array, dtype uint8, uint16 or float32.

    Raises:
        DataError: missing, unreadable, truncated or corrupt file; NaN/Inf or out-of-range float pixels.
    """
    p = Path(path)
    arr = _decode(p, kind="image")
    scale = _scale_of(arr, p, "image")
    if arr.ndim == 3:
        gray = _color_to_gray(arr)
        return gray / np.float32(scale) if scale != 1.0 else gray
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype.kind == "f":
        out = arr.astype(np.float32, copy=False)
        if not np.isfinite(out).all():
            n_bad = int((~np.isfinite(out)).sum())
            raise DataError(f"image {p} has {n_bad} NaN/Inf pixels; fix or remove the file")
        lo, hi = float(out.min()), float(out.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise DataError(
                f"float image {p} has values in [{lo:.4g}, {hi:.4g}], expected [0, 1]; rescale it or save as 8/16-bit"
            )
        return np.clip(out, 0.0, 1.0)
    return arr


def to_float(native: np.ndarray) -> np.ndarray:
    """Map the output of :func:`read_image_native` to float32 in [0, 1] (uint8 / 255, uint16 / 65535)."""
    if native.dtype == np.uint8:
        return native.astype(np.float32) * np.float32(1.0 / 255.0)
    if native.dtype == np.uint16:
        return native.astype(np.float32) * np.float32(1.0 / 65535.0)
    return native.astype(np.float32, copy=False)


def read_image(path: PathLike) -> np.ndarray:
    """Read an image as gray float32 (H, W) in [0, 1].

    Args:
        path: PNG, TIFF (8/16-bit or float), JPEG or BMP file; gray, gray+alpha, RGB or RGBA.

    Returns:
        (H, W) float32 array in [0, 1]. 8-bit / 255, 16-bit / 65535, float as stored; colour to gray with
        :data:`GRAY_WEIGHTS` (alpha dropped).

    Raises:
        DataError: missing, unreadable, truncated or corrupt file; NaN/Inf or out-of-range float pixels.
    """
    return to_float(read_image_native(path))


def read_mask(path: PathLike, binarize_threshold: float | None = None) -> np.ndarray:
    """Read a binary mask as bool (H, W).

    Args:
        path: mask file (PNG, TIFF, BMP; JPEG works only with a threshold, as its compression creates
            intermediate values).
        binarize_threshold: ``None`` (default) requires stored values within {0, 1} or {0, 255} (16-bit:
            {0, 65535}) and marks every non-zero pixel as foreground. A number T in [0, 1) instead marks pixels
            whose value scaled to [0, 1] (8-bit / 255, 16-bit / 65535) is > T, accepting any values.

    Returns:
        (H, W) bool array.

    Raises:
        DataError: unreadable file, NaN/Inf values, or non-binary values without a threshold.
    """
    p = Path(path)
    if binarize_threshold is not None and not (0.0 <= float(binarize_threshold) < 1.0):
        raise DataError(f"binarize threshold must be in [0, 1), got {binarize_threshold}")
    arr = _decode(p, kind="mask")
    if arr.dtype == np.bool_:
        return arr if arr.ndim == 2 else arr[..., :3].any(axis=-1)
    scale = _scale_of(arr, p, "mask")
    if arr.ndim == 3:  # colour mask: maximum over the colour channels (alpha dropped)
        arr = arr[..., :1] if arr.shape[-1] == 2 else arr[..., :3]
        arr = arr.max(axis=-1)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise DataError(f"mask {p} has NaN/Inf values; fix or remove the file")
    if binarize_threshold is not None:
        return arr > float(binarize_threshold) * scale
    bad = _non_binary_values(arr)
    if bad is not None:
        raise DataError(
            f"mask {p} is not binary (found {bad}; expected only 0/1 or 0/{int(scale)}); "
            "threshold it with --set data.binarize_threshold=T (train, train-many) or --binarize-threshold T "
            "(data check), T e.g. 0.5"
        )
    return arr != 0


def _non_binary_values(arr: np.ndarray) -> str | None:
    """None when the values are a subset of {0, 1} or {0, full scale}; else a short list of offending values."""
    top = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}.get(arr.dtype, 1)
    if arr.size == 0:
        return None
    high = arr.max()
    if high == 0 or (high in (1, top) and not ((arr != 0) & (arr != high)).any()):
        return None  # fast path (cheap vectorized passes); the slow listing below runs only for bad masks
    present = np.flatnonzero(np.bincount(arr.ravel(), minlength=256)) if arr.dtype == np.uint8 else np.unique(arr)
    nonzero = present[present != 0]
    odd = nonzero[(nonzero != 1) & (nonzero != top)]
    if odd.size == 0:  # both 1 and the full scale: ambiguous encodings mixed in one file
        return f"1 and {top} mixed"
    return ", ".join(f"{v:g}" for v in odd[:5].tolist()) + (", ..." if odd.size > 5 else "")


def read_soft_mask(path: PathLike) -> np.ndarray:
    """Read a soft mask (probabilities) as float32 (H, W) in [0, 1].

    Args:
        path: ``.npy`` (float or bool, (H, W)), 16-bit PNG/TIFF (/ 65535), 8-bit PNG (/ 255) or float TIFF.

    Returns:
        (H, W) float32 array in [0, 1].

    Raises:
        DataError: unreadable file, wrong shape, NaN/Inf or values outside [0, 1].
    """
    p = Path(path)
    if p.suffix.lower() != ".npy":
        return read_image(p)
    if not p.is_file():
        raise DataError(f"soft mask file not found: {p}")
    try:
        arr = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read soft mask {p}: corrupt .npy file ({exc}); regenerate it") from None
    if arr.ndim != 2:
        raise DataError(f"soft mask {p} has shape {arr.shape}, expected (H, W)")
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype.kind not in "fui":
        raise DataError(f"soft mask {p} has dtype {arr.dtype}, expected float")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise DataError(f"soft mask {p} has NaN/Inf values; regenerate it")
    if arr.size and (arr.min() < -1e-6 or arr.max() > 1 + 1e-6):
        raise DataError(f"soft mask {p} has values outside [0, 1]; store probabilities, not logits")
    return np.clip(arr, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------------------------
# Writing (atomic: a killed run never leaves a half-written file)
# ----------------------------------------------------------------------------------------------------------------


def _save_pil(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    from spermseg.utils.atomic import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp)


def _check_writable_suffix(path: Path, allowed: tuple[str, ...], what: str) -> None:
    if path.suffix.lower() not in allowed:
        raise DataError(f"cannot write {what} {path}: use one of {', '.join(allowed)}")


def write_mask(path: PathLike, mask: np.ndarray) -> None:
    """Write a binary mask as an 8-bit 0/255 image (PNG, TIFF or BMP by suffix; JPEG is refused as lossy).

    Args:
        path: destination file.
        mask: (H, W) bool, or numeric where non-zero means foreground.
    """
    p = Path(path)
    _check_writable_suffix(p, (".png", ".tif", ".tiff", ".bmp"), "mask")
    m = np.asarray(mask)
    if m.ndim != 2:
        raise DataError(f"cannot write mask {p}: expected a (H, W) array, got shape {m.shape}")
    _save_pil(p, np.where(m != 0, np.uint8(255), np.uint8(0)))


def write_image(path: PathLike, img: np.ndarray) -> None:
    """Write an 8-bit image (PNG, TIFF, BMP or JPEG by suffix).

    Args:
        path: destination file.
        img: (H, W) gray or (H, W, 3) RGB; uint8 as is, float in [0, 1] scaled by 255 and rounded
            (values outside [0, 1] are clipped, NaN is an error).
    """
    p = Path(path)
    _check_writable_suffix(p, IMAGE_SUFFIXES, "image")
    a = np.asarray(img)
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 3)):
        raise DataError(f"cannot write image {p}: expected (H, W) or (H, W, 3), got shape {a.shape}")
    if a.dtype != np.uint8:
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise DataError(f"cannot write image {p}: it contains NaN/Inf values")
        a = np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    _save_pil(p, np.ascontiguousarray(a))


def write_soft_mask(path: PathLike, prob: np.ndarray, fmt: Literal["png16", "npy"] = "png16") -> None:
    """Write a soft mask (probabilities in [0, 1]).

    Args:
        path: destination; written exactly there (the suffix is not changed).
        prob: (H, W) float probabilities in [0, 1] (tiny rounding excursions are clipped).
        fmt: ``"png16"`` (16-bit PNG of round(prob * 65535), compact, error <= 7.7e-6) or ``"npy"`` (exact
            float32).
    """
    p = Path(path)
    a = np.asarray(prob, dtype=np.float32)
    if a.ndim != 2:
        raise DataError(f"cannot write soft mask {p}: expected (H, W), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise DataError(f"cannot write soft mask {p}: it contains NaN/Inf values")
    if a.size and (a.min() < -1e-4 or a.max() > 1 + 1e-4):
        raise DataError(f"cannot write soft mask {p}: values outside [0, 1]; pass probabilities, not logits")
    a = np.clip(a, 0.0, 1.0)
    if fmt == "npy":
        from spermseg.utils.atomic import atomic_path

        with atomic_path(p) as tmp, open(tmp, "wb") as fh:
            np.save(fh, a, allow_pickle=False)
    elif fmt == "png16":
        _check_writable_suffix(p, (".png",), "16-bit soft mask")
        _save_pil(p, np.round(a * 65535.0).astype(np.uint16))
    else:
        raise DataError(f"unknown soft mask format '{fmt}'; use png16 or npy")


def read_size(path: PathLike) -> tuple[int, int]:
    """(H, W) of an image file from its header, without decoding the pixels (for lazy datasets)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"file not found: {p}")
    try:
        if p.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(p) as tif:
                n_pages = _tiff_pages(tif)
                if n_pages > 1:
                    raise _multipage_error(p, "image", n_pages)
                page = tif.pages[0]
                return int(page.imagelength), int(page.imagewidth)
        from PIL import Image

        with Image.open(p) as im:
            w, h = im.size
            return int(h), int(w)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(
            f"cannot read {p}: not a readable image ({type(exc).__name__}); re-export or remove it"
        ) from None
