"""Per-sperm measurement (``spermseg.inference.morphometry``): time per megapixel at several image sizes.

Two inputs, each at growing sizes so that time per megapixel can be read side by side (about constant = linear):

* all-ones masks (one huge blob: the reliability issue's worst case, formerly 14.9 s at 2000 x 2000 because
  thinning a thick blob costs time proportional to its thickness);
* a drawn scene of sperm (ellipse head + 3 px tail, ~30 per 640 x 512 tile) tiled to larger images, measured
  from instance labels with parts (the ``predict --instances`` path).

Goal: seconds per megapixel stays within 2x across sizes.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from harness import Table, bench_main, measure  # noqa: E402


def _scene_tile(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    rng = np.random.default_rng(seed)
    labels = np.zeros((512, 640), np.uint16)
    parts = np.zeros((512, 640), np.uint8)
    for k in range(1, 31):
        y, x = int(rng.integers(20, 490)), int(rng.integers(20, 520))
        one = np.zeros_like(parts)
        cv2.line(one, (x + 10, y), (x + 120, y + int(rng.integers(-40, 40))), 5, 3)
        cv2.ellipse(one, (x, y), (12, 8), 0, 0, 360, 2, -1)
        free = one > 0
        labels[free] = k
        parts[free] = one[free]
    return labels, parts


def run(quick: bool) -> str:
    from spermseg.inference.morphometry import measure_instances, measure_sperm

    repeat = 1 if quick else 3
    blob = Table("all-ones mask (one blob)", ratio_to="500 x 500", unit="MP")
    for n in (500, 1000) if quick else (500, 1000, 2000, 4000):
        mask = np.ones((n, n), bool)
        m = blob.add(measure(lambda mask=mask: measure_instances(mask), name=f"{n} x {n}", repeat=repeat,
                             items=1, trace_memory=False))  # fmt: skip
        m.extra["s/MP"] = f"{m.median / (n * n / 1e6):.3f}"
    tile_labels, tile_parts = _scene_tile()
    scene = Table("sperm scene from labels + parts (~30 sperm per 640 x 512 tile)", ratio_to="1 x 1 tiles")
    for k in (1, 2) if quick else (1, 2, 4):
        labels = np.tile(tile_labels, (k, k)).astype(np.int32)
        # distinct ids per tile
        offs = (np.arange(k * k).reshape(k, k) * 31).repeat(512, 0).repeat(640, 1)
        labels = np.where(labels > 0, labels + offs, 0)
        parts = np.tile(tile_parts, (k, k))
        mp = labels.size / 1e6
        m = scene.add(measure(lambda labels=labels, parts=parts: measure_sperm(labels, parts), name=f"{k} x {k} tiles",
                              repeat=repeat, trace_memory=False))  # fmt: skip
        m.extra["s/MP"] = f"{m.median / mp:.3f}"
    return __doc__.split("\n\n", 1)[1].strip() + "\n\n" + blob.markdown() + "\n\n" + scene.markdown()


if __name__ == "__main__":
    bench_main("morphometry", run)
