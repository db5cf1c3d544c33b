"""Issue 14 acceptance: SIGKILL at 10 random points across ``train``, ``masks``, ``predict`` and ``reproduce``;
every rerun finishes with outputs identical to an uninterrupted run and leaves no truncated or temporary file.

The kill points are drawn once (seeded) as fractions of each command's uninterrupted wall time, so they land
anywhere: during start-up, in the middle of writing a file, between a file and its CSV row or manifest entry.
Reruns use each command's documented way to continue: ``train --resume``, ``masks`` and ``reproduce`` as they
are (they skip what is finished), ``predict --overwrite`` (the refusal rule: a folder with results needs it).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from test_reproduce import TINY_TRAIN, make_sperm_dataset  # noqa: E402

ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
KILLS = {"train": 3, "masks": 2, "predict": 3, "reproduce": 2}  # 10 in all


def _sets(items: list[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        out += ["--set", item]
    return out


def _argv(cmd: str, data: Path, out: Path, model: Path | None, rerun: bool) -> list[str]:
    train = [*TINY_TRAIN, "schedule.epochs=3", "runtime.progress=false", "runtime.tensorboard=false"]
    if cmd == "train":
        argv = ["train", "--data", str(data), "--model", "unet", "--out", str(out), "--preset", "demo", *_sets(train)]
        return [*argv, "--resume"] if rerun else argv
    if cmd == "masks":
        return ["masks", "--runs", str(model), "--data", str(data), "--splits", "train,test", "--out", str(out),
                "--device", "cpu"]  # fmt: skip
    if cmd == "predict":
        argv = ["predict", str(data / "train" / "images"), "--model", str(model), "--out", str(out), "--device", "cpu"]
        return [*argv, "--overwrite"] if rerun else argv
    return ["reproduce", "--data", str(data), "--out", str(out), "--preset", "demo", "--steps", "base", "--models",
            "unet", "--seeds", "0,1", "--set", f"train_overrides={json.dumps(TINY_TRAIN)}"]  # fmt: skip


def _run(argv: list[str], kill_after: float | None = None) -> tuple[int, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "spermseg", *argv], env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        if kill_after is None:
            _, err = proc.communicate(timeout=900)
            assert proc.returncode == 0, err[-3000:]
        else:
            try:
                proc.wait(timeout=kill_after)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, time.perf_counter() - t0


def _tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def _assert_no_truncated_file(root: Path) -> None:
    """Every file decodes completely; no hidden temporary file or lock is left."""
    import cv2

    for p in root.rglob("*"):
        if not p.is_file() or "data" in p.relative_to(root).parts[:1]:
            continue
        assert not p.name.startswith(".") or p.name in (".gitignore",), f"temporary file left: {p}"
        if p.suffix == ".png":
            assert cv2.imread(str(p), cv2.IMREAD_UNCHANGED) is not None, p
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".npy":
            np.load(p, allow_pickle=False)
        elif p.suffix == ".safetensors":
            _tensors(p)
        elif p.suffix == ".csv":
            text = p.read_text()
            assert not text or text.endswith("\n"), p
            rows = list(csv.reader(text.splitlines()))
            assert len({len(r) for r in rows}) <= 1, f"ragged CSV {p}"


def _same_outputs(cmd: str, ref: Path, got: Path) -> None:
    if cmd in ("train", "reproduce"):
        names = sorted(p.relative_to(ref) for p in ref.rglob("*.safetensors") if "state" not in p.parts)
        assert names and names == sorted(
            p.relative_to(got) for p in got.rglob("*.safetensors") if "state" not in p.parts
        )
        for rel in names:
            a, b = _tensors(ref / rel), _tensors(got / rel)
            assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), rel
        for rel in sorted(p.relative_to(ref) for p in ref.rglob("metrics.csv")):
            cols = [[r.split(",")[:4] for r in (root / rel).read_text().splitlines()] for root in (ref, got)]
            assert cols[0] == cols[1], rel  # epoch, lr, loss, AP (timing columns differ)
        return
    if cmd == "masks":
        ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (ref, got))
        assert ma["splits"] == mb["splits"] and ma["models"].keys() == mb["models"].keys()
    files = sorted(p.relative_to(ref) for p in ref.rglob("*") if p.is_file() and p.suffix != ".json")
    assert files == sorted(p.relative_to(got) for p in got.rglob("*") if p.is_file() and p.suffix != ".json")
    for rel in files:
        assert (ref / rel).read_bytes() == (got / rel).read_bytes(), rel


def test_sigkill_at_random_points_then_rerun_equals_uninterrupted(tmp_path: Path) -> None:
    data = make_sperm_dataset(tmp_path / "data")
    rng = np.random.default_rng(14)
    refs: dict[str, tuple[Path, float]] = {}
    model = tmp_path / "ref_train"
    for cmd in KILLS:  # train first: masks and predict use its model
        out = tmp_path / f"ref_{cmd}"
        _, seconds = _run(_argv(cmd, data, out, model, rerun=False))
        refs[cmd] = (out, seconds)
    killed = 0
    for cmd, n in KILLS.items():
        ref, seconds = refs[cmd]
        for k in range(n):
            out = tmp_path / f"{cmd}_{k}"
            code, _ = _run(
                _argv(cmd, data, out, model, rerun=False), kill_after=float(rng.uniform(0.1, 0.95)) * seconds
            )
            killed += code == -signal.SIGKILL
            if out.exists():
                _assert_no_truncated_file(out) if code == 0 else None
            _run(_argv(cmd, data, out, model, rerun=True))
            _assert_no_truncated_file(out)
            _same_outputs(cmd, ref, out)
    assert killed >= 5, f"only {killed} of 10 runs were killed before they finished"
