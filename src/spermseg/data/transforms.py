"""Image normalization and data augmentation of the paper (Section 5, Fig. 8), on batched tensors.

Normalization (per image, over all its pixels and channels; ``eps = 1e-6``):

* ``none``:   ``y = x`` (x in [0, 1]).
* ``mean``:   ``y = x - mean(x)``, so the homogeneous background sits near 0 whatever the illumination.
* ``minmax``: ``z = x - mean(x)``; ``y = z / max(|z|)``, so ``y`` lies in [-1, 1], the mean maps to 0 and the
  pixel farthest from the mean to exactly +1 or -1 (the "range extension" after mean subtraction of Fig. 8;
  it stretches the contrast of dim and bright images alike). A constant image (``max|z| < eps``) maps to 0.

Augmentation (:class:`Augmenter`), each operation applied to each image independently with probability ``p``
(0.5, as in the paper), in this order:

1. horizontal flip, 2. vertical flip (exact, no interpolation);
3. rotation by an angle uniform in [-rotation_degrees, rotation_degrees] (default 180: any orientation) and
   4. zoom by a scale log-uniform in [0.67, 1/0.67] (> 1 zooms in), combined into one affine warp about the image
   centre (bilinear; outside pixels are filled by reflection, for the image and the masks alike, so they still
   line up). Masks are warped as floats and re-binarized at 0.5;
5. Gaussian blur of the image with a kernel size k drawn uniformly from the integers in [2, 10]; sigma follows
   OpenCV's rule ``sigma = 0.3 * ((k - 1) / 2 - 1) + 0.8`` (0.65 for k=2 ... 1.85 for k=10) and the applied
   kernel has odd size k + 1 when k is even (an even kernel has no centre pixel and would shift the image by
   half a pixel); reflect padding;
6. contrast change by a factor c uniform in [1 - 0.2, 1 + 0.2] about the image mean: ``x = (x - mean) c + mean``;
7. brightness change by a factor b uniform in [1 - 0.3, 1 + 0.3]: ``x = x b`` (relative, so +-30% means 30% of
   the image's own brightness);
then the image is clipped to [0, 1]. Photometric operations (5-7) never touch the masks.

With ``normalization`` given, the Augmenter also normalizes, and it takes the normalization's statistics (mean,
``max|x - mean|``) from the image *before* contrast and brightness: per-image normalization of the changed image
would undo both exactly (a linear change about the mean is removed by mean subtraction and range extension), so
the network would never see them. Measured against the unchanged image's statistics, a contrast change c scales
the normalized image by c and a brightness change b adds ``(b - 1) mean / scale``; every normalization thus gets
the same, visible augmentation (paper Fig. 9 compares normalizations under one augmentation).

All random numbers come from the ``torch.Generator`` passed to the call (drawn on the generator's device,
normally the CPU), and the same number of values is drawn whatever is applied, so a seed reproduces the same
augmentation on CPU and GPU. Augment [0, 1] images and normalize in the same call (``normalization=``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from spermseg.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

NORMALIZATIONS: tuple[str, ...] = ("none", "mean", "minmax")
#: Augmentation operations, in the order they are applied.
AUGMENT_OPS: tuple[str, ...] = ("hflip", "vflip", "rotate", "zoom", "blur", "contrast", "brightness")
_EPS = 1e-6


def normalize(x: Any, mode: str, valid: Any = None) -> Any:
    """Normalize images per image (see the module docstring for the formulas).

    Args:
        x: torch tensor (B, C, H, W), or numpy array (H, W) or (N, H, W), float in [0, 1].
        mode: one of :data:`NORMALIZATIONS`.
        valid: optional torch tensor (B, 1, H, W) of 0/1: the statistics (mean, max |x - mean|) use only these
            pixels. Used when an image was padded before normalization (ONNX export), so that padding does not
            change the result.

    Returns:
        Same type, shape and device as ``x`` (float32 for numpy); ``none`` returns ``x`` unchanged.

    Raises:
        ConfigError: unknown mode or unsupported shape.
    """
    if mode not in NORMALIZATIONS:
        raise ConfigError(f"unknown normalization '{mode}'; valid: {', '.join(NORMALIZATIONS)}")
    if isinstance(x, np.ndarray):
        if x.ndim not in (2, 3):
            raise ConfigError(f"normalize expects a numpy (H, W) or (N, H, W) array, got shape {x.shape}")
        if mode == "none":
            return x
        axes = (-2, -1)
        z = x.astype(np.float32) - x.mean(axis=axes, keepdims=True, dtype=np.float64).astype(np.float32)
        if mode == "mean":
            return z
        scale = np.abs(z).max(axis=axes, keepdims=True)
        return np.where(scale > _EPS, z / np.maximum(scale, _EPS), np.float32(0.0)).astype(np.float32)
    if getattr(x, "ndim", None) != 4:
        raise ConfigError(f"normalize expects a torch tensor (B, C, H, W), got shape {tuple(getattr(x, 'shape', ()))}")
    if mode == "none":
        return x
    return apply_normalization(x, *normalization_stats(x, mode, valid))


def normalization_stats(x: torch.Tensor, mode: str, valid: Any = None) -> tuple[Any, Any]:
    """Per-image ``(offset, scale)`` of a normalization, so that ``y = (x - offset) / scale``.

    Args:
        x: (B, C, H, W) float images.
        mode: one of :data:`NORMALIZATIONS`.
        valid: optional (B, 1, H, W) 0/1 map of the pixels that count (see :func:`normalize`).

    Returns:
        ``(offset, scale)``, each (B, 1, 1, 1) tensors or ``None`` (no offset / unit scale). A scale of 0 marks a
        constant image (normalized to 0).
    """
    if mode not in NORMALIZATIONS:
        raise ConfigError(f"unknown normalization '{mode}'; valid: {', '.join(NORMALIZATIONS)}")
    if mode == "none":
        return None, None
    dims = (1, 2, 3)
    if valid is None:
        offset = x.mean(dim=dims, keepdim=True)
    else:
        count = (valid * x.new_ones(x.shape)).sum(dim=dims, keepdim=True).clamp_min(1.0)
        offset = (x * valid).sum(dim=dims, keepdim=True) / count
    if mode == "mean":
        return offset, None
    z = (x - offset).abs()
    scale = (z if valid is None else z * valid).amax(dim=dims, keepdim=True)
    return offset, scale


def apply_normalization(x: torch.Tensor, offset: Any, scale: Any) -> torch.Tensor:
    """``(x - offset) / scale`` with the statistics of :func:`normalization_stats` (possibly of another image)."""
    if offset is not None:
        x = x - offset
    if scale is not None:
        x = (x / scale.clamp_min(_EPS)) * (scale > _EPS)
    return x


@dataclass
class AugmentConfig:
    """Augmentation settings (defaults: the paper's).

    Attributes:
        enabled: master switch.
        p: probability of each operation, per image.
        ops: operations to use (subset of :data:`AUGMENT_OPS`; their order of application is fixed).
        rotation_degrees: maximum absolute rotation angle.
        zoom: (min, max) scale; sampled log-uniformly so zooming in and out are equally likely.
        blur_kernel: (min, max) Gaussian kernel size, integers, inclusive.
        contrast: maximum relative contrast change (0.2 = +-20%).
        brightness: maximum relative brightness change (0.3 = +-30%).
        padding_mode: how warped images and masks are filled outside the input: ``reflection``, ``border`` or
            ``zeros`` (the same mode for image and masks, so they stay aligned).
    """

    enabled: bool = True
    p: float = 0.5
    ops: tuple[str, ...] = AUGMENT_OPS
    rotation_degrees: float = 180.0
    zoom: tuple[float, float] = (0.67, 1 / 0.67)
    blur_kernel: tuple[int, int] = (2, 10)
    contrast: float = 0.2
    brightness: float = 0.3
    padding_mode: str = "reflection"

    def validate(self) -> None:
        """Raise ConfigError on inconsistent values."""
        unknown = [o for o in self.ops if o not in AUGMENT_OPS]
        if unknown:
            raise ConfigError(f"unknown augmentation ops {unknown}; valid: {', '.join(AUGMENT_OPS)}")
        if not 0.0 <= self.p <= 1.0:
            raise ConfigError(f"augment.p must be in [0, 1], got {self.p}")
        if len(self.zoom) != 2 or not 0 < self.zoom[0] <= self.zoom[1]:
            raise ConfigError(f"augment.zoom must be (min, max) with 0 < min <= max, got {self.zoom}")
        if len(self.blur_kernel) != 2 or not 1 <= self.blur_kernel[0] <= self.blur_kernel[1]:
            raise ConfigError(f"augment.blur_kernel must be (min, max) with 1 <= min <= max, got {self.blur_kernel}")
        if not 0 <= self.contrast < 1 or not 0 <= self.brightness < 1:
            raise ConfigError("augment.contrast and augment.brightness must be in [0, 1)")
        if self.padding_mode not in ("reflection", "border", "zeros"):
            raise ConfigError(f"augment.padding_mode must be reflection, border or zeros, got {self.padding_mode}")


def blur_sigma(k: Any) -> Any:
    """Gaussian sigma for a nominal kernel size ``k`` (OpenCV's ``getGaussianKernel`` rule).

    The one sigma rule of the package: augmentation blur and the blur-robustness protocol both use it. ``k`` may be
    a number or a tensor/array of sizes (elementwise).
    """
    return 0.3 * ((k - 1) * 0.5 - 1) + 0.8


def gaussian_kernels(sizes: torch.Tensor, radius: int) -> torch.Tensor:
    """1-D normalized Gaussian kernels of length ``2 radius + 1`` for nominal sizes ``sizes`` (B,).

    A nominal size k has support k (odd) or k + 1 (even); taps beyond that support are zero.

    Returns:
        (B, 2 radius + 1) float32 kernels, each summing to 1.
    """
    import torch

    sigma = blur_sigma(sizes.to(torch.float32))
    half = torch.div(sizes, 2, rounding_mode="floor")  # k odd: (k-1)/2; k even: k/2 (kernel k + 1)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=sizes.device)
    w = torch.exp(-0.5 * (x[None, :] / sigma[:, None]) ** 2) * (x[None, :].abs() <= half[:, None])
    return w / w.sum(dim=1, keepdim=True)


class Augmenter:
    """Random augmentation of a batch of images with their masks (see the module docstring).

    Example:
        >>> aug = Augmenter(AugmentConfig())
        >>> g = torch.Generator().manual_seed(0)
        >>> images, masks = aug(images, masks, g)   # (B, 1, H, W) in [0, 1], (B, K, H, W) in {0, 1}
    """

    def __init__(self, cfg: AugmentConfig | None = None) -> None:
        self.cfg = cfg or AugmentConfig()
        self.cfg.validate()

    def __call__(
        self,
        images: torch.Tensor,
        masks: torch.Tensor | None,
        generator: torch.Generator,
        normalization: str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Augment a batch (and normalize it, when ``normalization`` is given).

        Args:
            images: (B, C, H, W) float images in [0, 1] (C = 1 for gray), any device.
            masks: (B, K, H, W) float masks in {0, 1} (K = number of rater/part masks), or ``None``. They
                get exactly the geometric transform of their image and are re-binarized at 0.5.
            generator: source of randomness (any device; values are moved to the images' device).
            normalization: None returns augmented [0, 1] images; a mode of :data:`NORMALIZATIONS` returns them
                normalized with the statistics of the image before contrast and brightness (module docstring).

        Returns:
            ``(images, masks)`` with the same shapes, dtypes and device; masks contain only 0 and 1.
        """
        import torch

        if images.ndim != 4:
            raise ConfigError(f"Augmenter expects images (B, C, H, W), got shape {tuple(images.shape)}")
        if masks is not None and (
            masks.ndim != 4 or masks.shape[0] != images.shape[0] or masks.shape[2:] != images.shape[2:]
        ):
            raise ConfigError(
                f"Augmenter expects masks (B, K, H, W) matching images {tuple(images.shape)}, got {tuple(masks.shape)}"
            )
        cfg = self.cfg
        b = images.shape[0]
        # Draw every random number up front, in a fixed order and amount: reproducible whatever gets applied.
        gdev = generator.device
        apply = torch.rand(len(AUGMENT_OPS), b, generator=generator, device=gdev) < cfg.p
        u = torch.rand(5, b, generator=generator, device=gdev, dtype=torch.float64)
        lo_k, hi_k = cfg.blur_kernel
        ksize = torch.randint(lo_k, hi_k + 1, (b,), generator=generator, device=gdev)
        if not cfg.enabled or b == 0:
            return (images if normalization is None else normalize(images, normalization)), masks
        on = {op: apply[i].cpu() & (op in cfg.ops) for i, op in enumerate(AUGMENT_OPS)}
        u = u.cpu()
        angle = (2 * u[0] - 1) * math.radians(cfg.rotation_degrees)
        log_lo, log_hi = math.log(cfg.zoom[0]), math.log(cfg.zoom[1])
        scale = torch.exp(log_lo + (log_hi - log_lo) * u[1])
        contrast = 1 + (2 * u[2] - 1) * cfg.contrast
        brightness = 1 + (2 * u[3] - 1) * cfg.brightness

        import torch.nn.functional as F

        dev = images.device
        h, w = images.shape[2], images.shape[3]
        # Work on copies; image and masks get the same geometric parameters but separate (cheaper) calls, so no
        # concatenated tensor is built. Masks are only touched where a geometric op applies.
        img = images.clone()
        out_masks = None if masks is None else masks.clone()
        # 1-2. flips: exact index reversal
        for op, dim in (("hflip", 3), ("vflip", 2)):
            idx = on[op].nonzero().flatten().to(dev)
            if idx.numel():
                img[idx] = img[idx].flip(dim)
                if out_masks is not None:
                    out_masks[idx] = out_masks[idx].flip(dim)
        # 3-4. rotation and zoom: one affine warp for the samples that get either
        rot, zoom = on["rotate"], on["zoom"]
        warp = (rot | zoom).nonzero().flatten()
        if warp.numel():
            theta = _affine_theta(
                torch.where(rot, angle, torch.zeros_like(angle))[warp],
                torch.where(zoom, scale, torch.ones_like(scale))[warp],
                height=h,
                width=w,
            ).to(device=dev, dtype=img.dtype if img.is_floating_point() else torch.float32)
            idx = warp.to(dev)
            grid = F.affine_grid(theta, [len(warp), 1, h, w], align_corners=False)
            kw = {"mode": "bilinear", "padding_mode": cfg.padding_mode, "align_corners": False}
            img[idx] = F.grid_sample(img[idx], grid.to(img.dtype), **kw)
            if out_masks is not None:
                warped = F.grid_sample(out_masks[idx].to(grid.dtype), grid, **kw)
                out_masks[idx] = (warped > 0.5).to(out_masks.dtype)  # re-binarize: masks stay {0, 1}
        # 5. Gaussian blur (image only)
        blur = on["blur"].nonzero().flatten()
        if blur.numel():
            idx = blur.to(dev)
            img[idx] = _blur(img[idx], ksize.cpu()[blur], radius=hi_k // 2)
        # 6-7. contrast about the image mean, then relative brightness, then clip (only these can leave [0, 1]:
        # warps interpolate and the blur kernel is normalized and non-negative)
        stats = None if normalization is None else normalization_stats(img, normalization)
        sel = (on["contrast"] | on["brightness"]).nonzero().flatten()
        if sel.numel():
            c = torch.where(on["contrast"], contrast, torch.ones_like(contrast))[sel]
            br = torch.where(on["brightness"], brightness, torch.ones_like(brightness))[sel]
            c = c.to(device=dev, dtype=img.dtype).view(-1, 1, 1, 1)
            br = br.to(device=dev, dtype=img.dtype).view(-1, 1, 1, 1)
            idx = sel.to(dev)
            sub = img[idx]
            mean = sub.mean(dim=(1, 2, 3), keepdim=True)
            img[idx] = ((sub - mean) * c + mean).mul_(br).clamp_(0.0, 1.0)
        if stats is not None:
            img = apply_normalization(img, *stats)
        return img, out_masks


def _affine_theta(angle: torch.Tensor, scale: torch.Tensor, *, height: int, width: int) -> torch.Tensor:
    """(N, 2, 3) ``affine_grid`` matrices: rotate by ``angle`` (radians) and zoom by ``scale`` about the centre.

    ``affine_grid`` maps output to input coordinates normalized to [-1, 1] per axis. A rotation in pixel space
    becomes, in those coordinates, ``[[c, -s H/W], [s W/H, c]] / scale`` (the aspect ratio terms keep the
    rotation rigid on non-square images); dividing by ``scale`` makes ``scale > 1`` magnify (zoom in).
    """
    import torch

    c, s = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(len(angle), 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = c / scale
    theta[:, 0, 1] = -s * (height / width) / scale
    theta[:, 1, 0] = s * (width / height) / scale
    theta[:, 1, 1] = c / scale
    return theta


def _blur(img: torch.Tensor, sizes: torch.Tensor, *, radius: int) -> torch.Tensor:
    """Separable Gaussian blur with one kernel per sample (reflect padding). img (N, C, H, W)."""
    import torch.nn.functional as F

    n, ch, h, w = img.shape
    radius = max(1, min(radius, h - 1, w - 1))  # reflect padding needs radius < size
    k = gaussian_kernels(sizes, radius).to(device=img.device, dtype=img.dtype)  # (N, 2r+1)
    weight = k.repeat_interleave(ch, dim=0)  # (N*C, 2r+1): one kernel per (sample, channel)
    x = img.reshape(1, n * ch, h, w)
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, weight.view(n * ch, 1, 1, -1), groups=n * ch)
    x = F.conv2d(x, weight.view(n * ch, 1, -1, 1), groups=n * ch)
    return x.reshape(n, ch, h, w)


GEOMETRIC_OPS = ("hflip", "vflip", "rotate", "zoom")


def augment_batch(
    augmenter: Any,
    images: torch.Tensor,
    target: torch.Tensor,
    masks: torch.Tensor | None,
    gen: torch.Generator,
    normalization: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Apply the data layer's augmentation to images, target and (for ensembles) the input soft masks together.

    The :class:`~spermseg.data.transforms.Augmenter` moves binary masks with their image and re-binarizes them,
    which would destroy soft masks. So soft masks get a second pass of a geometric-only Augmenter from the same
    generator state: the Augmenter draws the same random numbers whatever operations are enabled (documented), so
    both passes apply the identical flips, rotation and zoom, and the soft masks keep their values (bilinear
    resampling, no blur, contrast or brightness).

    Args:
        augmenter: the run's Augmenter.
        images: (B, 1, H, W) float in [0, 1].
        target: (B, 1, H, W) float {0, 1}.
        masks: (B, n, H, W) float soft masks in [0, 1], or None.
        gen: CPU generator; advanced exactly as one Augmenter call advances it.
        normalization: when given, the images come back normalized (see the Augmenter).

    Returns:
        ``(images, target, masks)`` augmented, same shapes.
    """
    import dataclasses

    if masks is None:
        images, target = augmenter(images, target, gen, normalization)
        return images, target, None
    state = gen.get_state()
    images, target = augmenter(images, target, gen, normalization)
    geo_cfg = dataclasses.replace(augmenter.cfg, ops=tuple(o for o in augmenter.cfg.ops if o in GEOMETRIC_OPS))
    replay = type(gen)(device=gen.device)
    replay.set_state(state)
    masks, _ = type(augmenter)(geo_cfg)(masks, None, replay)
    return images, target, masks
