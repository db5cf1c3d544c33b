"""DeepLabV3+ (Chen et al., ECCV 2018): atrous encoder, ASPP, and a decoder with a low-level skip.

Design of the original: a backbone with output stride 16 (the last ResNet stage keeps stride 16 and uses dilation
2; ResNet-34 here, built from scratch, as in segmentation_models_pytorch which the paper used); Atrous Spatial
Pyramid Pooling with a 1x1 convolution, three 3x3 atrous convolutions (rates 6, 12, 18 at output stride 16) and
image-level pooling, 256 channels each, concatenated and projected by a 1x1 convolution; a decoder that upsamples
the ASPP output x4 (bilinear), concatenates the stride-4 low-level features reduced to 48 channels by a 1x1
convolution, applies two 3x3 convolutions (256 channels) and a 1x1 classifier, and upsamples x4 to the input.
About 26.7M parameters at ``width=64``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spermseg.errors import ConfigError
from spermseg.models.blocks import ConvNormAct, DoubleConv, ResNetEncoder, SegmentationModel, resize_to
from spermseg.models.registry import register_model


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling.

    Args:
        cin: input channels.
        cout: channels of every branch and of the output.
        rates: dilation rates of the 3x3 branches.
        dropout: dropout after the projection (0.5 in the DeepLabV3 reference code, 0.1 in smp).
    """

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...] = (6, 12, 18), dropout: float = 0.1) -> None:
        super().__init__()
        self.branches = nn.ModuleList([ConvNormAct(cin, cout, 1)])
        self.branches.extend(ConvNormAct(cin, cout, 3, dilation=r) for r in rates)
        # Image-level features: global average pooling -> 1x1 conv. No BatchNorm here (unlike the reference code):
        # a 1x1 map normalized over a batch of 1 is undefined in training, and small batches are the norm here.
        self.pool_conv = nn.Sequential(nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True))
        self.project = nn.Sequential(ConvNormAct((len(rates) + 2) * cout, cout, 1), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, cin, h, w) -> (B, cout, h, w)."""
        outs = [branch(x) for branch in self.branches]
        pooled = self.pool_conv(F.adaptive_avg_pool2d(x, 1))
        outs.append(pooled.expand(-1, -1, *x.shape[-2:]))
        return self.project(torch.cat(outs, dim=1))


class DeepLabV3Plus(SegmentationModel):
    """DeepLabV3+ on an atrous ResNet encoder; ``divisor`` = output stride.

    Args:
        in_channels: input channels C.
        out_channels: output logit channels K.
        width: ResNet stem channels (64); ASPP/decoder channels ``4 * width``, low-level skip ``3 * width / 4``.
        encoder: ResNet layout (``resnet18``, ``resnet34``, ``resnet50``).
        output_stride: 16 (default, the paper's choice for speed) or 8.
        atrous_rates: ASPP dilation rates (the paper: (6, 12, 18) at output stride 16, doubled at 8).

    Forward: (B, C, H, W) -> logits (B, K, H, W).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        width: int = 64,
        encoder: str = "resnet34",
        output_stride: int = 16,
        atrous_rates: tuple[int, ...] | list[int] = (6, 12, 18),
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16):
            raise ConfigError(f"deeplabv3p output_stride must be 8 or 16, got {output_stride}")
        self.divisor = output_stride
        self.encoder = ResNetEncoder(in_channels, width, encoder, output_stride=output_stride)
        ch = 4 * width
        low_ch = max(3 * width // 4, 1)
        self.aspp = ASPP(self.encoder.out_channels[-1], ch, tuple(atrous_rates))
        self.low_level = ConvNormAct(self.encoder.out_channels[2], low_ch, 1)  # stride-4 features (ResNet stage 1)
        self.decoder = DoubleConv(ch + low_ch, ch)
        self.classifier = nn.Conv2d(ch, out_channels, 1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        low = self.low_level(feats[2])
        y = resize_to(self.aspp(feats[-1]), low.shape[-2:])
        y = self.classifier(self.decoder(torch.cat([y, low], dim=1)))
        return resize_to(y, x.shape[-2:])


@register_model("deeplabv3p")
def deeplabv3p(
    in_channels: int = 1,
    out_channels: int = 1,
    width: int = 64,
    encoder: str = "resnet34",
    output_stride: int = 16,
    atrous_rates: tuple[int, ...] = (6, 12, 18),
) -> DeepLabV3Plus:
    """DeepLabV3+ with a from-scratch atrous ResNet-34 (output stride 16), ASPP and a low-level-skip decoder."""
    return DeepLabV3Plus(in_channels, out_channels, width, encoder, output_stride, atrous_rates)
