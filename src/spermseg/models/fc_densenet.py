"""FC-DenseNet, "The One Hundred Layers Tiramisu" (Jegou et al., CVPR-W 2017).

Design of the original: a 3x3 convolution (48 filters), then five dense blocks on the way down, each followed by a
transition down (BN, ReLU, 1x1 convolution, dropout, 2x2 max-pooling); a bottleneck dense block; five transitions
up (3x3 transposed convolution, stride 2) each followed by a dense block; a 1x1 convolution to the classes.
A dense layer is BN, ReLU, 3x3 convolution producing ``growth_rate`` maps, dropout 0.2; a dense block concatenates
every layer's output to its input. On the way down a block outputs input + new maps (and that is the skip); on the
way up (and in the bottleneck) only the new maps are upsampled, which keeps the width linear in depth; the last
up block keeps its input.

Variants (layers per block: 5 down, bottleneck, 5 up; growth rate k), parameters at the paper's 48 first filters:

* 56: 4 layers per block, k=12 (~1.4M parameters),
* 67: 5 layers per block, k=16 (~3.5M),
* 103: 4, 5, 7, 10, 12 | 15 | 12, 10, 7, 5, 4, k=16 (~9.4M).

Default variant 103: it is the Tiramisu paper's headline model (its best CamVid and Gatech results) and what
"FC-DenseNet" refers to without a suffix; the SegSperm paper names no variant. Pass ``variant=67`` or ``56`` for the
smaller ones.
"""

from __future__ import annotations

import torch
from torch import nn

from spermseg.errors import ConfigError
from spermseg.models.blocks import SegmentationModel
from spermseg.models.registry import register_model

# variant -> (layers per block: down..., bottleneck, up...; growth rate at the paper's 48 first-convolution filters)
VARIANTS: dict[int, tuple[tuple[int, ...], int]] = {
    56: ((4,) * 11, 12),
    67: ((5,) * 11, 16),
    103: ((4, 5, 7, 10, 12, 15, 12, 10, 7, 5, 4), 16),
}
PAPER_FIRST_FILTERS = 48


class DenseLayer(nn.Sequential):
    """BN, ReLU, 3x3 convolution to ``growth`` maps, dropout: (B, cin, H, W) -> (B, growth, H, W)."""

    def __init__(self, cin: int, growth: int, dropout: float) -> None:
        super().__init__(
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, growth, 3, padding=1), nn.Dropout(dropout)
        )


class DenseBlock(nn.Module):
    """``n_layers`` dense layers, each fed with the concatenation of the block input and all previous outputs.

    Forward: (B, cin, H, W) -> (B, cin + n*growth, H, W) if ``keep_input`` else only the new maps (B, n*growth, H, W).
    """

    def __init__(self, cin: int, n_layers: int, growth: int, dropout: float, keep_input: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth, dropout) for i in range(n_layers))
        self.keep_input = keep_input
        self.out_channels = cin + n_layers * growth if keep_input else n_layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = []
        for layer in self.layers:
            y = layer(x)
            x = torch.cat([x, y], dim=1)
            new.append(y)
        return x if self.keep_input else torch.cat(new, dim=1)


class TransitionDown(nn.Sequential):
    """BN, ReLU, 1x1 convolution (same width), dropout, 2x2 max-pooling."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__(
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1),
            nn.Dropout(dropout),
            nn.MaxPool2d(2),
        )


class FCDenseNet(SegmentationModel):
    """FC-DenseNet (Tiramisu) with 5 poolings; ``divisor`` 32.

    Args:
        in_channels: input channels C.
        out_channels: output logit channels K.
        width: filters of the first 3x3 convolution (48 in the paper).
        variant: 56, 67 or 103 (layers per block and default growth rate, see the module docstring).
        growth_rate: maps added per dense layer; None scales the variant's rate (12 or 16) by ``width / 48``.
        dropout: dropout after each dense layer and transition down (0.2 in the paper).

    Forward: (B, C, H, W) -> logits (B, K, H, W).
    """

    divisor = 32

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        width: int = PAPER_FIRST_FILTERS,
        variant: int = 103,
        growth_rate: int | None = None,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ConfigError(f"fc_densenet: unknown variant {variant}; valid: {', '.join(map(str, VARIANTS))}")
        layers, paper_growth = VARIANTS[variant]
        if growth_rate is None:
            growth_rate = max(1, round(paper_growth * width / PAPER_FIRST_FILTERS))
        if growth_rate < 1 or width < 1:
            raise ConfigError(f"fc_densenet: width and growth_rate must be >= 1, got {width} and {growth_rate}")
        down, bottleneck, up = layers[:5], layers[5], layers[6:]

        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        c = width
        self.down_blocks = nn.ModuleList()
        self.transitions_down = nn.ModuleList()
        skips = []
        for n in down:
            block = DenseBlock(c, n, growth_rate, dropout, keep_input=True)
            c = block.out_channels
            skips.append(c)
            self.down_blocks.append(block)
            self.transitions_down.append(TransitionDown(c, dropout))
        self.bottleneck = DenseBlock(c, bottleneck, growth_rate, dropout, keep_input=False)
        c = self.bottleneck.out_channels

        self.transitions_up = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for i, n in enumerate(up):
            # Transition up keeps the number of upsampled maps (the previous block's new maps only).
            self.transitions_up.append(nn.ConvTranspose2d(c, c, 3, stride=2, padding=1, output_padding=1))
            last = i == len(up) - 1
            block = DenseBlock(c + skips[-1 - i], n, growth_rate, dropout, keep_input=last)
            self.up_blocks.append(block)
            c = block.out_channels
        self.head = nn.Conv2d(c, out_channels, 1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        skips = []
        for block, down in zip(self.down_blocks, self.transitions_down, strict=True):
            x = block(x)
            skips.append(x)
            x = down(x)
        x = self.bottleneck(x)
        for up, block, skip in zip(self.transitions_up, self.up_blocks, reversed(skips), strict=True):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.head(x)


@register_model("fc_densenet")
def fc_densenet(
    in_channels: int = 1,
    out_channels: int = 1,
    width: int = PAPER_FIRST_FILTERS,
    variant: int = 103,
    growth_rate: int | None = None,
    dropout: float = 0.2,
) -> FCDenseNet:
    """FC-DenseNet (Tiramisu) 56 / 67 / 103 (default 103, ~9.4M params at width 48)."""
    return FCDenseNet(in_channels, out_channels, width, variant, growth_rate, dropout)
