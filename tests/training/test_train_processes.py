"""Slow, multi-process checks: a real SIGKILL mid-run then --resume; torchrun with two CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import make_lines_dataset, tiny_overrides

pytestmark = pytest.mark.slow

# One thread per process (identical numerics in every run) and passive OpenMP waiting (no spinning on a busy box).
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}

# Trains the tiny config; with KILL_AT=e,s the process SIGKILLs itself after step s of epoch e (0-based).
SCRIPT = """
import os, signal, sys
from spermseg.training.config import train_config
from spermseg.training.trainer import TrainHooks, train
root, out, resume, kill_at = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
overrides = [f"data.root={root}", *sys.argv[5:]]
hooks = TrainHooks()
if kill_at:
    e, s = map(int, kill_at.split(","))
    def stop(epoch, step, loss):
        if (epoch, step) == (e, s):
            os.kill(os.getpid(), signal.SIGKILL)
    hooks = TrainHooks(on_step_end=stop)
train(train_config("demo", overrides=overrides), out, resume=resume, hooks=hooks)
"""


def _run(root: Path, out: Path, *, resume: bool = False, kill_at: str = "") -> subprocess.CompletedProcess:
    args = [*tiny_overrides(3), "runtime.threads=1"]
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(root), str(out), "1" if resume else "0", kill_at, *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_sigkill_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    root = make_lines_dataset(tmp_path / "data")
    ref = _run(root, tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr

    killed = _run(root, tmp_path / "run", kill_at="1,1")  # mid second epoch, after epoch 1 was saved
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert json.loads((tmp_path / "run" / "state" / "latest.json").read_text())["epoch"] == 1
    assert not (tmp_path / "run" / "result.json").exists()

    resumed = _run(root, tmp_path / "run", resume=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    for name in ("last.safetensors", "best.safetensors"):
        a, b = _weights(tmp_path / "ref" / name), _weights(tmp_path / "run" / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    ref_rows = (tmp_path / "ref" / "metrics.csv").read_text().splitlines()
    run_rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    # epoch, lr, train loss, validation AP agree (the timing columns differ)
    assert [r.split(",")[:4] for r in ref_rows] == [r.split(",")[:4] for r in run_rows]


def test_torchrun_two_cpu_processes(tmp_path: Path) -> None:
    root = make_lines_dataset(tmp_path / "data")
    out = tmp_path / "ddp"
    sets = []
    for item in [*tiny_overrides(1), "runtime.threads=1"]:
        sets += ["--set", item]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "spermseg",
        "train",
        "--data",
        str(root),
        "--out",
        str(out),
        "--preset",
        "demo",
        *sets,
    ]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2 and result["epochs"] == 1
    # rank 0 alone wrote: one best and one last checkpoint, one state
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["best.safetensors", "last.safetensors"]
    assert [p.name for p in (out / "state").glob("*.safetensors")] == ["epoch_0001.safetensors"]
    assert proc.stderr.count("spermseg train: done") == 1
    import spermseg

    assert spermseg.load_model(str(out)).spermseg_meta["epoch"] == 1
