"""Every registered base model (parametrized over ``list_models()``) and the family-specific design points.

Tiny width (4) and 64x64 / 70x90 inputs keep the module fast on 2 cores; parameter counts at the papers' default
widths are checked on the ``meta`` device, which allocates nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from spermseg.cli import main
from spermseg.errors import ConfigError
from spermseg.models import create_model, list_models, model_kwargs
from spermseg.models.blocks import split_outputs
from spermseg.models.profile import count_macs, count_parameters

MODELS = list_models()
TINY = 4
SIZES = [(64, 64), (70, 90)]  # a divisor-friendly size and an odd one (padding + central crop)
# Speed only: the 103-layer Tiramisu costs as much as all other tiny models together on 2 cores, so the generic
# tests use its 56-layer variant (same blocks, fewer layers); test_fc_densenet_103_train_step covers the default.
TINY_KW: dict[str, dict[str, object]] = {"fc_densenet": {"variant": 56}}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from intra-op threads, and on a loaded machine OpenMP barrier spinning made the
    2-thread run of this module 10-50x slower (measured: U-Net width 4 train step 0.03 s with 1 thread, 1.4 s with 2
    under load 7 on 2 cores)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny(name: str, **kw: object) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, width=TINY, **{**TINY_KW.get(name, {}), **kw})


def total_loss(out: torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]) -> torch.Tensor:
    """A loss touching every output (main and auxiliary), so every used parameter receives a gradient."""
    main_out, aux = split_outputs(out)
    return main_out.square().mean() + sum((a.square().mean() for a in aux), torch.zeros(()))


def test_all_ten_families_registered() -> None:
    expected = {
        "unet",
        "fc_densenet",
        "unet_pp",
        "att_unet",
        "manet",
        "sa_unet",
        "deeplabv3p",
        "fpn",
        "unet3p",
        "uctransnet",
    }
    assert set(MODELS) == expected and len(MODELS) == 10


def test_registry_refuses_a_duplicate_name() -> None:
    from spermseg.models.registry import register_model

    def other_unet(in_channels: int = 1, out_channels: int = 1, width: int = 8) -> nn.Module:
        return nn.Conv2d(in_channels, out_channels, 1)

    with pytest.raises(ValueError, match="registered twice"):
        register_model("unet")(other_unet)
    assert create_model("unet", width=4).__class__.__name__ == "UNet"  # the original stays registered


def check_train_step(model: nn.Module, size: tuple[int, int]) -> None:
    """Training mode, batch 2 (BN statistics): output shape = input shape, finite gradients on every parameter."""
    model.train()
    x = torch.randn(2, 1, *size)
    out = model(x)
    main_out, aux = split_outputs(out)
    assert main_out.shape == (2, 1, *size)
    for a in aux:  # auxiliary maps are aligned with the input (the loss may still resize lower-resolution ones)
        assert a.ndim == 4 and a.shape[:2] == (2, 1)
    total_loss(out).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad[:5]}"
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_train_step_shapes_and_gradients(name: str) -> None:
    """On the odd size, so padding, central crop and auxiliary outputs of padded inputs are all exercised."""
    check_train_step(tiny(name), (70, 90))


def test_fc_densenet_103_train_step() -> None:
    check_train_step(tiny("fc_densenet", variant=103), (64, 64))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", MODELS)
def test_eval_single_image_forward_backward(name: str, size: tuple[int, int]) -> None:
    """1x1xHxW in eval mode: one logits tensor of the input's shape, deterministic, finite input gradient."""
    model = tiny(name).eval()
    x = torch.randn(1, 1, *size, requires_grad=True)
    out = model(x)
    assert isinstance(out, torch.Tensor), "eval mode must return the logits tensor only"
    assert out.shape == (1, 1, *size)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with torch.no_grad():  # no dropout / DropBlock left active in eval mode
        assert torch.equal(model(x), out.detach())


@pytest.mark.parametrize("name", MODELS)
def test_rgb_input_and_several_classes(name: str) -> None:
    model = tiny(name, in_channels=3, out_channels=2).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 70, 90))
    assert out.shape == (1, 2, 70, 90)


