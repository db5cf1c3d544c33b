"""The ensembling networks of the paper (Section 4), their deep-supervision loss, and the shared blocks they use.

Tiny width (4) and 64x64 / 70x90 inputs keep the module fast on 2 cores; parameter counts at the default width are
checked on the ``meta`` device, which allocates nothing.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from spermseg.errors import ConfigError, DataError
from spermseg.models import create_ensemble, list_ensembles
from spermseg.models.blocks import ResNetEncoder, split_outputs
from spermseg.models.ensemble import (
    ENSEMBLE_KINDS,
    ENSEMBLE_OPTIONS,
    TWO_BRANCH_KINDS,
    parameter_counts,
)
from spermseg.training.losses import ensemble_loss as deep_supervision_loss

TINY = 4
TRAINABLE = [k for k in ENSEMBLE_KINDS if k != "avg"]
SIZES = [(64, 64), (70, 90)]  # a divisor-friendly size and an odd one (central padding + crop)


def tiny(kind: str, n_masks: int, **kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_ensemble(kind, n_masks, width=TINY, **kw)


def inputs(n_masks: int, size: tuple[int, int], channels: int = 1, batch: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(batch, channels, *size, generator=g), torch.rand(batch, n_masks, *size, generator=g)


def test_kinds_are_the_rows_of_table_3() -> None:
    assert list_ensembles() == list(ENSEMBLE_KINDS)
    assert set(ENSEMBLE_KINDS) == {"avg", "ens_s", "ens_is", "ens_concat", "ens_att_v1", "ens_att_v2"}


@pytest.mark.parametrize("n_masks", [1, 3])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("kind", TRAINABLE)
def test_train_step_shapes_and_gradients(kind: str, size: tuple[int, int], n_masks: int) -> None:
    """1x1xHxW, training mode: logits and one aux map per scale of the input's shape, finite gradients everywhere."""
    model = tiny(kind, n_masks).train()
    image, masks = inputs(n_masks, size)
    out = model(image, masks)
    assert isinstance(out, tuple)
    logits, aux = split_outputs(out)
    assert logits.shape == (1, 1, *size)
    assert len(aux) == 3 and all(a.shape == (1, 1, *size) for a in aux)
    target = (masks.mean(1, keepdim=True) > 0.5).float()
    deep_supervision_loss(logits, aux, target, model.alphas).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad[:5]}"
    # (A parameter may get an all-zero gradient legitimately: at width 4 the CBAM MLP has one hidden ReLU unit.)
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("kind", TRAINABLE)
def test_eval_mode_returns_logits_only_and_rgb_works(kind: str) -> None:
    model = tiny(kind, 2, in_channels=3).eval()
    image, masks = inputs(2, (38, 45), channels=3)  # small, and not a multiple of the divisor
    with torch.no_grad():
        out = model(image, masks)
        assert isinstance(out, torch.Tensor) and out.shape == (1, 1, 38, 45)
        assert torch.isfinite(out).all()
        assert torch.equal(out, model(image, masks))  # deterministic in eval mode


@pytest.mark.parametrize("kind", TRAINABLE)
def test_which_inputs_each_kind_uses(kind: str) -> None:
    """ens_s sees only the masks; every other kind sees the image too; all of them see the masks."""
    model = tiny(kind, 2).eval()
    image, masks = inputs(2, (32, 32))
    with torch.no_grad():
        base = model(image, masks)
        other_image = model(torch.rand_like(image), masks)
        other_masks = model(image, torch.rand_like(masks))
    assert not torch.allclose(base, other_masks)
    if kind == "ens_s":
        assert torch.equal(base, other_image)
    else:
        assert not torch.allclose(base, other_image)


def test_more_levels_and_alphas_kept_on_the_model() -> None:
    model = tiny("ens_att_v2", 3, levels=4, alphas=[0.5, 1, 1, 2]).train()
    assert model.divisor == 8 and model.alphas == (0.5, 1.0, 1.0, 2.0)
    logits, aux = split_outputs(model(*inputs(3, (38, 45))))
    assert logits.shape == (1, 1, 38, 45) and len(aux) == 4


