"""The training data: a split in memory (:class:`SplitData`), the group-wise validation split and the samples on
the device (:class:`DeviceData`), which draws the random-cropped batches the loop trains on.

A batch is ``(images, target, masks)``: images (B, 1, H, W) float in [0, 1], target (B, 1, H, W) float {0, 1} (part
codes for part networks) and, for ensembling networks, the soft masks (B, n, H, W) read from the mask cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spermseg.errors import ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from spermseg.training.config import TrainConfig


@dataclass
class SplitData:
    """One split in memory, as numpy arrays (the trainer moves training data to the device).

    Attributes:
        names: image file names (N,).
        groups: group (video) of each image (N,).
        images: list of (H, W) float32 in [0, 1].
        targets: list of (H, W) bool target masks.
        masks: for ensembles, (N, n_masks, H, W) float16/float32 soft masks in [0, 1]; else None.
        fingerprint: data fingerprint of the split (for checkpoints).
    """

    names: list[str]
    groups: list[str]
    images: list[np.ndarray]
    targets: list[np.ndarray]
    masks: np.ndarray | None = None
    fingerprint: str = ""

    def subset(self, idx: Sequence[int]) -> SplitData:
        """The samples at ``idx`` (views, no copies of the pixel arrays)."""
        return SplitData(
            names=[self.names[i] for i in idx],
            groups=[self.groups[i] for i in idx],
            images=[self.images[i] for i in idx],
            targets=[self.targets[i] for i in idx],
            masks=None if self.masks is None else self.masks[np.asarray(idx, dtype=np.int64)],
            fingerprint=self.fingerprint,
        )

    def __len__(self) -> int:
        return len(self.names)


def load_split_data(
    root: str | Path,
    split: str,
    rater: str,
    part: str,
    *,
    binarize_threshold: float | None = None,
    max_images: int = 0,
    target: str = "binary",
) -> SplitData:
    """Read a split's images and one rater's masks of one part into memory.

    With ``target="parts"`` the targets are the rater's part-code label images (uint8 (H, W), codes 0-5) instead.

    Raises:
        DataError: unknown split/rater, or a part that is not labelled.
    """
    from spermseg.data.arrays import load_split
    from spermseg.data.layouts import open_dataset

    dataset = open_dataset(root)
    if split not in dataset.splits:
        raise DataError(f"split '{split}' not found in {root}; available: {', '.join(dataset.splits)}")
    raters = dataset.splits[split].raters
    if not raters:
        raise DataError(f"split '{split}' in {root} has no masks; training needs a rater's masks")
    rater = rater or raters[0]
    if rater not in raters:
        raise DataError(f"rater '{rater}' not found in split '{split}' of {root}; available: {', '.join(raters)}")
    if target == "parts":
        arrays = load_split(dataset, split, raters=[rater], parts=(), labels=("parts",))
        masks = arrays.labels(rater, "parts")
        if masks is None:
            raise DataError(f"rater '{rater}' of split '{split}' in {root} has no part labels ({rater}_parts/)")
    else:
        arrays = load_split(dataset, split, raters=[rater], parts=(part,), binarize_threshold=binarize_threshold)
        masks = arrays.masks(rater, part)
    if masks is None:
        raise DataError(
            f"part '{part}' of rater '{rater}' is not labelled in split '{split}' of {root}; "
            "use data.part=full or another rater"
        )
    n = len(arrays.names) if max_images <= 0 else min(max_images, len(arrays.names))
    if n == 0:
        raise DataError(f"split '{split}' of {root} has no images")
    return SplitData(
        names=list(arrays.names[:n]),
        groups=list(arrays.groups[:n]),
        images=[np.asarray(arrays.images[i], dtype=np.float32) for i in range(n)],
        targets=[np.asarray(masks[i], dtype=np.uint8 if target == "parts" else bool) for i in range(n)],
        fingerprint=str(arrays.fingerprint),
    )


def load_config_split(cfg: TrainConfig, split: str, *, max_images: int = 0) -> SplitData:
    """:func:`load_split_data` of ``split`` with the rater, part, threshold and target of ``cfg.data``."""
    return load_split_data(
        cfg.data.root,
        split,
        cfg.data.rater,
        cfg.data.part,
        binarize_threshold=cfg.data.binarize_threshold,
        max_images=max_images,
        target=cfg.data.target,
    )


def whole_sperm_scale_of(cfg: TrainConfig, names: Sequence[str]) -> dict[str, float | None] | None:
    """:func:`spermseg.data.labels.whole_sperm_scale` of the training images ``names`` (their head/tail labels).

    Recorded in every checkpoint as ``whole_sperm``: predict's whole-sperm filter (inference.postprocess) takes
    its radius from it. Returns ``None`` when the training rater has no head and tail masks (e.g. a folder
    dataset of full masks).
    """
    from spermseg.data.arrays import load_split
    from spermseg.data.labels import whole_sperm_scale

    try:
        arrays = load_split(cfg.data.root, cfg.data.train_split, raters=[cfg.data.rater], parts=("head", "tail"))
    except DataError:
        return None
    heads, tails = arrays.masks(cfg.data.rater, "head"), arrays.masks(cfg.data.rater, "tail")
    if heads is None or tails is None:
        return None
    keep = set(names)
    idx = [i for i, n in enumerate(arrays.names) if n in keep]
    return whole_sperm_scale([heads[i] for i in idx], [tails[i] for i in idx])


def attach_cached_masks(data: SplitData, cache_dir: str | Path, split: str, model_ids: Sequence[str]) -> list[str]:
    """Attach soft masks from the mask cache to ``data`` (aligned by image name); return the model ids used.

    Raises:
        DataError: when the cache lacks images of the split or the masks' size differs from the images'.
    """
    from spermseg.data.mask_store import cached_model_ids, load_cached_masks

    ids = list(model_ids) or cached_model_ids(cache_dir, split)
    if not ids:
        raise DataError(f"mask cache {cache_dir} holds no models for split '{split}'; run 'spermseg masks' first")
    names, masks = load_cached_masks(cache_dir, split, ids, dtype=np.float16)  # float16 halves memory (E1 stacks)
    index = {name: i for i, name in enumerate(names)}
    missing = [n for n in data.names if n not in index]
    if missing:
        raise DataError(
            f"mask cache {cache_dir} has no soft masks for {len(missing)} images of split '{split}' "
            f"(e.g. {missing[0]}); rebuild it with 'spermseg masks' on this dataset"
        )
    data.masks = masks[np.asarray([index[n] for n in data.names], dtype=np.int64)]
    if data.masks.shape[-2:] != data.images[0].shape:
        raise DataError(f"soft masks in {cache_dir} are {data.masks.shape[-2:]}, images {data.images[0].shape}")
    return ids


def split_by_group(groups: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Hold out whole groups (videos) for validation, deterministically from ``seed``.

    Groups are shuffled and taken until at least ``fraction`` of the images are held out; at least one group
    stays for training and, when ``fraction > 0`` and there are two or more groups, at least one is held out.

    Args:
        groups: group id of each image.
        fraction: target fraction of images for validation, in [0, 1).
        seed: seed of the shuffle.

    Returns:
        ``(train_indices, val_indices)``, each sorted.
    """
    n = len(groups)
    if fraction <= 0 or n < 2:
        return list(range(n)), []
    unique = sorted(set(groups))
    if len(unique) < 2:
        raise DataError(
            f"validation by group needs at least two groups (videos), found one ('{unique[0]}'); set "
            "validation.fraction=0 to train without validation"
        )
    order = np.random.default_rng(seed).permutation(len(unique))
    target = fraction * n
    val_groups: set[str] = set()
    count = 0
    by_group: dict[str, int] = {}
    for g in groups:
        by_group[g] = by_group.get(g, 0) + 1
    for k in order:
        if count >= target or len(val_groups) == len(unique) - 1:
            break
        val_groups.add(unique[k])
        count += by_group[unique[k]]
    train = [i for i, g in enumerate(groups) if g not in val_groups]
    val = [i for i, g in enumerate(groups) if g in val_groups]
    return train, val


