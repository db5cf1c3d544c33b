"""Dataset layouts: find images and masks on disk, group images by video, and validate everything.

Two layouts are detected automatically by :func:`open_dataset`:

**SegSperm** (as released)::

    ROOT/{train,test,test_small}/images/NAME.png
    ROOT/SPLIT/GT{r}_{full,head,tail}/NAME.png      (same file name as the image; 0/255, non-zero = foreground)
    ROOT/SPLIT/GT{r}_{instances,parts}/NAME.png     (optional label images, see spermseg.data.labels)

Any folder ``ROOT/X`` holding an ``images/`` folder is a split ``X``. Masks are matched by file name, or by stem
when the suffix differs. Where a rater has only head and tail, full = head | tail is derived on loading; where it
has only full, parts are unavailable (never faked from full).

**Folders** (users' own data)::

    ROOT/images/*                          one split called "all"
    ROOT/masks/*                           one rater, called "GT1", full masks
    ROOT/masks/{full,head,tail}/*          one rater "GT1" with parts
    ROOT/masks/<rater>/*                   several raters (full masks) ...
    ROOT/masks/<rater>/{full,head,tail}/*  ... or with parts
    ROOT/{instances,parts}[/<rater>]/*     optional label images (rater "GT1" when not nested)

matched by file stem (``images/a.jpg`` <-> ``masks/a.png``). Images without any mask folder are allowed
(prediction only).

**Groups** (for splitting without leakage between frames of one video): names ``{video}_{frame}_{n}`` (frame and
n are integers) belong to group ``video``; other names form their own group. A ``groups.csv`` with rows
``name,group`` (``ROOT/groups.csv`` or the ``groups_csv`` argument; header optional; name with or without the
suffix) overrides the parsed group of the names it lists.

**Validation**: :func:`open_dataset` lists structural problems (missing or extra masks, empty splits, ambiguous
names) without reading pixels; :func:`validate_split` decodes every file once and adds unreadable or truncated
files, NaN/Inf, non-binary masks and size mismatches, and checks label images against the same rater's masks
(union = full, part codes 0-5 with 1-3 inside head and 4-5 inside tail). Each problem is one line naming the file.
"""

from __future__ import annotations

import csv
import functools
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from spermseg.data.io import is_image_file
from spermseg.errors import DataError

PARTS: tuple[str, str, str] = ("full", "head", "tail")
#: Splits of the SegSperm layout, in display order (other split folders follow alphabetically).
SEGSPERM_SPLITS: tuple[str, ...] = ("train", "val", "test", "test_small")
#: Rater name of a folders-layout dataset whose masks are not in per-rater folders.
DEFAULT_RATER = "GT1"
FOLDERS_SPLIT = "all"

