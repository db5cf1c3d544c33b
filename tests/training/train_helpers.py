"""Helpers for the training-engine tests: a tiny synthetic dataset of dark lines on noisy backgrounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_lines_dataset(
    root: Path,
    *,
    n_groups: int = 4,
    per_group: int = 3,
    size: int = 64,
    seed: int = 0,
    splits: tuple[str, ...] = ("train",),
) -> Path:
    """Write a SegSperm-layout dataset: ``ROOT/SPLIT/images`` and ``ROOT/SPLIT/GT1_full`` (0/255 PNGs).

    Each image is a smooth illumination gradient with Gaussian noise and one to three dark, 2-pixel-wide
    straight segments; the mask marks the segments. Names ``v{g}_{frame}_1.png`` put each group's frames in one
    video, so validation splits by group.

    Args:
        root: where to write.
        n_groups: videos per split.
        per_group: frames per video.
        size: image side in pixels.
        seed: RNG seed.
        splits: split names to write.

    Returns:
        ``root``.
    """
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for split in splits:
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "GT1_full").mkdir(parents=True, exist_ok=True)
        for g in range(n_groups):
            for f in range(per_group):
                gx, gy = rng.uniform(-0.2, 0.2, 2)
                img = 0.55 + gx * (xx - 0.5) + gy * (yy - 0.5) + rng.normal(0, 0.04, (size, size))
                mask = np.zeros((size, size), np.uint8)
                for _ in range(int(rng.integers(1, 4))):
                    p0 = tuple(int(v) for v in rng.integers(4, size - 4, 2))
                    p1 = tuple(int(v) for v in rng.integers(4, size - 4, 2))
                    cv2.line(mask, p0, p1, 255, thickness=2)
                img = np.where(mask > 0, img - 0.25, img)
                img8 = np.clip(img * 255, 0, 255).astype(np.uint8)
                name = f"v{g}_{f:04d}_1.png"
                cv2.imwrite(str(root / split / "images" / name), img8)
                cv2.imwrite(str(root / split / "GT1_full" / name), mask)
    return root


def tiny_overrides(epochs: int = 2) -> list[str]:
    """``--set`` values for a fast CPU run of a width-4 U-Net on the lines dataset."""
    return [
        "model.name=unet",
        "model.width=4",
        f"schedule.epochs={epochs}",
        "schedule.batch_size=2",
        "schedule.steps_per_epoch=4",
        "data.crop=32",
        "schedule.milestones=[1]",
        "optim.lr=0.01",
        "validation.fraction=0.25",
        "runtime.device=cpu",
        "runtime.progress=false",
        "runtime.tensorboard=false",
    ]