@pytest.mark.parametrize("name", MODELS)
def test_factory_signature_and_unknown_keyword(name: str) -> None:
    kwargs = model_kwargs(name)
    assert kwargs["in_channels"] == 1 and kwargs["out_channels"] == 1
    assert isinstance(kwargs["width"], int) and kwargs["width"] > 0
    with pytest.raises(ConfigError) as err:
        create_model(name, widht=8)
    msg = str(err.value)
    assert "widht" in msg and all(k in msg for k in kwargs)


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as err:
        create_model("unet4")
    assert all(n in str(err.value) for n in MODELS)


# ---------------------------------------------------------------------------------------------------------------
# Parameter counts at the original widths (meta device: nothing allocated)
# ---------------------------------------------------------------------------------------------------------------

# name, kwargs, reference count from the original paper / reference code, relative tolerance
PAPER_PARAMS = [
    ("unet", {}, 31.0e6, 0.02),  # Ronneberger U-Net with BN and 2x2 up-convolutions (widely quoted 31.0M)
    ("fc_densenet", {"variant": 103}, 9.4e6, 0.02),  # Jegou et al. Table 2: 9.4M
    ("fc_densenet", {"variant": 67}, 3.5e6, 0.02),  # 3.5M
    ("fc_densenet", {"variant": 56}, 1.4e6, 0.04),  # 1.5M in the paper's table, 1.4M quoted in implementations
    ("unet_pp", {}, 9.04e6, 0.01),  # Zhou et al. Table 2: UNet++ 9.04M
    ("sa_unet", {}, 0.54e6, 0.01),  # Guo et al.: 0.54M
    ("unet3p", {}, 26.97e6, 0.01),  # Huang et al. Table 1: 26.97M
]


@pytest.mark.parametrize(
    ("name", "kw", "reference", "tol"),
    PAPER_PARAMS,
    ids=[f"{n}-{'-'.join(map(str, k.values()))}" for n, k, _, _ in PAPER_PARAMS],
)
def test_parameter_count_matches_paper(name: str, kw: dict, reference: float, tol: float) -> None:
    with torch.device("meta"):
        model = create_model(name, **kw)
    n = count_parameters(model)
    assert abs(n - reference) <= tol * reference, f"{name} {kw}: {n / 1e6:.3f}M vs paper {reference / 1e6:.2f}M"


def test_att_unet_is_unet_plus_gates() -> None:
    """The 2-D Attention U-Net adds gates to a U-Net-sized network (tens of millions of parameters at width 64)."""
    with torch.device("meta"):
        n = count_parameters(create_model("att_unet"))
        gates = sum(count_parameters(g) for g in create_model("att_unet").gates)
    assert 30e6 < n < 37e6 and 0 < gates < 0.05 * n


# ---------------------------------------------------------------------------------------------------------------
# Family-specific behaviour
# ---------------------------------------------------------------------------------------------------------------


def test_unet_pp_deep_supervision() -> None:
    model = tiny("unet_pp", deep_supervision=True).train()
    out = model(torch.randn(2, 1, 70, 90))
    logits, aux = split_outputs(out)
    assert len(aux) == 3 and all(a.shape == (2, 1, 70, 90) for a in aux)  # X(0,1..3), cropped like the logits
    assert logits.shape == (2, 1, 70, 90)
    total_loss(out).backward()
    assert all(h.weight.grad is not None for h in model.heads)
    assert isinstance(model.eval()(torch.randn(1, 1, 64, 64)), torch.Tensor)
    assert len(tiny("unet_pp").heads) == 1  # no unused heads without deep supervision


