"""SegmentationAccumulator: the contract of docs/dev/CONVENTIONS.md, fast vs exact, per-image, parts."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from spermseg.metrics import SegmentationAccumulator, iou, iou_prime, metric_keys, part_regions


def _sperm(rng: np.random.Generator, size: int = 64) -> dict[str, np.ndarray]:
    """A tiny synthetic sperm: a disc head and a 2-px tail line, random position."""
    cx, cy = (int(v) for v in rng.integers(10, 20, size=2))
    head = np.zeros((size, size), np.uint8)
    cv2.circle(head, (cx, cy), 4, 1, -1)
    tail = np.zeros((size, size), np.uint8)
    cv2.line(tail, (cx, cy), (int(rng.integers(40, 60)), int(rng.integers(30, 60))), 1, 2)
    head_b = head.astype(bool)
    tail_b = tail.astype(bool) & ~head_b
    return {"full": head_b | tail_b, "head": head_b, "tail": tail_b}


def _soft(ref: np.ndarray, rng: np.random.Generator, levels: int = 65535) -> np.ndarray:
    """A plausible soft mask, quantized to 16-bit levels (as read from a 16-bit PNG)."""
    p = cv2.GaussianBlur(ref.astype(np.float32), (5, 5), 1.5) * 0.9 + rng.random(ref.shape) * 0.35
    return (np.round(np.clip(p, 0, 1) * levels) / levels).astype(np.float32)


def _flatten(d: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def test_result_has_contract_keys_and_kernels_empty_skips_iou_prime() -> None:
    rng = np.random.default_rng(0)
    acc = SegmentationAccumulator(mode="fast", kernels=(), parts=True)
    for _ in range(3):
        ref = _sperm(rng)
        acc.update(_soft(ref["full"], rng), ref["full"])  # a bare bool mask: no parts
    res = acc.result()
    assert res["n_images"] == 3 and res["mode"] == "fast"
    assert res["head"] is None and res["tail"] is None
    assert set(res["full"]) == set(metric_keys())
    assert res["full"]["iou_prime_opt"] == {} and res["full"]["iou_prime_0.5"] == {}
    assert 0.5 < res["full"]["ap"] <= 1.0


def test_fast_equals_exact_on_16bit_masks_with_parts() -> None:
    """With 16-bit soft masks every value falls in its own bin: fast must equal exact (IoU' via grey morphology
    vs literal binarization), for full, head and tail."""
    rng = np.random.default_rng(1)
    fast = SegmentationAccumulator("fast", kernels=(3, 5))
    exact = SegmentationAccumulator("exact", kernels=(3, 5))
    for _ in range(4):
        ref = _sperm(rng)
        prob = _soft(ref["full"], rng)
        fast.update(prob, ref)
        exact.update(prob, ref)
    rf, re_ = fast.result(), exact.result()
    for part in ("full", "head", "tail"):
        a, b = _flatten(rf[part]), _flatten(re_[part])
        assert a.keys() == b.keys()
        for key in a:
            tol = 2.0 / 65536 if key == "t_opt" else 1e-12  # fast reports the bin edge i/2^16, exact k/65535
            assert abs(a[key] - b[key]) <= tol, (part, key, a[key], b[key])


def test_exact_ap_equals_sklearn_and_regions_apply() -> None:
    rng = np.random.default_rng(2)
    acc = SegmentationAccumulator("exact", kernels=())
    probs, refs = [], []
    for _ in range(3):
        ref = _sperm(rng)
        prob = (rng.random(ref["full"].shape) * 0.5 + ref["full"] * 0.4).astype(np.float32)
        acc.update(prob, ref)
        probs.append(prob)
        refs.append(ref)
    res = acc.result()
    y = np.concatenate([r["full"].ravel() for r in refs])
    s = np.concatenate([p.ravel() for p in probs]).astype(np.float64)
    assert abs(res["full"]["ap"] - average_precision_score(y, s)) < 1e-9
    # head: only pixels of the head regions, against the head reference
    sel = [part_regions(r["head"], r["tail"])[0] for r in refs]
    yh = np.concatenate([r["head"][m] for r, m in zip(refs, sel)])
    sh = np.concatenate([p[m] for p, m in zip(probs, sel)])
    assert abs(res["head"]["ap"] - average_precision_score(yh, sh)) < 1e-9
    # Brier on the full set, by hand
    assert abs(res["full"]["brier"] - float(np.mean((s - y) ** 2))) < 1e-12
    assert abs(res["full"]["brier_pos"] - float(np.mean((s[y] - 1) ** 2))) < 1e-12


def test_counts_are_pooled_before_dividing() -> None:
    """Two images with very different sizes of sperm: pooled IoU differs from the mean of per-image IoUs."""
    a_ref = np.zeros((32, 32), bool)
    a_ref[2:30, 2:30] = True
    a_pred = a_ref.copy()
    a_pred[2:30, 2:10] = False  # IoU 20/28
    b_ref = np.zeros((32, 32), bool)
    b_ref[5:7, 5:7] = True
    b_pred = np.zeros((32, 32), bool)  # IoU 0
    acc = SegmentationAccumulator("exact", kernels=(3,))
    per = SegmentationAccumulator("exact", kernels=(3,), per_image=True)
    for p, r in ((a_pred, a_ref), (b_pred, b_ref)):
        acc.update(p.astype(np.float32), r)
        per.update(p.astype(np.float32), r, name="x")
    inter = (a_pred & a_ref).sum() + (b_pred & b_ref).sum()
    union = (a_pred | a_ref).sum() + (b_pred | b_ref).sum()
    assert acc.result()["full"]["iou_0.5"] == pytest.approx(inter / union)
    res_per = per.result()
    mean = (iou(a_pred, a_ref) + iou(b_pred, b_ref)) / 2
    assert res_per["full"]["iou_0.5"] == pytest.approx(mean)
    assert res_per["std"]["full"]["iou_0.5"] == pytest.approx(abs(iou(a_pred, a_ref) - mean))
    assert len(res_per["images"]) == 2
    # IoU' at 0.5 of the single binary image equals the pure function
    assert res_per["images"][0]["full"]["iou_prime_0.5"]["3"] == pytest.approx(iou_prime(a_pred, a_ref, 3))


def test_empty_reference_and_prediction() -> None:
    """Both empty: IoU, IoU' and IoU_opt are 1, AP undefined (NaN); empty prediction with a reference: 0."""
    z = np.zeros((16, 16), np.float32)
    ref0 = np.zeros((16, 16), bool)
    acc = SegmentationAccumulator("fast", kernels=(3,))
    acc.update(z, ref0)
    m = acc.result()["full"]
    assert math.isnan(m["ap"]) and math.isnan(m["brier_pos"])
    assert m["iou_0.5"] == 1.0 and m["iou_opt"] == 1.0
    assert m["t_opt"] > 0.0  # "predict nothing": above every score
    assert m["iou_prime_0.5"]["3"] == {"r": 1.0, "p": 1.0, "iou": 1.0}
    ref1 = ref0.copy()
    ref1[4:12, 4:12] = True
    acc = SegmentationAccumulator("exact", kernels=(3,))
    acc.update(z, ref1)
    m = acc.result()["full"]
    assert m["iou_0.5"] == 0.0 and m["iou_prime_0.5"]["3"]["iou"] == 0.0


