"""The reproduce headline: best base model (by mean test AP over seeds), avg and the featured ensemble."""

from __future__ import annotations

import math

import pytest

from spermseg.experiments.headline import headline, headline_rows, verdict_line


def _rec(kind: str, ap: float, iou: float, **kw: object) -> dict:
    parts = {p: {"ap": ap - d, "iou_opt": iou - d} for p, d in (("full", 0.0), ("head", -0.1), ("tail", 0.2))}
    return {"kind": kind, "metrics": parts, **kw}


def test_headline_rows_and_difference() -> None:
    ev = {
        "split": "test",
        "records": [
            _rec("base", 0.50, 0.40, model="unet", seed=0),
            _rec("base", 0.60, 0.42, model="unet", seed=1),
            _rec("base", 0.52, 0.50, model="fpn", seed=0),  # one high seed does not win: mean AP decides
            _rec("base", 0.54, 0.50, model="fpn", seed=1),
            _rec("avg", 0.56, 0.44, select="E3"),
            _rec("avg", 0.90, 0.90, select="E1"),  # another selection: not in the headline
            _rec("ens_att_v2", 0.58, 0.47, select="E3", seed=0),
            _rec("ens_att_v2", 0.60, 0.45, select="E3", seed=1),
        ],
    }
    table = headline(ev, "ens_att_v2|E3", "GT1")
    assert [r["method"] for r in table["rows"]] == ["unet", "avg|E3", "ens_att_v2|E3"]
    assert [r["role"] for r in table["rows"]] == ["best_base", "avg", "ensemble"]
    best, _, ens = table["rows"]
    assert best["full"]["ap"] == pytest.approx(0.55) and best["full"]["ap_std"] == pytest.approx(math.sqrt(0.005))
    assert ens["tail"]["iou_opt"] == pytest.approx(0.26)
    assert table["ensemble_minus_best_base"]["full"]["ap"] == pytest.approx(0.04)
    assert table["ensemble_minus_best_base"]["full"]["iou_opt"] == pytest.approx(0.05)
    # full AP: +0.04 but the best base model's std is 0.0707 -> not beyond 2 std; IoU_opt: +0.05 > 2 x 0.0141
    assert table["beats_best_base_by_2std"]["full"] == {"ap": False, "iou_opt": True}
    assert "better by more than 2 std on full IoU_opt" in verdict_line(table)
    heads, rows = headline_rows(table)
    assert heads[:3] == ["method", "role", "n"] and len(rows) == 3 and rows[1][2] == "1"
    assert rows[1][3] == "0.5600"  # one record: no ± std


def test_headline_without_parts_or_base() -> None:
    rec = {"kind": "base", "model": "unet", "metrics": {"full": {"ap": 0.5, "iou_opt": 0.4}, "head": None}}
    table = headline({"split": "test", "records": [rec]}, "ens_att_v2|E3", "GT1")
    assert table["rows"][0]["head"] is None and table["ensemble_minus_best_base"] is None
    assert headline({"records": []}, "ens_att_v2|E3", "GT1") is None


def test_two_std_verdict_hand_made() -> None:
    # unet: AP 0.50 / 0.52 (std 0.0141); ensemble 0.60 / 0.61 (std 0.0071): +0.095 > 2 x 0.0141 -> beats.
    # IoU: unet 0.40 / 0.44 (std 0.0283), ensemble 0.44 / 0.45: +0.025 < 0.0566 -> does not.
    recs = [
        _rec("base", 0.50, 0.40, model="unet", seed=0),
        _rec("base", 0.52, 0.44, model="unet", seed=1),
        _rec("ens_att_v2", 0.60, 0.44, select="E3", seed=0),
        _rec("ens_att_v2", 0.61, 0.45, select="E3", seed=1),
    ]
    table = headline({"split": "test", "records": recs}, "ens_att_v2|E3", "GT1")
    assert table["beats_best_base_by_2std"]["full"] == {"ap": True, "iou_opt": False}
    line = verdict_line(table)
    assert "better by more than 2 std on full AP, head AP, tail AP" in line and "not on full IoU_opt" in line
    one_seed = headline({"split": "test", "records": recs[:1] + recs[2:3]}, "ens_att_v2|E3", "GT1")
    assert one_seed["beats_best_base_by_2std"]["full"] == {"ap": None, "iou_opt": None}
