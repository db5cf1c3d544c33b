"""Losses: values against direct formulas, options, deep supervision."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spermseg.engine.config import LossConfig
from spermseg.engine.losses import bce_loss, build_loss, deep_supervision_loss, focal_loss, soft_dice_loss
from spermseg.errors import ConfigError


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
