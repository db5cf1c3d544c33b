"""UCTransNet (Wang et al., AAAI 2022): U-Net skips replaced by a channel-wise transformer.

Design of the original (and its reference code): a U-Net encoder with base 64 channels (a single 3x3 conv at full
resolution, then four max-pool + two-conv levels, 64-128-256-512-512); the Channel-wise Cross-Fusion Transformer
(CCT) takes the four skip features, embeds each into tokens with a strided convolution whose patch size (16, 8, 4,
2) maps every level to the same token grid (1/16 of the input), adds learned position embeddings, and runs 4
layers of multi-head (4 heads) *channel-wise* cross attention: each level's channels query the concatenation of
all levels' channels (960 at base 64), with the score matrix (C_i x 960) instance-normalized before the softmax,
followed by a per-level MLP (expansion 4); tokens are reconstructed to feature maps (upsample by the patch size,
1x1 conv, BN, ReLU) and added to the skips. The decoder fuses each skip with the upsampled decoder features by
Channel-wise Cross Attention (CCA): global-average-pooled skip and decoder features each pass a linear layer, the
mean of the two, through a sigmoid, re-weights the skip channels. About 67.2M parameters at ``width=64``
(``img_size=512``; 66.4M with the reference code's 224, which only shrinks the position embeddings).

Input size: the reference code fixes the position embeddings to ``img_size`` at build time. Here the learned
embeddings live on a reference grid of ``img_size / 16`` per side and are bilinearly interpolated to the token grid
of the actual input (as ViT does when fine-tuned at another resolution), so any H, W works.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from spermseg.models.blocks import ConvNormAct, DoubleConv, SegmentationModel
from spermseg.models.registry import register_model


class ChannelEmbedding(nn.Module):
    """Patch embedding of one skip level into tokens of its channel dimension, plus position embeddings.

    Args:
        channels: channels C_i of the level (token dimension).
        patch_size: side of the patches (kernel = stride of the embedding convolution).
        ref_grid: side of the reference token grid of the learned position embeddings.
        dropout: embedding dropout (0.1 in the reference code).
    """

    def __init__(self, channels: int, patch_size: int, ref_grid: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.patch = nn.Conv2d(channels, channels, kernel_size=patch_size, stride=patch_size)
        self.position = nn.Parameter(torch.zeros(1, channels, ref_grid, ref_grid))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_i, H_i, W_i) -> tokens (B, N, C_i) with N = (H_i / patch) (W_i / patch)."""
        x = self.patch(x)
        pos = self.position
        if pos.shape[-2:] != x.shape[-2:]:  # any input size: resample the learned embeddings to this token grid
            pos = F.interpolate(pos, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.dropout((x + pos).flatten(2).transpose(1, 2))


class ChannelCrossAttention(nn.Module):
    """Multi-head channel-wise cross attention of the CCT (``Attention_org`` of the reference code).

    For level i, queries are its C_i channels, keys/values are the concatenated channels of all levels (KV):
    scores (B, heads, C_i, KV) = Q_i^T K / sqrt(KV), instance-normalized per head, softmax over KV; the context
    (B, heads, C_i, N) is averaged over heads and projected back to C_i.

    Args:
        channels: C_i of each level.
        heads: number of heads (4).
        dropout: attention dropout (0.1).
    """

    def __init__(self, channels: list[int], heads: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        kv = sum(channels)
        self.heads, self.kv = heads, kv
        self.query = nn.ModuleList(nn.Linear(c, c * heads, bias=False) for c in channels)
        self.key = nn.Linear(kv, kv * heads, bias=False)
        self.value = nn.Linear(kv, kv * heads, bias=False)
        self.norm = nn.InstanceNorm2d(heads)
        self.out = nn.ModuleList(nn.Linear(c, c, bias=False) for c in channels)
        self.attn_drop = nn.Dropout(dropout)
        self.proj_drop = nn.Dropout(dropout)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.heads, -1).permute(0, 2, 3, 1)  # (B, heads, D, N)

    def forward(self, tokens: list[torch.Tensor], all_tokens: torch.Tensor) -> list[torch.Tensor]:
        """tokens[i] (B, N, C_i), all_tokens (B, N, KV) -> list of (B, N, C_i)."""
        k = self._split(self.key(all_tokens))  # (B, h, KV, N)
        v = self._split(self.value(all_tokens))  # (B, h, KV, N)
        outs = []
        for t, query, out in zip(tokens, self.query, self.out):
            q = self._split(query(t))  # (B, h, C_i, N)
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.kv)  # (B, h, C_i, KV)
            probs = self.attn_drop(torch.softmax(self.norm(scores), dim=-1))
            context = torch.matmul(probs, v).mean(dim=1).transpose(1, 2)  # (B, N, C_i), mean over heads
            outs.append(self.proj_drop(out(context)))
        return outs


