"""Training losses: BCE (the paper's), Dice + BCE, focal, positive-class weights, the thin-structure losses clDice and
Skeleton Recall, and deep supervision.

All losses take logits and a {0,1} float target of the same shape (B, K, H, W) and return a scalar mean. They are
computed in float32 even under bf16 autocast (the caller casts the logits), because the log-sigmoid of a bf16
logit loses the small probabilities that matter for thin tails.

Deep supervision (paper Eq. 3): a model that returns ``(logits, [aux, ...])`` in training mode is trained on the
alpha-weighted sum of the same loss over all outputs, each up-sampled to the target's size. Base models with
auxiliary outputs (e.g. ``unet3p``, ``unet_pp``) and the ensembling networks use the same function,
:func:`deep_supervision_loss`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from spermseg.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from spermseg.training.config import LossConfig

LOSSES = ("bce", "dice_bce", "focal", "cldice", "skeleton_recall")

LossFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]


def bce_loss(logits: torch.Tensor, target: torch.Tensor, pos_weight: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy on logits, optionally weighting positive pixels (class weighting 1:pos_weight).

    Args:
        logits: (B, K, H, W) raw scores.
        target: (B, K, H, W) float in {0, 1} (soft targets in [0, 1] also work).
        pos_weight: weight of the positive class; 1 is plain BCE, the paper also tried 2, 3 and 5.

    Returns:
        Scalar mean loss.
    """
    import torch
    import torch.nn.functional as F

    weight = None
    if pos_weight != 1.0:
        weight = torch.tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per image and channel, averaged; ``eps`` keeps empty masks from dividing by zero.

    Args:
        logits: (B, K, H, W) raw scores.
        target: (B, K, H, W) float in [0, 1].
        eps: additive smoothing of numerator and denominator (in pixels).
    """
    import torch

    prob = torch.sigmoid(logits)
    dims = (-2, -1)
    inter = (prob * target).sum(dims)
    total = prob.sum(dims) + target.sum(dims)
    return (1.0 - (2.0 * inter + eps) / (total + eps)).mean()


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float | None = None, pos_weight: float = 1.0
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): BCE scaled by (1 - p_t)^gamma, optional alpha balancing.

    Args:
        logits: (B, K, H, W) raw scores.
        target: (B, K, H, W) float in {0, 1}.
        gamma: focusing parameter; 0 gives (weighted) BCE.
        alpha: weight of the positive class in (0, 1) (negatives get 1 - alpha); None disables it.
        pos_weight: extra weight of positive pixels, as for :func:`bce_loss`.
    """
    import torch
    import torch.nn.functional as F

    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    prob = torch.sigmoid(logits)
    p_t = prob * target + (1.0 - prob) * (1.0 - target)
    loss = ce * (1.0 - p_t).pow(gamma)
    if alpha is not None:
        loss = loss * (alpha * target + (1.0 - alpha) * (1.0 - target))
    if pos_weight != 1.0:
        loss = loss * (1.0 + (pos_weight - 1.0) * target)
    return loss.mean()


def soft_skeleton(prob: torch.Tensor, iterations: int) -> torch.Tensor:
    """Differentiable soft skeleton of a probability map (Shit et al., clDice, CVPR 2021, Algorithm 1).

    Iterated soft erosion (min-pooling as ``-maxpool(-x)``, a 3x3 cross) and soft opening; what each erosion step
    removes that its opening does not restore is added to the skeleton. ``iterations`` should reach the largest
    half-width of the structures (sperm tails: 2-3 px; heads are thicker but their skeleton only needs a few).

    Args:
        prob: (B, K, H, W) values in [0, 1].
        iterations: number of erosion steps (>= 1).

    Returns:
        (B, K, H, W) soft skeleton in [0, 1].
    """
    import torch
    import torch.nn.functional as F

    def erode(x: torch.Tensor) -> torch.Tensor:
        p1 = -F.max_pool2d(-x, (3, 1), stride=1, padding=(1, 0))
        p2 = -F.max_pool2d(-x, (1, 3), stride=1, padding=(0, 1))
        return torch.minimum(p1, p2)

    def dilate(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, 3, stride=1, padding=1)

    skel = F.relu(prob - dilate(erode(prob)))
    x = prob
    for _ in range(iterations):
        x = erode(x)
        delta = F.relu(x - dilate(erode(x)))
        skel = skel + F.relu(delta - skel * delta)
    return skel


