"""Part segmentation measures: IoU per part code and their mean (mIoU), pooled over images.

For each code c of :data:`spermseg.data.labels.PART_CODES`, ``IoU_c = sum |P=c & R=c| / sum |P=c | R=c|`` over
all images (pooled pixels, as the binary IoU of :mod:`.overlap`). ``miou`` is the mean over the five foreground
parts (acrosome, nucleus, vacuole, midpiece, tail) whose union is not empty; ``miou_bg`` also includes the
background. ``head``, ``tail`` and ``full`` are the binary IoUs of the masks derived from the codes (1-3, 4-5,
1-5). A part absent from both prediction and reference everywhere has IoU ``nan`` and is left out of the means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Same codes as spermseg.data.labels (kept here so that metrics stay importable without the data layer).
PART_NAMES: tuple[str, ...] = ("background", "acrosome", "nucleus", "vacuole", "midpiece", "tail")
_DERIVED = {"head": (1, 2, 3), "tail": (4, 5), "full": (1, 2, 3, 4, 5)}


def confusion(pred: np.ndarray, ref: np.ndarray, n: int = len(PART_NAMES)) -> np.ndarray:
    """(n, n) int64 confusion matrix ``[ref, pred]`` of two (H, W) code images (codes < n)."""
    pred = np.asarray(pred).astype(np.int64).ravel()
    ref = np.asarray(ref).astype(np.int64).ravel()
    if pred.shape != ref.shape:
        raise ValueError(f"part maps differ in size: {pred.shape} vs {ref.shape}")
    if pred.size and (pred.max() >= n or ref.max() >= n or pred.min() < 0 or ref.min() < 0):
        raise ValueError(f"part codes must be in 0..{n - 1}")
    return np.bincount(ref * n + pred, minlength=n * n).reshape(n, n)


def ious_from_confusion(cm: np.ndarray) -> dict[str, Any]:
    """Per-part IoUs, ``miou``, ``miou_bg`` and the derived ``head``/``tail``/``full`` IoUs of a confusion matrix."""
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        per = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    out: dict[str, Any] = {"parts": {name: float(v) for name, v in zip(PART_NAMES, per)}}
    fg = per[1:]
    out["miou"] = float(np.nanmean(fg)) if np.isfinite(fg).any() else float("nan")
    out["miou_bg"] = float(np.nanmean(per)) if np.isfinite(per).any() else float("nan")
    for name, codes in _DERIVED.items():
        sel = np.zeros(cm.shape[0], bool)
        sel[list(codes)] = True
        i = float(cm[np.ix_(sel, sel)].sum())
        u = float(cm[sel].sum() + cm[:, sel].sum() - i)
        out[name] = i / u if u > 0 else float("nan")
    return out


@dataclass
class PartsAccumulator:
    """Streams (pred, ref) part-code images (H, W) and pools the measures of :func:`ious_from_confusion`."""

    cm: np.ndarray = field(default_factory=lambda: np.zeros((len(PART_NAMES),) * 2, np.int64))
    n_images: int = 0
    images: list[dict[str, Any]] = field(default_factory=list)

    def update(self, pred: np.ndarray, ref: np.ndarray, name: str | None = None) -> dict[str, Any]:
        """Add one image; returns its own measures with ``name``."""
        cm = confusion(pred, ref)
        self.cm += cm
        self.n_images += 1
        row = {"name": name if name is not None else str(self.n_images - 1), **ious_from_confusion(cm)}
        self.images.append(row)
        return row

    def result(self) -> dict[str, Any]:
        """``{"n_images", "parts": {code name: IoU}, "miou", "miou_bg", "head", "tail", "full", "images"}``."""
        return {"n_images": self.n_images, **ious_from_confusion(self.cm), "images": list(self.images)}
