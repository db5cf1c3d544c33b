"""UNet++ (Zhou et al., DLMIA 2018): nested, dense skip pathways, optional deep supervision.

Design of the original (its Keras code, filters 32, 64, 128, 256, 512): the backbone column X(i, 0) is a U-Net
encoder with four poolings. Every node X(i, j), j >= 1, is a two-convolution unit on the concatenation of all
previous nodes of its row, X(i, 0) .. X(i, j-1), and the 2x2 transposed-convolution upsampling of X(i+1, j-1).
The top row X(0, 1..4) are full-resolution outputs; with deep supervision each gets a 1x1 head.

Deep supervision convention (see :mod:`spermseg.models`): the main logits are the head of X(0, 4) (the full
network); in training mode the model returns ``(logits, [head(X(0,1)), head(X(0,2)), head(X(0,3))])``, all at the
input's size (cropped like the logits, see :class:`~spermseg.models.blocks.DeeplySupervisedModel`), and in eval
mode the logits only. Without deep supervision there is a single head on X(0, 4) (no unused parameters). About
9.0M parameters at ``width=32``.
"""

from __future__ import annotations

import torch
from torch import nn

from spermseg.models.blocks import DeeplySupervisedModel, DoubleConv, UNetEncoder, doubling_channels
from spermseg.models.registry import register_model

DEPTH = 4  # number of poolings


class UNetPlusPlus(DeeplySupervisedModel):
    """UNet++ L4 with 4 poolings; ``divisor`` 16.

    Args:
        in_channels: input channels C.
        out_channels: output logit channels K.
        width: channels of row 0 (32 in the paper); row ``i`` has ``width * 2**i``.
        deep_supervision: add 1x1 heads on X(0, 1..3) returned as auxiliary outputs in training mode.

    Forward: (B, C, H, W) -> logits (B, K, H, W); training with deep supervision: ``(logits, [3 x (B, K, H, W)])``.
    """

    divisor = 2**DEPTH

    def __init__(
        self, in_channels: int = 1, out_channels: int = 1, width: int = 32, deep_supervision: bool = False
    ) -> None:
        super().__init__()
        ch = doubling_channels(width, DEPTH + 1)
        self.deep_supervision = deep_supervision
        self.encoder = UNetEncoder(in_channels, ch)
        # Nodes X(i, j) for j >= 1 and i + j <= DEPTH, keyed "i_j"; each with its own upsampling of X(i+1, j-1).
        self.ups = nn.ModuleDict()
        self.nodes = nn.ModuleDict()
        for j in range(1, DEPTH + 1):
            for i in range(DEPTH + 1 - j):
                self.ups[f"{i}_{j}"] = nn.ConvTranspose2d(ch[i + 1], ch[i], kernel_size=2, stride=2)
                self.nodes[f"{i}_{j}"] = DoubleConv((j + 1) * ch[i], ch[i])
        n_heads = DEPTH if deep_supervision else 1
        self.heads = nn.ModuleList(nn.Conv2d(ch[0], out_channels, kernel_size=1) for _ in range(n_heads))

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        rows: list[list[torch.Tensor]] = [[f] for f in self.encoder(x)]  # rows[i][j] = X(i, j)
        for j in range(1, DEPTH + 1):
            for i in range(DEPTH + 1 - j):
                key = f"{i}_{j}"
                up = self.ups[key](rows[i + 1][j - 1])
                rows[i].append(self.nodes[key](torch.cat([*rows[i], up], dim=1)))
        top = rows[0][1:]  # X(0, 1) .. X(0, 4)
        logits = self.heads[-1](top[-1])
        if self.deep_supervision and self.training:
            return logits, [head(t) for head, t in zip(self.heads[:-1], top[:-1], strict=True)]
        return logits


@register_model("unet_pp")
def unet_pp(
    in_channels: int = 1, out_channels: int = 1, width: int = 32, deep_supervision: bool = False
) -> UNetPlusPlus:
    """UNet++ with nested dense skips, optional deep supervision; ~9.0M params at width 32."""
    return UNetPlusPlus(in_channels, out_channels, width, deep_supervision)
