"""Attention U-Net (Oktay et al., MIDL 2018), 2-D: additive attention gates on the skip connections.

Design of the original (its "grid attention" blocks, here in 2-D): a U-Net encoder (four poolings, two 3x3
convolutions with BN per level, widths 64 .. 1024); before each skip feature ``x`` (level i) is concatenated in the
decoder, an attention gate computes coefficients from ``x`` and a gating signal ``g`` taken from the next coarser
level (the bottleneck through a 1x1 gating convolution for the deepest skip, the decoder output of level i+1
otherwise):

    q = psi(ReLU(theta(x) + phi(g))),  alpha = sigmoid(q) upsampled to x,  x_hat = W(alpha * x)

with theta a 2x2 stride-2 convolution (so ``x`` is compared with ``g`` on the coarser grid), phi and psi 1x1
convolutions, W a 1x1 convolution with BN; the intermediate width is half of x's. The decoder upsamples bilinearly
and applies two 3x3 convolutions to the concatenation of the upsampled features and the gated skip. About 33.8M
parameters at ``width=64``.
"""

from __future__ import annotations

import torch
from torch import nn

from spermseg.models.blocks import ConvNormAct, DoubleConv, SegmentationModel, UNetEncoder, doubling_channels, resize_to
from spermseg.models.registry import register_model


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018, grid attention with 2x2 sub-sampling).

    Args:
        x_channels: channels of the skip feature ``x`` (B, Cx, H, W).
        g_channels: channels of the gating signal ``g`` (B, Cg, H/2, W/2).
        inter_channels: width of the joint space (Cx // 2 in the paper).

    Forward: ``(x, g)`` -> gated skip (B, Cx, H, W); the coefficients of the last call are kept in
    ``self.last_alpha`` (B, 1, H, W) for inspection (detached).
    """

    def __init__(self, x_channels: int, g_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.theta = nn.Conv2d(x_channels, inter_channels, kernel_size=2, stride=2, bias=False)
        self.phi = nn.Conv2d(g_channels, inter_channels, kernel_size=1)
        self.psi = nn.Conv2d(inter_channels, 1, kernel_size=1)
        self.out = nn.Sequential(nn.Conv2d(x_channels, x_channels, kernel_size=1), nn.BatchNorm2d(x_channels))
        self.last_alpha: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        theta = self.theta(x)
        phi = resize_to(self.phi(g), theta.shape[-2:])  # no-op when g is exactly one level coarser than x
        alpha = torch.sigmoid(self.psi(torch.relu(theta + phi)))
        alpha = resize_to(alpha, x.shape[-2:])
        self.last_alpha = alpha.detach()
        return self.out(alpha * x)


class AttentionUNet(SegmentationModel):
    """2-D Attention U-Net with 4 poolings and a gate on every skip; ``divisor`` 16.

    Args:
        in_channels: input channels C.
        out_channels: output logit channels K.
        width: channels at full resolution (64); level ``i`` has ``width * 2**i``.

    Forward: (B, C, H, W) -> logits (B, K, H, W).
    """

    divisor = 16

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 64) -> None:
        super().__init__()
        ch = doubling_channels(width, 5)
        self.encoder = UNetEncoder(in_channels, ch)
        self.gating = ConvNormAct(ch[4], ch[4], kernel_size=1)
        # Level i (0..3): gate x = skip i with g = features of level i+1; then DoubleConv(ch[i+1] + ch[i] -> ch[i]).
        self.gates = nn.ModuleList(AttentionGate(ch[i], ch[i + 1], max(ch[i] // 2, 1)) for i in range(4))
        self.decoders = nn.ModuleList(DoubleConv(ch[i + 1] + ch[i], ch[i]) for i in range(4))
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.head = nn.Conv2d(ch[0], out_channels, kernel_size=1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        y = feats[-1]
        g = self.gating(y)
        for i in reversed(range(4)):
            skip = self.gates[i](feats[i], g)
            y = self.decoders[i](torch.cat([self.up(y), skip], dim=1))
            g = y
        return self.head(y)


@register_model("att_unet")
def att_unet(in_channels: int = 1, out_channels: int = 1, width: int = 64) -> AttentionUNet:
    """Attention U-Net (Oktay attention gates, 2-D); ~33.8M params at width 64."""
    return AttentionUNet(in_channels, out_channels, width)
