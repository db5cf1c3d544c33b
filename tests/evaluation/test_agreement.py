"""Inter-rater agreement (Table 2) on a tiny three-rater dataset and, when present, on the real one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_dataset import make_tiny_segsperm

from spermseg.errors import DataError
from spermseg.evaluation import agreement, agreement_from_masks, format_agreement
from spermseg.metrics import iou, iou_prime_counts


def test_agreement_pools_counts_and_is_asymmetric(tmp_path: Path) -> None:
    masks = make_tiny_segsperm(tmp_path)
    res = agreement(tmp_path, "test_small", kernels=(3, 5))
    assert res["raters"] == ["GT1", "GT2", "GT3"] and res["n_images"] == 3
    # strict IoU pooled over images, symmetric
    inter = sum(int((a["tail"] & b["tail"]).sum()) for a, b in zip(masks["GT1"], masks["GT3"]))
    union = sum(int((a["tail"] | b["tail"]).sum()) for a, b in zip(masks["GT1"], masks["GT3"]))
    assert res["iou"]["tail"]["GT1"]["GT3"] == pytest.approx(inter / union)
    assert res["iou"]["tail"]["GT3"]["GT1"] == res["iou"]["tail"]["GT1"]["GT3"]
    # IoU' row = reference, column = prediction; pooled counts
    total = None
    for a, b in zip(masks["GT1"], masks["GT3"]):
        c = iou_prime_counts(b["full"], a["full"], 3)
        if total is None:
            total = c
        else:
            total += c
    assert total is not None
    assert res["iou_prime"]["3"]["full"]["GT1"]["GT3"] == pytest.approx(total.result()["iou"])
    assert res["iou_prime"]["3"]["full"]["GT1"]["GT3"] != res["iou_prime"]["3"]["full"]["GT3"]["GT1"]
    # 2-px tails do not survive a 5x5 erosion: R' is high but P' (and so IoU') is 0 by the empty rule
    assert res["r_prime"]["5"]["tail"]["GT1"]["GT3"] > 0.8
    assert res["p_prime"]["5"]["tail"]["GT1"]["GT3"] == 0.0 == res["iou_prime"]["5"]["tail"]["GT1"]["GT3"]
    text = format_agreement(res)
    assert "GT1 vs GT2" in text and "kernel 5x5" in text


def test_agreement_needs_two_raters(tmp_path: Path) -> None:
    make_tiny_segsperm(tmp_path)
    with pytest.raises(DataError, match="two or more"):
        agreement(tmp_path, "test")
    m = np.zeros((4, 4), bool)
    with pytest.raises(DataError, match="different numbers"):
        agreement_from_masks({"a": {"full": [m]}, "b": {"full": [m, m]}})


@pytest.mark.slow
def test_real_dataset_head_agrees_more_than_tail(spermparsing_root: Path) -> None:
    res = agreement(spermparsing_root, "test_small", kernels=(3,))
    for a, b in (("GT1", "GT2"), ("GT1", "GT3"), ("GT2", "GT3")):
        assert res["iou"]["head"][a][b] > res["iou"]["tail"][a][b]
        # the optimistic measure agrees more than the strict one (paper Table 2)
        assert res["iou_prime"]["3"]["full"][a][b] > res["iou"]["full"][a][b]
    assert iou(np.ones((2, 2), bool), np.ones((2, 2), bool)) == 1.0