_MASK_DIR_RE = re.compile(r"^(GT\d+)_(full|head|tail)$")
_LABEL_DIR_RE = re.compile(r"^(GT\d+)_(instances|parts)$")
LABEL_KINDS: tuple[str, str] = ("instances", "parts")  # = spermseg.data.labels.LABEL_KINDS
_VIDEO_RE = re.compile(r"^(?P<video>.+)_(?P<frame>\d+)_(?P<n>\d+)$")

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One finding of the validation: a single line that names the file and says how to fix it."""

    severity: Severity
    split: str | None
    path: Path | None
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.message}"


@dataclass
class Sample:
    """One image and its masks.

    Attributes:
        name: image file name, e.g. ``12_0034_1.png``.
        stem: name without suffix (the key that matches masks).
        image_path: the image file.
        group: video id (see module docstring) used to split without leakage.
        mask_paths: ``{rater: {part: path}}`` of the masks found on disk (derived masks are not listed).
        label_paths: ``{rater: {"instances"|"parts": path}}`` of the label images found on disk.
    """

    name: str
    image_path: Path
    group: str
    mask_paths: dict[str, dict[str, Path]] = field(default_factory=dict)
    label_paths: dict[str, dict[str, Path]] = field(default_factory=dict)

    @property
    def stem(self) -> str:
        return Path(self.name).stem


@dataclass
class Split:
    """A list of samples with the raters and parts that label them.

    Attributes:
        name: split name (``train``, ``test``, ``test_small``; ``all`` in the folders layout).
        samples: samples sorted by name.
        raters: raters with at least one mask folder, naturally sorted (``GT1, GT2, ..., GT10``).
    """

    name: str
    samples: list[Sample]
    raters: list[str]
    _parts: dict[str, list[str]] = field(default_factory=dict, repr=False)
    _labels: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def labels(self, rater: str) -> list[str]:
        """Label images stored for ``rater``: a subset of :data:`LABEL_KINDS` (``instances``, ``parts``)."""
        if rater not in self.raters:
            raise DataError(f"split '{self.name}' has no rater '{rater}'; raters: {', '.join(self.raters) or 'none'}")
        return list(self._labels.get(rater, []))

    def parts(self, rater: str) -> list[str]:
        """Parts stored on disk for ``rater`` (in :data:`PARTS` order); ``full`` may be derivable, see
        :meth:`available_parts`."""
        if rater not in self._parts:
            raise DataError(f"split '{self.name}' has no rater '{rater}'; raters: {', '.join(self.raters) or 'none'}")
        return list(self._parts[rater])

    def available_parts(self, rater: str) -> list[str]:
        """Parts that can be loaded for ``rater``: stored ones plus ``full`` derived from head | tail."""
        stored = self.parts(rater)
        if "full" not in stored and "head" in stored and "tail" in stored:
            stored = ["full", *stored]
        return [p for p in PARTS if p in stored]

    @property
    def groups(self) -> list[str]:
        """Distinct groups, in order of first appearance."""
        return list(dict.fromkeys(s.group for s in self.samples))

    def __len__(self) -> int:
        return len(self.samples)


@dataclass
class Dataset:
    """A dataset on disk: its splits and the structural problems found while listing it.

    Attributes:
        root: dataset folder.
        layout: ``"segsperm"`` or ``"folders"``.
        splits: split name -> :class:`Split`, in display order.
        problems: structural problems (missing/extra masks, empty splits, ...) found without reading pixels.
    """

    root: Path
    layout: Literal["segsperm", "folders"]
    splits: dict[str, Split]
    problems: list[Problem] = field(default_factory=list)

    def split(self, name: str) -> Split:
        """The split called ``name``; a DataError lists the available ones."""
        if name not in self.splits:
            raise DataError(f"dataset {self.root} has no split '{name}'; splits: {', '.join(self.splits) or 'none'}")
        return self.splits[name]

    def errors(self, split: str | None = None) -> list[Problem]:
        """Structural errors (not warnings), optionally only those of one split (plus dataset-wide ones)."""
        return [p for p in self.problems if p.severity == "error" and (split is None or p.split in (None, split))]


def raise_first(problems: list[Problem], root: Path) -> None:
    """Raise a DataError for the first error in ``problems`` (mentioning how many more there are)."""
    errors = [p for p in problems if p.severity == "error"]
    if not errors:
        return
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    raise DataError(f"{errors[0].message}{more}; run 'spermseg data check {root}' to list them all")


# ----------------------------------------------------------------------------------------------------------------
# Grouping
# ----------------------------------------------------------------------------------------------------------------


def parse_group(stem: str) -> str:
    """Video id of a file stem ``{video}_{frame}_{n}`` (frame and n integers); otherwise the stem itself.

    >>> parse_group("12_0034_1"), parse_group("clip_a_7_2"), parse_group("Image__2023-05-05__21-11-44")
    ('12', 'clip_a', 'Image__2023-05-05__21-11-44')
    """
    m = _VIDEO_RE.match(stem)
    return m.group("video") if m else stem


def read_groups_csv(path: Path) -> dict[str, str]:
    """Read ``name,group`` rows (optional header ``name,group``) into ``{stem: group}``.

    Raises:
        DataError: unreadable file or a row without two non-empty columns (the message names the line).
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read groups file {path}: {exc}") from None
    out: dict[str, str] = {}
    for lineno, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        cells = [c.strip() for c in row]
        if lineno == 1 and [c.lower() for c in cells[:2]] == ["name", "group"]:
            continue
        if len(cells) < 2 or not cells[0] or not cells[1]:
            raise DataError(f"groups file {path} line {lineno}: expected 'name,group', got {','.join(row)!r}")
        out[Path(cells[0]).stem if is_image_file(cells[0]) else cells[0]] = cells[1]
    return out


