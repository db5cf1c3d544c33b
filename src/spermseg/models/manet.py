"""MA-Net, the multi-scale attention network (Fan et al., IEEE Access 2020).

Design of the original (and of segmentation_models_pytorch's ``MAnet``, which the paper used): a ResNet-34 encoder
(built from scratch here); a Position-wise Attention Block (PAB) on the deepest features that models spatial
dependencies between all pairs of positions (self-attention with query/key 1x1 projections of 64 channels and a
3x3 value projection, a residual connection and a 3x3 output convolution); five decoder stages, four of them
Multi-scale Fusion Attention Blocks (MFAB) that fuse the upsampled high-level features with the encoder skip: both
get a squeeze-and-excitation channel attention, the sum of the two attentions re-weights the high-level features,
which are concatenated with the skip and passed through two 3x3 convolutions; the last stage has no skip. Decoder
channels (256, 128, 64, 32, 16), a 3x3 classifier. About 31.8M parameters at ``width=64``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spermseg.models.blocks import ConvNormAct, DoubleConv, ResNetEncoder, SegmentationModel
from spermseg.models.registry import register_model


class PositionAttention(nn.Module):
    """Position-wise attention block (PAB) of MA-Net.

    Args:
        channels: input/output channels C.
        key_channels: channels of the query and key projections (64 in MA-Net).

    Forward: (B, C, h, w) -> (B, C, h, w); memory O((h w)^2), applied only at the coarsest level (stride 32).
    """

    def __init__(self, channels: int, key_channels: int = 64) -> None:
        super().__init__()
        self.query = nn.Conv2d(channels, key_channels, 1)
        self.key = nn.Conv2d(channels, key_channels, 1)
        self.value = nn.Conv2d(channels, channels, 3, padding=1)
        self.out_conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # (B, N, Ck)
        k = self.key(x).flatten(2)  # (B, Ck, N)
        v = self.value(x).flatten(2)  # (B, C, N)
        attn = torch.softmax(torch.bmm(q, k), dim=-1)  # (B, N_query, N_key), rows sum to 1
        out = torch.bmm(v, attn.transpose(1, 2)).view(b, c, h, w)  # each position: weighted sum of values
        return self.out_conv(x + out)


class SqueezeExcite(nn.Sequential):
    """Squeeze-and-excitation weights: global average pool -> 1x1 reduce -> ReLU -> 1x1 -> sigmoid, (B, C, 1, 1)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        hidden = max(channels // reduction, 1)
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )


class MultiScaleFusionAttention(nn.Module):
    """MFAB: fuse upsampled high-level features with a skip using the sum of their channel attentions.

    Args:
        cin: channels of the high-level (coarser) input.
        skip: channels of the encoder skip.
        cout: output channels.
    """

    def __init__(self, cin: int, skip: int, cout: int) -> None:
        super().__init__()
        self.high = nn.Sequential(ConvNormAct(cin, cin), ConvNormAct(cin, skip, 1))
        self.se_high = SqueezeExcite(skip)
        self.se_low = SqueezeExcite(skip)
        self.convs = DoubleConv(2 * skip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """x (B, cin, h, w), skip (B, skip, 2h, 2w) -> (B, cout, 2h, 2w)."""
        x = F.interpolate(self.high(x), scale_factor=2.0, mode="nearest")
        x = x * (self.se_high(x) + self.se_low(skip))
        return self.convs(torch.cat([x, skip], dim=1))


class MANet(SegmentationModel):
    """MA-Net on a ResNet encoder; ``divisor`` 32.

    Args:
        in_channels: input channels C.
        out_channels: output logit channels K.
        width: ResNet stem channels (64); decoder channels ``(4, 2, 1, 1/2, 1/4) * width``, PAB keys ``width``.
        encoder: ResNet layout (``resnet18``, ``resnet34``, ``resnet50``).

    Forward: (B, C, H, W) -> logits (B, K, H, W).
    """

    divisor = 32

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 64, encoder: str = "resnet34"):
        super().__init__()
        self.encoder = ResNetEncoder(in_channels, width, encoder)
        enc = self.encoder.out_channels  # strides 1, 2, 4, 8, 16, 32
        dec = [max(width * 4 // 2**i, 1) for i in range(5)]  # 256, 128, 64, 32, 16 at width 64
        self.center = PositionAttention(enc[-1], key_channels=width)
        skips = [enc[4], enc[3], enc[2], enc[1]]  # strides 16, 8, 4, 2
        cins = [enc[-1], *dec[:3]]
        self.fusions = nn.ModuleList(MultiScaleFusionAttention(ci, s, co) for ci, s, co in zip(cins, skips, dec))
        self.last = DoubleConv(dec[3], dec[4])  # stride 2 -> 1: no skip at full resolution
        self.classifier = nn.Conv2d(dec[4], out_channels, 3, padding=1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        y = self.center(feats[-1])
        for fusion, skip in zip(self.fusions, (feats[4], feats[3], feats[2], feats[1])):
            y = fusion(y, skip)
        y = self.last(F.interpolate(y, scale_factor=2.0, mode="nearest"))
        return self.classifier(y)


@register_model("manet")
def manet(in_channels: int = 1, out_channels: int = 1, width: int = 64, encoder: str = "resnet34") -> MANet:
    """MA-Net: from-scratch ResNet-34 encoder, position-wise attention block, multi-scale fusion attention decoder."""
    return MANet(in_channels, out_channels, width, encoder)
