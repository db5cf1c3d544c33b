"""Feature Pyramid Network for semantic segmentation (Lin et al., CVPR 2017; head of Seferbekov et al., CVPRW 2018).

Design of the original (as in segmentation_models_pytorch's ``FPN``, which the paper used): a ResNet-34 bottom-up
path (built from scratch here, no ImageNet weights), a top-down path with lateral 1x1 connections producing
pyramid levels P2..P5 (strides 4..32, 256 channels), and a segmentation head that applies two 3x3 convolutions
(128 channels) to every level, resizes every level to stride 4, merges them (Seferbekov: concatenation; smp:
sum), then dropout, a 3x3 convolution, a 1x1 convolution to the classes, and bilinear upsampling x4 to the input
size. About 23.9M parameters at ``width=64`` with ``merge="cat"``.
"""

from __future__ import annotations

import torch
from torch import nn

from spermseg.models.blocks import (
    ConvNormAct,
    PyramidHead,
    ResNetEncoder,
    SegmentationModel,
    TopDownPath,
    resize_to,
)
from spermseg.models.registry import register_model


class FPN(SegmentationModel):
    """FPN segmentation network on a ResNet encoder; ``divisor`` 32.

    Args:
        in_channels: input channels C.
        out_channels: output logit channels K.
        width: ResNet stem channels (64); pyramid channels ``4 * width``, head channels ``2 * width``.
        encoder: ResNet layout (``resnet18``, ``resnet34``, ``resnet50``).
        merge: ``"cat"`` (Seferbekov) or ``"add"`` (smp default) to merge the pyramid levels in the head.
        dropout: dropout probability before the final convolutions (smp: 0.2).

    Forward: (B, C, H, W) -> logits (B, K, H, W).
    """

    divisor = 32

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        width: int = 64,
        encoder: str = "resnet34",
        merge: str = "cat",
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.encoder = ResNetEncoder(in_channels, width, encoder)
        pyramid_ch, seg_ch = 4 * width, 2 * width
        # Levels C2..C5 (strides 4..32); the stride-2 stem features are not part of the pyramid (as in FPN).
        self.top_down = TopDownPath(self.encoder.out_channels[2:], pyramid_ch)
        self.head = PyramidHead(pyramid_ch, seg_ch, n_levels=4, merge=merge)
        self.dropout = nn.Dropout2d(dropout)
        self.fuse = ConvNormAct(self.head.out_channels, seg_ch)
        self.classifier = nn.Conv2d(seg_ch, out_channels, 1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)[2:]  # strides 4, 8, 16, 32
        pyramid = self.top_down(feats)
        merged, _ = self.head(pyramid, pyramid[0].shape[-2:])
        logits = self.classifier(self.fuse(self.dropout(merged)))
        return resize_to(logits, x.shape[-2:])


@register_model("fpn")
def fpn(
    in_channels: int = 1,
    out_channels: int = 1,
    width: int = 64,
    encoder: str = "resnet34",
    merge: str = "cat",
    dropout: float = 0.2,
) -> FPN:
    """FPN with a from-scratch ResNet-34 encoder and a Seferbekov head (all levels merged at stride 4)."""
    return FPN(in_channels, out_channels, width, encoder=encoder, merge=merge, dropout=dropout)