def test_average_is_logit_of_the_mean() -> None:
    model = create_ensemble("avg", 3)
    assert sum(p.numel() for p in model.parameters()) == 0
    image, masks = inputs(3, (70, 90))
    masks[:, :, :2] = 0.0  # all-zero and all-one pixels stay finite thanks to the clamp
    masks[:, :, -2:] = 1.0
    masks.requires_grad_(True)
    for mode in (True, False):
        out = model.train(mode)(image, masks)
        assert isinstance(out, torch.Tensor) and out.shape == (1, 1, 70, 90)
        assert torch.isfinite(out).all()
    mean = masks.detach().mean(1, keepdim=True)
    inner = (mean > 1e-3) & (mean < 1 - 1e-3)
    torch.testing.assert_close(torch.sigmoid(out)[inner], mean[inner])
    assert torch.sigmoid(out)[0, 0, 0].max() < 1e-5 and torch.sigmoid(out)[0, 0, -1].min() > 1 - 1e-5
    out.sum().backward()
    assert torch.isfinite(masks.grad).all()


def test_unknown_kind_keyword_and_bad_values() -> None:
    with pytest.raises(ConfigError) as err:
        create_ensemble("ens_att_v3", 3)
    assert all(k in str(err.value) for k in ENSEMBLE_KINDS)
    with pytest.raises(ConfigError) as err:
        create_ensemble("ens_s", 3, widht=8)
    assert "widht" in str(err.value) and all(k in str(err.value) for k in ENSEMBLE_OPTIONS)
    with pytest.raises(ConfigError, match="n_masks"):
        create_ensemble("ens_s", 0)
    with pytest.raises(ConfigError, match="alphas"):
        create_ensemble("ens_s", 2, alphas=[1.0, 1.0])  # 3 levels need 3 alphas
    with pytest.raises(ConfigError, match="positive"):
        create_ensemble("ens_s", 2, alphas=[1.0, 0.0, 1.0])


def test_wrong_inputs_raise_data_error() -> None:
    model = tiny("ens_concat", 3).eval()
    image, masks = inputs(2, (64, 64))
    with pytest.raises(DataError, match="3 soft mask"):
        model(image, masks)
    with pytest.raises(DataError, match="differ"):
        model(image[..., :60], torch.rand(1, 3, 64, 64))


def test_factory_records_its_arguments() -> None:
    model = create_ensemble("ens_att_v1", 2, width=TINY, alphas=(1, 2, 3))
    assert model.spermseg_name == "ens_att_v1" and model.spermseg_kwargs == {"width": TINY, "alphas": (1, 2, 3)}
    assert model.n_masks == 2 and model.kind == "ens_att_v1"


def test_parameter_counts_at_default_width() -> None:
    """The paper reports 4M parameters for its ensemble models; the two-branch kinds are about that size."""
    with torch.device("meta"):
        counts = parameter_counts(3)
    print({k: f"{v / 1e6:.2f}M" for k, v in counts.items()})
    assert counts["avg"] == 0
    for kind in TWO_BRANCH_KINDS:
        assert abs(counts[kind] - 4e6) < 0.1 * 4e6, f"{kind}: {counts[kind] / 1e6:.2f}M"
    assert counts["ens_s"] < counts["ens_concat"] < counts["ens_att_v1"]  # one branch < two < two + attention


# ---------------------------------------------------------------------------------------------------------------
# Deep-supervision loss, Eq. (2)-(3)
# ---------------------------------------------------------------------------------------------------------------


def _bce(x: float, y: float) -> float:
    p = 1.0 / (1.0 + math.exp(-x))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_deep_supervision_loss_matches_hand_computation() -> None:
    target = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    logits = torch.tensor([[[[2.0, -1.0], [0.5, 0.0]]]])
    aux_full = torch.tensor([[[[1.0, 1.0], [-2.0, 3.0]]]])  # at the target size: used as is
    aux_coarse = torch.tensor([[[[0.7]]]])  # 1x1: bilinear upsampling makes it constant 0.7
    y = [1.0, 0.0, 0.0, 1.0]

    def mean_bce(xs: list[float]) -> float:
        return sum(_bce(x, t) for x, t in zip(xs, y)) / 4

    expected = mean_bce([2.0, -1.0, 0.5, 0.0]) + 0.5 * mean_bce([1.0, 1.0, -2.0, 3.0]) + 2.0 * mean_bce([0.7] * 4)
    got = deep_supervision_loss(logits, [aux_full, aux_coarse], target, alphas=(0.5, 2.0))
    assert math.isclose(got.item(), expected, rel_tol=1e-6)
    # without aux maps it is plain BCE; default alphas are all 1
    assert math.isclose(deep_supervision_loss(logits, [], target).item(), mean_bce([2.0, -1.0, 0.5, 0.0]), rel_tol=1e-6)
    ones = deep_supervision_loss(logits, [aux_full, aux_coarse], target)
    expected_ones = mean_bce([2.0, -1.0, 0.5, 0.0]) + mean_bce([1.0, 1.0, -2.0, 3.0]) + mean_bce([0.7] * 4)
    assert math.isclose(ones.item(), expected_ones, rel_tol=1e-6)
    with pytest.raises(ConfigError, match="alphas"):
        deep_supervision_loss(logits, [aux_full], target, alphas=(1.0, 1.0))


