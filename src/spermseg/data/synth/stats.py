"""Measured label noise of the generator: inter-rater IoU (paper Table 2) and where raters differ from truth.

These are the figures quoted in ``docs/synth.md`` and printed by ``benchmarks/bench_synth.py``; they are
measured on generated frames, never assumed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spermseg.data.layouts import PARTS  # defined once, in the data layer
from spermseg.data.synth.config import SynthConfig
from spermseg.data.synth.render import Frame

PAIRS = ((0, 1), (0, 2), (1, 2))


class AgreementAccumulator:
    """Streams IoU between raters (pooled over images, and averaged per image) for full, head and tail."""

    def __init__(self) -> None:
        self.inter = {p: np.zeros(len(PAIRS)) for p in PARTS}
        self.union = {p: np.zeros(len(PAIRS)) for p in PARTS}
        self.per_image: dict[str, list[list[float]]] = {p: [[] for _ in PAIRS] for p in PARTS}

    def update(self, masks: list[dict[str, np.ndarray]]) -> None:
        """Add one image's masks of raters GT1..GT3 (``{"full", "head", "tail"}`` -> (H, W) bool each)."""
        for p in PARTS:
            for k, (i, j) in enumerate(PAIRS):
                inter = int(np.count_nonzero(masks[i][p] & masks[j][p]))
                union = int(np.count_nonzero(masks[i][p] | masks[j][p]))
                self.inter[p][k] += inter
                self.union[p][k] += union
                if union:
                    self.per_image[p][k].append(inter / union)

    def result(self) -> dict[str, dict[str, Any]]:
        """``{part: {"pooled": [GT1-GT2, GT1-GT3, GT2-GT3], "per_image": [...], "mean_pooled": float}}``."""
        out: dict[str, dict[str, Any]] = {}
        for p in PARTS:
            pooled = [float(i / u) if u else float("nan") for i, u in zip(self.inter[p], self.union[p])]
            per = [float(np.mean(v)) if v else float("nan") for v in self.per_image[p]]
            out[p] = {"pooled": pooled, "per_image": per, "mean_pooled": float(np.mean(pooled))}
        return out


def contour_band(mask: np.ndarray, width: float = 2.0) -> np.ndarray:
    """Pixels within ``width`` pixels of the outline of ``mask``, on either side, (H, W) bool."""
    from scipy.ndimage import distance_transform_edt

    inside = distance_transform_edt(mask)
    outside = distance_transform_edt(~mask)
    return (mask & (inside <= width)) | (~mask & (outside <= width))


def tail_end_region(frame: Frame, fraction: float = 0.3) -> np.ndarray:
    """Pixels near the last ``fraction`` of each sperm's flagellum (by arc length), (H, W) bool."""
    h, w = frame.image.shape
    out = np.zeros(h * w, dtype=bool)
    for fp in frame.sperm:
        if fp.tail is not None:
            out[fp.tail.idx[fp.tail.s >= (1.0 - fraction) * float(fp.pose.s[-1])]] = True
    return out.reshape(h, w)


def disagreement_location(
    frame: Frame, rater: dict[str, np.ndarray], *, band: float = 2.0, fraction: float = 0.3
) -> dict[str, float]:
    """Where a rater's full mask differs from the truth.

    Returns:
        ``{"pixels": n, "near_contour": share of the differing pixels within ``band`` px of the truth outline,
        "tail_end": share on the last ``fraction`` of a tail, "explained": share in either region}`` (the two
        regions overlap: a thin tail end lies near its outline).
    """
    truth = frame.truth["full"]
    diff = truth ^ rater["full"]
    n = int(np.count_nonzero(diff))
    if n == 0:
        return {"pixels": 0, "near_contour": 1.0, "tail_end": 0.0, "explained": 1.0}
    near = contour_band(truth, band)
    end = tail_end_region(frame, fraction)
    return {
        "pixels": n,
        "near_contour": float(np.count_nonzero(diff & near) / n),
        "tail_end": float(np.count_nonzero(diff & end) / n),
        "explained": float(np.count_nonzero(diff & (near | end)) / n),
    }


def measure_noise(
    cfg: SynthConfig, *, seed: int = 0, n_videos: int = 6, images_per_video: int | None = None
) -> dict[str, Any]:
    """Inter-rater agreement and disagreement location of the default raters on generated frames.

    Args:
        cfg: generator parameters.
        seed: seed of the measurement (videos 1..``n_videos``).
        n_videos: videos to render.
        images_per_video: frames per video (default ``cfg.images_per_video``).

    Returns:
        ``{"n_images", "agreement": AgreementAccumulator.result(), "vs_truth": {"GT1": {...}, ...}}``, where
        ``vs_truth`` pools :func:`disagreement_location` over images (pixel-weighted) and gives each rater's IoU
        with the truth.
    """
    from spermseg.data.synth.dataset import rater_masks, render_item, scene_for, video_frames

    per_video = images_per_video or cfg.images_per_video
    acc = AgreementAccumulator()
    loc = {r: np.zeros(4) for r in range(3)}  # differing pixels, near the contour, on a tail end, in either
    iou = {r: np.zeros(2) for r in range(3)}
    n = 0
    for v in range(1, n_videos + 1):
        scene = scene_for(cfg, seed, v)
        for f in video_frames(cfg, seed, v, per_video):
            frame = render_item(cfg, scene, seed, v, f)
            masks = rater_masks(cfg, frame, seed, v, f, 3)
            acc.update(masks)
            for r in range(3):
                d = disagreement_location(frame, masks[r])
                loc[r] += d["pixels"] * np.array([1.0, d["near_contour"], d["tail_end"], d["explained"]])
                t, m = frame.truth["full"], masks[r]["full"]
                iou[r] += (np.count_nonzero(t & m), np.count_nonzero(t | m))
            n += 1
    vs_truth = {}
    for r in range(3):
        px, near, end, either = loc[r]
        vs_truth[f"GT{r + 1}"] = {
            "iou_full": float(iou[r][0] / max(iou[r][1], 1)),
            "near_contour": float(near / max(px, 1)),
            "tail_end": float(end / max(px, 1)),
            "explained": float(either / max(px, 1)),
        }
    return {"n_images": n, "agreement": acc.result(), "vs_truth": vs_truth}