def test_unet3p_outputs_cgm_and_options() -> None:
    model = tiny("unet3p", cgm=True).train()
    logits, aux = split_outputs(model(torch.randn(2, 1, 64, 64)))
    assert len(aux) == 4 and all(a.shape == (2, 1, 64, 64) for a in aux)  # D2..D4, E5 upsampled
    (logits.mean() + sum(a.mean() for a in aux)).backward()
    assert model.cls[1].weight.grad is not None and model.cls[1].weight.grad.abs().sum() > 0
    plain = tiny("unet3p", deep_supervision=False).train()
    assert isinstance(plain(torch.randn(2, 1, 64, 64)), torch.Tensor) and len(plain.heads) == 1


def test_unet3p_gated_logits_is_logit_of_product() -> None:
    from spermseg.models.unet3p import gated_logits

    s = torch.linspace(-30, 30, 13).view(1, 1, 1, 13)
    c = torch.tensor([-3.0, 0.0, 25.0]).view(3, 1, 1, 1)
    p = torch.sigmoid(s.double()) * torch.sigmoid(c.double())
    got = gated_logits(s.expand(3, 1, 1, 13), c)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(torch.sigmoid(got.double()), p, atol=1e-6, rtol=1e-5)


def test_fc_densenet_variants_and_growth() -> None:
    from spermseg.models.fc_densenet import FCDenseNet

    with torch.device("meta"):
        counts = {v: count_parameters(FCDenseNet(variant=v)) for v in (56, 67, 103)}
        assert count_parameters(FCDenseNet(growth_rate=8)) < counts[103]  # explicit growth overrides the default
    assert counts[56] < counts[67] < counts[103]
    assert sum(len(b.layers) for b in FCDenseNet(width=TINY).down_blocks) == 4 + 5 + 7 + 10 + 12
    with pytest.raises(ConfigError, match="56, 67, 103"):
        create_model("fc_densenet", variant=100)


def test_sa_unet_dropblock() -> None:
    from spermseg.models.sa_unet import DropBlock2d

    drop = DropBlock2d(drop_prob=0.1, block_size=7).train()
    torch.manual_seed(0)
    x = torch.ones(4, 8, 64, 64)
    y = drop(x)
    dropped = (y == 0).float().mean().item()
    assert 0.06 < dropped < 0.14  # ~drop_prob of the units, in blocks
    assert torch.allclose(y.mean(), torch.tensor(1.0), atol=0.02)  # rescaled to keep the expectation
    zero_rows = (y[0, 0] == 0).any(dim=1)  # dropped units come in runs of block_size rows
    assert zero_rows.sum() >= 7 or zero_rows.sum() == 0
    assert torch.equal(drop.eval()(x), x)
    assert torch.isfinite(DropBlock2d(0.1, 7).train()(torch.ones(1, 2, 3, 5))).all()  # block clipped to the map
    model = tiny("sa_unet")
    assert model.divisor == 8 and sum(isinstance(m, DropBlock2d) for m in model.modules()) == 2 * 3 + 2 + 2 * 3


