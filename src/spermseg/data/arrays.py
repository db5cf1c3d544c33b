"""Load one split into memory (default) or lazily, as images and per-rater, per-part masks.

Memory: images are kept in their stored dtype (uint8 for 8-bit PNGs) and converted to float32 in [0, 1] when
accessed; masks are kept bit-packed (``np.packbits``, 1 bit per pixel) and unpacked to bool on access. SegSperm's
train split (192 images of 640x512 with three masks) thus takes ~63 MB for the images and ~24 MB for the masks.
Every access returns a fresh array, so callers may modify it freely.

``lazy=True`` keeps only the file list and reads (and validates) a file each time it is accessed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np

from spermseg.data.io import read_image_native, read_mask, read_size, to_float
from spermseg.data.layouts import PARTS, Dataset, Sample, Split, open_dataset, raise_first
from spermseg.errors import DataError


class _MapSeq(Sequence[np.ndarray]):
    """A read-only sequence that maps ``fn`` over ``items`` on access (``seq[i]`` or ``seq[a:b]``)."""

    def __init__(self, items: Sequence[Any], fn: Callable[[int, Any], np.ndarray]) -> None:
        self._items = items
        self._fn = fn

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice) -> list[np.ndarray]: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self._items)
        if not -n <= index < n:
            raise IndexError(index)
        index %= n
        return self._fn(index, self._items[index])


@dataclass
class _Packed:
    """A bool (H, W) mask packed to bits."""

    bits: np.ndarray
    shape: tuple[int, int]

    @classmethod
    def pack(cls, mask: np.ndarray) -> _Packed:
        return cls(np.packbits(mask, axis=None), (int(mask.shape[0]), int(mask.shape[1])))

    def unpack(self) -> np.ndarray:
        n = self.shape[0] * self.shape[1]
        return np.unpackbits(self.bits, count=n).view(np.bool_).reshape(self.shape)

    def __or__(self, other: _Packed) -> _Packed:
        return _Packed(self.bits | other.bits, self.shape)


@dataclass
class SplitArrays:
    """Images and masks of one split.

    Attributes:
        split: split name.
        names: image file names.
        groups: video id per image (for group-aware splitting).
        image_paths: image files.
        sizes: (H, W) per image.
        images: float32 (H, W) arrays in [0, 1], one per image (a fresh array per access).
        raters: loaded raters.
        fingerprint: hash of file names, sizes and mtimes plus the load options (for caches and checkpoints).
        lazy: whether files are read on access.
    """

    split: str
    names: list[str]
    groups: list[str]
    image_paths: list[Path]
    sizes: list[tuple[int, int]]
    images: Sequence[np.ndarray]
    raters: list[str]
    fingerprint: str
    lazy: bool
    _masks: dict[tuple[str, str], Sequence[np.ndarray]] = field(default_factory=dict, repr=False)
    _labels: dict[tuple[str, str], Sequence[np.ndarray]] = field(default_factory=dict, repr=False)

    def labels(self, rater: str, kind: str = "instances") -> Sequence[np.ndarray] | None:
        """Label images of ``rater``: ``instances`` uint16 (H, W) (0 = background, one id per sperm) or ``parts``
        uint8 (H, W) (codes of :data:`spermseg.data.labels.PART_CODES`); ``None`` when not stored or not loaded
        (pass ``labels=("instances", "parts")`` to :func:`load_split`)."""
        if rater not in self.raters:
            raise DataError(f"rater '{rater}' not loaded for split '{self.split}'; loaded: {', '.join(self.raters)}")
        return self._labels.get((rater, kind))

    def __len__(self) -> int:
        return len(self.names)

    def masks(self, rater: str, part: str = "full") -> Sequence[np.ndarray] | None:
        """Bool (H, W) masks of ``rater`` for ``part``; ``None`` when that part is not labelled.

        ``full`` is derived as head | tail when only the parts exist; parts are never derived from ``full``.

        Raises:
            DataError: ``rater`` was not loaded or ``part`` is not one of :data:`PARTS`.
        """
        if part not in PARTS:
            raise DataError(f"unknown part '{part}'; parts: {', '.join(PARTS)}")
        if rater not in self.raters:
            raise DataError(f"rater '{rater}' not loaded for split '{self.split}'; loaded: {', '.join(self.raters)}")
        return self._masks.get((rater, part))

    def parts(self, rater: str) -> list[str]:
        """Parts available for ``rater`` (in :data:`PARTS` order)."""
        return [p for p in PARTS if self.masks(rater, p) is not None]

    def stack_images(self) -> np.ndarray:
        """All images as one float32 (N, H, W) array (they must share one size)."""
        if len(set(self.sizes)) > 1:
            raise DataError(f"split '{self.split}' mixes image sizes {sorted(set(self.sizes))}; cannot stack them")
        return np.stack(list(self.images)) if len(self) else np.zeros((0, 0, 0), np.float32)


def fingerprint(files: Sequence[Path], root: Path, options: dict[str, Any] | None = None, *, length: int = 16) -> str:
    """Hash of the files' relative paths, sizes and modification times, plus ``options``.

    Cheap (no pixel is read) and changes whenever a file is added, removed, replaced or touched.

    Args:
        files: files that make up the data.
        root: paths are hashed relative to it, so moving the whole dataset keeps the fingerprint.
        options: load options that change the arrays (raters, parts, threshold).
        length: number of hex digits returned.
    """
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        try:
            rel = f.relative_to(root).as_posix()
        except ValueError:
            rel = f.as_posix()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    h.update(json.dumps(options or {}, sort_keys=True, default=str).encode())
    return h.hexdigest()[:length]


def _resolve_selection(split: Split, raters: Sequence[str] | None, parts: Sequence[str]) -> list[str]:
    for p in parts:
        if p not in PARTS:
            raise DataError(f"unknown part '{p}'; parts: {', '.join(PARTS)}")
    if raters is None:
        return list(split.raters)
    for r in raters:
        if r not in split.raters:
            raise DataError(
                f"split '{split.name}' has no rater '{r}'; raters: {', '.join(split.raters) or 'none (no masks)'}"
            )
    return list(dict.fromkeys(raters))


def load_split(
    dataset_or_root: Dataset | str | Path,
    split: str,
    raters: Sequence[str] | None = None,
    parts: Sequence[str] = PARTS,
    binarize_threshold: float | None = None,
    *,
    lazy: bool = False,
    on_sample: Callable[[int], None] | None = None,
    workers: int | None = None,
    labels: Sequence[str] = (),
) -> SplitArrays:
    """Load the images and masks of one split.

    Args:
        dataset_or_root: a :class:`~spermseg.data.layouts.Dataset` or its folder.
        split: split name (``train``, ``test``, ``test_small``; ``all`` for the folders layout).
        raters: raters to load (default: all raters of the split).
        parts: parts to load; ``full`` is derived from head | tail when it is not stored.
        binarize_threshold: see :func:`spermseg.data.io.read_mask`.
        lazy: keep only file names and read files on access (for datasets larger than memory).
        on_sample: called with the sample index after each sample is read (progress bars; eager mode).
        workers: decoding threads for eager loading (default: up to 8, one per CPU).
        labels: label images to load as well (``"instances"``, ``"parts"``; those not stored are skipped), read
            as stored (:func:`spermseg.data.labels.read_labels`) and checked for size.

    Returns:
        :class:`SplitArrays`.

    Raises:
        DataError: any structural problem of the split (missing/extra masks, empty split, ...) or, eagerly, any
            unreadable file, non-binary mask or size mismatch (lazily: when the file is accessed).
    """
    ds = dataset_or_root if isinstance(dataset_or_root, Dataset) else open_dataset(dataset_or_root)
    sp = ds.split(split)
    raise_first(ds.errors(split), ds.root)
    rater_list = _resolve_selection(sp, raters, parts)

    # which (rater, part) come from disk, and which full masks are derived from head | tail
    stored: list[tuple[str, str]] = []
    derived: list[str] = []
    for r in rater_list:
        on_disk = sp.parts(r)
        for p in parts:
            if p in on_disk:
                stored.append((r, p))
        if "full" in parts and "full" not in on_disk and "head" in on_disk and "tail" in on_disk:
            derived.append(r)
            for p in ("head", "tail"):
                if (r, p) not in stored:
                    stored.append((r, p))

    stored_labels = [(r, k) for r in rater_list for k in labels if k in sp.labels(r)]
    files = [s.image_path for s in sp.samples] + [s.mask_paths[r][p] for s in sp.samples for r, p in stored]
    files += [s.label_paths[r][k] for s in sp.samples for r, k in stored_labels]
    options = {"split": split, "raters": rater_list, "parts": list(parts), "threshold": binarize_threshold}
    if labels:
        options["labels"] = list(labels)
    fp = fingerprint(files, ds.root, options)
    names = [s.name for s in sp.samples]
    groups = [s.group for s in sp.samples]
    paths = [s.image_path for s in sp.samples]

    def check_size(mask: np.ndarray, path: Path, size: tuple[int, int], image: Path) -> np.ndarray:
        if mask.shape != size:
            raise DataError(
                f"size mismatch: mask {path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but image {image} is "
                f"{size[1]}x{size[0]}; resize or replace the mask"
            )
        return mask

    masks: dict[tuple[str, str], Sequence[np.ndarray]] = {}
    if lazy:
        sizes = [read_size(p) for p in paths]
        images: Sequence[np.ndarray] = _MapSeq(paths, lambda i, p: to_float(read_image_native(p)))

        def lazy_mask(r: str, p: str) -> _MapSeq:
            return _MapSeq(
                sp.samples,
                lambda i, s: check_size(
                    read_mask(s.mask_paths[r][p], binarize_threshold), s.mask_paths[r][p], sizes[i], s.image_path
                ),
            )

        for r, p in stored:
            masks[(r, p)] = lazy_mask(r, p)
        for r in derived:
            head, tail = masks[(r, "head")], masks[(r, "tail")]
            masks[(r, "full")] = _MapSeq(sp.samples, lambda i, s, h=head, t=tail: h[i] | t[i])
    else:
        from concurrent.futures import ThreadPoolExecutor

        from spermseg.data.layouts import default_workers

        def read_sample(s: Sample) -> tuple[np.ndarray, list[_Packed]]:
            img = read_image_native(s.image_path)
            ms = []
            for r, p in stored:
                path = s.mask_paths[r][p]
                ms.append(_Packed.pack(check_size(read_mask(path, binarize_threshold), path, img.shape, s.image_path)))
            return img, ms

        natives: list[np.ndarray] = []
        packed: dict[tuple[str, str], list[_Packed]] = {k: [] for k in stored}
        # decoders release the GIL: threads overlap file reading and decoding; results (and the first error)
        # come back in sample order
        with ThreadPoolExecutor(workers or default_workers()) as pool:
            for i, (img, ms) in enumerate(pool.map(read_sample, sp.samples)):
                natives.append(img)
                for key, pk in zip(stored, ms, strict=True):
                    packed[key].append(pk)
                if on_sample is not None:
                    on_sample(i)
        for r in derived:
            packed[(r, "full")] = [h | t for h, t in zip(packed[(r, "head")], packed[(r, "tail")], strict=True)]
        sizes = [(int(a.shape[0]), int(a.shape[1])) for a in natives]
        images = _MapSeq(natives, lambda i, a: to_float(a))
        for key, items in packed.items():
            masks[key] = _MapSeq(items, lambda i, pk: pk.unpack())
    # drop parts only loaded to derive full
    masks = {(r, p): v for (r, p), v in masks.items() if p in parts}
    label_arrays = {key: _label_sequence(sp.samples, key, sizes, lazy) for key in stored_labels}
    return SplitArrays(
        split=split,
        names=names,
        groups=groups,
        image_paths=paths,
        sizes=sizes,
        images=images,
        raters=rater_list,
        fingerprint=fp,
        lazy=lazy,
        _masks=masks,
        _labels=label_arrays,
    )


def _label_sequence(
    samples: Sequence[Sample], key: tuple[str, str], sizes: Sequence[tuple[int, int]], lazy: bool
) -> Sequence[np.ndarray]:
    """The (rater, kind) label images of ``samples`` (read now, or on access when ``lazy``), size-checked."""
    from spermseg.data.labels import read_labels

    rater, kind = key

    def read(i: int, s: Sample) -> np.ndarray:
        path = s.label_paths[rater][kind]
        arr = read_labels(path, kind)
        if arr.shape != tuple(sizes[i]):
            raise DataError(
                f"size mismatch: {kind} {path} is {arr.shape[1]}x{arr.shape[0]} (WxH) but image {s.image_path} is "
                f"{sizes[i][1]}x{sizes[i][0]}; replace the {rater} {kind} image"
            )
        return arr

    if lazy:
        return _MapSeq(samples, read)
    stored = [read(i, s) for i, s in enumerate(samples)]
    return _MapSeq(stored, lambda i, a: a.copy())