def cldice_loss(logits: torch.Tensor, target: torch.Tensor, iterations: int = 5, eps: float = 1.0) -> torch.Tensor:
    """1 - clDice, the centreline Dice of Shit et al. (CVPR 2021), per image and channel, averaged.

    ``Tprec`` = share of the predicted soft skeleton inside the target, ``Tsens`` = share of the target's skeleton
    covered by the prediction; clDice is their harmonic mean. A tail predicted along its whole length but a pixel
    too thin scores well; a tail cut in two loses the skeleton between the pieces. ``eps`` smooths empty masks
    (both empty: loss 0).

    Args:
        logits: (B, K, H, W) raw scores.
        target: (B, K, H, W) float in {0, 1}.
        iterations: soft-skeleton erosion steps (:func:`soft_skeleton`).
        eps: additive smoothing (pixels).

    Returns:
        Scalar mean loss.
    """
    import torch

    prob = torch.sigmoid(logits)
    dims = (-2, -1)
    skel_pred = soft_skeleton(prob, iterations)
    skel_true = soft_skeleton(target, iterations)
    tprec = ((skel_pred * target).sum(dims) + eps) / (skel_pred.sum(dims) + eps)
    tsens = ((skel_true * prob).sum(dims) + eps) / (skel_true.sum(dims) + eps)
    return (1.0 - 2.0 * tprec * tsens / (tprec + tsens)).mean()


def tubed_skeleton(target: torch.Tensor) -> torch.Tensor:
    """The target's skeleton dilated by one pixel (Kirchhoff et al., Skeleton Recall, ECCV 2024), not differentiable.

    Computed with scikit-image's ``skeletonize`` on the CPU per image and channel (the target is already augmented,
    so the skeleton follows every rotation and zoom), then dilated with a 3x3 square ("tubed").

    Args:
        target: (B, K, H, W) float in {0, 1}, any device.

    Returns:
        (B, K, H, W) float {0, 1} on the target's device.
    """
    import numpy as np
    import torch
    from scipy import ndimage
    from skimage.morphology import skeletonize

    arr = target.detach().to("cpu", torch.float32).numpy() > 0.5
    out = np.zeros(arr.shape, dtype=np.float32)
    square = np.ones((3, 3), dtype=bool)
    for idx in np.ndindex(arr.shape[:2]):
        if arr[idx].any():
            out[idx] = ndimage.binary_dilation(skeletonize(arr[idx]), structure=square) & arr[idx]
    return torch.from_numpy(out).to(target.device)


