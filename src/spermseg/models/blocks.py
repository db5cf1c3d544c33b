"""Shared building blocks for every architecture (base models and ensembling networks).

No family copies another's code: a block used by two families lives here. Families add blocks at the end of
this file, in a section named after the idea (not after the family).
"""

from __future__ import annotations

from collections.abc import Sequence

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


def pad_to_divisor(x: torch.Tensor, divisor: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Pad (B, C, H, W) centrally to multiples of ``divisor``, as :class:`SegmentationModel` does.

    Args:
        x: tensor (B, C, H, W).
        divisor: the multiple that H and W must reach.

    Returns:
        ``(padded, (top, left, h, w))``: padded (B, C, H', W') and the box to give :func:`crop_to` to undo it.
        Reflect padding, or replicate when the image is smaller than the padding (reflect would fail).
    """
    h, w = x.shape[-2:]
    top, bottom = central_padding(h, divisor)
    left, right = central_padding(w, divisor)
    if top or bottom or left or right:
        mode = "reflect" if min(h, w) > max(top, bottom, left, right) else "replicate"
        x = F.pad(x, (left, right, top, bottom), mode=mode)
    return x, (top, left, h, w)


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
        padded, box = pad_to_divisor(x, self.divisor)
        out = self.forward_padded(padded)
        if padded is x:
            return out
        if isinstance(out, tuple):
            main, aux = out
            return crop_to(main, *box), aux
        return crop_to(out, *box)


#: Top-level attribute names under which the families keep their output (logit) convolutions.
OUTPUT_LAYER_NAMES = ("head", "heads", "classifier", "final")


def output_convs(model: nn.Module) -> list[nn.Conv2d]:
    """The convolutions whose outputs are the model's logits (main and deep-supervision heads).

    Every family names its logit layer ``head``/``heads``/``classifier``/``final``; inside those, the logit
    convolutions are the ones with a bias and the fewest output channels (hidden layers are wider and bias-free).

    Returns:
        The Conv2d modules, in registration order; empty when the model follows no such naming.
    """
    found: list[nn.Conv2d] = []
    for name, child in model.named_children():
        if name not in OUTPUT_LAYER_NAMES:
            continue
        convs = [m for m in child.modules() if isinstance(m, nn.Conv2d) and m.bias is not None]
        if convs:
            k = min(m.out_channels for m in convs)
            found.extend(m for m in convs if m.out_channels == k)
    return found


def set_output_bias(model: nn.Module, prior: float | Sequence[float]) -> int:
    """Set the logit layers' bias so that the untrained model predicts the prior.

    With about 5 % foreground, a zero bias starts every pixel at p = 0.5 and the first hundreds of steps only learn
    "mostly background"; starting at the prior (Lin et al. 2017, focal loss paper, Section 4.1) spends them on
    shapes instead. A binary (sigmoid) output gets ``log(prior / (1 - prior))``; a multi-class (softmax) output
    gets ``log(prior_c)`` per class channel, whose softmax is the class frequencies.

    Args:
        model: any registered model or ensemble.
        prior: foreground fraction in (0, 1), or one frequency in (0, 1] per output channel (a part network's
            codes; they are renormalised to sum to 1).

    Returns:
        The number of convolutions changed.

    Raises:
        ValueError: a prior outside (0, 1), a class count that is not the layers' channel count, or no output
            convolution found.
    """
    import math

    multi = hasattr(prior, "__len__")  # a list, tuple or array of class frequencies
    values = [float(p) for p in prior] if multi else [float(prior)]  # type: ignore[union-attr]
    if multi and not all(p > 0.0 for p in values):
        raise ValueError(f"class frequencies must be positive, got {values}")
    if not multi and not 0.0 < values[0] < 1.0:
        raise ValueError(f"the foreground prior must be in (0, 1), got {prior}")
    convs = output_convs(model)
    if not convs:
        raise ValueError(f"{type(model).__name__} has no output convolution named {', '.join(OUTPUT_LAYER_NAMES)}")
    with torch.no_grad():
        for conv in convs:
            if not multi:
                conv.bias.fill_(math.log(values[0] / (1.0 - values[0])))
                continue
            if conv.bias.numel() != len(values):
                raise ValueError(f"{len(values)} class frequencies for an output layer of {conv.bias.numel()} channels")
            total = sum(values)
            conv.bias.copy_(torch.tensor([math.log(v / total) for v in values], dtype=conv.bias.dtype))
    return len(convs)


def crop_to(x: torch.Tensor, top: int, left: int, h: int, w: int) -> torch.Tensor:
    """Crop (B, C, H', W') to (B, C, h, w) starting at (top, left)."""
    return x[..., top : top + h, left : left + w]


ModelOutput = torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]


def split_outputs(out: ModelOutput) -> tuple[torch.Tensor, list[torch.Tensor]]:
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


class SubsampledPointwiseConv2d(nn.Conv2d):
    """A 1x1 convolution with stride s > 1 computed as a 1x1 convolution of every s-th pixel: the same arithmetic and
    parameters as ``nn.Conv2d(cin, cout, 1, stride=s)``, without its strided kernel, whose channels_last backward
    corrupts the heap on CPUs with AVX-512 BF16 and no AMX (torch 2.13 CPU; docs/training.md)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, cin, H, W) -> (B, cout, ceil(H / s), ceil(W / s))."""
        sh, sw = self.stride
        return F.conv2d(x[:, :, ::sh, ::sw], self.weight, self.bias, 1, 0, 1, self.groups)


class ConvNormAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> ReLU (activation optional); 'same' padding for odd kernels."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        padding = dilation * (kernel_size - 1) // 2
        conv = SubsampledPointwiseConv2d if kernel_size == 1 and stride > 1 else nn.Conv2d
        layers: list[nn.Module] = [
            conv(cin, cout, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=False),
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


# --------------------------------------------------------------------------------------------------------------
# Residual encoder (ResNet, He et al. 2016), built from scratch: shared by deeplabv3p, fpn, manet and the
# ensembling networks. No pretrained weights are ever loaded (the paper trains every model from scratch).
# --------------------------------------------------------------------------------------------------------------


class ResidualBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions plus identity (or 1x1 projection) shortcut; expansion 1.

    Args:
        cin: input channels.
        cout: output channels.
        stride: stride of the first convolution (2 halves the resolution).
        dilation: dilation of both convolutions (atrous backbones keep the resolution and dilate instead).
        first_dilation: dilation of the first convolution (torchvision's rule: the first block of a newly
            dilated stage keeps the previous dilation); defaults to ``dilation``.
    """

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1, first_dilation: int | None = None):
        super().__init__()
        d1 = dilation if first_dilation is None else first_dilation
        self.conv1 = ConvNormAct(cin, cout, 3, stride=stride, dilation=d1)
        self.conv2 = ConvNormAct(cout, cout, 3, dilation=dilation, act=False)
        self.shortcut = (
            ConvNormAct(cin, cout, 1, stride=stride, act=False) if stride != 1 or cin != cout else nn.Identity()
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, cin, H, W) -> (B, cout, H/stride, W/stride)."""
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class BottleneckBlock(nn.Module):
    """ResNet bottleneck block: 1x1 reduce, 3x3 (strided/dilated), 1x1 expand (x4), plus shortcut.

    Args:
        cin: input channels.
        cout: output channels (= 4 x the inner width).
        stride, dilation, first_dilation: as in :class:`ResidualBlock`.
    """

    expansion = 4

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1, first_dilation: int | None = None):
        super().__init__()
        mid = max(cout // self.expansion, 1)
        d1 = dilation if first_dilation is None else first_dilation
        self.body = nn.Sequential(
            ConvNormAct(cin, mid, 1),
            ConvNormAct(mid, mid, 3, stride=stride, dilation=d1),
            ConvNormAct(mid, cout, 1, act=False),
        )
        self.shortcut = (
            ConvNormAct(cin, cout, 1, stride=stride, act=False) if stride != 1 or cin != cout else nn.Identity()
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, cin, H, W) -> (B, cout, H/stride, W/stride)."""
        return self.act(self.body(x) + self.shortcut(x))