def _assign_groups(splits: dict[str, Split], groups: dict[str, str] | None, csv_path: Path | None) -> list[Problem]:
    problems: list[Problem] = []
    if groups is None:
        return problems
    used: set[str] = set()
    for split in splits.values():
        for s in split.samples:
            if s.stem in groups:
                s.group = groups[s.stem]
                used.add(s.stem)
    unused = sorted(set(groups) - used)
    if unused:
        shown = ", ".join(unused[:3]) + (", ..." if len(unused) > 3 else "")
        problems.append(
            Problem("warning", None, csv_path, f"groups file {csv_path} lists {len(unused)} unknown names ({shown})")
        )
    return problems


# ----------------------------------------------------------------------------------------------------------------
# Listing
# ----------------------------------------------------------------------------------------------------------------


def _natural_key(text: str) -> list[int | str]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _list_images(folder: Path, split: str | None, problems: list[Problem], what: str) -> dict[str, Path]:
    """Image files of ``folder`` keyed by stem; non-image files become warnings, duplicate stems errors."""
    by_stem: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            continue
        if not is_image_file(p):
            problems.append(Problem("warning", split, p, f"ignored {p}: not an image file (.png .tif .jpg .bmp)"))
            continue
        if p.stem in by_stem:
            problems.append(
                Problem("error", split, p, f"ambiguous {what} {p}: same stem as {by_stem[p.stem].name}; rename one")
            )
            continue
        by_stem[p.stem] = p
    return by_stem


def _match_masks(
    split_name: str,
    images: dict[str, Path],
    images_dir: Path,
    mask_dirs: list[tuple[str, str, Path]],
    problems: list[Problem],
    order: tuple[str, ...] = PARTS,
) -> tuple[dict[str, dict[str, dict[str, Path]]], dict[str, list[str]]]:
    """Match each mask folder (rater, part, dir) to the images; report missing and extra masks."""
    per_image: dict[str, dict[str, dict[str, Path]]] = {stem: {} for stem in images}
    parts: dict[str, list[str]] = {}
    for rater, part, folder in mask_dirs:
        masks = _list_images(folder, split_name, problems, "mask")
        parts.setdefault(rater, []).append(part)
        for stem, img in images.items():
            if stem in masks:
                per_image[stem].setdefault(rater, {})[part] = masks[stem]
            else:
                problems.append(
                    Problem("error", split_name, img, f"missing mask: {folder}/ has no mask for image {img}")
                )
        for stem, m in masks.items():
            if stem not in images:
                problems.append(
                    Problem("error", split_name, m, f"extra mask {m}: no image '{stem}.*' in {images_dir}/; remove it")
                )
    for rater in parts:
        parts[rater] = [p for p in order if p in parts[rater]]
    return per_image, parts


