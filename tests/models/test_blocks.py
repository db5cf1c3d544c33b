"""Building blocks whose arithmetic must equal PyTorch's reference layers."""

from __future__ import annotations

import pytest
import torch

from spermseg.models.blocks import ConvNormAct, SubsampledPointwiseConv2d


@pytest.mark.parametrize(("h", "w", "stride"), [(64, 64, 2), (13, 9, 2), (17, 12, 3)])
def test_subsampled_pointwise_conv_equals_the_strided_1x1_conv(h: int, w: int, stride: int) -> None:
    """The stand-in for a strided 1x1 convolution (whose channels_last backward corrupts the heap on AVX-512 BF16
    CPUs) gives the same outputs and input gradients, in both memory formats, from the same parameters."""
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(8, 16, 1, stride=stride, bias=True)
    new = SubsampledPointwiseConv2d(8, 16, 1, stride=stride, bias=True)
    new.load_state_dict(ref.state_dict())
    x = torch.randn(2, 8, h, w)
    xr = x.clone().requires_grad_()  # the reference in NCHW only: its channels_last backward is the faulty kernel
    yr = ref(xr)
    yr.square().sum().backward()
    for fmt in (torch.contiguous_format, torch.channels_last):
        xn = x.clone().to(memory_format=fmt).requires_grad_()
        yn = new(xn)
        assert yn.shape == yr.shape and torch.allclose(yn, yr, atol=1e-5)
        yn.square().sum().backward()
        assert torch.allclose(xn.grad, xr.grad, atol=1e-5)


def test_conv_norm_act_uses_it_only_for_strided_1x1() -> None:
    assert type(ConvNormAct(4, 8, 1, stride=2)[0]) is SubsampledPointwiseConv2d
    assert (
        type(ConvNormAct(4, 8, 1)[0]) is torch.nn.Conv2d and type(ConvNormAct(4, 8, 3, stride=2)[0]) is torch.nn.Conv2d
    )
