"""A tiny SegSperm-layout dataset with three raters, written with OpenCV (helper for the evaluation tests)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def make_tiny_segsperm(root: Path, n: int = 3, size: int = 48, seed: int = 0) -> dict[str, list[dict[str, np.ndarray]]]:
    """Write ``root/test_small/{images,GT{1,2,3}_{full,head,tail}}/img_i.png`` (and ``test`` with GT1 only).

    Each image holds one sperm: a disc head and a 2-px tail; the raters differ by a shifted tail end.

    Returns:
        ``masks[rater][i] = {"full", "head", "tail"}`` bool arrays, for checking results by hand.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, list[dict[str, np.ndarray]]] = {f"GT{r}": [] for r in (1, 2, 3)}
    for i in range(n):
        cx, cy = (int(v) for v in rng.integers(8, 16, 2))
        ex, ey = (int(v) for v in rng.integers(30, size - 4, 2))
        image = (rng.random((size, size)) * 60 + 100).astype(np.uint8)
        cv2.circle(image, (cx, cy), 4, 30, -1)
        cv2.line(image, (cx, cy), (ex, ey), 40, 2)
        for split in ("test", "test_small"):
            d = root / split / "images"
            d.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(d / f"img_{i}.png"), image)
        for r in (1, 2, 3):
            head = np.zeros((size, size), np.uint8)
            cv2.circle(head, (cx, cy), 4 if r != 3 else 3, 255, -1)
            tail = np.zeros((size, size), np.uint8)
            cv2.line(tail, (cx, cy), (ex - 3 * (r - 1), ey - 2 * (r - 1)), 255, 2)
            tail[head > 0] = 0
            full = np.maximum(head, tail)
            masks = {"full": full > 0, "head": head > 0, "tail": tail > 0}
            out[f"GT{r}"].append(masks)
            for split in ("test", "test_small") if r == 1 else ("test_small",):
                for part, m in masks.items():
                    d = root / split / f"GT{r}_{part}"
                    d.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(d / f"img_{i}.png"), m.astype(np.uint8) * 255)
    return out
