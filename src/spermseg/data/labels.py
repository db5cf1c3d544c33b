"""Label images: per-sperm instances and the six-code part map (beyond SegSperm; the spermparsing extras).

* **Instances** (``GT{r}_instances/NAME.png`` or ``ROOT/instances[/<rater>]/``): integer (H, W), 0 = background,
  1..N = one sperm each; their union is the rater's full mask. Stored as 16-bit PNG or TIFF (8-bit accepted).
* **Parts** (``GT{r}_parts/NAME.png`` or ``ROOT/parts[/<rater>]/``): integer (H, W) with the codes of
  :data:`PART_CODES`: 0 background, 1 acrosome, 2 nucleus, 3 vacuole (head), 4 midpiece, 5 tail (tail). Codes
  1-3 lie inside the head mask, 4-5 inside the tail mask, and their union is the full mask.

Label images open in Fiji/napari as they are: 16-bit (instances) or 8-bit (parts) gray PNG/TIFF.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from spermseg.errors import DataError

#: Kinds of label image, in display order.
LABEL_KINDS: tuple[str, str] = ("instances", "parts")
#: Part codes of a parts label image, index = code.
PART_CODES: tuple[str, ...] = ("background", "acrosome", "nucleus", "vacuole", "midpiece", "tail")
N_PART_CODES = len(PART_CODES)
HEAD_CODES: tuple[int, ...] = (1, 2, 3)
TAIL_CODES: tuple[int, ...] = (4, 5)
LABEL_FORMATS: tuple[str, str] = ("png", "tif")

PathLike = str | os.PathLike[str]


def read_labels(path: PathLike, kind: str = "instances") -> np.ndarray:
    """Read a label image as stored.

    Args:
        path: gray integer PNG or TIFF (8 or 16 bit).
        kind: ``"instances"`` or ``"parts"``; parts must hold only codes 0-5.

    Returns:
        (H, W) uint16 for instances, uint8 for parts.

    Raises:
        DataError: unreadable file, colour or float pixels, or (parts) an unknown code.
    """
    from spermseg.data.io import _decode

    p = Path(path)
    arr = _decode(p, kind="mask")  # palette PNGs give their indices
    if arr.ndim != 2 or arr.dtype.kind not in "ub":
        raise DataError(
            f"{kind} label image {p} must be a gray 8/16-bit integer image, got dtype {arr.dtype} shape {arr.shape}; "
            "re-export it as a 16-bit PNG"
        )
    if kind == "parts":
        top = int(arr.max()) if arr.size else 0
        if top >= N_PART_CODES:
            bad = np.unique(arr[arr >= N_PART_CODES])[:5].tolist()
            raise DataError(f"parts label image {p} has unknown codes {bad}; codes are 0-5 ({', '.join(PART_CODES)})")
        return arr.astype(np.uint8)
    return arr.astype(np.uint16)


def write_labels(path: PathLike, labels: np.ndarray, kind: str = "instances") -> Path:
    """Write a label image (16-bit for instances, 8-bit for parts), PNG or TIFF by the suffix of ``path``.

    Args:
        path: destination ``.png`` / ``.tif`` / ``.tiff``.
        labels: (H, W) non-negative integers (instances <= 65535, parts <= 5).
        kind: ``"instances"`` or ``"parts"``.

    Returns:
        The path written (atomically).
    """
    from spermseg.utils.atomic import atomic_path

    p = Path(path)
    arr = np.asarray(labels)
    if arr.ndim != 2 or (arr.size and (arr.min() < 0 or arr.max() > 65535)):
        raise DataError(f"cannot write labels {p}: expected (H, W) integers in 0-65535, got shape {arr.shape}")
    dtype = np.uint8 if kind == "parts" else np.uint16
    if kind == "parts" and arr.size and arr.max() >= N_PART_CODES:
        raise DataError(f"cannot write parts {p}: codes must be 0-5")
    arr = arr.astype(dtype)
    suffix = p.suffix.lower()
    with atomic_path(p) as tmp:
        if suffix == ".png":
            import cv2

            # cv2 writes 16-bit gray PNGs that Fiji, napari and Pillow read as I;16
            if not cv2.imwrite(str(tmp), arr):
                raise DataError(f"cannot write labels {p}")
        elif suffix in (".tif", ".tiff"):
            import tifffile

            tifffile.imwrite(tmp, arr, compression="zlib")
        else:
            raise DataError(f"cannot write labels {p}: use .png or .tif")
    return p


def label_suffix(fmt: Literal["png", "tif"] | str) -> str:
    """File suffix for a ``--label-format`` value."""
    if fmt not in LABEL_FORMATS:
        raise DataError(f"unknown label format '{fmt}'; use one of {', '.join(LABEL_FORMATS)}")
    return "." + fmt


def parts_to_masks(parts: np.ndarray) -> dict[str, np.ndarray]:
    """Binary ``full`` / ``head`` / ``tail`` (H, W) bool masks derived from a parts label image (H, W)."""
    head = np.isin(parts, HEAD_CODES)
    tail = np.isin(parts, TAIL_CODES)
    return {"full": head | tail, "head": head, "tail": tail}


def check_labels(
    kind: str,
    labels: np.ndarray,
    path: Path,
    masks: dict[str, np.ndarray],
) -> list[str]:
    """Consistency of a label image with the same rater's binary masks (one message per finding).

    Args:
        kind: ``"instances"`` or ``"parts"``.
        labels: (H, W) label image as read by :func:`read_labels`.
        path: its file (for the messages).
        masks: the rater's available bool (H, W) masks ``{"full", "head", "tail"}`` (any may be missing).

    Returns:
        Problem messages (empty when consistent): union != full, parts outside head/tail.
    """
    found: list[str] = []
    full = masks.get("full")
    if full is None and "head" in masks and "tail" in masks:
        full = masks["head"] | masks["tail"]
    if full is not None and full.shape == labels.shape:
        diff = int(np.count_nonzero((labels > 0) != full))
        if diff:
            found.append(f"{kind} {path}: the union of the labels differs from the full mask in {diff} pixels")
    if kind == "parts":
        for name, codes in (("head", HEAD_CODES), ("tail", TAIL_CODES)):
            ref = masks.get(name)
            if ref is None or ref.shape != labels.shape:
                continue
            outside = int(np.count_nonzero(np.isin(labels, codes) & ~ref))
            if outside:
                found.append(f"parts {path}: {outside} pixels of codes {list(codes)} lie outside the {name} mask")
    return found


def folder_label_dirs(root: Path, default_rater: str, sort_key: Callable[[str], Any]) -> list[tuple[str, str, Path]]:
    """Label folders of the folders layout as (rater, kind, dir).

    ``ROOT/{instances,parts}/*`` belong to ``default_rater``; ``ROOT/{instances,parts}/<rater>/*`` to ``rater``.
    """
    from spermseg.data.io import is_image_file

    out: list[tuple[str, str, Path]] = []
    for kind in LABEL_KINDS:
        d = root / kind
        if not d.is_dir():
            continue
        if any(is_image_file(p) for p in d.iterdir() if p.is_file()):
            out.append((default_rater, kind, d))
        subs = [p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")]
        out.extend((sub.name, kind, sub) for sub in sorted(subs, key=lambda p: sort_key(p.name)))
    return out


def check_sample_labels(
    label_paths: dict[str, dict[str, Path]],
    image_path: Path,
    shape: tuple[int, ...] | None,
    masks: dict[str, dict[str, np.ndarray]],
) -> list[tuple[Path, str]]:
    """Decode every label image of one sample and check it (codes, size, union = full, parts inside head/tail).

    Args:
        label_paths: ``{rater: {kind: path}}`` (``Sample.label_paths``).
        image_path: the sample's image (for messages).
        shape: the image's (H, W), or None when it could not be read.
        masks: ``{rater: {part: bool (H, W)}}`` already decoded masks of the same sample.

    Returns:
        (path, one-line message) per problem.
    """
    found: list[tuple[Path, str]] = []
    for rater, kinds in label_paths.items():
        for kind, path in kinds.items():
            try:
                labels = read_labels(path, kind)
            except DataError as exc:
                found.append((path, str(exc)))
                continue
            if shape is not None and labels.shape != tuple(shape[:2]):
                found.append(
                    (
                        path,
                        f"size mismatch: {kind} {path} is {labels.shape[1]}x{labels.shape[0]} (WxH) but image "
                        f"{image_path} is {shape[1]}x{shape[0]}; replace the {rater} {kind} image",
                    )
                )
                continue
            same = {k: v for k, v in masks.get(rater, {}).items() if v.shape == labels.shape}
            found.extend(
                (path, m + f"; fix the {rater} {kind} image or masks") for m in check_labels(kind, labels, path, same)
            )
    return found


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Ids renumbered 1..N in order of first appearance in raster order (uint16 (H, W); 0 stays background)."""
    labels = np.asarray(labels)
    flat = labels.ravel()
    ids, first = np.unique(flat, return_index=True)
    keep = ids != 0
    order = np.argsort(first[keep])
    lut = np.zeros(int(ids.max()) + 1 if ids.size else 1, np.uint32)
    lut[ids[keep][order]] = np.arange(1, int(keep.sum()) + 1)
    if keep.sum() > 65535:
        raise ValueError(f"{int(keep.sum())} instances do not fit a 16-bit label image")
    return lut[labels].astype(np.uint16)


def component_radii(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of a mask and the radius (px) of the largest disk inside each.

    The radius is the component's distance-transform maximum (exact Euclidean distance to the nearest
    background pixel).

    Args:
        mask: bool (H, W).

    Returns:
        ``(labels, radii)``: int32 (H, W) component labels (0 = background) and float32 (N + 1,) radii indexed by
        label (``radii[0]`` = 0).
    """
    import cv2

    m = np.ascontiguousarray(mask, dtype=np.uint8)
    n, lab = cv2.connectedComponents(m, connectivity=8)
    if n <= 1:
        return lab, np.zeros(max(n, 1), np.float32)
    dist = cv2.distanceTransform(m, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return lab, labeled_max(dist, lab, n)


def thick_components(mask: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of a mask and whether each holds a disk of ``radius`` px.

    The same answer as ``component_radii(mask)[1] >= radius`` (the distance-transform maximum reaches the radius),
    found with one erosion by a disk instead of the exact distance transform: a pixel survives the erosion exactly
    when no background pixel lies closer than ``radius`` (the disk holds the offsets whose float32 distance is below
    it, so ties round as the distance transform's float32 values do; outside the image counts as foreground, as in
    ``cv2.distanceTransform``). About 6x faster on a 512 x 512 frame (0.6 ms against 3.6 ms at radius 8.3), which
    matters because the whole-sperm filter runs on every predicted frame.

    Args:
        mask: bool (H, W).
        radius: pixels, > 0.

    Returns:
        ``(labels, thick)``: int32 (H, W) component labels (0 = background) and bool (N + 1,) indexed by label
        (``thick[0]`` = False).
    """
    import cv2

    m = np.ascontiguousarray(mask, dtype=np.uint8)
    n, lab = cv2.connectedComponents(m, connectivity=8)
    thick = np.zeros(max(n, 1), bool)
    if n <= 1:
        return lab, thick
    r = int(np.ceil(radius))
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    disk = (np.sqrt((x * x + y * y).astype(np.float32)) < radius).astype(np.uint8)
    core = cv2.erode(m, disk, borderType=cv2.BORDER_CONSTANT, borderValue=1)
    thick[lab[core > 0]] = True
    thick[0] = False
    return lab, thick


def labeled_max(values: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Largest value of each label: ``out[k] = max(values[labels == k])`` for k in 1..n-1, 0 where a label is absent,
    ``out[0] = 0`` (background).

    The same as ``scipy.ndimage.maximum(values, labels, index=range(n))`` for non-negative values, about 50x faster
    (scipy's labelled maximum took 54 ms on a 512 x 512 mask with 5 pieces, this 1 ms): the whole-sperm filter runs
    it on every predicted frame.

    Args:
        values: (H, W) non-negative numbers.
        labels: (H, W) int labels in [0, n).
        n: number of labels, background included.

    Returns:
        float32 (n,).
    """
    out = np.zeros(max(int(n), 1), np.float32)
    fg = labels > 0
    np.maximum.at(out, labels[fg], values[fg].astype(np.float32, copy=False))
    return out


def inscribed_radii(mask: np.ndarray) -> np.ndarray:
    """Radius (px) of the largest disk inside each 8-connected component of a mask (:func:`component_radii`).

    Args:
        mask: bool (H, W).

    Returns:
        float32 (N,), one value per component (empty when the mask is empty).
    """
    return component_radii(mask)[1][1:]


#: A head must be this many times thicker than a tail (5th percentile of heads vs 95th of tails) for the scale
#: to separate them; otherwise no whole-sperm radius is recorded (e.g. low-magnification frames).
SEPARATION_RATIO = 1.5


def whole_sperm_scale(heads: Sequence[np.ndarray], tails: Sequence[np.ndarray]) -> dict[str, float | None]:
    """How thick heads and tails are in a labelled set, and the radius that tells a head from a tail.

    A sperm is a head with its tail; a predicted piece too thin anywhere to hold a head (a detached tail, debris)
    is not a whole sperm, and raters who annotate whole sperm leave such pieces unlabelled. The radius that
    separates the two is the midpoint between the 95th percentile of the tails' inscribed radii and the 5th
    percentile of the heads' (:func:`inscribed_radii` per head / tail component). It is only defined when heads
    are clearly thicker (:data:`SEPARATION_RATIO`).

    Args:
        heads: bool (H, W) head masks, one per image.
        tails: bool (H, W) tail masks of the same images.

    Returns:
        ``{"head_radius_p5", "head_radius_median", "tail_radius_p95", "min_head_radius"}`` in pixels
        (``None`` where undefined: no heads/tails labelled, or parts that do not separate).
    """
    head_r = np.concatenate([inscribed_radii(h) for h in heads] or [np.zeros(0, np.float32)])
    tail_r = np.concatenate([inscribed_radii(t) for t in tails] or [np.zeros(0, np.float32)])
    out: dict[str, float | None] = dict.fromkeys(
        ("head_radius_p5", "head_radius_median", "tail_radius_p95", "min_head_radius")
    )
    if len(head_r) == 0 or len(tail_r) == 0:
        return out
    h5, hmed, t95 = (float(np.percentile(r, q)) for r, q in ((head_r, 5), (head_r, 50), (tail_r, 95)))
    out.update(head_radius_p5=round(h5, 3), head_radius_median=round(hmed, 3), tail_radius_p95=round(t95, 3))
    if h5 >= SEPARATION_RATIO * t95:
        out["min_head_radius"] = round((h5 + t95) / 2, 3)
    return out