def _make_split(
    name: str,
    images: dict[str, Path],
    per_image: dict[str, dict[str, dict[str, Path]]],
    parts: dict[str, list[str]],
    labels: tuple[dict[str, dict[str, dict[str, Path]]], dict[str, list[str]]] | None = None,
) -> Split:
    per_label, kinds = labels if labels is not None else ({}, {})
    samples = [
        Sample(
            name=path.name,
            image_path=path,
            group=parse_group(stem),
            mask_paths=per_image.get(stem, {}),
            label_paths=per_label.get(stem, {}),
        )
        for stem, path in sorted(images.items(), key=lambda kv: _natural_key(kv[1].name))
    ]
    raters = sorted(set(parts) | set(kinds), key=_natural_key)
    return Split(
        name=name,
        samples=samples,
        raters=raters,
        _parts={r: parts.get(r, []) for r in raters},
        _labels={r: kinds[r] for r in raters if r in kinds},
    )


def _match_labels(
    split_name: str, images: dict[str, Path], images_dir: Path, label_dirs: list[tuple[str, str, Path]], problems
) -> tuple[dict[str, dict[str, dict[str, Path]]], dict[str, list[str]]]:
    """Match label-image folders (rater, kind, dir) to the images, as :func:`_match_masks` does for masks."""
    return _match_masks(split_name, images, images_dir, label_dirs, problems, order=LABEL_KINDS)


def _scan_segsperm(root: Path, problems: list[Problem]) -> dict[str, Split]:
    split_dirs = [d for d in root.iterdir() if d.is_dir() and (d / "images").is_dir()]
    for name in SEGSPERM_SPLITS:
        d = root / name
        if d.is_dir() and not (d / "images").is_dir():
            problems.append(Problem("error", name, d, f"split folder {d} has no images/ folder; add it or remove {d}"))
    order = {n: i for i, n in enumerate(SEGSPERM_SPLITS)}
    split_dirs.sort(key=lambda d: (order.get(d.name, len(order)), _natural_key(d.name)))
    splits: dict[str, Split] = {}
    for d in split_dirs:
        images = _list_images(d / "images", d.name, problems, "image")
        if not images:
            problems.append(Problem("error", d.name, d / "images", f"empty split: {d / 'images'} has no image files"))
        mask_dirs: list[tuple[str, str, Path]] = []
        label_dirs: list[tuple[str, str, Path]] = []
        for sub in sorted(d.iterdir(), key=lambda p: _natural_key(p.name)):
            if not sub.is_dir() or sub.name == "images" or sub.name.startswith("."):
                continue
            m = _MASK_DIR_RE.match(sub.name)
            lm = _LABEL_DIR_RE.match(sub.name)
            if m:
                mask_dirs.append((m.group(1), m.group(2), sub))
            elif lm:
                label_dirs.append((lm.group(1), lm.group(2), sub))
            else:
                problems.append(
                    Problem(
                        "warning",
                        d.name,
                        sub,
                        f"ignored folder {sub}: mask folders are named GT<r>_<full|head|tail|instances|parts>",
                    )
                )
        per_image, parts = _match_masks(d.name, images, d / "images", mask_dirs, problems)
        labels = _match_labels(d.name, images, d / "images", label_dirs, problems)
        splits[d.name] = _make_split(d.name, images, per_image, parts, labels)
    return splits