def test_mixed_parts_and_bad_inputs_raise() -> None:
    rng = np.random.default_rng(3)
    ref = _sperm(rng)
    acc = SegmentationAccumulator()
    acc.update(_soft(ref["full"], rng), ref)
    with pytest.raises(ValueError, match="head/tail"):
        acc.update(_soft(ref["full"], rng), ref["full"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        acc.update(np.full((64, 64), 1.5, np.float32), ref)
    with pytest.raises(ValueError, match="shape"):
        acc.update(np.zeros((8, 8), np.float32), ref)


def test_curves_fast() -> None:
    rng = np.random.default_rng(4)
    acc = SegmentationAccumulator("fast", kernels=(3,))
    ref = _sperm(rng)
    acc.update(_soft(ref["full"], rng), ref)
    cur = acc.curves("tail")
    assert np.all(np.diff(cur["thresholds"]) < 0)
    assert float(np.max(cur["iou"])) == pytest.approx(acc.result()["tail"]["iou_opt"])
    assert cur["iou_prime_3"]["iou"].shape == cur["thresholds"].shape


def test_reference_cache_reuses_and_bounds_memory() -> None:
    from spermseg.metrics.prep import ReferenceCache

    rng = np.random.default_rng(5)
    refs = [_sperm(rng) for _ in range(3)]
    probs = [_soft(r["full"], rng) for r in refs]
    cache = ReferenceCache()
    results = []
    for _ in range(2):
        acc = SegmentationAccumulator("fast", (3,), cache=cache)
        for p, r in zip(probs, refs):
            acc.update(p, r)
        results.append(acc.result())
    assert cache.misses == 3 and cache.hits == 3
    assert results[0] == results[1]
    uncached = SegmentationAccumulator("fast", (3,), cache=None)
    for p, r in zip(probs, refs):
        uncached.update(p, r)
    assert uncached.result() == results[0]
    tiny = ReferenceCache(max_bytes=1)  # keeps only the most recent entry
    for r in refs:
        tiny.get(r["full"], r["head"], r["tail"], (3,))
    assert len(tiny._items) == 1
