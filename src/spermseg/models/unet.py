"""U-Net (Ronneberger, Fischer and Brox, MICCAI 2015) with batch normalization.

Design of the original: a contracting path of four 2x2 max-poolings, each level two 3x3 convolutions with ReLU,
doubling the channels (64 -> 1024 at the bottleneck); an expanding path of 2x2 up-convolutions that halve the
channels, concatenation with the cropped encoder features of the same level, two 3x3 convolutions; a 1x1
convolution to the classes. As in every modern re-implementation we use 'same' padding (the original used valid
convolutions and cropped the skips; :class:`~spermseg.models.blocks.SegmentationModel` handles arbitrary sizes by
padding the input instead) and batch normalization after each convolution (the paper's training setup).
About 31.0M parameters at ``width=64``.
"""

from __future__ import annotations

import torch
from torch import nn

from spermseg.models.blocks import DoubleConv, SegmentationModel, UNetEncoder, doubling_channels
from spermseg.models.registry import register_model


class UNet(SegmentationModel):
    """U-Net with 4 poolings; ``divisor`` 16.

    Args:
        in_channels: input channels C.
        out_channels: output logit channels K.
        width: channels at full resolution (64 in the paper); level ``i`` has ``width * 2**i``.

    Forward: (B, C, H, W) -> logits (B, K, H, W).
    """

    divisor = 16

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 64) -> None:
        super().__init__()
        ch = doubling_channels(width, 5)
        self.encoder = UNetEncoder(in_channels, ch)
        # Decoder level i (3 .. 0): up-convolution from level i+1 halving the channels, then DoubleConv on the
        # concatenation with the skip (2 * ch[i] -> ch[i]).
        self.ups = nn.ModuleList(nn.ConvTranspose2d(ch[i + 1], ch[i], kernel_size=2, stride=2) for i in range(4))
        self.decoders = nn.ModuleList(DoubleConv(2 * ch[i], ch[i]) for i in range(4))
        self.head = nn.Conv2d(ch[0], out_channels, kernel_size=1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        y = feats[-1]
        for i in reversed(range(4)):
            y = self.decoders[i](torch.cat([feats[i], self.ups[i](y)], dim=1))
        return self.head(y)


@register_model("unet")
def unet(in_channels: int = 1, out_channels: int = 1, width: int = 64) -> UNet:
    """Ronneberger U-Net with BN (4 poolings, transposed-convolution upsampling); ~31.0M params at width 64."""
    return UNet(in_channels, out_channels, width)
