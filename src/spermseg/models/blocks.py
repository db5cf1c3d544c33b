"""Shared building blocks for every architecture (base models and ensembling networks).

No family copies another's code: a block used by two families lives here. Families add blocks at the end of
this file, in a section named after the idea (not after the family).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------------------------------------------
# Size handling: pad any H, W to the family's divisor, crop back (central, documented in the README)
# --------------------------------------------------------------------------------------------------------------


def central_padding(size: int, divisor: int) -> tuple[int, int]:
    """Padding (before, after) that makes ``size`` a multiple of ``divisor``, split evenly (extra pixel after)."""
    total = (-size) % divisor
    return total // 2, total - total // 2


class SegmentationModel(nn.Module):
    """Base class: pads the input centrally to a multiple of ``divisor`` and crops every output back.

    Subclasses set ``self.divisor`` (2 ** number of downsamplings) and implement :meth:`forward_padded`, which
    receives (B, C, H', W') with H', W' multiples of the divisor and returns logits (B, K, H', W'), or in training
    mode with deep supervision ``(logits, [aux, ...])``. Reflect padding (replicate for tiny inputs) avoids a
    dark frame that the network would have to learn to ignore.
    """

    divisor: int = 32

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        h, w = x.shape[-2:]
        top, bottom = central_padding(h, self.divisor)
        left, right = central_padding(w, self.divisor)
        padded = top or bottom or left or right
        if padded:
            mode = "reflect" if min(h, w) > max(top, bottom, left, right) else "replicate"
            x = F.pad(x, (left, right, top, bottom), mode=mode)
        out = self.forward_padded(x)
        if not padded:
            return out
        if isinstance(out, tuple):
            main, aux = out
            return crop_to(main, top, left, h, w), aux
        return crop_to(out, top, left, h, w)


def crop_to(x: torch.Tensor, top: int, left: int, h: int, w: int) -> torch.Tensor:
    """Crop (B, C, H', W') to (B, C, h, w) starting at (top, left)."""
    return x[..., top : top + h, left : left + w]


def split_outputs(out: torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Normalize a model output to ``(logits, aux_list)``."""
    if isinstance(out, tuple):
        return out[0], list(out[1])
    return out, []


def resize_to(x: torch.Tensor, size: tuple[int, int] | torch.Size, mode: str = "bilinear") -> torch.Tensor:
    """Resize (B, C, h, w) to ``size`` (no-op when equal); bilinear with align_corners=False by default."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=tuple(size), mode="nearest")
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)


# --------------------------------------------------------------------------------------------------------------
# Convolutions
# --------------------------------------------------------------------------------------------------------------


class ConvNormAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> ReLU (activation optional); 'same' padding for odd kernels."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1,
                 groups: int = 1, act: bool = True) -> None:
        padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=groups,
                      bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DoubleConv(nn.Sequential):
    """Two 3x3 ConvNormAct (the U-Net block)."""

    def __init__(self, cin: int, cout: int, mid: int | None = None) -> None:
        mid = cout if mid is None else mid
        super().__init__(ConvNormAct(cin, mid), ConvNormAct(mid, cout))


# --------------------------------------------------------------------------------------------------------------
# Attention (CBAM, Woo et al. 2018): used by sa_unet (spatial), manet, and the ensembling networks' cross-attention
# --------------------------------------------------------------------------------------------------------------


class ChannelAttention(nn.Module):
    """CBAM channel attention: sigmoid(MLP(avgpool) + MLP(maxpool)), returns weights (B, C, 1, 1)."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(F.adaptive_avg_pool2d(x, 1))
        mx = self.mlp(F.adaptive_max_pool2d(x, 1))
        return torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    """CBAM spatial attention: sigmoid(conv7x7([mean_c, max_c])), returns weights (B, 1, H, W)."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))


class CBAM(nn.Module):
    """Channel then spatial attention applied to the same tensor (x * Mc(x), then * Ms(.))."""

    def __init__(self, channels: int, reduction: int = 8, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel(x)
        return x * self.spatial(x)


# --------------------------------------------------------------------------------------------------------------
# Family-contributed shared blocks go below, grouped by idea.
# --------------------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------------------
# U-shaped encoder: a double convolution per level, 2x2 max-pooling between levels (Ronneberger et al. 2015).
# The contracting path of unet, att_unet, unet_pp (its backbone column X_{i,0}) and unet3p.
# --------------------------------------------------------------------------------------------------------------


def doubling_channels(width: int, levels: int) -> list[int]:
    """Channels per level of a U-shaped network that doubles the width at each downsampling.

    Args:
        width: channels at full resolution (64 in the original U-Net).
        levels: number of resolution levels (number of poolings + 1).

    Returns:
        ``[width, 2 * width, 4 * width, ...]`` of length ``levels``.
    """
    return [width * 2**i for i in range(levels)]


class UNetEncoder(nn.Module):
    """Contracting path: ``DoubleConv`` at full resolution, then (max-pool 2x2, ``DoubleConv``) per level.

    Args:
        in_channels: input channels C.
        channels: output channels of each level, e.g. ``[64, 128, 256, 512, 1024]`` (4 poolings).

    Forward: (B, C, H, W) with H, W divisible by ``2 ** (len(channels) - 1)`` -> list of feature maps, level ``i``
    of shape (B, channels[i], H / 2**i, W / 2**i); the last one is the bottleneck.
    """

    def __init__(self, in_channels: int, channels: list[int] | tuple[int, ...]) -> None:
        super().__init__()
        cins = [in_channels, *channels[:-1]]
        self.stages = nn.ModuleList(DoubleConv(cin, cout) for cin, cout in zip(cins, channels, strict=True))
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x if i == 0 else self.pool(x))
            feats.append(x)
        return feats
