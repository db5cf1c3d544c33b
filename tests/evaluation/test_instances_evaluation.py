"""``spermseg evaluate --instances`` and ``--target parts`` on a tiny dataset with label images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spermseg.cli import main
from spermseg.data.labels import parts_to_masks, write_labels
from spermseg.errors import DataError
from spermseg.evaluation.instances import evaluate_instances, find_label_predictions


def _dataset(root: Path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    inst = np.zeros((16, 16), np.uint16)
    inst[1:5, 1:15] = 1
    inst[9:13, 1:15] = 2
    parts = np.where(inst > 0, 5, 0).astype(np.uint8)
    parts[1:5, 1:4] = 2
    parts[9:13, 1:4] = 1
    for sub in ("images",):
        (root / "test" / sub).mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "test" / "images" / "a.png")
    for part, m in parts_to_masks(parts).items():
        (root / "test" / f"GT1_{part}").mkdir()
        Image.fromarray(m.astype(np.uint8) * 255).save(root / "test" / f"GT1_{part}" / "a.png")
    write_labels(root / "test" / "GT1_instances" / "a.png", inst)
    write_labels(root / "test" / "GT1_parts" / "a.png", parts, "parts")
    return inst, parts


def test_evaluate_instances_and_parts_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A prediction that merges the two sperm: PQ 0, count error -1; parts with the nucleus called tail."""
    inst, parts = _dataset(tmp_path / "data")
    pred = tmp_path / "pred"
    write_labels(pred / "a_instances.png", (inst > 0).astype(np.uint16))  # both merged into one
    wrong = parts.copy()
    wrong[1:5, 1:4] = 5
    write_labels(pred / "a_parts.tif", wrong, "parts")
    gt = ["--gt", str(tmp_path / "data"), "--split", "test", "--pred", str(pred)]
    assert main(["evaluate", "--instances", *gt, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["tp"] == 0 and res["fp"] == 1 and res["fn"] == 2 and res["pq"] == 0
    assert res["count_error_mean"] == -1 and "images" not in res
    # COCO matches at IoU >= 0.5 (PQ: > 0.5): the merged sperm has IoU exactly 0.5 with each reference sperm
    assert res["ap50"] == pytest.approx(51 / 101) and res["ap"] == pytest.approx(51 / 101 / 10)
    assert main(["evaluate", "--target", "parts", *gt, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["parts"]["nucleus"] == 0 and res["parts"]["acrosome"] == 1 and res["head"] == pytest.approx(0.5)
    assert res["full"] == 1 and res["parts"]["vacuole"] is None  # absent everywhere: nan, JSON null
    assert main(["evaluate", "--instances", *gt]) == 0
    assert "PQ 0.0000" in capsys.readouterr().out
    write_labels(pred / "a_instances.png", inst)
    assert evaluate_instances(pred, tmp_path / "data", "test")["pq"] == 1.0


def test_missing_prediction_and_missing_reference_labels(tmp_path: Path) -> None:
    _dataset(tmp_path / "data")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no instances image"):
        find_label_predictions(tmp_path / "empty", ["a.png"], "instances")
    with pytest.raises(DataError, match="unknown --rater GT2"):
        evaluate_instances(tmp_path / "empty", tmp_path / "data", "test", "GT2")
