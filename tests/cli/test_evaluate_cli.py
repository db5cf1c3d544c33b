"""``spermseg evaluate`` and ``spermseg agreement`` end to end (in-process)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from spermseg.cli import main

_spec = importlib.util.spec_from_file_location(
    "tiny_dataset", Path(__file__).resolve().parents[1] / "evaluation" / "tiny_dataset.py"
)
assert _spec is not None and _spec.loader is not None
tiny_dataset = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_dataset)


def test_evaluate_json_table_and_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    masks = tiny_dataset.make_tiny_segsperm(tmp_path / "data")
    pred = tmp_path / "pred"
    pred.mkdir()
    for i, m in enumerate(masks["GT2"]):
        cv2.imwrite(str(pred / f"img_{i}.png"), m["full"].astype(np.uint8) * 255)
    args = ["evaluate", "--pred", str(pred), "--gt", str(tmp_path / "data"), "--split", "test_small"]
    assert main([*args, "--rater", "GT1", "--kernel", "3", "--json", "--json-out", str(tmp_path / "r.json")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == json.loads((tmp_path / "r.json").read_text())
    assert out["n_images"] == 3 and out["rater"] == "GT1" and out["mode"] == "fast"
    assert set(out["full"]["iou_prime_opt"]) == {"3"} and set(out["full"]["iou_prime_opt"]["3"]) == {"r", "p", "iou"}
    assert out["head"] is not None and out["tail"] is not None
    assert main([*args, "--rater", "staple", "--per-image"]) == 0
    text = capsys.readouterr().out
    assert "mean over images" in text and "IoU_opt[k=5].iou" in text
    # user errors: one line, exit code 2
    assert main([*args, "--rater", "GT9"]) == 2
    assert "unknown --rater GT9" in capsys.readouterr().err
    assert main([*args, "--kernel", "4"]) == 2
    assert "odd" in capsys.readouterr().err


def test_agreement_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny_dataset.make_tiny_segsperm(tmp_path / "data")
    assert main(["agreement", str(tmp_path / "data"), "--kernel", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["iou"]) == {"full", "head", "tail"} and set(out["iou_prime"]) == {"3"}
    assert out["iou_prime"]["3"]["tail"]["GT1"]["GT1"] == 1.0
    assert main(["agreement", str(tmp_path / "data"), "--split", "test"]) == 2
    assert "two or more" in capsys.readouterr().err


@pytest.mark.slow
def test_real_agreement_equals_evaluate_exact(
    spermparsing_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Acceptance: head IoU > tail IoU, and the full-sperm agreement of GT1 (reference) with GT2 (prediction)
    equals ``spermseg evaluate --exact`` given GT2's full masks as 8-bit PNG soft masks and ``--rater GT1``."""
    assert main(["agreement", str(spermparsing_root), "--json"]) == 0
    agr = json.loads(capsys.readouterr().out)
    for a, b in (("GT1", "GT2"), ("GT1", "GT3"), ("GT2", "GT3")):
        assert agr["iou"]["head"][a][b] > agr["iou"]["tail"][a][b]
    pred = tmp_path / "gt2"
    shutil.copytree(spermparsing_root / "test_small" / "GT2_full", pred)  # 0/255 PNGs: 8-bit soft masks
    args = ["evaluate", "--pred", str(pred), "--gt", str(spermparsing_root), "--split", "test_small"]
    assert main([*args, "--rater", "GT1", "--exact", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["n_images"] == agr["n_images"]
    assert ev["full"]["iou_0.5"] == pytest.approx(agr["iou"]["full"]["GT1"]["GT2"], abs=1e-12)
    assert ev["full"]["iou_opt"] == pytest.approx(agr["iou"]["full"]["GT1"]["GT2"], abs=1e-12)
    for k in ("3", "5"):
        assert ev["full"]["iou_prime_0.5"][k]["iou"] == pytest.approx(
            agr["iou_prime"][k]["full"]["GT1"]["GT2"], abs=1e-12
        )
        assert ev["full"]["iou_prime_0.5"][k]["r"] == pytest.approx(agr["r_prime"][k]["full"]["GT1"]["GT2"], abs=1e-12)
        assert ev["full"]["iou_prime_0.5"][k]["p"] == pytest.approx(agr["p_prime"][k]["full"]["GT1"]["GT2"], abs=1e-12)
