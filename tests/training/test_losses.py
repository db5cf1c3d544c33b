"""Losses: values against direct formulas, options, deep supervision."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spermseg.errors import ConfigError
from spermseg.training.config import LossConfig
from spermseg.training.losses import (
    bce_loss,
    build_loss,
    cldice_loss,
    deep_supervision_loss,
    focal_loss,
    skeleton_recall_loss,
    soft_dice_loss,
    soft_skeleton,
)


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 1, 8, 8, generator=g), (torch.rand(2, 1, 8, 8, generator=g) > 0.7).float()


def test_bce_and_pos_weight(pair) -> None:
    logits, target = pair
    p = torch.sigmoid(logits)
    manual = -(3 * target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean()
    assert torch.allclose(bce_loss(logits, target, 3.0), manual, atol=1e-6)
    assert torch.allclose(bce_loss(logits, target), F.binary_cross_entropy_with_logits(logits, target))


def test_dice_and_focal(pair) -> None:
    logits, target = pair
    assert soft_dice_loss(torch.full_like(logits, 30.0) * (2 * target - 1), target) < 1e-3
    assert soft_dice_loss(torch.full_like(logits, 30.0) * (1 - 2 * target), target) > 0.95
    # gamma 0 = BCE; focusing lowers the loss of easy pixels
    assert torch.allclose(focal_loss(logits, target, gamma=0.0), bce_loss(logits, target), atol=1e-6)
    assert focal_loss(logits, target, gamma=2.0) < bce_loss(logits, target)
    combined = build_loss(LossConfig(name="dice_bce", dice_weight=0.5))(logits, target)
    assert torch.allclose(combined, bce_loss(logits, target) + 0.5 * soft_dice_loss(logits, target))


def test_deep_supervision_weights_and_upsampling(pair) -> None:
    logits, target = pair
    fn = build_loss(LossConfig())
    aux = logits[..., ::2, ::2]  # half resolution: upsampled to the target size
    total = deep_supervision_loss(logits, [aux], target, fn, (1.0, 0.5))
    up = F.interpolate(aux, size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(total, fn(logits, target) + 0.5 * fn(up, target))
    assert torch.allclose(deep_supervision_loss(logits, [], target, fn), fn(logits, target))
    with pytest.raises(ConfigError, match="alphas"):
        deep_supervision_loss(logits, [aux], target, fn, (1.0, 0.5, 0.2))


def test_bad_loss_config() -> None:
    with pytest.raises(ConfigError):
        build_loss(LossConfig(pos_weight=0.0))
    with pytest.raises(ConfigError):
        build_loss(LossConfig(name="focal", focal_alpha=1.5))


# ---- thin-structure losses: clDice (Shit et al. 2021) and Skeleton Recall (Kirchhoff et al. 2024) ----------------

THIN_LOSSES = {
    "cldice": lambda logits, target: cldice_loss(logits, target, iterations=5),
    "skeleton_recall": skeleton_recall_loss,
}


def _blob_and_line() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Target: a 9x9 square plus a 1-px line of 30 px. Prediction A: the square, no line (misses 30 px).
    Prediction B: the line and the square without its outer ring (misses 32 px): pixel losses prefer A, a loss
    that rewards whole thin structures prefers B."""
    target = torch.zeros(1, 1, 40, 48)
    target[..., 4:13, 4:13] = 1
    target[..., 20, 10:40] = 1
    a = torch.zeros_like(target)
    a[..., 4:13, 4:13] = 1
    b = torch.zeros_like(target)
    b[..., 5:12, 5:12] = 1
    b[..., 20, 10:40] = 1
    return target, 20 * a - 10, 20 * b - 10


@pytest.mark.parametrize("name", sorted(THIN_LOSSES))
def test_thin_losses_reward_a_whole_thin_line_that_pixel_losses_do_not(name: str) -> None:
    target, logits_a, logits_b = _blob_and_line()
    fn = THIN_LOSSES[name]
    assert soft_dice_loss(logits_a, target) < soft_dice_loss(logits_b, target)  # Dice prefers the blob
    assert bce_loss(logits_a, target) < bce_loss(logits_b, target)
    assert fn(logits_b, target) < fn(logits_a, target) - 0.2  # the thin-structure loss prefers the line


@pytest.mark.parametrize("name", sorted(THIN_LOSSES))
def test_thin_losses_on_perfect_empty_and_missed_masks(name: str) -> None:
    fn = THIN_LOSSES[name]
    target, _, _ = _blob_and_line()
    perfect = 20 * target - 10
    assert float(fn(perfect, target)) < 0.05
    assert float(fn(torch.full_like(target, -10.0), target)) > 0.9  # nothing predicted
    empty = torch.zeros_like(target)
    assert float(fn(torch.full_like(target, -10.0), empty)) < 1e-3  # empty target, empty prediction: no loss
    assert torch.isfinite(fn(torch.full_like(target, 10.0), empty))


@pytest.mark.parametrize("name", sorted(THIN_LOSSES))
def test_thin_losses_have_finite_gradients_that_raise_missed_skeleton_pixels(name: str) -> None:
    target, logits_a, _ = _blob_and_line()
    logits = (0.1 * logits_a).clone().requires_grad_(True)
    THIN_LOSSES[name](logits, target).backward()
    grad = logits.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert float(grad[..., 20, 15:35].mean()) < 0  # descending the loss raises the missed line's logits
    empty = torch.zeros(1, 1, 16, 16, requires_grad=True)
    THIN_LOSSES[name](empty, torch.zeros(1, 1, 16, 16)).backward()
    assert torch.isfinite(empty.grad).all()


def test_soft_skeleton_of_a_thick_bar_is_thin_and_central() -> None:
    bar = torch.zeros(1, 1, 21, 40)
    bar[..., 8:13, 5:35] = 1  # 5 px thick
    skel = soft_skeleton(bar, iterations=5)
    assert float(skel[..., 10, 10:30].mean()) > 0.9  # the centre row
    assert float(skel[..., 8, 10:30].max()) < 0.1  # not the border rows
    assert float(skel.sum()) < 0.5 * float(bar.sum())


def test_thin_loss_configs_combine_dice_bce_and_the_thin_term() -> None:
    target, logits_a, _ = _blob_and_line()
    logits = 0.1 * logits_a
    base = bce_loss(logits, target) + soft_dice_loss(logits, target)
    cl = build_loss(LossConfig(name="cldice", thin_weight=0.5, cldice_iterations=5))(logits, target)
    assert torch.allclose(cl, base + 0.5 * cldice_loss(logits, target, 5))
    sr = build_loss(LossConfig(name="skeleton_recall", thin_weight=2.0))(logits, target)
    assert torch.allclose(sr, base + 2.0 * skeleton_recall_loss(logits, target))
    with pytest.raises(ConfigError, match="cldice_iterations"):
        build_loss(LossConfig(name="cldice", cldice_iterations=0))
    with pytest.raises(ConfigError, match="valid losses"):
        build_loss(LossConfig(name="nope"))  # type: ignore[arg-type]