def skeleton_recall_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft recall of the target's tubed skeleton (Kirchhoff et al., ECCV 2024), per image and channel.

    Only the skeleton counts, so missing a thin tail costs as much per unit length as missing a thick head, while
    pixels off the skeleton are left to the generic loss it is added to. An image without foreground gives 0.

    Args:
        logits: (B, K, H, W) raw scores.
        target: (B, K, H, W) float in {0, 1}.
        eps: additive smoothing (pixels).

    Returns:
        Scalar mean loss.
    """
    import torch

    prob = torch.sigmoid(logits)
    skel = tubed_skeleton(target)
    dims = (-2, -1)
    recall = ((prob * skel).sum(dims) + eps) / (skel.sum(dims) + eps)
    return (1.0 - recall).mean()


def build_loss(cfg: LossConfig) -> LossFn:
    """Return ``loss(logits, target) -> scalar`` for a :class:`~spermseg.training.config.LossConfig`.

    Raises:
        ConfigError: unknown loss name or invalid parameter.
    """
    if cfg.name not in LOSSES:
        raise ConfigError(f"unknown loss '{cfg.name}'; valid losses: {', '.join(LOSSES)}")
    if cfg.pos_weight <= 0:
        raise ConfigError(f"loss.pos_weight must be > 0, got {cfg.pos_weight}")
    alpha = cfg.focal_alpha if cfg.focal_alpha is not None and cfg.focal_alpha >= 0 else None
    if alpha is not None and not 0.0 < alpha < 1.0:
        raise ConfigError(f"loss.focal_alpha must be in (0, 1) or null, got {alpha}")

    if cfg.name == "bce":
        return lambda logits, target: bce_loss(logits, target, cfg.pos_weight)
    if cfg.cldice_iterations < 1:
        raise ConfigError(f"loss.cldice_iterations must be >= 1, got {cfg.cldice_iterations}")

    def dice_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return bce_loss(logits, target, cfg.pos_weight) + cfg.dice_weight * soft_dice_loss(logits, target)

    if cfg.name == "dice_bce":
        return dice_bce
    if cfg.name == "cldice":
        return lambda logits, target: (
            dice_bce(logits, target) + cfg.thin_weight * cldice_loss(logits, target, cfg.cldice_iterations)
        )
    if cfg.name == "skeleton_recall":
        return lambda logits, target: dice_bce(logits, target) + cfg.thin_weight * skeleton_recall_loss(logits, target)
    return lambda logits, target: focal_loss(logits, target, cfg.focal_gamma, alpha, cfg.pos_weight)


def deep_supervision_loss(
    logits: torch.Tensor,
    aux: Sequence[torch.Tensor],
    target: torch.Tensor,
    loss_fn: LossFn,
    alphas: Sequence[float] | None = None,
) -> torch.Tensor:
    """Alpha-weighted sum of ``loss_fn`` over the main output and the auxiliary outputs (paper Eq. 3).

    Each output is bilinearly up-sampled (as logits) to the target's size before the loss, which is the paper's
    "up-sampled estimate of a at scale s".

    Args:
        logits: (B, K, H, W) main output.
        aux: auxiliary logits, each (B, K, h, w) at any resolution; may be empty (then this is ``loss_fn``).
        target: (B, K, H, W) float target.
        loss_fn: per-output loss, e.g. from :func:`build_loss`.
        alphas: one weight per output, main first (``1 + len(aux)`` values). ``None`` or empty: 1 for every
            output. A single value is used for the main output and 1 for the others.

    Returns:
        Scalar loss.

    Raises:
        ConfigError: when a given alpha list has the wrong length.
    """
    from spermseg.models.blocks import resize_to

    outputs = [logits, *aux]
    weights = [1.0] * len(outputs) if not alphas else list(alphas)
    if len(weights) == 1 and len(outputs) > 1:
        weights = weights + [1.0] * (len(outputs) - 1)
    if len(weights) != len(outputs):
        raise ConfigError(
            f"loss.alphas has {len(weights)} values but the model returns {len(outputs)} outputs "
            f"(main + {len(aux)} auxiliary); set loss.alphas to {len(outputs)} values or leave it empty"
        )
    total = None
    size = target.shape[-2:]
    for weight, out in zip(weights, outputs):
        if weight == 0:
            continue
        term = weight * loss_fn(resize_to(out.float(), size), target)
        total = term if total is None else total + term
    if total is None:  # every weight zero: a valid (if useless) configuration; keep the graph connected
        total = logits.float().sum() * 0.0
    return total


def ensemble_loss(
    logits: torch.Tensor,
    aux: Sequence[torch.Tensor],
    target: torch.Tensor,
    alphas: Sequence[float] | None = None,
) -> torch.Tensor:
    """The ensembling networks' loss: BCE of the fused output plus the alpha-weighted per-scale terms of Eq. (2)-(3).

    ``loss = BCE(logits, y) + sum_s alpha_s * BCE(up(aux_s), y)``, each BCE averaged over pixels and batch (Eq. 2
    sums; the mean only rescales the learning rate), ``up`` bilinear upsampling of the aux logits to the target
    size (no-op when they already have it). Delegates to :func:`deep_supervision_loss`
    with ``alphas = (1, *alphas)``. Eq. (3) as printed lists only the scale terms; the fused output gets
    weight 1 besides, otherwise its final convolution would receive no gradient at all. With ``aux`` empty this
    is plain BCE, so the function serves every model.

    Args:
        logits: (B, K, H, W) final logits.
        aux: per-scale logits, each (B, K, h_s, w_s).
        target: (B, K, H, W) in [0, 1] (binary or soft).
        alphas: one weight per aux map, each in (0, inf); default all 1.

    Returns:
        Scalar loss tensor.

    Raises:
        ConfigError: when the number of alphas differs from the number of aux maps, or an alpha is not positive.
    """
    # One implementation of deep supervision: deep_supervision_loss, with BCE and the fused output's weight 1 first.
    from spermseg.models.ensemble import check_alphas

    weights = check_alphas(alphas, len(aux)) if aux else ()
    return deep_supervision_loss(logits, list(aux), target.to(logits.dtype), bce_loss, (1.0, *weights))


def parts_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    dice_weight: float = 1.0,
    eps: float = 1.0,
    foreground_weight: float = 0.0,
) -> torch.Tensor:
    """Multi-class loss of a part network: softmax cross-entropy + ``dice_weight`` x multi-class soft Dice
    (+ ``foreground_weight`` x binary cross-entropy of the whole sperm).

    The Dice term averages ``1 - Dice`` over the five foreground codes (pooled over the batch), so that the small
    parts (vacuoles, midpieces) weigh as much as the tail, which cross-entropy alone lets the background dominate.
    The foreground term scores ``1 - softmax[background]`` against "any part", as a binary network's loss does:
    cross-entropy asks a thin tail pixel for its own code, so a pixel torn between tail and midpiece can lose to
    the background and break the tail, though the network is sure it is sperm.

    Args:
        logits: (B, C, H, W) raw scores, C = 6 part codes.
        target: (B, 1, H, W) float or integer codes in 0..C-1.
        dice_weight: weight of the Dice term (0 = cross-entropy only).
        eps: smoothing of the Dice ratio.
        foreground_weight: weight of the whole-sperm binary cross-entropy (0 = off).
    """
    import torch
    import torch.nn.functional as F

    codes = target[:, 0].round().long()
    loss = F.cross_entropy(logits, codes)
    if foreground_weight > 0:
        # logit of the foreground: log(sum_k>0 exp z_k) - z_0 = log((1 - p_bg) / p_bg), stable for any scores
        fg_logit = torch.logsumexp(logits[:, 1:], dim=1) - logits[:, 0]
        loss = loss + foreground_weight * F.binary_cross_entropy_with_logits(fg_logit, (codes > 0).to(fg_logit.dtype))
    if dice_weight == 0:
        return loss
    prob = torch.softmax(logits, dim=1)[:, 1:]
    onehot = F.one_hot(codes, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].to(prob.dtype)
    inter = (prob * onehot).sum(dim=(0, 2, 3))
    denom = prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    dice = 1 - (2 * inter + eps) / (denom + eps)
    return loss + dice_weight * dice.mean()
