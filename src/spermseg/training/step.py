"""One training step and what it is built from: the model call, the inputs of a batch, the model and optimizer of a
config, bf16/channels_last choices and the per-epoch random streams.

A batch is ``(inputs, target)`` with ``inputs = {"image": (B,1,H,W)}`` for base models and additionally
``{"masks": (B,n,H,W)}`` (soft masks from the mask cache) for ensembling networks; the model call is pluggable
(:func:`call_base` / :func:`call_ensemble`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from spermseg.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from spermseg.training.config import TrainConfig
    from spermseg.training.distributed import DistInfo

Inputs = dict[str, "torch.Tensor"]
ModelCall = Callable[["nn.Module", Inputs], Any]


def call_base(model: nn.Module, inputs: Inputs) -> Any:
    """Model call of a base segmentation model: ``model(image)``."""
    return model(inputs["image"])


def call_ensemble(model: nn.Module, inputs: Inputs) -> Any:
    """Model call of an ensembling network: ``model(image, masks)``."""
    return model(inputs["image"], inputs["masks"])


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
        amp: bf16 autocast (on CUDA, and on CPUs with native bf16; see
            :func:`~spermseg.inference.forward.resolve_precision`).
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


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """A 63-bit seed for (run seed, epoch, stream); stream = rank for per-rank streams, -1 for the shared shuffle."""
    return int(
        np.random.SeedSequence([seed, epoch, stream + 1])
        .generate_state(2, dtype=np.uint32)
        .astype(np.uint64)
        .dot([1, 1 << 31])
    )


def reseed_epoch(seed: int, epoch: int, rank: int) -> int:
    """Re-seed Python, NumPy and torch (all devices) for this epoch and rank; returns the seed used."""
    import random

    import torch

    s = epoch_seed(seed, epoch, rank)
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


def amp_enabled(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast in training: ``auto`` on CUDA and on CPUs with native bf16 (AMX, AVX-512 BF16); ``bf16`` on
    CUDA or any CPU."""
    from spermseg.inference.forward import resolve_precision

    if cfg.runtime.amp == "off":
        return False
    return resolve_precision("bf16" if cfg.runtime.amp == "bf16" else "auto", device, training=True) == "bf16"


def use_channels_last(cfg: TrainConfig, device: torch.device) -> bool:
    """``auto``: on CUDA, and on the CPU when bf16 runs there (oneDNN's bf16 kernels are fastest in NHWC: 1.5x NCHW
    on an AMD EPYC with AVX-512 BF16). There one kernel was faulty: the channels_last backward of a 1x1 stride-2
    convolution corrupted the heap (torch 2.13 CPU); :class:`~spermseg.models.blocks.SubsampledPointwiseConv2d`
    computes that layer without it (docs/training.md).
    """
    if cfg.runtime.channels_last != "auto":
        return cfg.runtime.channels_last == "on"
    return device.type == "cuda" or amp_enabled(cfg, device)


def steps_per_epoch(cfg: TrainConfig, n: int, dist_info: DistInfo) -> int:
    """Optimizer steps per epoch on each rank: its shard in batches (a last partial batch kept unless it is one
    image, which BatchNorm cannot train on), at most ``schedule.steps_per_epoch``."""
    from spermseg.training.distributed import shard_indices

    bs = cfg.schedule.batch_size
    per_rank = len(shard_indices(n, 0, dist_info, shuffle=False))
    steps = max(1, per_rank // bs) if per_rank >= bs else 1
    if per_rank > bs and per_rank % bs >= 2:  # keep a last partial batch unless it is one image (BatchNorm)
        steps += 1
    if cfg.schedule.steps_per_epoch:
        steps = cfg.schedule.steps_per_epoch if cfg.schedule.exact_steps else min(steps, cfg.schedule.steps_per_epoch)
    return steps


#: Seed streams of an epoch's further permutations (``schedule.exact_steps``), far from the rank streams.
_REPEAT_STREAM = 1 << 20


def epoch_order(cfg: TrainConfig, epoch: int, n: int, dist_info: DistInfo, steps: int) -> list[int]:
    """This rank's training indices for one epoch: one shared permutation of the ``n`` images, and with
    ``schedule.exact_steps`` further ones (each from its own seed) until ``steps`` full batches are covered."""
    from spermseg.training.distributed import shard_indices

    order = shard_indices(n, epoch_seed(cfg.seed, epoch, -1), dist_info)
    need = steps * cfg.schedule.batch_size if cfg.schedule.exact_steps else 0
    k = 0
    while len(order) < need:
        k += 1
        order += shard_indices(n, epoch_seed(cfg.seed, epoch, _REPEAT_STREAM + k), dist_info)
    return order
