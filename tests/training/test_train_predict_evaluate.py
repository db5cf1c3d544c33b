"""The first thing a user tries: train -> predict -> evaluate on the folders the commands write themselves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_helpers import make_lines_dataset, tiny_overrides

from spermseg.cli import main


@pytest.mark.parametrize("soft_format", ["png16", "npy"])
def test_evaluate_reads_the_folder_predict_writes(tmp_path: Path, soft_format: str) -> None:
    data = make_lines_dataset(tmp_path / "data", splits=("train", "test"), n_groups=3, per_group=2)
    run = tmp_path / "run"
    sets = [x for kv in tiny_overrides(epochs=1) for x in ("--set", kv)]
    assert main(["train", "--data", str(data), "--out", str(run), "--preset", "demo", *sets]) == 0
    preds = tmp_path / "preds"
    argv = ["predict", "--model", str(run), str(data / "test" / "images"), "--out", str(preds)]
    assert main([*argv, "--soft-format", soft_format]) == 0
    suffix = ".png" if soft_format == "png16" else ".npy"
    assert sorted(p.name for p in preds.glob(f"*_prob{suffix}"))  # predict's own naming: NAME_prob.EXT
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--pred", str(preds), "--data", str(data), "--split", "test", "--json-out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["n_images"] == 6
    assert 0.0 <= res["full"]["ap"] <= 1.0
