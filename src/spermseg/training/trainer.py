"""The training loop: one explicit, readable loop in plain PyTorch for base models and ensembling networks.

Data lives in memory (on the training device): a batch is drawn by indexing, randomly cropped, augmented on the
device by :class:`spermseg.data.transforms.Augmenter`, normalized per image, and fed to the model. A batch is
``(inputs, target)`` with ``inputs = {"image": (B,1,H,W)}`` for base models and additionally
``{"masks": (B,n,H,W)}`` (soft masks from the mask cache) for ensembling networks; the model call is pluggable
(:func:`call_base` / :func:`call_ensemble`).

Reproducibility and resume: every epoch draws its shuffling, crops and augmentation from random streams derived
from ``(seed, epoch, rank)`` (and re-seeds the global torch/NumPy/Python generators the same way), so an epoch
computes the same thing whether the run was interrupted before it or not. After each epoch the model, optimizer,
scheduler, RNG states and history are saved atomically in ``RUN_DIR/state``; ``resume=True`` continues from there
and ends with weights identical to an uninterrupted run (same device, deterministic algorithms).

Run directory (only rank 0 writes): ``config.yaml``, ``metrics.csv``, ``best.safetensors/json`` (highest
validation AP; its sidecar holds ``threshold`` = t_opt), ``last.safetensors/json``, ``state/``, ``result.json``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spermseg.errors import ConfigError, DataError, SpermsegError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from spermseg.training.config import TrainConfig

Inputs = dict[str, "torch.Tensor"]
ModelCall = Callable[["nn.Module", Inputs], Any]

METRIC_KEYS = ("ap", "iou_0.5", "iou_opt", "t_opt")
CSV_FIELDS = (
    "epoch",
    "lr",
    "train_loss",
    "val_ap",
    "val_iou_0.5",
    "val_iou_opt",
    "val_t_opt",
    "epoch_s",
    "images_per_s",
    "best",
)


def call_base(model: nn.Module, inputs: Inputs) -> Any:
    """Model call of a base segmentation model: ``model(image)``."""
    return model(inputs["image"])


def call_ensemble(model: nn.Module, inputs: Inputs) -> Any:
    """Model call of an ensembling network: ``model(image, masks)``."""
    return model(inputs["image"], inputs["masks"])


# --------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------
# Hooks and results
# --------------------------------------------------------------------------------------------------------------


@dataclass
class TrainHooks:
    """Optional callbacks (for tests, notebooks and the experiment runner).

    Attributes:
        on_step_end: ``f(epoch, step, loss)`` after each optimizer step (epoch is 0-based).
        on_epoch_end: ``f(epoch, row)`` after each epoch's checkpoints and state were written (epoch 0-based).
        log: where one-line messages go (default: stderr on rank 0).
    """

    on_step_end: Callable[[int, int, float], None] | None = None
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None
    log: Callable[[str], None] | None = None


@dataclass
class TrainResult:
    """What :func:`train` returns: the run directory, ``result.json`` content, and whether it was skipped."""

    run_dir: Path
    result: dict[str, Any]
    skipped: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def is_finished(run_dir: str | Path) -> bool:
    """True when ``RUN_DIR/result.json`` exists (the last thing a run writes)."""
    return (Path(run_dir) / "result.json").is_file()


# --------------------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------------------


def evaluate_probs(probs: Sequence[np.ndarray], refs: Sequence[np.ndarray], mode: str = "fast") -> dict[str, float]:
    """AP, IoU_0.5, IoU_opt and t_opt of soft masks against bool references (full part, no IoU')."""
    from spermseg.metrics import SegmentationAccumulator

    acc = SegmentationAccumulator(mode=mode, kernels=(), parts=False)
    for prob, ref in zip(probs, refs):
        acc.update(np.asarray(prob, dtype=np.float32), np.asarray(ref, dtype=bool))
    full = acc.result()["full"]
    return {k: float(full[k]) for k in (*METRIC_KEYS, "brier") if k in full and full[k] is not None}


def validate_model(
    model: nn.Module,
    data: SplitData,
    normalization: str,
    device: torch.device,
    *,
    batch_size: int = 4,
    tta: bool = False,
    mode: str = "fast",
) -> dict[str, float]:
    """Predict ``data`` with ``model`` (eval mode) and score it: ``{"ap", "iou_0.5", "iou_opt", "t_opt", ...}``."""
    from spermseg.inference.forward import predict_probs

    # float32 whatever the training precision: the scores select the best epoch and its threshold.
    probs = predict_probs(
        model,
        data.images,
        normalization,
        device=device,
        batch_size=batch_size,
        tta=tta,
        masks=data.masks,
        precision="fp32",
    )
    return evaluate_probs(probs, data.targets, mode)


# --------------------------------------------------------------------------------------------------------------
# Building blocks of a run
# --------------------------------------------------------------------------------------------------------------


def make_inputs(images: torch.Tensor, masks: torch.Tensor | None, memory_format: Any = None) -> Inputs:
    """The model inputs of a batch: ``{"image": (B,1,H,W)}`` plus ``{"masks": (B,n,H,W)}`` for ensembles.

    Args:
        images: normalized images.
        masks: soft masks in [0, 1] (ensembles) or None.
        memory_format: e.g. ``torch.channels_last`` (None keeps the layout).
    """
    if memory_format is not None:
        images = images.contiguous(memory_format=memory_format)
        masks = None if masks is None else masks.contiguous(memory_format=memory_format)
    return {"image": images} if masks is None else {"image": images, "masks": masks}


def train_step(
    model: nn.Module,
    model_call: ModelCall,
    inputs: Inputs,
    target: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    alphas: Sequence[float] = (),
    amp: bool = False,
    device: torch.device | None = None,
    grad_clip: float = 0.0,
) -> torch.Tensor:
    """One optimization step: forward (bf16 autocast when ``amp``), deep-supervision loss, backward, step.

    Args:
        model: the (possibly DDP-wrapped) model in training mode.
        model_call: :func:`call_base` or :func:`call_ensemble`.
        inputs: from :func:`make_inputs`.
        target: (B, 1, H, W) float {0, 1}.
        optimizer: its optimizer.
        loss_fn: per-output loss from :func:`spermseg.training.losses.build_loss`.
        alphas: deep-supervision weights (main output first; empty = all 1).
        amp: bf16 autocast (on CUDA, and on CPUs with AMX; see :func:`~spermseg.inference.forward.resolve_precision`).
        device: the device (for autocast); default: the target's.
        grad_clip: max gradient norm (0 = off).

    Returns:
        The loss, detached (a 0-dim tensor on the device; reading it synchronizes).
    """
    import torch

    from spermseg.inference.forward import autocast_context
    from spermseg.models.blocks import split_outputs
    from spermseg.training.losses import deep_supervision_loss

    optimizer.zero_grad(set_to_none=True)
    with autocast_context(device or target.device, "auto" if amp else "fp32", training=True):
        out = model_call(model, inputs)
    logits, aux = split_outputs(out)
    # The loss in float32: bf16 log-sigmoids lose the small probabilities of thin tails.
    loss = deep_supervision_loss(logits.float(), [a.float() for a in aux], target, loss_fn, alphas)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    optimizer.step()
    return loss.detach()


def _epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """A 63-bit seed for (run seed, epoch, stream); stream = rank for per-rank streams, -1 for the shared shuffle."""
    return int(
        np.random.SeedSequence([seed, epoch, stream + 1])
        .generate_state(2, dtype=np.uint32)
        .astype(np.uint64)
        .dot([1, 1 << 31])
    )


def _reseed_epoch(seed: int, epoch: int, rank: int) -> int:
    """Re-seed Python, NumPy and torch (all devices) for this epoch and rank; returns the seed used."""
    import random

    import torch

    s = _epoch_seed(seed, epoch, rank)
    random.seed(s)
    np.random.seed(s % 2**32)  # noqa: NPY002 - user code (e.g. augmentations) may draw from the global state
    torch.manual_seed(s)
    return s


def build_model(cfg: TrainConfig, n_masks: int = 0) -> nn.Module:
    """Create the base model or ensembling network described by ``cfg.model``."""
    kwargs = dict(cfg.model.kwargs)
    if cfg.model.width is not None:
        kwargs["width"] = cfg.model.width
    if cfg.data.target == "parts":
        from spermseg.training.parts import N_CODES

        kwargs["out_channels"] = N_CODES
    if not cfg.model.ensemble:
        from spermseg.models import create_model

        return create_model(cfg.model.name, **kwargs)
    from spermseg.models import create_ensemble

    if cfg.model.ensemble == "avg":
        raise ConfigError("the 'avg' ensemble has no parameters to train; evaluate it with 'spermseg ensemble eval'")
    model = create_ensemble(cfg.model.ensemble, n_masks, **kwargs)
    # Make the model self-describing for checkpoints even if the factory does not tag it.
    if getattr(model, "spermseg_name", None) is None:
        model.spermseg_name = cfg.model.ensemble  # type: ignore[attr-defined]
        model.spermseg_kwargs = kwargs  # type: ignore[attr-defined]
    model.spermseg_kind = "ensemble"  # type: ignore[attr-defined]
    if not hasattr(model, "n_masks"):
        model.n_masks = n_masks  # type: ignore[attr-defined]
    return model


def build_optimizer(cfg: TrainConfig, params: Any) -> torch.optim.Optimizer:
    """Adam (paper), AdamW or SGD with momentum, from ``cfg.optim``."""
    import torch

    o = cfg.optim
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


def _amp_enabled(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast in training: ``auto`` on CUDA and on CPUs with AMX, ``bf16`` on CUDA or any CPU."""
    from spermseg.inference.forward import resolve_precision

    if cfg.runtime.amp == "off":
        return False
    return resolve_precision("bf16" if cfg.runtime.amp == "bf16" else "auto", device, training=True) == "bf16"


def _channels_last(cfg: TrainConfig, device: torch.device) -> bool:
    """``auto``: on CUDA, and on the CPU when bf16 runs there (oneDNN's AMX kernels are fastest in NHWC)."""
    if cfg.runtime.channels_last != "auto":
        return cfg.runtime.channels_last == "on"
    return device.type == "cuda" or _amp_enabled(cfg, device)


def _peak_memory_mb(device: torch.device) -> dict[str, Any]:
    import torch

    if device.type == "cuda":
        return {"peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20, "peak_memory_kind": "cuda"}
    import resource

    # ru_maxrss is in KiB on Linux: the process' peak resident memory (data, model and activations).
    return {"peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_memory_kind": "rss"}


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    from spermseg.utils.atomic import atomic_write_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_FIELDS})
    atomic_write_text(path, buf.getvalue())


def _comparable(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """The part of a config that must match to resume or skip a run (runtime options may change)."""
    out = dict(cfg_dict)
    out.pop("runtime", None)
    return out


class _TensorBoard:
    """Optional TensorBoard logging (only when the ``tensorboard`` package is installed)."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                return
            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "epoch" and isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# --------------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------------


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    hooks: TrainHooks | None = None,
    preset_name: str | None = None,
) -> TrainResult:
    """Train one base model or ensembling network and write ``run_dir``.

    Args:
        cfg: the resolved, validated config (``cfg.data.root`` must be set).
        run_dir: output directory.
        resume: continue an interrupted run from ``run_dir/state`` (same config required).
        force: delete previous outputs in ``run_dir`` and train from scratch.
        hooks: optional callbacks.
        preset_name: recorded in ``result.json``.

    Returns:
        A :class:`TrainResult`; ``skipped=True`` when ``run_dir`` already holds a finished run.

    Raises:
        SpermsegError: on unusable data, config, or an existing run that conflicts with the request.
    """
    import torch

    from spermseg.config import config_to_dict, save_config
    from spermseg.models import checkpoints as ckpt
    from spermseg.training import state
    from spermseg.training.config import validate
    from spermseg.training.distributed import barrier, init_distributed, shutdown_distributed
    from spermseg.utils.atomic import atomic_write_json
    from spermseg.utils.device import resolve_device
    from spermseg.utils.seed import seed_everything

    validate(cfg)
    hooks = hooks or TrainHooks()
    run_dir = Path(run_dir)
    cfg_dict = config_to_dict(cfg)
    if not cfg.data.root:
        raise ConfigError("no training data: pass --data ROOT (or set data.root)")

    device = resolve_device(cfg.runtime.device)
    dist_info, device = init_distributed(device)
    log = hooks.log or (_stderr if dist_info.is_main else (lambda _msg: None))
    try:
        # ---- run directory state: finished / resumable / fresh -------------------------------------------------
        if run_dir.exists() and not force:
            saved = run_dir / "config.yaml"
            if saved.is_file():
                import yaml

                old = yaml.safe_load(saved.read_text()) or {}
                if _comparable(old) != _comparable(cfg_dict):
                    raise SpermsegError(
                        f"{run_dir} holds a run with a different config (see {saved}); use --force to overwrite it "
                        "or choose another --out"
                    )
            if is_finished(run_dir):
                result = json.loads((run_dir / "result.json").read_text())
                # "validation" is null for runs trained without a validation split (validation.fraction=0).
                val_ap = (result.get("validation") or {}).get("ap")
                log(f"spermseg train: {run_dir} is finished (AP {val_ap}); skipping (use --force to retrain)")
                return TrainResult(run_dir, result, skipped=True)
            if state.has_training_state(run_dir) and not resume:
                raise SpermsegError(
                    f"{run_dir} holds an unfinished run; pass --resume to continue it or --force to start over"
                )
        if force and dist_info.is_main and run_dir.exists():
            _clear_run_dir(run_dir)
        barrier(dist_info)
        if cfg.runtime.threads > 0:
            torch.set_num_threads(cfg.runtime.threads)

        # ---- data ------------------------------------------------------------------------------------------------
        t_load = time.perf_counter()
        full = load_split_data(
            cfg.data.root,
            cfg.data.train_split,
            cfg.data.rater,
            cfg.data.part,
            binarize_threshold=cfg.data.binarize_threshold,
            max_images=cfg.data.max_images,
            target=cfg.data.target,
        )
        inputs_ids: list[str] = []
        if cfg.model.ensemble:
            inputs_ids = attach_cached_masks(full, cfg.model.masks, cfg.data.train_split, cfg.model.mask_models)
        split_seed = cfg.seed if cfg.validation.split_seed is None else cfg.validation.split_seed
        train_idx, val_idx = split_by_group(full.groups, cfg.validation.fraction, split_seed)
        train_data, val_data = full.subset(train_idx), full.subset(val_idx)
        dev_data = DeviceData(train_data, device, cfg.data.crop, cfg.data.crop_foreground)
        del full
        log(
            f"spermseg train: {len(train_data)} training / {len(val_data)} validation images "
            f"({len(set(val_data.groups))} held-out groups), device {device}"
            + (f", {dist_info.world_size} processes" if dist_info.enabled else "")
            + f", data loaded in {time.perf_counter() - t_load:.1f} s"
        )

        # ---- model, optimizer, schedule ------------------------------------------------------------------------
        seed_everything(cfg.seed, deterministic=cfg.runtime.deterministic)
        n_masks = 0 if train_data.masks is None else int(train_data.masks.shape[1])
        model = build_model(cfg, n_masks)
        parts = cfg.data.target == "parts"
        # A mask-skip ensemble starts as 'avg' (zero last layer): a prior bias would move it off that start.
        skip = getattr(model, "mask_skip", False)
        if cfg.model.bias_prior and 0.0 < dev_data.prior < 1.0 and not parts and not skip:
            from spermseg.models.blocks import set_output_bias

            set_output_bias(model, dev_data.prior)
        channels_last = _channels_last(cfg, device)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model.to(device, memory_format=fmt)
        optimizer = build_optimizer(cfg, model.parameters())
        from spermseg.training.schedules import build_scheduler, step_scheduler

        scheduler = build_scheduler(cfg.schedule, optimizer)
        model_call: ModelCall = call_ensemble if cfg.model.ensemble else call_base
        from spermseg.data.transforms import Augmenter
        from spermseg.training.losses import build_loss

        augmenter = Augmenter(cfg.augment)
        loss_fn = build_loss(cfg.loss)
        if parts:
            from spermseg.training.losses import parts_loss

            def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
                return parts_loss(logits, target, cfg.loss.dice_weight)

        # Deep-supervision weights: the config's (main output first), else the model's own per-scale alphas (the
        # ensembling networks carry them, paper Eq. 3) with weight 1 for the fused output.
        alphas = tuple(cfg.loss.alphas) or ((1.0, *model.alphas) if getattr(model, "alphas", ()) else ())

        start_epoch = 0
        history: list[dict[str, Any]] = []
        best: dict[str, Any] = {"ap": -math.inf, "epoch": None, "metrics": None}
        elapsed = 0.0
        images_seen = 0
        train_time = 0.0
        if resume and state.has_training_state(run_dir):
            start_epoch, _extra_t, extra = state.load_training_state(
                run_dir, model=model, optimizer=optimizer, scheduler=scheduler
            )
            history = list(extra.get("history", []))
            best = dict(extra.get("best", best))
            if best.get("ap") is None:
                best["ap"] = -math.inf
            elapsed = float(extra.get("elapsed_s", 0.0))
            images_seen = int(extra.get("images_seen", 0))
            train_time = float(extra.get("train_time_s", 0.0))
            log(f"spermseg train: resuming {run_dir} after epoch {start_epoch}")
        if dist_info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, run_dir / "config.yaml")

        train_model: nn.Module = model
        if dist_info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

        meta_base = {
            "normalization": cfg.data.normalization,
            "config": cfg_dict,
            "data_fingerprint": train_data.fingerprint,
            "seed": cfg.seed,
        }
        if cfg.model.ensemble:
            meta_base.update({"n_masks": n_masks, "inputs": inputs_ids, "mask_cache": str(cfg.model.masks)})

        from spermseg.training.distributed import all_reduce_mean, shard_indices
        from spermseg.utils.progress import progress

        epochs = cfg.schedule.epochs
        bs = cfg.schedule.batch_size
        per_rank = len(shard_indices(dev_data.n, 0, dist_info, shuffle=False))
        steps = max(1, per_rank // bs) if per_rank >= bs else 1
        if per_rank > bs and per_rank % bs >= 2:  # keep a last partial batch unless it is one image (BatchNorm)
            steps += 1
        if cfg.schedule.steps_per_epoch:
            steps = min(steps, cfg.schedule.steps_per_epoch)
        amp = _amp_enabled(cfg, device)
        tb = _TensorBoard(run_dir, cfg.runtime.tensorboard and dist_info.is_main)
        bar = progress(
            total=(epochs - start_epoch) * steps,
            desc="train",
            unit="step",
            disable=None if (cfg.runtime.progress and dist_info.is_main) else True,
        )
        t_run = time.perf_counter()
        # Metrics of the latest validated epoch (its t_opt is the threshold stored in 'last').
        last_metrics = next((h["_metrics"] for h in reversed(history) if h.get("_metrics")), None)

        # ---- the loop ------------------------------------------------------------------------------------------
        for epoch in range(start_epoch, epochs):
            t_epoch = time.perf_counter()
            rank_seed = _reseed_epoch(cfg.seed, epoch, dist_info.rank)
            crop_gen = torch.Generator().manual_seed(rank_seed)
            aug_gen = torch.Generator().manual_seed(rank_seed + 1)  # CPU: same draws on any device
            order = shard_indices(dev_data.n, _epoch_seed(cfg.seed, epoch, -1), dist_info)
            model.train()
            loss_sum = torch.zeros((), device=device, dtype=torch.float64)
            n_steps = 0
            n_images = 0
            lr = optimizer.param_groups[0]["lr"]
            for step in range(steps):
                idx = order[step * bs : (step + 1) * bs]
                if len(idx) == 0:
                    break
                images, target, masks = dev_data.batch(idx, crop_gen)
                # Augment raw [0,1] images, target and soft masks together, then normalize the images with the
                # statistics from before contrast/brightness (which per-image normalization would otherwise undo).
                if parts:
                    from spermseg.training.parts import augment_parts

                    images, target = augment_parts(augmenter, images, target, aug_gen, cfg.data.normalization)
                else:
                    images, target, masks = augment_batch(
                        augmenter, images, target, masks, aug_gen, cfg.data.normalization
                    )
                inputs = make_inputs(images, masks, fmt)
                loss = train_step(
                    train_model,
                    model_call,
                    inputs,
                    target,
                    optimizer,
                    loss_fn,
                    alphas=alphas,
                    amp=amp,
                    device=device,
                    grad_clip=cfg.optim.grad_clip,
                )

                loss_sum += loss.detach()
                n_steps += 1
                n_images += len(idx)
                if hooks.on_step_end is not None:
                    hooks.on_step_end(epoch, step, float(loss.detach()))
                bar.update(1)
                if not bar.disable and (step % 5 == 0 or step == steps - 1):
                    dt = time.perf_counter() - t_epoch
                    bar.set_description(f"epoch {epoch + 1}/{epochs}")
                    bar.set_postfix(
                        loss=f"{float(loss_sum) / n_steps:.4f}",
                        lr=f"{lr:.2e}",
                        img_s=f"{n_images * dist_info.world_size / max(dt, 1e-9):.1f}",
                    )
            if not torch.isfinite(loss_sum):  # checked once per epoch: a per-step check would sync the GPU
                raise SpermsegError(
                    f"training diverged (non-finite loss) in epoch {epoch + 1}; lower optim.lr or check the data"
                )
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            epoch_train_s = time.perf_counter() - t_epoch
            train_loss = all_reduce_mean(float(loss_sum) / max(n_steps, 1), dist_info, device)
            step_scheduler(scheduler, train_loss)
            epoch_images = n_images * dist_info.world_size
            images_seen += epoch_images
            train_time += epoch_train_s

            # ---- validation, checkpoints, state (rank 0 only) -------------------------------------------------
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "lr": lr,
                "train_loss": train_loss,
                "images_per_s": epoch_images / max(epoch_train_s, 1e-9),
            }
            if dist_info.is_main:
                do_val = len(val_data) > 0 and ((epoch + 1) % cfg.validation.every == 0 or epoch + 1 == epochs)
                metrics = None
                if do_val and parts:
                    from spermseg.training.parts import validate_parts

                    metrics = validate_parts(model, val_data, cfg.data.normalization, device)
                    metrics["ap"] = metrics["miou"]  # the selection score of part networks (see training.parts)
                elif do_val:
                    metrics = validate_model(
                        model,
                        val_data,
                        cfg.data.normalization,
                        device,
                        batch_size=cfg.validation.batch_size,
                        tta=cfg.validation.tta,
                        mode=cfg.validation.metric_mode,
                    )
                    row.update({f"val_{k}": metrics.get(k) for k in METRIC_KEYS})
                # Without a validation set every epoch "improves": best is then the last epoch.
                improved = (metrics is not None and metrics["ap"] > best["ap"]) or len(val_data) == 0
                row["best"] = int(improved)
                if metrics is not None:
                    last_metrics = metrics
                threshold = (last_metrics or {}).get("t_opt", 0.5)
                meta = {**meta_base, "epoch": epoch + 1, "threshold": threshold, "validation": last_metrics}
                if improved:
                    best = {"ap": metrics["ap"] if metrics else None, "epoch": epoch + 1, "metrics": metrics}
                    ckpt.save_checkpoint(run_dir / "best", model, {**meta, "threshold": threshold})
                ckpt.save_checkpoint(run_dir / "last", model, meta)
                row["epoch_s"] = time.perf_counter() - t_epoch
                history.append({**row, "_metrics": metrics})
                _write_csv(run_dir / "metrics.csv", history)
                tb.log(row)
                elapsed_now = elapsed + (time.perf_counter() - t_run)
                state.save_training_state(
                    run_dir,
                    epoch=epoch + 1,
                    model=model,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    extra={
                        "history": history,
                        "best": {**best, "ap": None if best["ap"] == -math.inf else best["ap"]},
                        "elapsed_s": elapsed_now,
                        "images_seen": images_seen,
                        "train_time_s": train_time,
                    },
                    keep=cfg.runtime.keep_states,
                )
                val_txt = (
                    f", val AP {metrics['ap']:.4f} IoU_opt {metrics['iou_opt']:.4f} t_opt {metrics['t_opt']:.2f}"
                    if metrics and not parts
                    else (f", val mIoU {metrics['miou']:.4f} full IoU {metrics['full']:.4f}" if metrics else "")
                )
                line = (
                    f"epoch {epoch + 1}/{epochs}: loss {train_loss:.4f}, lr {lr:.2e}, "
                    f"{row['images_per_s']:.1f} img/s{val_txt}{' *' if improved and metrics else ''}"
                )
                if getattr(bar, "disable", True) or hooks.log is not None:
                    log(line)
                else:  # above the live bar, so that the per-epoch history stays on screen
                    bar.write(line, file=sys.stderr)
            barrier(dist_info)
            if hooks.on_epoch_end is not None:
                hooks.on_epoch_end(epoch, row)
        bar.close()
        tb.close()

        # ---- final result ----------------------------------------------------------------------------------------
        result: dict[str, Any] = {}
        if dist_info.is_main:
            total_s = elapsed + (time.perf_counter() - t_run)
            best_model = ckpt.load_model(run_dir / "best")
            test = None
            if cfg.data.test_split:
                test = _evaluate_test(cfg, best_model, device, inputs_ids, log)
            result = {
                "model": cfg.model.ensemble or cfg.model.name,
                "base_model": cfg.model.name if not cfg.model.ensemble else None,
                "kind": "ensemble" if cfg.model.ensemble else "base",
                "inputs": inputs_ids or None,
                "seed": cfg.seed,
                "preset": preset_name,
                "epochs": epochs,
                "best_epoch": best["epoch"],
                "validation": best["metrics"],
                "threshold": best_model.spermseg_meta.get("threshold"),
                "test": test,
                "wall_time_s": total_s,
                "train_time_s": train_time,
                "images_per_s": images_seen / max(train_time, 1e-9),
                "n_train": len(train_data),
                "n_val": len(val_data),
                "val_groups": sorted(set(val_data.groups)),
                "params": sum(p.numel() for p in model.parameters()),
                "device": str(device),
                "world_size": dist_info.world_size,
                "amp": "bf16" if amp else "off",
                "channels_last": channels_last,
                "data_fingerprint": train_data.fingerprint,
                **_peak_memory_mb(device),
            }
            atomic_write_json(run_dir / "result.json", result)
            log(
                f"spermseg train: done in {total_s:.0f} s; best epoch {best['epoch']}"
                + (f", val AP {best['ap']:.4f}" if best.get("metrics") else "")
                + f" -> {run_dir}"
            )
        barrier(dist_info)
        return TrainResult(run_dir, result, history=[{k: v for k, v in h.items() if k != "_metrics"} for h in history])
    finally:
        shutdown_distributed(dist_info)


GEOMETRIC_OPS = ("hflip", "vflip", "rotate", "zoom")


def augment_batch(
    augmenter: Any,
    images: torch.Tensor,
    target: torch.Tensor,
    masks: torch.Tensor | None,
    gen: torch.Generator,
    normalization: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Apply the data layer's augmentation to images, target and (for ensembles) the input soft masks together.

    The :class:`~spermseg.data.transforms.Augmenter` moves binary masks with their image and re-binarizes them,
    which would destroy soft masks. So soft masks get a second pass of a geometric-only Augmenter from the same
    generator state: the Augmenter draws the same random numbers whatever operations are enabled (documented), so
    both passes apply the identical flips, rotation and zoom, and the soft masks keep their values (bilinear
    resampling, no blur, contrast or brightness).

    Args:
        augmenter: the run's Augmenter.
        images: (B, 1, H, W) float in [0, 1].
        target: (B, 1, H, W) float {0, 1}.
        masks: (B, n, H, W) float soft masks in [0, 1], or None.
        gen: CPU generator; advanced exactly as one Augmenter call advances it.
        normalization: when given, the images come back normalized (see the Augmenter).

    Returns:
        ``(images, target, masks)`` augmented, same shapes.
    """
    import dataclasses

    if masks is None:
        images, target = augmenter(images, target, gen, normalization)
        return images, target, None
    state = gen.get_state()
    images, target = augmenter(images, target, gen, normalization)
    geo_cfg = dataclasses.replace(augmenter.cfg, ops=tuple(o for o in augmenter.cfg.ops if o in GEOMETRIC_OPS))
    replay = type(gen)(device=gen.device)
    replay.set_state(state)
    masks, _ = type(augmenter)(geo_cfg)(masks, None, replay)
    return images, target, masks


def _evaluate_test(
    cfg: TrainConfig, model: nn.Module, device: torch.device, inputs_ids: list[str], log: Callable[[str], None]
) -> dict[str, Any] | None:
    """Score the best checkpoint on ``cfg.data.test_split`` (IoU also at the validation threshold)."""
    try:
        test = load_split_data(
            cfg.data.root,
            cfg.data.test_split,
            cfg.data.rater,
            cfg.data.part,
            binarize_threshold=cfg.data.binarize_threshold,
            target=cfg.data.target,
        )
    except DataError as exc:
        log(f"spermseg train: no test evaluation: {exc}")
        return None
    if cfg.data.target == "parts":
        from spermseg.training.parts import validate_parts

        res = validate_parts(model, test, cfg.data.normalization, device)
        return {**res, "split": cfg.data.test_split, "n_images": len(test)}
    if cfg.model.ensemble:
        attach_cached_masks(test, cfg.model.masks, cfg.model.mask_test_split or cfg.data.test_split, inputs_ids)
    from spermseg.inference.forward import predict_probs

    probs = predict_probs(
        model,
        test.images,
        cfg.data.normalization,
        device=device,
        batch_size=cfg.validation.batch_size,
        tta=cfg.validation.tta,
        masks=test.masks,
        precision="fp32",
    )
    metrics: dict[str, Any] = evaluate_probs(probs, test.targets, cfg.validation.metric_mode)
    t_val = model.spermseg_meta.get("threshold", 0.5)  # type: ignore[union-attr]
    inter = union = 0
    for prob, ref in zip(probs, test.targets):
        pred = prob >= t_val
        inter += int(np.logical_and(pred, ref).sum())
        union += int(np.logical_or(pred, ref).sum())
    metrics["iou_t_val"] = inter / union if union else 1.0
    metrics["split"] = cfg.data.test_split
    metrics["n_images"] = len(test)
    return metrics


def _clear_run_dir(run_dir: Path) -> None:
    """Remove the outputs a previous run wrote (only the files this trainer creates)."""
    import shutil

    for name in (
        "result.json",
        "metrics.csv",
        "config.yaml",
        "best.safetensors",
        "best.json",
        "last.safetensors",
        "last.json",
    ):
        (run_dir / name).unlink(missing_ok=True)
    for name in ("state", "tensorboard"):
        if (run_dir / name).is_dir():
            shutil.rmtree(run_dir / name)
