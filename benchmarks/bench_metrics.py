"""Metrics: AP on 31 M scores (fast histogram vs exact vs scikit-learn) and a full evaluation of 119 soft masks.

Cases (one CPU thread: OpenCV, BLAS and OpenMP limited to 1):
* AP of 31.2 M scores (119 images x 512 x 512, ~3 % positives, float32 scores): scikit-learn's
  ``average_precision_score`` against ``spermseg.metrics.average_precision`` in exact (sort-based) and fast
  (2^16-bin histogram) mode; the absolute difference to scikit-learn is reported. Goal: fast >= 20x sklearn.
* Full evaluation (AP, IoU curve / IoU_opt, Brier, IoU' k = 3 and 5, full / head / tail) of 119 synthetic
  SegSperm-like soft masks of 512 x 512 with ``SegmentationAccumulator``: fast mode with a cold reference cache
  (everything computed), fast with a warm cache (references already prepared: skeletons, regions), and exact mode
  (sort-based, literal binarization). Goal: fast < 3 s.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Table, bench_main, measure  # noqa: E402


def _scores(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.03
    s = np.where(y, rng.beta(5, 2, n), rng.beta(1, 12, n)).astype(np.float32)
    return s, y


def _sperm_images(n: int, size: int = 512, seed: int = 0) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """SegSperm-like references (1-3 sperm: ellipse head ~12x8 px, 3-px tail of ~120 px) and soft masks."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        head = np.zeros((size, size), np.uint8)
        tail = np.zeros((size, size), np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            cx, cy = (int(v) for v in rng.integers(60, size - 60, 2))
            ang = float(rng.uniform(0, 2 * np.pi))
            cv2.ellipse(head, (cx, cy), (7, 5), np.degrees(ang), 0, 360, 1, -1)
            pts = [(cx, cy)]
            for _ in range(6):
                ang += float(rng.normal(0, 0.3))
                x, y = pts[-1]
                pts.append((int(x + 20 * np.cos(ang + np.pi)), int(y + 20 * np.sin(ang + np.pi))))
            cv2.polylines(tail, [np.array(pts, np.int32)], False, 1, 3)
        h = head.astype(bool)
        t = tail.astype(bool) & ~h
        f = h | t
        soft = cv2.GaussianBlur(f.astype(np.float32), (7, 7), 2.0) * 0.9 + rng.random((size, size)) * 0.15
        soft = (np.round(np.clip(soft, 0, 1) * 65535) / 65535).astype(np.float32)  # as read from a 16-bit PNG
        out.append((soft, {"full": f, "head": h, "tail": t}))
    return out


def _ap(quick: bool) -> str:
    from sklearn.metrics import average_precision_score

    from spermseg.metrics import average_precision

    n = 3_000_000 if quick else 119 * 512 * 512
    s, y = _scores(n)
    t = Table(f"AP of {n / 1e6:.1f} M float32 scores (one thread)", ratio_to="scikit-learn", unit="M score")
    ref = average_precision_score(y, s)
    rep = 1 if quick else 3
    t.add(measure(lambda: average_precision_score(y, s), name="scikit-learn", repeat=rep, warmup=0, items=n // 10**6,
                  trace_memory=False))  # fmt: skip
    for mode in ("exact", "fast"):
        m = measure(lambda mode=mode: average_precision(s, y, mode), name=f"spermseg {mode}", repeat=rep, warmup=0,
                    items=n // 10**6, trace_memory=False)  # fmt: skip
        m.extra["|AP - sklearn|"] = f"{abs(average_precision(s, y, mode) - ref):.1e}"
        t.add(m)
    return t.markdown()


def _full(quick: bool) -> str:
    import cv2

    from spermseg.metrics import SegmentationAccumulator
    from spermseg.metrics.prep import ReferenceCache

    cv2.setNumThreads(1)
    n = 20 if quick else 119
    data = _sperm_images(n)
    warm = ReferenceCache()

    def run(mode: str, cache: ReferenceCache | None) -> dict:
        acc = SegmentationAccumulator(mode, (3, 5), parts=True, cache=cache)
        for prob, ref in data:
            acc.update(prob, ref)
        return acc.result()

    run("fast", warm)
    t = Table(f"Full evaluation of {n} soft masks 512x512 (full/head/tail, IoU' k=3,5; one thread)",
              ratio_to="exact (literal)", unit="image")  # fmt: skip
    rep = 1 if quick else 3
    t.add(measure(lambda: run("exact", None), name="exact (literal)", repeat=1, warmup=0, items=n, trace_memory=False))
    t.add(measure(lambda: run("fast", None), name="fast, cold", repeat=rep, warmup=0, items=n, trace_memory=False))
    t.add(measure(lambda: run("fast", warm), name="fast, warm cache", repeat=rep, warmup=0, items=n))

    def train_val() -> dict:
        acc = SegmentationAccumulator("fast", (), parts=False, cache=None)
        for prob, ref in data:
            acc.update(prob, ref["full"])
        return acc.result()

    t.add(measure(train_val, name="fast, full only, kernels=() (training validation)", repeat=rep, warmup=0,
                  items=n, trace_memory=False))  # fmt: skip
    a, b = run("fast", warm), run("exact", None)
    diff = max(abs(a[p][k] - b[p][k]) for p in ("full", "head", "tail") for k in ("ap", "iou_opt", "brier"))
    return t.markdown() + f"\n\nLargest |fast - exact| over AP, IoU_opt, Brier (16-bit soft masks): {diff:.1e}."


def run(quick: bool) -> str:
    return _ap(quick) + "\n\n" + _full(quick)


if __name__ == "__main__":
    bench_main("Metrics", run)