def test_att_unet_gates_weight_the_skips() -> None:
    model = tiny("att_unet").eval()
    with torch.no_grad():
        model(torch.randn(1, 1, 64, 64))
    for i, gate in enumerate(model.gates):
        alpha = gate.last_alpha
        assert alpha.shape == (1, 1, 64 // 2**i, 64 // 2**i)
        assert ((alpha > 0) & (alpha < 1)).all()


# ---------------------------------------------------------------------------------------------------------------
# MAC counting and the `spermseg models` command
# ---------------------------------------------------------------------------------------------------------------


def test_count_macs_of_a_convolution() -> None:
    conv = nn.Conv2d(2, 8, 3, padding=1)
    assert count_macs(conv, (torch.zeros(1, 2, 16, 16),)) == 8 * 2 * 9 * 16 * 16


def test_models_command_json(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    out_file = tmp_path / "models.json"
    assert main(["models", "unet", "sa_unet", "--size", "64", "64", "--json", "--json-out", str(out_file)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(out_file.read_text()) == printed
    rows = {r["name"]: r for r in printed["models"]}
    assert set(rows) == {"unet", "sa_unet"} and printed["size"] == [64, 64]
    with torch.device("meta"):
        assert rows["unet"]["params"] == count_parameters(create_model("unet"))
    assert rows["sa_unet"]["defaults"]["width"] == 16
    # Convolutional networks: MACs scale with the number of pixels.
    assert main(["models", "unet", "--size", "128", "128", "--json"]) == 0
    bigger = json.loads(capsys.readouterr().out)["models"][0]["macs"]
    assert math.isclose(bigger, 4 * rows["unet"]["macs"], rel_tol=1e-9)


def test_models_command_table_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--no-macs", "--no-ensembles"]) == 0
    table = capsys.readouterr().out
    assert all(n in table for n in MODELS)
    assert main(["models", "nonet"]) == 2
    assert "valid:" in capsys.readouterr().err


def test_aux_outputs_are_aligned_with_the_logits_on_padded_inputs() -> None:
    """Aux maps of a padded input are cropped with the logits' box, not stretched over the padding."""
    from spermseg.models.blocks import DeeplySupervisedModel

    class Echo(DeeplySupervisedModel):
        """Returns its padded input as logits and as two aux maps (full and coarse resolution)."""

        divisor = 16

        def forward_padded(self, z: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
            coarse = z[..., ::2, ::2].repeat_interleave(2, -2).repeat_interleave(2, -1)
            return z, [z, coarse]

    z = torch.arange(70 * 90, dtype=torch.float32).view(1, 1, 70, 90)  # value = 90 * row + column
    main_out, (full, coarse) = Echo().train()(z)
    assert torch.equal(main_out, z) and torch.equal(full, z)
    # At most one row and one column off (90 + 1); resizing the padded 80x96 map to 70x90 would be 5 rows off.
    assert coarse.shape == z.shape and (coarse - z).abs().max() <= 91
    assert isinstance(Echo().eval()(z), tuple)  # Echo ignores the mode; real models return logits in eval


@pytest.mark.parametrize("name", MODELS)
def test_bias_prior_makes_the_untrained_model_predict_the_prior(name: str) -> None:
    """set_output_bias finds every family's logit layer: with the other weights' contribution removed, the output
    probability is the prior (5 % foreground), so training starts at the prior's entropy, not at p = 0.5."""
    from spermseg.models.blocks import output_convs, set_output_bias

    model = tiny(name).eval()
    assert set_output_bias(model, 0.05) >= 1
    for conv in output_convs(model):
        assert torch.allclose(conv.bias, torch.full_like(conv.bias, math.log(0.05 / 0.95)))
        conv.weight.data.zero_()
    with torch.no_grad():
        prob = torch.sigmoid(split_outputs(model(torch.rand(1, 1, 64, 64)))[0])
    assert torch.allclose(prob, torch.full_like(prob, 0.05), atol=1e-5)
    with pytest.raises(ValueError, match="prior"):
        set_output_bias(model, 1.0)


@pytest.mark.parametrize("name", MODELS)
def test_class_prior_makes_an_untrained_part_network_predict_the_code_frequencies(name: str) -> None:
    """A part network (six softmax codes) starts at the codes' frequencies: with the other weights' contribution
    removed, the softmax of every pixel is the given frequencies (renormalised); a count that is not the layer's
    channel count, or a zero frequency, is refused."""
    from spermseg.models.blocks import output_convs, set_output_bias

    freqs = [0.9, 0.01, 0.02, 0.002, 0.008, 0.06]
    model = tiny(name, out_channels=6).eval()
    assert set_output_bias(model, [2 * f for f in freqs]) >= 1  # renormalised: only the ratios matter
    for conv in output_convs(model):
        conv.weight.data.zero_()
    with torch.no_grad():
        prob = torch.softmax(split_outputs(model(torch.rand(1, 1, 64, 64)))[0], dim=1)
    assert torch.allclose(prob, torch.tensor(freqs).view(1, 6, 1, 1).expand_as(prob), atol=1e-5)
    with pytest.raises(ValueError, match="channels"):
        set_output_bias(model, freqs[:5])
    with pytest.raises(ValueError, match="positive"):
        set_output_bias(model, [0.0, *freqs[1:]])