# name -> (block class, blocks per stage); the standard ImageNet layouts, used here without ImageNet weights.
RESNET_LAYOUTS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet18": (ResidualBlock, (2, 2, 2, 2)),
    "resnet34": (ResidualBlock, (3, 4, 6, 3)),
    "resnet50": (BottleneckBlock, (3, 4, 6, 3)),
}


class ResNetEncoder(nn.Module):
    """ResNet feature extractor returning the features at strides 1, 2, 4, 8, 16 and 32 (or atrous).

    Layout as in torchvision/smp encoders: 7x7 stride-2 stem, 3x3 max pooling, four residual stages. With
    ``output_stride=16`` (DeepLabV3+) the last stage keeps stride 16 and uses dilation 2; with 8 the last two
    stages are dilated (2 and 4).

    Args:
        in_channels: image channels.
        width: stem channels (64 in ResNet); stage ``i`` has ``width * 2**i * expansion`` output channels.
        depth: one of :data:`RESNET_LAYOUTS` (``resnet18``, ``resnet34``, ``resnet50``).
        output_stride: 32, 16 or 8.

    Attributes:
        out_channels: channels of the six returned features (the input itself first).
        reductions: their strides, e.g. (1, 2, 4, 8, 16, 32).
    """

    def __init__(self, in_channels: int = 1, width: int = 64, depth: str = "resnet34", output_stride: int = 32):
        super().__init__()
        from spermseg.errors import ConfigError

        if depth not in RESNET_LAYOUTS:
            raise ConfigError(f"unknown ResNet depth '{depth}'; valid: {', '.join(RESNET_LAYOUTS)}")
        if output_stride not in (8, 16, 32):
            raise ConfigError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        block, counts = RESNET_LAYOUTS[depth]
        self.stem = ConvNormAct(in_channels, width, 7, stride=2)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        stages = []
        cin, dilation, stride_now = width, 1, 4
        chans, reds = [in_channels, width], [1, 2]
        for i, n in enumerate(counts):
            cout = width * 2**i * block.expansion
            stride = 1 if i == 0 else 2
            prev_dilation = dilation
            if stride == 2 and stride_now * 2 > output_stride:  # atrous: keep the resolution, dilate instead
                dilation, stride = dilation * 2, 1
            stride_now *= stride
            blocks = [block(cin, cout, stride=stride, dilation=dilation, first_dilation=prev_dilation)]
            blocks += [block(cout, cout, dilation=dilation) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
            chans.append(cout)
            reds.append(stride_now)
        self.stages = nn.ModuleList(stages)
        self.out_channels: tuple[int, ...] = tuple(chans)
        self.reductions: tuple[int, ...] = tuple(reds)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, H, W) -> [x, f2 (H/2), f4 (H/4), f8, f16, f32] (strides per :attr:`reductions`)."""
        feats = [x]
        x = self.stem(x)
        feats.append(x)
        x = self.pool(x)
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


# --------------------------------------------------------------------------------------------------------------
# Feature pyramid (Lin et al. 2017; segmentation head of Seferbekov et al. 2018): top-down path with lateral 1x1
# connections, and a head that applies two 3x3 convolutions per level, resizes every level to one size and
# merges them. Shared by the fpn base model and the ensembling networks.
# --------------------------------------------------------------------------------------------------------------


class TopDownPath(nn.Module):
    """FPN top-down path: ``p_i = lateral_i(c_i) + upsample(p_{i+1})`` (nearest), from the coarsest level down.

    Args:
        in_channels: channels of the bottom-up features, finest first.
        pyramid_channels: channels of every pyramid level.
    """

    def __init__(self, in_channels: list[int] | tuple[int, ...], pyramid_channels: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, pyramid_channels, 1) for c in in_channels)

    def forward(self, feats: list[torch.Tensor], extra: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Build the pyramid.

        Args:
            feats: bottom-up features, finest first, each (B, in_channels[i], H_i, W_i) with H_i = 2 H_{i+1}.
            extra: optional (B, pyramid_channels, H_i, W_i) per level, added to the top-down path at that level
                (the ensembling cross-attention V2 adds its channel-attention output here).

        Returns:
            Pyramid maps, finest first, each (B, pyramid_channels, H_i, W_i).
        """
        out: list[torch.Tensor] = [torch.empty(0)] * len(feats)
        p = None
        for i in range(len(feats) - 1, -1, -1):
            lat = self.lateral[i](feats[i])
            p = lat if p is None else lat + resize_to(p, lat.shape[-2:], mode="nearest")
            if extra is not None:
                p = p + extra[i]
            out[i] = p
        return out


