"""The paper's ensembling networks (Section 4, Fig. 4-5, Table 3) and their deep-supervision loss (Eq. 2-3).

An ensembling network maps an image I (B, C, H, W) and n soft masks S_1..S_n of base models (B, n, H, W) in
[0, 1] to the logits of the fused mask (B, 1, H, W). Kinds (the rows of Table 3):

* ``avg`` (Avg, S): ``logit(mean_i S_i)``, clamped to [eps, 1 - eps]; no parameters, nothing to train.
* ``ens_s`` (Ensemble, S): a single-branch FPN on the stacked masks.
* ``ens_is`` (Ensemble, I+S): a single-branch FPN on the image concatenated with the masks.
* ``ens_concat`` (Ensemble+concat, I,S): two encoder branches (image; masks) with the same structure, their
  features concatenated at every pyramid level.
* ``ens_att_v1`` (EnsembleAttV1, I,S): cross-attention V1 (Fig. 5a) at every level: CBAM channel and spatial
  attention computed from each branch re-weights the other branch; both re-weighted branches are concatenated.
* ``ens_att_v2`` (EnsembleAttV2, I,S): cross-attention V2 (Fig. 5b): channel and spatial attention computed from
  the mask branch refine the image branch; the channel-attention output is also added to the top-down path.

Architecture of the trainable kinds (the FPN backbone of Fig. 4): per branch a bottom-up path of ``levels``
pyramid levels (3 in the paper), each halving the resolution of the previous one, built from residual blocks
(:class:`~spermseg.models.blocks.ResidualBlock`); per level the fusion above; an FPN top-down path with lateral
1x1 connections; per level two 3x3 convolutions; all levels upsampled to the input size and concatenated; a 3x3
convolution and a 1x1 convolution give the logits. Each level also has its own 1x1 logit head: in training mode
the network returns ``(logits, [aux_1, ..., aux_levels])`` for the deep-supervision loss of Eq. (3).

Design choices the paper leaves open (documented here, not hidden):

* The finest pyramid level has the input resolution (levels at strides 1, 2, 4): sperm tails are 1-3 pixels
  wide, and a head whose finest level is at stride 2 or 4 blurs them, which would defeat ensembling masks that
  are already at full resolution. ``divisor`` is therefore ``2 ** (levels - 1)``.
* Branches are independent bottom-up paths; fusion happens on their outputs at each level (Fig. 4: "features
  from two branches are passed to the cross-attention module"), and the fused features feed the top-down path.
* The default ``width`` (52) gives about 3.95M parameters for the two-branch kinds (the paper: "4M parameters");
  the single-branch kinds are smaller (about 2.1M). :func:`parameter_counts` reports them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from spermseg.errors import ConfigError, DataError
from spermseg.models.blocks import (
    ChannelAttention,
    ConvNormAct,
    PyramidHead,
    ResidualBlock,
    SpatialAttention,
    TopDownPath,
    crop_to,
    pad_to_divisor,
    resize_to,
)

ENSEMBLE_KINDS: tuple[str, ...] = ("avg", "ens_s", "ens_is", "ens_concat", "ens_att_v1", "ens_att_v2")
TWO_BRANCH_KINDS: tuple[str, ...] = ("ens_concat", "ens_att_v1", "ens_att_v2")
DEFAULT_WIDTH = 52
# Keyword arguments of create_ensemble besides kind and n_masks, with their defaults.
ENSEMBLE_OPTIONS: dict[str, Any] = {
    "in_channels": 1,
    "width": DEFAULT_WIDTH,
    "levels": 3,
    "alphas": None,
    "mask_skip": False,
}
AVG_EPS = 1e-6


# --------------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------------


class PyramidEncoder(nn.Module):
    """One bottom-up branch: level 0 at the input resolution, every further level halves it.

    Level 0: a 3x3 ConvNormAct and a residual block; level s > 0: a stride-2 residual block and a residual block.

    Args:
        in_channels: input channels (image C, masks n, or C + n).
        channels: output channels per level, finest first.
    """

    def __init__(self, in_channels: int, channels: Sequence[int]) -> None:
        super().__init__()
        stages = [nn.Sequential(ConvNormAct(in_channels, channels[0]), ResidualBlock(channels[0], channels[0]))]
        for cin, cout in zip(channels[:-1], channels[1:]):
            stages.append(nn.Sequential(ResidualBlock(cin, cout, stride=2), ResidualBlock(cout, cout)))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, H, W) -> [(B, channels[s], H / 2**s, W / 2**s) for each level s]."""
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class CrossAttentionV1(nn.Module):
    """Cross-attention V1 (Fig. 5a): each branch is re-weighted by CBAM attention computed from the other.

    Channel step: ``a_c = a * Mc_m(m)`` and ``m_c = m * Mc_a(a)``; spatial step (CBAM order, on the
    channel-refined features): ``a_o = a_c * Ms_m(m_c)`` and ``m_o = m_c * Ms_a(a_c)``; output ``cat(a_o, m_o)``.

    Args:
        channels: channels of each branch at this level.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channel_from_image = ChannelAttention(channels)
        self.channel_from_masks = ChannelAttention(channels)
        self.spatial_from_image = SpatialAttention()
        self.spatial_from_masks = SpatialAttention()

    def forward(self, a: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, None]:
        """a: image features, m: mask features, both (B, c, h, w) -> ((B, 2c, h, w), None)."""
        a_c = a * self.channel_from_masks(m)
        m_c = m * self.channel_from_image(a)
        a_o = a_c * self.spatial_from_masks(m_c)
        m_o = m_c * self.spatial_from_image(a_c)
        return torch.cat([a_o, m_o], dim=1), None


class CrossAttentionV2(nn.Module):
    """Cross-attention V2 (Fig. 5b): attention from the mask branch refines the image branch.

    ``w = Mc(m)`` (channel weights from the masks); ``a_c = a * w`` is the channel-attention output, added (after
    a 1x1 projection to the pyramid channels) to the top-down path; the spatial attention, computed CBAM-style
    from the channel-refined mask features ``m * w``, gives the refined image features ``a_c * Ms(m * w)``,
    which feed the lateral connection.

    Args:
        channels: channels of each branch at this level.
        pyramid_channels: channels of the top-down path.
    """

    def __init__(self, channels: int, pyramid_channels: int) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels)
        self.spatial = SpatialAttention()
        self.to_top_down = nn.Conv2d(channels, pyramid_channels, 1)

    def forward(self, a: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """a, m (B, c, h, w) -> (refined image features (B, c, h, w), top-down addition (B, P, h, w))."""
        w = self.channel(m)
        a_c = a * w
        refined = a_c * self.spatial(m * w)
        return refined, self.to_top_down(a_c)


class AverageEnsemble(nn.Module):
    """``avg``: the mean of the soft masks, returned as a logit so that every ensemble outputs logits.

    Args:
        n_masks: number of soft masks.
        eps: the mean is clamped to [eps, 1 - eps] so that the logit stays finite.

    Forward: image (B, C, H, W) (unused), masks (B, n, H, W) -> logits (B, 1, H, W), in every mode (no
    parameters: there is nothing to supervise).
    """

    kind = "avg"

    def __init__(self, n_masks: int, eps: float = AVG_EPS) -> None:
        super().__init__()
        self.n_masks = n_masks
        self.eps = eps
        self.alphas: tuple[float, ...] = ()

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        _check_inputs(image, masks, None, self.n_masks)
        return torch.logit(masks.mean(dim=1, keepdim=True).clamp(self.eps, 1.0 - self.eps))


class PyramidEnsemble(nn.Module):
    """The trainable ensembling networks (``ens_s``, ``ens_is``, ``ens_concat``, ``ens_att_v1``, ``ens_att_v2``).

    Args:
        kind: one of the trainable :data:`ENSEMBLE_KINDS`.
        n_masks: number of soft masks n.
        in_channels: image channels C.
        width: channels of the finest level; level s has ``width * 2**s``; pyramid channels ``2 * width``,
            per-level head channels ``width``.
        levels: pyramid levels (3 in the paper).
        alphas: the per-scale weights alpha_s of Eq. (3) (kept on the model for the training loop; default 1).
        mask_skip: add ``logit(mean(masks))`` (the ``avg`` ensemble) to the output and start the last convolution
            at zero, so that the untrained network *is* ``avg`` and training learns a correction to it. Not in the
            paper (default off); on short training budgets the paper's network is still below its own inputs
            when training stops (docs/ensembling.md), with the skip it starts where ``avg`` is.

    Forward: image (B, C, H, W), masks (B, n, H, W) with any H, W -> logits (B, 1, H, W); in training mode
    ``(logits, [aux_s (B, 1, H, W) for each level s])`` where aux_s is the level-s logit map upsampled to the
    input size (Eq. 3's up-sampled estimate at scale s).
    """

    def __init__(
        self,
        kind: str,
        n_masks: int,
        in_channels: int = 1,
        width: int = DEFAULT_WIDTH,
        levels: int = 3,
        alphas: Sequence[float] | None = None,
        mask_skip: bool = False,
    ) -> None:
        super().__init__()
        self.kind, self.n_masks, self.in_channels, self.levels = kind, n_masks, in_channels, levels
        self.mask_skip = bool(mask_skip)
        self.divisor = 2 ** (levels - 1)
        self.alphas = check_alphas(alphas, levels)
        channels = [width * 2**s for s in range(levels)]
        pyramid_ch, seg_ch = 2 * width, width
        if kind == "ens_s":
            self.branches = nn.ModuleList([PyramidEncoder(n_masks, channels)])
        elif kind == "ens_is":
            self.branches = nn.ModuleList([PyramidEncoder(in_channels + n_masks, channels)])
        else:  # two branches with the same structure: image first, masks second
            self.branches = nn.ModuleList([PyramidEncoder(in_channels, channels), PyramidEncoder(n_masks, channels)])
        if kind == "ens_att_v1":
            self.fusions = nn.ModuleList(CrossAttentionV1(c) for c in channels)
        elif kind == "ens_att_v2":
            self.fusions = nn.ModuleList(CrossAttentionV2(c, pyramid_ch) for c in channels)
        else:
            self.fusions = None
        fused = [2 * c for c in channels] if kind in ("ens_concat", "ens_att_v1") else channels
        self.top_down = TopDownPath(fused, pyramid_ch)
        self.head = PyramidHead(pyramid_ch, seg_ch, levels, merge="cat")
        self.aux_heads = nn.ModuleList(nn.Conv2d(seg_ch, 1, 1) for _ in range(levels))
        self.final = nn.Sequential(ConvNormAct(self.head.out_channels, seg_ch), nn.Conv2d(seg_ch, 1, 1))
        if self.mask_skip:
            nn.init.zeros_(self.final[-1].weight)
            nn.init.zeros_(self.final[-1].bias)

    def _fuse(self, image: torch.Tensor, masks: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """Bottom-up paths and per-level fusion -> (lateral inputs per level, top-down additions or None)."""
        if self.kind == "ens_s":
            return self.branches[0](masks), None
        if self.kind == "ens_is":
            return self.branches[0](torch.cat([image, masks], dim=1)), None
        img_feats, mask_feats = self.branches[0](image), self.branches[1](masks)
        if self.fusions is None:  # ens_concat
            return [torch.cat([a, m], dim=1) for a, m in zip(img_feats, mask_feats)], None
        outs = [fusion(a, m) for fusion, a, m in zip(self.fusions, img_feats, mask_feats)]
        extras = [e for _, e in outs]
        return [f for f, _ in outs], (extras if extras[0] is not None else None)

    def forward(
        self, image: torch.Tensor, masks: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        _check_inputs(image, masks, self.in_channels, self.n_masks)
        image, box = pad_to_divisor(image, self.divisor)
        masks, _ = pad_to_divisor(masks, self.divisor)
        size = image.shape[-2:]
        feats, extras = self._fuse(image, masks)
        pyramid = self.top_down(feats, extras)
        merged, per_level = self.head(pyramid, size)
        logits = self.final(merged)
        if self.mask_skip:
            logits = logits + torch.logit(masks.mean(dim=1, keepdim=True).clamp(AVG_EPS, 1.0 - AVG_EPS))
        logits = crop_to(logits, *box)
        if not self.training:
            return logits
        # Upsample each level's logits to the padded size and crop like the main output, so that the aux maps
        # are aligned with the target exactly (upsampling after cropping would shift them by the padding).
        aux = [crop_to(resize_to(head(f), size), *box) for head, f in zip(self.aux_heads, per_level)]
        return logits, aux


# --------------------------------------------------------------------------------------------------------------
# Factory, loss, helpers
# --------------------------------------------------------------------------------------------------------------


def create_ensemble(kind: str, n_masks: int, **kwargs: Any) -> nn.Module:
    """Build an ensembling network.

    Args:
        kind: one of :data:`ENSEMBLE_KINDS`.
        n_masks: number of soft masks n (>= 1).
        **kwargs: ``in_channels`` (1), ``width`` (52: about 4M parameters for the two-branch kinds), ``levels``
            (3), ``alphas`` (per-scale loss weights, ``levels`` positive numbers; default all 1), ``mask_skip``
            (False; start from ``avg``, see :class:`PyramidEnsemble`). ``avg`` accepts and ignores them.

    Returns:
        An ``nn.Module`` with ``forward(image, masks)``; attributes ``kind``, ``n_masks``, ``alphas``,
        ``spermseg_name`` (= kind) and ``spermseg_kwargs`` (the keyword arguments, for checkpoints).

    Raises:
        ConfigError: unknown kind or keyword (the message lists the valid ones), or an invalid value.
    """
    if kind not in ENSEMBLE_KINDS:
        raise ConfigError(f"unknown ensemble kind '{kind}'; valid kinds: {', '.join(ENSEMBLE_KINDS)}")
    unknown = sorted(set(kwargs) - set(ENSEMBLE_OPTIONS))
    if unknown:
        raise ConfigError(
            f"unknown argument(s) {', '.join(unknown)} for ensemble '{kind}'; valid: {', '.join(ENSEMBLE_OPTIONS)}"
        )
    if not isinstance(n_masks, int) or isinstance(n_masks, bool) or n_masks < 1:
        raise ConfigError(f"ensemble n_masks must be a positive integer, got {n_masks!r}")
    opts = {**ENSEMBLE_OPTIONS, **kwargs}
    for key in ("in_channels", "width", "levels"):
        if not isinstance(opts[key], int) or isinstance(opts[key], bool) or opts[key] < 1:
            raise ConfigError(f"ensemble {key} must be a positive integer, got {opts[key]!r}")
    if not isinstance(opts["mask_skip"], bool):
        raise ConfigError(f"ensemble mask_skip must be true or false, got {opts['mask_skip']!r}")
    if kind == "avg":
        model: nn.Module = AverageEnsemble(n_masks)
    else:
        model = PyramidEnsemble(kind, n_masks, **opts)
    model.spermseg_name = kind  # type: ignore[attr-defined]
    model.spermseg_kwargs = dict(kwargs)  # type: ignore[attr-defined]
    return model


def parameter_counts(n_masks: int = 3, **kwargs: Any) -> dict[str, int]:
    """Number of parameters of every ensemble kind, e.g. ``parameter_counts(3)`` -> ``{"avg": 0, ...}``."""
    return {
        kind: sum(p.numel() for p in create_ensemble(kind, n_masks, **kwargs).parameters()) for kind in ENSEMBLE_KINDS
    }


def check_alphas(alphas: Sequence[float] | None, n: int) -> tuple[float, ...]:
    """The per-scale deep-supervision weights: ``alphas`` as floats (default all 1), checked.

    Args:
        alphas: one weight per scale or None.
        n: the number of scales.

    Returns:
        ``n`` positive finite floats.

    Raises:
        ConfigError: wrong count, or a weight that is not positive and finite.
    """
    if alphas is None:
        return (1.0,) * n
    alphas = tuple(float(a) for a in alphas)
    if len(alphas) != n:
        raise ConfigError(f"expected {n} deep-supervision alphas (one per scale), got {len(alphas)}: {alphas}")
    if not all(math.isfinite(a) and a > 0 for a in alphas):
        raise ConfigError(f"deep-supervision alphas must be positive and finite (Eq. 3), got {alphas}")
    return alphas


def _check_inputs(image: torch.Tensor, masks: torch.Tensor, in_channels: int | None, n_masks: int) -> None:
    """Validate ensemble inputs: image (B, C, H, W), masks (B, n, H, W), same B, H, W."""
    if image.ndim != 4 or masks.ndim != 4:
        raise DataError(
            f"ensemble inputs must be 4-D (B, C, H, W); got image {tuple(image.shape)}, masks {tuple(masks.shape)}"
        )
    if masks.shape[1] != n_masks:
        raise DataError(
            f"this ensemble was built for {n_masks} soft mask(s) but got {masks.shape[1]}; "
            "pass the same base models as in training"
        )
    if in_channels is not None and image.shape[1] != in_channels:
        raise DataError(f"this ensemble expects {in_channels}-channel images, got {image.shape[1]}")
    if image.shape[0] != masks.shape[0] or image.shape[-2:] != masks.shape[-2:]:
        raise DataError(f"image {tuple(image.shape)} and masks {tuple(masks.shape)} differ in batch or size")