def _scan_folders(root: Path, problems: list[Problem]) -> dict[str, Split]:
    name = FOLDERS_SPLIT
    images = _list_images(root / "images", name, problems, "image")
    if not images:
        problems.append(Problem("error", name, root / "images", f"empty split: {root / 'images'} has no image files"))
    mask_dirs: list[tuple[str, str, Path]] = []
    masks_root = root / "masks"
    if masks_root.is_dir():
        subdirs = sorted(
            (p for p in masks_root.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: _natural_key(p.name),
        )
        has_files = any(is_image_file(p) for p in masks_root.iterdir() if p.is_file())
        if subdirs and {p.name for p in subdirs} <= set(PARTS) and not has_files:
            mask_dirs = [(DEFAULT_RATER, p.name, p) for p in subdirs]  # masks/{full,head,tail}/
        else:
            if has_files:
                mask_dirs.append((DEFAULT_RATER, "full", masks_root))
            for rater_dir in subdirs:
                part_dirs = [p for p in rater_dir.iterdir() if p.is_dir() and p.name in PARTS]
                if part_dirs:
                    mask_dirs.extend((rater_dir.name, p.name, p) for p in sorted(part_dirs))
                else:
                    mask_dirs.append((rater_dir.name, "full", rater_dir))
            if has_files and any(r == DEFAULT_RATER for r, _, d in mask_dirs if d != masks_root):
                problems.append(
                    Problem(
                        "error",
                        name,
                        masks_root,
                        f"{masks_root} holds masks and a folder '{DEFAULT_RATER}'; move the loose masks into it",
                    )
                )
    else:
        problems.append(
            Problem("warning", name, masks_root, f"no masks: {masks_root} does not exist (fine for prediction only)")
        )
    per_image, parts = _match_masks(name, images, root / "images", mask_dirs, problems)
    from spermseg.data.labels import folder_label_dirs

    label_dirs = folder_label_dirs(root, DEFAULT_RATER, _natural_key)
    labels = _match_labels(name, images, root / "images", label_dirs, problems)
    return {name: _make_split(name, images, per_image, parts, labels)}


def open_dataset(root: str | Path, groups_csv: str | Path | None = None) -> Dataset:
    """List a dataset on disk (no pixels are read) and detect its layout.

    Args:
        root: dataset folder in the SegSperm or folders layout (see module docstring).
        groups_csv: optional ``name,group`` file; defaults to ``ROOT/groups.csv`` when that exists.

    Returns:
        The :class:`Dataset`; structural problems are listed in ``Dataset.problems`` rather than raised, so
        that ``spermseg data check`` can report all of them. :func:`spermseg.data.arrays.load_split` raises on
        errors.

    Raises:
        DataError: ``root`` is not a folder, matches neither layout, or the groups file is malformed.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    problems: list[Problem] = []
    if (root / "images").is_dir():
        layout: Literal["segsperm", "folders"] = "folders"
        splits = _scan_folders(root, problems)
    elif any(d.is_dir() and (d / "images").is_dir() for d in root.iterdir()) or any(
        (root / s).is_dir() for s in SEGSPERM_SPLITS
    ):
        layout = "segsperm"
        splits = _scan_segsperm(root, problems)
    else:
        raise DataError(
            f"no dataset found in {root}: expected ROOT/<split>/images/ with ROOT/<split>/GT1_full/ (SegSperm) "
            "or ROOT/images/ with ROOT/masks/ (folders)"
        )
    csv_path = Path(groups_csv) if groups_csv is not None else root / "groups.csv"
    if groups_csv is not None and not csv_path.is_file():
        raise DataError(f"groups file not found: {csv_path}")
    groups = read_groups_csv(csv_path) if csv_path.is_file() else None
    problems.extend(_assign_groups(splits, groups, csv_path if groups is not None else None))
    return Dataset(root=root, layout=layout, splits=splits, problems=problems)


# ----------------------------------------------------------------------------------------------------------------
# Pixel-level validation
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class SplitReport:
    """What :func:`validate_split` found in one split.

    Attributes:
        split: split name.
        sizes: ``Counter`` of image sizes as (W, H).
        problems: pixel-level problems (structural ones are in ``Dataset.problems``).
        n_files: number of files decoded.
    """

    split: str
    sizes: Counter[tuple[int, int]]
    problems: list[Problem]
    n_files: int


def default_workers() -> int:
    """Threads for decoding files: the decoders release the GIL, so threads scale on idle multi-core machines."""
    import os

    return max(1, min(8, os.cpu_count() or 1))


def validate_split(
    split: Split,
    binarize_threshold: float | None = None,
    *,
    on_sample: Callable[[Sample], None] | None = None,
    workers: int | None = None,
) -> SplitReport:
    """Decode every image and mask of ``split`` once and collect every problem (never raises on bad files).

    Checks: unreadable/truncated/corrupt files, NaN/Inf and out-of-range float images, non-binary masks
    (unless ``binarize_threshold`` is given), mask size different from its image.

    Args:
        split: a split from :func:`open_dataset`.
        binarize_threshold: see :func:`spermseg.data.io.read_mask`.
        on_sample: called after each sample, in sample order (progress bars).
        workers: decoding threads (default :func:`default_workers`); problems keep the sample order.

    Returns:
        A :class:`SplitReport`.
    """
    from concurrent.futures import ThreadPoolExecutor

    sizes: Counter[tuple[int, int]] = Counter()
    problems: list[Problem] = []
    n_files = 0
    check = functools.partial(_check_sample, split=split.name, binarize_threshold=binarize_threshold)
    with ThreadPoolExecutor(workers or default_workers()) as pool:
        for s, (size, found, n) in zip(split.samples, pool.map(check, split.samples), strict=True):
            if size is not None:
                sizes[size] += 1
            problems.extend(found)
            n_files += n
            if on_sample is not None:
                on_sample(s)
    return SplitReport(split=split.name, sizes=sizes, problems=problems, n_files=n_files)


def _check_sample(
    s: Sample, *, split: str, binarize_threshold: float | None
) -> tuple[tuple[int, int] | None, list[Problem], int]:
    """Decode one sample's files: ((W, H) of the image or None, problems, number of files)."""
    from spermseg.data.io import read_image_native, read_mask

    problems: list[Problem] = []
    shape: tuple[int, ...] | None = None
    n_files = 1
    try:
        shape = read_image_native(s.image_path).shape
    except DataError as exc:
        problems.append(Problem("error", split, s.image_path, str(exc)))
    decoded: dict[str, dict[str, object]] = {}  # masks kept only for raters with label images to check
    for rater, parts in s.mask_paths.items():
        for part, path in parts.items():
            n_files += 1
            try:
                mask = read_mask(path, binarize_threshold)
            except DataError as exc:
                problems.append(Problem("error", split, path, str(exc)))
                continue
            mshape = mask.shape
            if rater in s.label_paths:
                decoded.setdefault(rater, {})[part] = mask
            if shape is not None and mshape != shape:
                problems.append(
                    Problem(
                        "error",
                        split,
                        path,
                        f"size mismatch: mask {path} is {mshape[1]}x{mshape[0]} (WxH) but image "
                        f"{s.image_path} is {shape[1]}x{shape[0]}; resize or replace the {rater} {part} mask",
                    )
                )
    n_files += _check_sample_labels(s, split, shape, decoded, problems)
    return (None if shape is None else (shape[1], shape[0])), problems, n_files


def _check_sample_labels(
    s: Sample, split: str, shape: tuple[int, ...] | None, decoded: dict[str, dict[str, object]], problems: list[Problem]
) -> int:
    """Decode and check the label images of one sample (:func:`spermseg.data.labels.check_sample_labels`)."""
    from spermseg.data.labels import check_sample_labels

    found = check_sample_labels(s.label_paths, s.image_path, shape, decoded)  # type: ignore[arg-type]
    problems.extend(Problem("error", split, path, message) for path, message in found)
    return sum(len(k) for k in s.label_paths.values())


def format_sizes(sizes: Counter[tuple[int, int]] | Iterable[tuple[int, int]]) -> str:
    """``"640x512 (WxH)"`` or ``"640x512 (WxH) x 60, 320x256 (WxH) x 4"`` for mixed sizes."""
    counts = sizes if isinstance(sizes, Counter) else Counter(sizes)
    if not counts:
        return "none"
    if len(counts) == 1:
        ((w, h),) = counts
        return f"{w}x{h} (WxH)"
    return ", ".join(f"{w}x{h} (WxH) x {n}" for (w, h), n in counts.most_common())
