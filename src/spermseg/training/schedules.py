"""Learning-rate schedules, stepped once per epoch: the paper's MultiStepLR, cosine with warm-up, and plateau decay.

* ``multistep`` (paper): multiply by ``gamma`` after each epoch in ``milestones``.
* ``cosine``: linear warm-up over ``warmup_epochs`` from ``lr / 10``, then half a cosine from ``lr`` down to
  ``lr * min_lr_ratio`` at the last epoch. For a fixed budget it keeps the learning rate high while the loss still
  falls fast and decays smoothly at the end, instead of cutting it at fixed epochs.
* ``plateau``: ``ReduceLROnPlateau`` on the epoch's training loss: multiply by ``gamma`` when the loss has not
  improved by 1 % for ``patience`` epochs (decays only once the loss plateaus).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from spermseg.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from spermseg.training.config import ScheduleConfig

SCHEDULES = ("multistep", "cosine", "plateau")


class CosineWithWarmup:
    """Epoch -> learning-rate factor for ``LambdaLR`` (a class so that it has no closure state to save)."""

    def __init__(self, epochs: int, warmup_epochs: int, min_lr_ratio: float) -> None:
        self.epochs, self.warmup, self.min_ratio = epochs, warmup_epochs, min_lr_ratio

    def __call__(self, epoch: int) -> float:
        if epoch < self.warmup:
            return 0.1 + 0.9 * epoch / self.warmup
        span = max(1, self.epochs - 1 - self.warmup)
        t = min(1.0, (epoch - self.warmup) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def build_scheduler(cfg: ScheduleConfig, optimizer: torch.optim.Optimizer) -> Any:
    """The epoch-level scheduler named by ``cfg.name``.

    Raises:
        ConfigError: unknown name or out-of-range parameters.
    """
    import torch

    if cfg.name not in SCHEDULES:
        raise ConfigError(f"unknown schedule.name '{cfg.name}'; valid: {', '.join(SCHEDULES)}")
    if cfg.name == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
    if cfg.name == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, CosineWithWarmup(cfg.epochs, cfg.warmup_epochs, cfg.min_lr_ratio)
        )
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=cfg.gamma, patience=cfg.patience, threshold=0.01
    )


def step_scheduler(scheduler: Any, train_loss: float) -> None:
    """Advance ``scheduler`` by one epoch (the plateau schedule reads the epoch's training loss)."""
    import torch

    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(train_loss)
    else:
        scheduler.step()