class CCTLayer(nn.Module):
    """One CCT layer: pre-norm channel cross attention and a per-level MLP, both residual.

    Args:
        channels: C_i of each level.
        heads: attention heads.
        expansion: MLP hidden size factor (4).
        dropout: attention dropout.
    """

    def __init__(self, channels: list[int], heads: int = 4, expansion: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        self.attn_norms = nn.ModuleList(nn.LayerNorm(c, eps=1e-6) for c in channels)
        self.all_norm = nn.LayerNorm(sum(channels), eps=1e-6)
        self.attn = ChannelCrossAttention(channels, heads, dropout)
        self.ffn_norms = nn.ModuleList(nn.LayerNorm(c, eps=1e-6) for c in channels)
        self.ffns = nn.ModuleList(
            nn.Sequential(nn.Linear(c, c * expansion), nn.GELU(), nn.Linear(c * expansion, c)) for c in channels
        )

    def forward(self, tokens: list[torch.Tensor]) -> list[torch.Tensor]:
        """list of (B, N, C_i) -> list of (B, N, C_i)."""
        all_tokens = self.all_norm(torch.cat(tokens, dim=2))
        attended = self.attn([norm(t) for norm, t in zip(self.attn_norms, tokens)], all_tokens)
        tokens = [t + a for t, a in zip(tokens, attended)]
        return [t + ffn(norm(t)) for t, norm, ffn in zip(tokens, self.ffn_norms, self.ffns)]


class ChannelTransformer(nn.Module):
    """CCT: embed the four skips on one token grid, transform jointly, reconstruct and add back to the skips.

    Args:
        channels: skip channels (64, 128, 256, 512 at base 64).
        patch_sizes: patch side per level (16, 8, 4, 2): all levels map to the same H/16 x W/16 grid.
        ref_grid: side of the reference grid of the learned position embeddings.
        layers, heads, expansion, dropout: transformer hyper-parameters (4, 4, 4, 0.1).
    """

    def __init__(
        self,
        channels: list[int],
        patch_sizes: tuple[int, ...] = (16, 8, 4, 2),
        ref_grid: int = 32,
        layers: int = 4,
        heads: int = 4,
        expansion: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.patch_sizes = patch_sizes
        self.embeddings = nn.ModuleList(
            ChannelEmbedding(c, p, ref_grid, dropout) for c, p in zip(channels, patch_sizes)
        )
        self.layers = nn.ModuleList(CCTLayer(channels, heads, expansion, dropout) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(c, eps=1e-6) for c in channels)
        self.reconstruct = nn.ModuleList(ConvNormAct(c, c, 1) for c in channels)

    def forward(self, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        """skips[i] (B, C_i, H/2^i, W/2^i) -> same shapes, skip + reconstructed transformer output."""
        gh, gw = skips[0].shape[-2] // self.patch_sizes[0], skips[0].shape[-1] // self.patch_sizes[0]
        tokens = [emb(s) for emb, s in zip(self.embeddings, skips)]
        for layer in self.layers:
            tokens = layer(tokens)
        out = []
        for t, norm, rec, s, p in zip(tokens, self.norms, self.reconstruct, skips, self.patch_sizes):
            fmap = norm(t).transpose(1, 2).reshape(t.shape[0], -1, gh, gw)
            out.append(rec(F.interpolate(fmap, scale_factor=float(p), mode="nearest")) + s)
        return out


class ChannelCrossAttentionGate(nn.Module):
    """CCA of the decoder: re-weight the skip channels by sigmoid(mean(Linear(gap(skip)), Linear(gap(decoder)))).

    Args:
        skip_channels: channels of the skip (F_x).
        gate_channels: channels of the upsampled decoder features (F_g).
    """

    def __init__(self, skip_channels: int, gate_channels: int) -> None:
        super().__init__()
        self.mlp_x = nn.Linear(skip_channels, skip_channels)
        self.mlp_g = nn.Linear(gate_channels, skip_channels)

    def forward(self, gate: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """gate (B, F_g, H, W), skip (B, F_x, H, W) -> re-weighted skip (B, F_x, H, W), ReLU applied."""
        att = (self.mlp_x(skip.mean(dim=(2, 3))) + self.mlp_g(gate.mean(dim=(2, 3)))) / 2.0
        return F.relu(skip * torch.sigmoid(att)[:, :, None, None])


class UpCCA(nn.Module):
    """Decoder stage: nearest x2 upsampling, CCA on the skip, concatenation, two 3x3 convolutions."""

    def __init__(self, cin: int, skip: int, cout: int) -> None:
        super().__init__()
        self.cca = ChannelCrossAttentionGate(skip, cin)
        self.convs = DoubleConv(cin + skip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """x (B, cin, h, w), skip (B, skip, 2h, 2w) -> (B, cout, 2h, 2w)."""
        up = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.convs(torch.cat([self.cca(up, skip), up], dim=1))


class UCTransNet(SegmentationModel):
    """UCTransNet; ``divisor`` 16 (four poolings; the largest patch is 16).

    Args:
        in_channels: input channels C.
        out_channels: output logit channels K.
        width: base channels (64); levels ``width * (1, 2, 4, 8, 8)``.
        img_size: size whose token grid (``img_size / 16``) holds the learned position embeddings (the paper's
            512x512 images by default); other input sizes interpolate them.
        layers: CCT layers (4).
        heads: attention heads (4).

    Forward: (B, C, H, W) -> logits (B, K, H, W).
    """

    divisor = 16

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        width: int = 64,
        img_size: int = 512,
        layers: int = 4,
        heads: int = 4,
    ) -> None:
        super().__init__()
        ch = [width, 2 * width, 4 * width, 8 * width, 8 * width]
        self.inc = ConvNormAct(in_channels, ch[0])  # a single convolution at full resolution, as in the original
        self.downs = nn.ModuleList(nn.Sequential(nn.MaxPool2d(2), DoubleConv(ch[i], ch[i + 1])) for i in range(4))
        self.cct = ChannelTransformer(ch[:4], ref_grid=max(img_size // 16, 1), layers=layers, heads=heads)
        # up4: 8w (from x5) + 8w skip -> 4w; up3: 4w + 4w -> 2w; up2: 2w + 2w -> w; up1: w + w -> w.
        self.ups = nn.ModuleList(
            [
                UpCCA(ch[4], ch[3], ch[2]),
                UpCCA(ch[2], ch[2], ch[1]),
                UpCCA(ch[1], ch[1], ch[0]),
                UpCCA(ch[0], ch[0], ch[0]),
            ]
        )
        self.classifier = nn.Conv2d(ch[0], out_channels, 1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        feats = [self.inc(x)]
        for down in self.downs:
            feats.append(down(feats[-1]))
        skips = self.cct(feats[:4])
        y = feats[4]
        for up, skip in zip(self.ups, reversed(skips)):
            y = up(y, skip)
        return self.classifier(y)


@register_model("uctransnet")
def uctransnet(
    in_channels: int = 1,
    out_channels: int = 1,
    width: int = 64,
    img_size: int = 512,
    layers: int = 4,
    heads: int = 4,
) -> UCTransNet:
    """UCTransNet: U-Net with a channel-wise cross-fusion transformer on the skips and channel cross attention."""
    return UCTransNet(in_channels, out_channels, width, img_size, layers, heads)
