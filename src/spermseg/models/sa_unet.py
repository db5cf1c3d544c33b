"""SA-UNet, Spatial Attention U-Net (Guo et al., ICPR 2020).

Design of the original (its reference code, ``start_neurons=16``): a light U-Net with three 2x2 max-poolings
(widths 16, 32, 64 and 128 at the bottleneck). Every 3x3 convolution is followed by DropBlock (block size 7,
keep probability 0.9), BN and ReLU, two per level. The bottleneck is convolution block, spatial attention (CBAM's
spatial branch: sigmoid of a 7x7 convolution of the channel-wise mean and max, multiplied onto the features),
convolution block. The decoder upsamples with 3x3 stride-2 transposed convolutions to the skip's width,
concatenates and applies two convolution blocks; a 1x1 convolution gives the logits. About 0.54M parameters at
``width=16``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spermseg.models.blocks import SegmentationModel, SpatialAttention, doubling_channels
from spermseg.models.registry import register_model

POOLINGS = 3


class DropBlock2d(nn.Module):
    """DropBlock (Ghiasi, Lin and Le, NeurIPS 2018): drops contiguous ``block_size`` squares of each feature map.

    In training mode, block centres are sampled with rate ``gamma`` inside the region where a whole block fits,
    so that on average a fraction ``drop_prob`` of the units is dropped; the kept units are rescaled by
    (units / kept units). Identity in eval mode. The block is clipped to the feature map on small inputs.

    Args:
        drop_prob: target fraction of dropped units (1 - keep_prob).
        block_size: side of the dropped squares.

    Forward: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, drop_prob: float = 0.1, block_size: int = 7) -> None:
        super().__init__()
        self.drop_prob = drop_prob
        self.block_size = block_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob <= 0:
            return x
        b, c, h, w = x.shape
        bs = min(self.block_size, h, w)
        gamma = self.drop_prob / bs**2 * (h * w) / ((h - bs + 1) * (w - bs + 1))
        centres = (torch.rand(b, c, h - bs + 1, w - bs + 1, device=x.device) < gamma).to(x.dtype)
        # Place the valid-region centres on the full grid, then grow each into a bs x bs block.
        centres = F.pad(centres, ((bs - 1) // 2, bs // 2, (bs - 1) // 2, bs // 2))
        dropped = F.max_pool2d(centres, kernel_size=bs, stride=1, padding=bs // 2)[..., :h, :w]
        keep = 1.0 - dropped
        return x * keep * (keep.numel() / keep.sum().clamp_min(1.0))


class SAConvBlock(nn.Sequential):
    """3x3 convolution (with bias, as the reference code), DropBlock, BN, ReLU."""

    def __init__(self, cin: int, cout: int, drop_prob: float, block_size: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1),
            DropBlock2d(drop_prob, block_size),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class SAUNet(SegmentationModel):
    """SA-UNet with 3 poolings; ``divisor`` 8.

    Args:
        in_channels: input channels C.
        out_channels: output logit channels K.
        width: channels at full resolution (16 in the paper); level ``i`` has ``width * 2**i``.
        drop_prob: DropBlock drop probability (0.1, i.e. the reference keep_prob 0.9).
        block_size: DropBlock block size (7).

    Forward: (B, C, H, W) -> logits (B, K, H, W).
    """

    divisor = 2**POOLINGS

    def __init__(
        self, in_channels: int = 1, out_channels: int = 1, width: int = 16, drop_prob: float = 0.1, block_size: int = 7
    ) -> None:
        super().__init__()
        ch = doubling_channels(width, POOLINGS + 1)

        def block(cin: int, cout: int) -> SAConvBlock:
            return SAConvBlock(cin, cout, drop_prob, block_size)

        cins = [in_channels, *ch[:-2]]
        self.encoders = nn.ModuleList(
            nn.Sequential(block(cin, c), block(c, c)) for cin, c in zip(cins, ch[:-1], strict=True)
        )
        self.pool = nn.MaxPool2d(2)
        self.bottleneck_in = block(ch[-2], ch[-1])
        self.attention = SpatialAttention(kernel_size=7)
        self.bottleneck_out = block(ch[-1], ch[-1])
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(ch[i + 1], ch[i], 3, stride=2, padding=1, output_padding=1) for i in range(POOLINGS)
        )
        self.decoders = nn.ModuleList(
            nn.Sequential(block(2 * ch[i], ch[i]), block(ch[i], ch[i])) for i in range(POOLINGS)
        )
        self.head = nn.Conv2d(ch[0], out_channels, 1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck_in(x)
        x = x * self.attention(x)
        x = self.bottleneck_out(x)
        for i in reversed(range(POOLINGS)):
            x = self.decoders[i](torch.cat([self.ups[i](x), skips[i]], dim=1))
        return self.head(x)


@register_model("sa_unet")
def sa_unet(
    in_channels: int = 1, out_channels: int = 1, width: int = 16, drop_prob: float = 0.1, block_size: int = 7
) -> SAUNet:
    """SA-UNet: 3 poolings, DropBlock after each convolution, spatial attention at the bottleneck; ~0.54M params."""
    return SAUNet(in_channels, out_channels, width, drop_prob, block_size)
