"""``spermseg train --init``: a run starts from given weights of the same architecture, and refuses any other."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_helpers import make_lines_dataset, tiny_overrides

from spermseg.cli import main
from spermseg.models.checkpoints import load_model


def _train(data: Path, out: Path, *extra: str) -> int:
    sets = [x for kv in tiny_overrides(epochs=1) for x in ("--set", kv)]
    return main(["train", "--data", str(data), "--out", str(out), "--preset", "demo", *sets, *extra])


def _params(run: Path) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in load_model(run).named_parameters()}


def test_init_starts_from_the_given_weights_and_rejects_another_architecture(tmp_path: Path, capsys) -> None:
    data = make_lines_dataset(tmp_path / "data", n_groups=3, per_group=2)
    assert _train(data, tmp_path / "a") == 0
    assert _train(data, tmp_path / "b", "--set", "seed=7") == 0  # another random start
    # lr 1e-12: Adam moves each weight by about 1e-12, so the run's parameters are its initial ones
    assert _train(data, tmp_path / "c", "--init", str(tmp_path / "a"), "--set", "optim.lr=1e-12") == 0
    start, other, run = _params(tmp_path / "a"), _params(tmp_path / "b"), _params(tmp_path / "c")
    assert all(torch.allclose(run[k], start[k], atol=1e-6) for k in start)
    assert not all(torch.allclose(other[k], start[k], atol=1e-2) for k in start)
    # a bundle of that run works the same way
    assert main(["bundle", "--base", str(tmp_path / "a"), "--out", str(tmp_path / "bundle")]) == 0
    assert _train(data, tmp_path / "d", "--init", str(tmp_path / "bundle"), "--set", "optim.lr=1e-12") == 0
    assert all(torch.allclose(_params(tmp_path / "d")[k], start[k], atol=1e-6) for k in start)
    capsys.readouterr()
    # another width is another architecture: one line naming the mismatch, exit 2, nothing trained
    assert _train(data, tmp_path / "e", "--init", str(tmp_path / "a"), "--set", "model.width=8") == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error" in line]  # (the data summary line comes first)
    assert len(errors) == 1 and "--init" in errors[0] and "does not match the architecture" in errors[0]
    assert not (tmp_path / "e" / "result.json").exists()
    assert _train(data, tmp_path / "f", "--init", str(tmp_path / "missing")) == 2


@pytest.mark.parametrize("bad", ["nothing-here"])
def test_init_of_a_missing_source_names_it(tmp_path: Path, bad: str) -> None:
    from spermseg.errors import CheckpointError
    from spermseg.training.init import init_checkpoint

    with pytest.raises(CheckpointError, match=bad):
        init_checkpoint(tmp_path / bad)


def test_init_builtin_starts_from_the_shipped_float16_weights(tmp_path: Path, monkeypatch, capsys) -> None:
    from spermseg.inference import builtin, bundle

    data = make_lines_dataset(tmp_path / "data", n_groups=3, per_group=2)
    assert _train(data, tmp_path / "a") == 0
    assert main(["bundle", "--base", str(tmp_path / "a"), "--out", str(tmp_path / "bundle")]) == 0
    builtin.write_builtin(tmp_path / "bundle", tmp_path / "package", {"command": "test"})
    monkeypatch.setattr(bundle, "BUILTIN_DIR", tmp_path / "package")
    assert _train(data, tmp_path / "c", "--init", "builtin", "--set", "optim.lr=1e-12") == 0
    start, run = _params(tmp_path / "a"), _params(tmp_path / "c")
    assert all(torch.allclose(run[k], start[k].half().float(), atol=1e-6) for k in start)  # the float16 copy
    capsys.readouterr()
    assert _train(data, tmp_path / "e", "--init", "builtin", "--set", "model.width=8") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "--init builtin (a unet" in errors[0] and "does not match" in errors[0], errors