class PyramidHead(nn.Module):
    """Seferbekov-style FPN segmentation head: two 3x3 ConvNormAct per level, resize to one size, merge.

    Args:
        pyramid_channels: channels of the input levels.
        segmentation_channels: channels after the per-level convolutions.
        n_levels: number of pyramid levels.
        merge: ``"cat"`` (concatenate, n_levels x segmentation_channels out) or ``"add"`` (sum).
    """

    def __init__(self, pyramid_channels: int, segmentation_channels: int, n_levels: int, merge: str = "cat") -> None:
        super().__init__()
        from spermseg.errors import ConfigError

        if merge not in ("cat", "add"):
            raise ConfigError(f"unknown pyramid merge '{merge}'; valid: cat, add")
        self.merge = merge
        self.levels = nn.ModuleList(DoubleConv(pyramid_channels, segmentation_channels) for _ in range(n_levels))
        self.out_channels = segmentation_channels * (n_levels if merge == "cat" else 1)

    def forward(
        self, pyramid: list[torch.Tensor], size: tuple[int, int] | torch.Size
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Apply the per-level convolutions and merge.

        Args:
            pyramid: levels (B, pyramid_channels, H_i, W_i), finest first.
            size: (H, W) every level is resized to (bilinear) before merging.

        Returns:
            ``(merged, per_level)``: merged (B, out_channels, H, W) and the per-level features
            (B, segmentation_channels, H_i, W_i) at their own resolution (for deep-supervision outputs).
        """
        per_level = [conv(p) for conv, p in zip(self.levels, pyramid)]
        resized = [resize_to(f, size) for f in per_level]
        merged = torch.cat(resized, dim=1) if self.merge == "cat" else torch.stack(resized).sum(0)
        return merged, per_level


# --------------------------------------------------------------------------------------------------------------
# Deep supervision with padding: auxiliary outputs aligned with the cropped logits (unet_pp, unet3p)
# --------------------------------------------------------------------------------------------------------------


class DeeplySupervisedModel(SegmentationModel):
    """A :class:`SegmentationModel` whose auxiliary outputs are returned on the input grid too.

    ``SegmentationModel.forward`` crops only the main logits. An auxiliary map of a padded input (at the padded
    size or a fraction of it) that the loss merely resized to the target would be shifted and stretched by the
    padding. Here every auxiliary map is upsampled bilinearly (as logits) to the padded size, which is what the
    original UNet++ and UNet 3+ side outputs are, and cropped with the main output's box.

    Forward: (B, C, H, W) -> logits (B, K, H, W), or in training mode ``(logits, [aux (B, K, H, W), ...])``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        out = super().forward(x)
        if not isinstance(out, tuple):
            return out
        main, aux = out
        h, w = x.shape[-2:]
        top, bottom = central_padding(h, self.divisor)
        left, right = central_padding(w, self.divisor)
        padded = (h + top + bottom, w + left + right)
        return main, [crop_to(resize_to(a, padded), top, left, h, w) for a in aux]
