"""evaluate_directory: reading soft masks, matching names, raters and aggregates, errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from tiny_dataset import make_tiny_segsperm

from spermseg.errors import DataError
from spermseg.evaluation import aggregate, evaluate_directory
from spermseg.metrics import SegmentationAccumulator


def _write_preds(folder: Path, masks: list[dict[str, np.ndarray]], fmt: str) -> list[np.ndarray]:
    """Blurred versions of the masks as soft masks; returns them as they will be read back."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, m in enumerate(masks):
        p = np.clip(cv2.GaussianBlur(m["full"].astype(np.float32), (5, 5), 1.2), 0, 1)
        if fmt == "npy":
            np.save(folder / f"img_{i}.npy", p.astype(np.float32))
            out.append(p.astype(np.float32))
        elif fmt == "png16":
            q = np.round(p * 65535).astype(np.uint16)
            cv2.imwrite(str(folder / f"img_{i}.png"), q)
            out.append(q.astype(np.float32) / 65535)
        else:
            q = np.round(p * 255).astype(np.uint8)
            cv2.imwrite(str(folder / f"img_{i}.png"), q)
            out.append(q.astype(np.float32) / 255)
    return out


@pytest.mark.parametrize("fmt", ["npy", "png16", "png8"])
def test_evaluate_matches_accumulator(tmp_path: Path, fmt: str) -> None:
    masks = make_tiny_segsperm(tmp_path / "data")
    probs = _write_preds(tmp_path / "pred", masks["GT1"], fmt)
    res = evaluate_directory(tmp_path / "pred", tmp_path / "data", split="test", rater="GT1", kernels=(3,))
    acc = SegmentationAccumulator("fast", (3,))
    for p, m in zip(probs, masks["GT1"]):
        acc.update(p, m)
    want = acc.result()
    assert res["n_images"] == 3 and res["rater"] == "GT1" and res["mode"] == "fast"
    for part in ("full", "head", "tail"):
        for key in ("ap", "iou_opt", "brier"):
            assert res[part][key] == pytest.approx(want[part][key], abs=1e-9 if fmt != "npy" else 1e-6)


def test_evaluate_aggregate_rater_exact_and_per_image(tmp_path: Path) -> None:
    masks = make_tiny_segsperm(tmp_path / "data")
    probs = _write_preds(tmp_path / "pred", masks["GT1"], "npy")
    res = evaluate_directory(tmp_path / "pred", tmp_path / "data", "test_small", "majority", kernels=(3,), exact=True)
    per_rater = [[m["tail"] for m in masks[r]] for r in ("GT1", "GT2", "GT3")]
    tails = aggregate(per_rater, "majority")
    heads = aggregate([[m["head"] for m in masks[r]] for r in ("GT1", "GT2", "GT3")], "majority")
    fulls = aggregate([[m["full"] for m in masks[r]] for r in ("GT1", "GT2", "GT3")], "majority")
    acc = SegmentationAccumulator("exact", (3,))
    for p, f, h, t in zip(probs, fulls, heads, tails):
        acc.update(p, {"full": f, "head": h, "tail": t})
    assert res["tail"]["ap"] == pytest.approx(acc.result()["tail"]["ap"], abs=1e-12)
    per = evaluate_directory(tmp_path / "pred", tmp_path / "data", "test", "GT1", kernels=(3,), per_image=True)
    assert per["per_image"] and len(per["images"]) == 3 and "std" in per


def test_evaluate_errors(tmp_path: Path) -> None:
    masks = make_tiny_segsperm(tmp_path / "data")
    _write_preds(tmp_path / "pred", masks["GT1"], "npy")
    with pytest.raises(DataError, match="unknown --rater"):
        evaluate_directory(tmp_path / "pred", tmp_path / "data", "test_small", "GT7")
    with pytest.raises(DataError, match="only"):
        evaluate_directory(tmp_path / "pred", tmp_path / "data", "test", "union")
    (tmp_path / "pred" / "img_1.npy").unlink()
    with pytest.raises(DataError, match="1 of 3 images have no soft mask"):
        evaluate_directory(tmp_path / "pred", tmp_path / "data", "test", "GT1")
    np.save(tmp_path / "pred" / "img_1.npy", np.zeros((48, 48), np.float32))
    cv2.imwrite(str(tmp_path / "pred" / "img_1.png"), np.zeros((48, 48), np.uint8))
    with pytest.raises(DataError, match="several soft masks"):
        evaluate_directory(tmp_path / "pred", tmp_path / "data", "test", "GT1")
    (tmp_path / "pred" / "img_1.png").unlink()
    np.save(tmp_path / "pred" / "img_1.npy", np.zeros((20, 20), np.float32))
    with pytest.raises(DataError, match="shape"):
        evaluate_directory(tmp_path / "pred", tmp_path / "data", "test", "GT1")