def nested_subset(indices: Sequence[int], n: int, seed: int) -> list[int]:
    """``n`` of ``indices``: the first ``n`` of one permutation seeded by ``seed``, so that a smaller ``n`` gives a
    subset of a larger one (nested data-efficiency subsets); returned sorted.

    Args:
        indices: the candidates (e.g. the training part after the validation split).
        n: how many to keep; 0 keeps all.
        seed: seed of the permutation (independent of the run seed: every seed trains on the same images).

    Raises:
        ConfigError: ``n`` larger than ``len(indices)``.
    """
    if n <= 0:
        return list(indices)
    if n > len(indices):
        raise ConfigError(
            f"data.train_images={n} but the training part has only {len(indices)} images after the validation "
            "split; lower data.train_images or validation.fraction"
        )
    order = np.random.default_rng(seed).permutation(len(indices))
    return sorted(indices[i] for i in order[:n])


class DeviceData:
    """Training samples on the device; draws random-cropped, augmented, normalized batches.

    Images are kept as float32 (N, 1, H, W), targets as uint8 (N, 1, H, W) and soft masks as float16
    (N, n, H, W). Images of different sizes are kept as a list (then ``crop`` must be set).
    """

    def __init__(self, data: SplitData, device: torch.device, crop: int, crop_foreground: float = 0.0) -> None:
        import torch

        shapes = {img.shape for img in data.images}
        self.n = len(data)
        self.device = device
        self.uniform = len(shapes) == 1
        min_side = min(min(s) for s in shapes)
        if not self.uniform and crop <= 0:
            raise ConfigError(
                f"training images have {len(shapes)} different sizes; set data.crop (e.g. "
                f"--set data.crop={min(256, min_side)}) to train on random crops"
            )
        self.crop = min(crop, min_side) if crop > 0 else 0

        def stack(arrs: Sequence[np.ndarray], dtype: torch.dtype) -> torch.Tensor | list[torch.Tensor]:
            ts = [torch.from_numpy(np.ascontiguousarray(a)).to(dtype) for a in arrs]
            return torch.stack(ts).to(device) if self.uniform else [t.to(device) for t in ts]

        self.images = stack([img[None] for img in data.images], torch.float32)
        self.targets = stack([t[None].astype(np.uint8) for t in data.targets], torch.uint8)
        self.masks = None if data.masks is None else stack(list(data.masks), torch.float16)
        self.crop_foreground = crop_foreground if self.crop else 0.0
        # Foreground pixel coordinates per image (CPU, int32), for crops centred on the sperm.
        self.foreground = (
            [torch.from_numpy(np.argwhere(t > 0).astype(np.int32)) for t in data.targets]
            if self.crop_foreground
            else []
        )
        # Share of foreground pixels over the training set (for the logit bias prior).
        total = sum(int(t.size) for t in data.targets)
        self.prior = sum(int(np.count_nonzero(t)) for t in data.targets) / max(total, 1)
        self._host_targets = data.targets  # the part codes' frequencies (class_prior) are counted on demand

    def class_prior(self, n_classes: int) -> list[float]:
        """Share of the pixels of each code 0..n_classes-1 over the training set (part targets), each at least
        1e-6 (a code no pixel has would get an infinitely negative bias)."""
        counts = np.zeros(n_classes, np.int64)
        for t in self._host_targets:
            counts += np.bincount(np.asarray(t, np.int64).ravel(), minlength=n_classes)[:n_classes]
        return [max(float(c) / max(int(counts.sum()), 1), 1e-6) for c in counts]

    def batch(self, idx: Sequence[int], gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Raw batch (images (B,1,h,w) float, targets (B,1,h,w) float {0,1}, masks (B,n,h,w) float or None).

        Crops are drawn with the CPU generator ``gen``.
        """
        import torch

        def take(src: Any, i: int, y: int, x: int) -> torch.Tensor:
            t = src[i]
            return t[..., y : y + self.crop, x : x + self.crop] if self.crop else t

        if not self.crop:
            index = torch.as_tensor(list(idx), device=self.device)
            imgs, tgts = self.images[index], self.targets[index]  # type: ignore[index]
            msks = None if self.masks is None else self.masks[index]  # type: ignore[index]
        else:
            parts_i, parts_t, parts_m = [], [], []
            for i in idx:
                h, w = self.images[i].shape[-2:]
                y = int(torch.randint(0, h - self.crop + 1, (1,), generator=gen))
                x = int(torch.randint(0, w - self.crop + 1, (1,), generator=gen))
                if self.crop_foreground:
                    # Always drawn (fixed number of draws per crop, whatever the outcome: reproducible).
                    centred = float(torch.rand((), generator=gen)) < self.crop_foreground
                    pick = float(torch.rand((), generator=gen))
                    fg = self.foreground[i]
                    if centred and len(fg):
                        cy, cx = (int(v) for v in fg[min(int(pick * len(fg)), len(fg) - 1)])
                        y = min(max(cy - self.crop // 2, 0), h - self.crop)
                        x = min(max(cx - self.crop // 2, 0), w - self.crop)
                parts_i.append(take(self.images, i, y, x))
                parts_t.append(take(self.targets, i, y, x))
                if self.masks is not None:
                    parts_m.append(take(self.masks, i, y, x))
            imgs, tgts = torch.stack(parts_i), torch.stack(parts_t)
            msks = torch.stack(parts_m) if parts_m else None
        return imgs.float(), tgts.float(), None if msks is None else msks.float()
