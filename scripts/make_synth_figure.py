"""Make ``docs/figures/synth_examples.png``: generated frames beside their truth and the three raters.

Usage: ``.venv/bin/python scripts/make_synth_figure.py [--out docs/figures/synth_examples.png] [--seed 3]``.

Each row is one generated 512 x 512 frame (default ``SynthConfig``); columns: the image, a 2.7x zoom on its
first sperm, the exact truth, and raters GT1-GT3 (head red, tail cyan). The row label gives the full-sperm IoU
between the raters, measured on that frame.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from spermseg.data.synth.render import Frame

ROOT = Path(__file__).resolve().parents[1]


def colour(masks: dict[str, np.ndarray]) -> np.ndarray:
    """(H, W, 3) float image: head red, tail cyan, on black."""
    out = np.zeros((*masks["full"].shape, 3), dtype=np.float32)
    out[masks["tail"]] = (0.3, 0.85, 1.0)
    out[masks["head"]] = (1.0, 0.3, 0.3)
    return out


def zoom_box(frame: Frame, size: int = 192) -> tuple[slice, slice]:
    """A square window around the first sperm head inside the frame (or the frame centre)."""
    h, w = frame.image.shape
    heads = [fp.pose.head_center for fp in frame.sperm if fp.head_inside]
    cx, cy = (int(heads[0][0]), int(heads[0][1])) if heads else (w // 2, h // 2)
    y0 = int(np.clip(cy - size // 2, 0, max(h - size, 0)))
    x0 = int(np.clip(cx - size // 2, 0, max(w - size, 0)))
    return slice(y0, y0 + size), slice(x0, x0 + size)


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spermseg.data.synth import SynthConfig
    from spermseg.data.synth.dataset import rater_masks, render_item, scene_for, video_frames
    from spermseg.utils.atomic import atomic_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures" / "synth_examples.png")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--rows", type=int, default=4)
    args = parser.parse_args(argv)

    cfg = SynthConfig()
    cols = ["image", "zoom (2.7x)", "truth", "GT1", "GT2", "GT3"]
    fig, axes = plt.subplots(args.rows, len(cols), figsize=(2.6 * len(cols), 2.6 * args.rows), squeeze=False)
    for row in range(args.rows):
        video = row + 1
        scene = scene_for(cfg, args.seed, video)
        frame_idx = video_frames(cfg, args.seed, video, 1)[0]
        frame = render_item(cfg, scene, args.seed, video, frame_idx)
        raters = rater_masks(cfg, frame, args.seed, video, frame_idx, 3)
        zy, zx = zoom_box(frame)
        panels = [frame.image, frame.image[zy, zx], colour(frame.truth)] + [colour(m) for m in raters]
        ious = []
        for i, j in ((0, 1), (0, 2), (1, 2)):
            a, b = raters[i]["full"], raters[j]["full"]
            union = np.count_nonzero(a | b)
            ious.append(np.count_nonzero(a & b) / union if union else float("nan"))
        for c, (ax, panel) in enumerate(zip(axes[row], panels)):
            ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, vmin=0, vmax=255 if panel.ndim == 2 else 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(cols[c], fontsize=11)
        axes[row][0].set_ylabel(f"video {video}, frame {frame_idx}\nIoU full {np.nanmean(ious):.2f}", fontsize=9)
    fig.suptitle(
        f"Synthetic ICSI frames ({cfg.height}x{cfg.width}, {cfg.pixel_size_um} um/px, seed {args.seed}): "
        "truth and three simulated raters (head red, tail cyan)",
        fontsize=11,
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