def test_deep_supervision_loss_upsamples_coarse_maps_bilinearly() -> None:
    g = torch.Generator().manual_seed(0)
    target = (torch.rand(2, 1, 16, 16, generator=g) > 0.5).float()
    logits, coarse = torch.randn(2, 1, 16, 16, generator=g), torch.randn(2, 1, 4, 4, generator=g)
    up = F.interpolate(coarse, size=(16, 16), mode="bilinear", align_corners=False)
    expected = F.binary_cross_entropy_with_logits(logits, target) + 3.0 * F.binary_cross_entropy_with_logits(up, target)
    torch.testing.assert_close(deep_supervision_loss(logits, [coarse], target, [3.0]), expected)


# ---------------------------------------------------------------------------------------------------------------
# Shared blocks used by the ResNet-based families (deeplabv3p, fpn, manet) and size handling of uctransnet
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output_stride", "reductions"), [(32, (1, 2, 4, 8, 16, 32)), (16, (1, 2, 4, 8, 16, 16)), (8, (1, 2, 4, 8, 8, 8))]
)
def test_resnet_encoder_strides_and_atrous(output_stride: int, reductions: tuple[int, ...]) -> None:
    enc = ResNetEncoder(1, TINY, "resnet18", output_stride=output_stride).eval()
    assert enc.reductions == reductions
    with torch.no_grad():
        feats = enc(torch.zeros(1, 1, 64, 64))
    assert [f.shape[-1] for f in feats] == [64 // r for r in reductions]
    assert [f.shape[1] for f in feats] == list(enc.out_channels)
    dilated = [m.dilation[0] for m in enc.stages[-1].modules() if isinstance(m, torch.nn.Conv2d)]
    assert max(dilated) == 32 // output_stride


def test_resnet_layouts_match_torchvision_counts() -> None:
    """Without the classifier, torchvision's ResNet-34 / ResNet-50 have 21.28M / 23.51M parameters."""
    with torch.device("meta"):
        n34 = sum(p.numel() for p in ResNetEncoder(3, 64, "resnet34").parameters())
        n50 = sum(p.numel() for p in ResNetEncoder(3, 64, "resnet50").parameters())
    assert abs(n34 - 21_284_672) < 1000 and abs(n50 - 23_508_032) < 1000


def test_uctransnet_position_embeddings_follow_the_input_size() -> None:
    from spermseg.models import create_model

    model = create_model("uctransnet", width=TINY, img_size=64).eval()
    assert model.cct.embeddings[0].position.shape[-2:] == (4, 4)  # the reference grid, 64 / 16
    with torch.no_grad():
        for size in [(64, 64), (32, 96), (37, 21)]:  # the reference grid, another non-square one, an odd one
            assert model(torch.rand(1, 1, *size)).shape == (1, 1, *size)


@pytest.mark.parametrize("kind", [k for k in list_ensembles() if k != "avg"])
def test_ensembles_have_an_output_bias_to_set(kind: str) -> None:
    from spermseg.models.blocks import output_convs, set_output_bias

    model = create_ensemble(kind, 3, width=8)
    assert set_output_bias(model, 0.1) == len(output_convs(model)) >= 1


@pytest.mark.parametrize("kind", [k for k in list_ensembles() if k != "avg"])
def test_mask_skip_starts_as_avg_and_still_learns(kind: str) -> None:
    """mask_skip: the untrained network equals ``avg`` exactly (train and eval mode); gradients reach the layers."""
    torch.manual_seed(0)
    model = create_ensemble(kind, 3, width=8, mask_skip=True)
    avg = create_ensemble("avg", 3)
    image, masks = torch.rand(2, 1, 20, 28), torch.rand(2, 3, 20, 28)
    model.eval()
    assert torch.allclose(model(image, masks), avg(image, masks), atol=1e-5)
    model.train()
    logits, aux = split_outputs(model(image, masks))
    assert torch.allclose(logits, avg(image, masks), atol=1e-5)
    (logits.square().mean() + sum(a.square().mean() for a in aux)).backward()
    assert model.final[-1].weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="mask_skip"):
        create_ensemble(kind, 3, mask_skip="yes")
