"""Checkpoints: round trip, clear errors on architecture mismatch, torn writes; training state round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import spermseg
from spermseg.errors import CheckpointError
from spermseg.models import create_model
from spermseg.models.checkpoints import load_model, read_meta, save_checkpoint
from spermseg.training.state import load_training_state, save_training_state


def test_round_trip_rebuilds_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("unet", width=4)
    stem = save_checkpoint(tmp_path / "best", model, {"threshold": 0.3, "normalization": "mean"})
    loaded = spermseg.load_model(str(tmp_path))  # a run directory resolves to best
    assert loaded.spermseg_meta["threshold"] == 0.3 and loaded.spermseg_meta["model_kwargs"] == {"width": 4}
    assert loaded.spermseg_meta["version"] == spermseg.__version__
    assert not loaded.training
    x = torch.rand(1, 1, 32, 32)
    model.eval()
    assert torch.equal(model(x), loaded(x))
    for path in (stem, stem.with_suffix(".json"), stem.with_suffix(".safetensors")):
        assert read_meta(path)["model"] == "unet"
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_architecture_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "m", create_model("unet", width=4), {})
    meta = json.loads((tmp_path / "m.json").read_text())
    meta["model_kwargs"] = {"width": 8}
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not match the architecture of 'unet'.*width"):
        load_model(tmp_path / "m")


def test_torn_write_and_missing_files_are_detected(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "a", create_model("unet", width=4), {})
    save_checkpoint(tmp_path / "b", create_model("unet", width=8), {})
    (tmp_path / "b.safetensors").replace(tmp_path / "a.safetensors")  # weights of another write
    with pytest.raises(CheckpointError, match="does not belong"):
        load_model(tmp_path / "a")
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_model(tmp_path / "empty")


def test_training_state_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("unet", width=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[1, 3], gamma=0.3)
    x = torch.rand(2, 1, 32, 32)
    for _ in range(2):
        opt.zero_grad()
        model(x).mean().backward()
        opt.step()
        sched.step()
    save_training_state(tmp_path, epoch=2, model=model, optimizer=opt, scheduler=sched, extra={"history": [1, 2]})
    expected_rand = torch.rand(3)

    torch.manual_seed(123)
    model2 = create_model("unet", width=4)
    opt2 = torch.optim.Adam(model2.parameters(), lr=1e-3)
    sched2 = torch.optim.lr_scheduler.MultiStepLR(opt2, milestones=[1, 3], gamma=0.3)
    epoch, _, extra = load_training_state(tmp_path, model=model2, optimizer=opt2, scheduler=sched2)
    assert epoch == 2 and extra == {"history": [1, 2]}
    assert torch.equal(torch.rand(3), expected_rand)  # RNG state restored
    assert sched2.last_epoch == 2 and opt2.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.3)
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    # the next optimizer step is identical
    for m, o in ((model, opt), (model2, opt2)):
        o.zero_grad()
        m(x).mean().backward()
        o.step()
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(CheckpointError, match="does not match"):
        load_training_state(tmp_path, model=create_model("unet", width=8), optimizer=opt2, scheduler=sched2)


def test_a_resumed_run_leaves_no_temporary_file_of_a_killed_write(tmp_path: Path) -> None:
    """A SIGKILL inside an atomic write leaves '.NAME.RANDOM.SUFFIX'; the next completed save removes it."""
    from spermseg.models.checkpoints import save_checkpoint

    model = create_model("unet", width=4)
    opt = torch.optim.Adam(model.parameters())
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [1])
    (tmp_path / "state").mkdir()
    debris = [tmp_path / "state" / ".epoch_0002.kjbw7wec.safetensors", tmp_path / ".last.ab12cd.safetensors",
              tmp_path / ".metrics.x1y2.csv"]  # fmt: skip
    for f in debris:
        f.write_bytes(b"half")
    keep = tmp_path / "notes.txt"
    keep.write_text("user file")
    save_checkpoint(tmp_path / "last", model, {"normalization": "minmax"})
    save_training_state(tmp_path, epoch=3, model=model, optimizer=opt, scheduler=sched)
    assert not any(f.exists() for f in debris)
    assert keep.is_file() and (tmp_path / "state" / "latest.json").is_file()
