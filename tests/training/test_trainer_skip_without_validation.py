"""A finished run trained without a validation split (``validation.fraction=0``) is skipped, not a crash.

Out-of-fold stacking (``spermseg ensemble oof --oof-set validation.fraction=0``) re-enters such fold runs on every
``ensemble train --stacking oof`` call; the skip message used to read ``result["validation"]["ap"]``, which is null
for these runs.
"""

from __future__ import annotations

from pathlib import Path

from train_helpers import make_lines_dataset, tiny_overrides

from spermseg.training.config import train_config
from spermseg.training.trainer import TrainHooks, train


def test_finished_run_without_validation_is_skipped(tmp_path: Path) -> None:
    root = make_lines_dataset(tmp_path / "data", n_groups=2, per_group=2, size=32)
    cfg = train_config("demo", overrides=[f"data.root={root}", *tiny_overrides(1), "validation.fraction=0"])
    first = train(cfg, tmp_path / "run")
    assert not first.skipped and first.result.get("validation") is None
    lines: list[str] = []
    again = train(cfg, tmp_path / "run", hooks=TrainHooks(log=lines.append))
    assert again.skipped and again.result == first.result
    assert any("is finished (AP None)" in line for line in lines)
