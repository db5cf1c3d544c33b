"""scripts/data_efficiency.py: every (size, start, seed) cell trains at the same step budget on the same validation
images, a second call reuses finished runs, and the table reports what the runs scored on test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import make_lines_dataset, tiny_overrides

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_data_efficiency_script_runs_scratch_and_init_cells(tmp_path: Path) -> None:
    from spermseg.training.config import train_config
    from spermseg.training.trainer import train

    data = make_lines_dataset(tmp_path / "data", n_groups=4, per_group=3, splits=("train", "test"))
    tiny = [kv for kv in tiny_overrides(1) if not kv.startswith(("schedule.epochs", "schedule.steps_per_epoch"))]
    start = tmp_path / "start"
    train(train_config("demo", overrides=[f"data.root={data}", *tiny_overrides(1)]), start)
    out = tmp_path / "eff"
    argv = [sys.executable, str(REPO / "scripts" / "data_efficiency.py"), "--data", str(data), "--out", str(out),
            "--sizes", "3,0", "--seeds", "0", "--init", str(start), "--preset", "demo", "--steps", "4",
            "--steps-per-epoch", "2", *[x for kv in tiny for x in ("--set", kv)]]  # fmt: skip
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    runs = {(p.parents[2].name, p.parents[1].name): json.loads(p.read_text()) for p in out.glob("n*/*/s0/result.json")}
    assert set(runs) == {("n3", "scratch"), ("n3", "start"), ("nall", "scratch"), ("nall", "start")}
    assert {r["n_train"] for k, r in runs.items() if k[0] == "n3"} == {3}
    assert len({json.dumps(r["val_groups"]) for r in runs.values()}) == 1  # one validation set for every cell
    # 4 steps at 2 per epoch: the same budget everywhere, also for 3 images (one batch per pass)
    assert {(r["epochs"], r["steps_per_epoch"]) for r in runs.values()} == {(2, 2)}
    table = json.loads((out / "table.json").read_text())
    assert set(table["scores"]) == {"3|scratch", "3|start", "0|scratch", "0|start"}
    assert all(len(v["iou_opt"]) == 1 for v in table["scores"].values())
    assert "| training images |" in (out / "table.md").read_text()

    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("(finished before)") == 4
