"""UNet 3+ (Huang et al., ICASSP 2020): full-scale skip connections, full-scale deep supervision, optional CGM.

Design of the original (its reference code, filters 64 .. 1024): a U-Net encoder with four poolings, levels
E1..E5. Each decoder level D_d (d = 4 .. 1) receives all five scales: encoder maps of the same and finer levels
(max-pooled down to level d), and decoder maps of coarser levels (D_{d+1} .. D_4 and E5, bilinearly upsampled);
each of the five inputs goes through a 3x3 convolution (BN, ReLU) to ``width`` channels, they are concatenated
(5 * width = 320 channels) and fused by a 3x3 convolution (BN, ReLU). Deep supervision: a 3x3 convolution to the
classes on each of D1..D4 and E5.

Deep supervision convention (see :mod:`spermseg.models`): main logits from D1; training mode returns
``(logits, [D2, D3, D4, E5 logits])``, each upsampled bilinearly to the input size as in the original (and cropped
like the logits, see :class:`~spermseg.models.blocks.DeeplySupervisedModel`); eval mode the logits only, without
running the auxiliary heads. With ``deep_supervision=False`` only the D1 head exists.

Classification-guided module (CGM, optional, off by default): dropout, a 1x1 convolution and global max-pooling
on E5 give a per-class "object present" logit ``c``. The original multiplies the segmentation probabilities by
the arg-max of a separately trained image-level classifier, which is neither differentiable nor trainable with
the pixel-wise loss used here. We use the soft version: every output's probability is multiplied by
``sigmoid(c)``, i.e. the logits become ``logit(sigmoid(s) * sigmoid(c))``, in training and eval alike, so the
pixel loss trains the classifier (on an image without foreground every pixel asks for a low ``c``). Nearly every
SegSperm image contains sperm, so the CGM is off by default. About 27.0M parameters at ``width=64`` (26.98M with
the CGM).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spermseg.models.blocks import ConvNormAct, DeeplySupervisedModel, UNetEncoder, doubling_channels, resize_to
from spermseg.models.registry import register_model

LEVELS = 5


def gated_logits(seg: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """Logit of ``sigmoid(seg) * sigmoid(cls)``, computed stably.

    ``logit(p q) = -log(exp(-s) + exp(-c) + exp(-s - c))`` for ``p = sigmoid(s)``, ``q = sigmoid(c)``.

    Args:
        seg: segmentation logits (B, K, H, W).
        cls: presence logits (B, K, 1, 1).

    Returns:
        (B, K, H, W) logits.
    """
    cls = cls.expand_as(seg)
    return -torch.logsumexp(torch.stack([-seg, -cls, -seg - cls]), dim=0)


class UNet3Plus(DeeplySupervisedModel):
    """UNet 3+ with 4 poolings; ``divisor`` 16.

    Args:
        in_channels: input channels C.
        out_channels: output logit channels K.
        width: channels at full resolution (64); encoder level ``i`` has ``width * 2**i``, every decoder level
            ``5 * width`` (five ``width``-channel scale branches).
        deep_supervision: heads on D2..D4 and E5, returned in training mode.
        cgm: add the classification-guided module (soft gate, see the module docstring).

    Forward: (B, C, H, W) -> logits (B, K, H, W); training with deep supervision: ``(logits, [4 x (B, K, H, W)])``.
    """

    divisor = 2 ** (LEVELS - 1)

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        width: int = 64,
        deep_supervision: bool = True,
        cgm: bool = False,
    ) -> None:
        super().__init__()
        ch = doubling_channels(width, LEVELS)
        up_channels = LEVELS * width
        self.deep_supervision = deep_supervision
        self.encoder = UNetEncoder(in_channels, ch)
        # branches[d][k]: 3x3 conv of scale k (0 = finest) feeding decoder level d (0..3). Scale k <= d comes from
        # the encoder (ch[k]); scale k > d from the decoder (up_channels), except k = 4, the bottleneck E5.
        self.branches = nn.ModuleList()
        self.fusions = nn.ModuleList()
        for d in range(LEVELS - 1):
            cins = [ch[k] if k <= d or k == LEVELS - 1 else up_channels for k in range(LEVELS)]
            self.branches.append(nn.ModuleList(ConvNormAct(c, width) for c in cins))
            self.fusions.append(ConvNormAct(up_channels, up_channels))
        n_heads = LEVELS if deep_supervision else 1
        head_cins = [up_channels] * (LEVELS - 1) + [ch[-1]]
        self.heads = nn.ModuleList(nn.Conv2d(c, out_channels, 3, padding=1) for c in head_cins[:n_heads])
        self.cls = (
            nn.Sequential(nn.Dropout(0.5), nn.Conv2d(ch[-1], out_channels, 1), nn.AdaptiveMaxPool2d(1)) if cgm else None
        )

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        enc = self.encoder(x)
        # maps[k] is the current representation of scale k: E_k for the finer ones, D_k once decoded, E5 at k = 4.
        maps: list[torch.Tensor] = list(enc)
        for d in reversed(range(LEVELS - 1)):
            size = enc[d].shape[-2:]
            parts = []
            for k, branch in enumerate(self.branches[d]):
                m = maps[k]
                if k < d:  # finer encoder map: max-pool down by 2 ** (d - k)
                    m = F.max_pool2d(m, kernel_size=2 ** (d - k), ceil_mode=True)
                elif k > d:  # coarser decoder map (or E5): upsample bilinearly
                    m = resize_to(m, size)
                parts.append(branch(m))
            maps[d] = self.fusions[d](torch.cat(parts, dim=1))
        # Auxiliary heads only run when their output is returned (training with deep supervision).
        n_out = len(self.heads) if self.deep_supervision and self.training else 1
        outputs = [head(m) for head, m in zip(self.heads[:n_out], maps, strict=False)]
        if self.cls is not None:
            presence = self.cls(enc[-1])
            outputs = [gated_logits(o, presence) for o in outputs]
        if self.deep_supervision and self.training:
            return outputs[0], outputs[1:]
        return outputs[0]


@register_model("unet3p")
def unet3p(
    in_channels: int = 1, out_channels: int = 1, width: int = 64, deep_supervision: bool = True, cgm: bool = False
) -> UNet3Plus:
    """UNet 3+ with full-scale skips and deep supervision, optional CGM; ~27.0M params at width 64."""
    return UNet3Plus(in_channels, out_channels, width, deep_supervision, cgm)
