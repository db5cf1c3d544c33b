"""Tests of ``spermseg reproduce``: config and presets, and resume after a real kill during the base step (no
finished training run is redone), plus an end-to-end run on a tiny dataset (slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from spermseg.errors import ConfigError
from spermseg.experiments.reproduce import STEP_NAMES, reproduce_config, score_with_curve


def make_sperm_dataset(
    root: Path, *, size: int = 48, n_train_groups: int = 4, n_test_groups: int = 2, per_group: int = 2, seed: int = 0
) -> Path:
    """A tiny SegSperm-layout dataset: dark ellipse heads with line tails on a noisy gradient.

    train and test have GT1 (full/head/tail); test_small repeats test with GT1-GT3, where GT2 dilates the
    masks and GT3 drops the last part of each tail (noisy raters, like the paper's).
    """
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for split, n_groups, offset in (("train", n_train_groups, 0), ("test", n_test_groups, 100)):
        for g in range(n_groups):
            for f in range(per_group):
                img = 0.6 + rng.uniform(-0.2, 0.2) * (xx - 0.5) + rng.normal(0, 0.03, (size, size))
                head = np.zeros((size, size), np.uint8)
                tail = np.zeros((size, size), np.uint8)
                tail_short = np.zeros((size, size), np.uint8)
                for _ in range(int(rng.integers(1, 3))):
                    c = rng.integers(10, size - 10, 2)
                    ang = rng.uniform(0, 2 * np.pi)
                    d = np.array([np.cos(ang), np.sin(ang)])
                    end = np.clip(c + 18 * d, 0, size - 1).astype(int)
                    mid = np.clip(c + 10 * d, 0, size - 1).astype(int)
                    cv2.line(tail, tuple(int(v) for v in c), tuple(int(v) for v in end), 255, 1)
                    cv2.line(tail_short, tuple(int(v) for v in c), tuple(int(v) for v in mid), 255, 1)
                    cv2.ellipse(head, tuple(int(v) for v in c), (3, 2), float(np.degrees(ang)), 0, 360, 255, -1)
                tail[head > 0] = 0
                tail_short[head > 0] = 0
                img = np.where((head | tail) > 0, img - 0.3, img)
                name = f"{offset + g}_{f:04d}_1.png"
                raters = {"GT1": (head, tail)}
                if split == "test":
                    k = np.ones((3, 3), np.uint8)
                    raters["GT2"] = (cv2.dilate(head, k), cv2.dilate(tail, k) & ~cv2.dilate(head, k))
                    raters["GT3"] = (head, tail_short)
                for s in (split, "test_small") if split == "test" else (split,):
                    (root / s / "images").mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(root / s / "images" / name), np.clip(img * 255, 0, 255).astype(np.uint8))
                    for r, (h, t) in raters.items():
                        if s != "test_small" and r != "GT1":
                            continue
                        for part, m in (("head", h), ("tail", t), ("full", h | t)):
                            (root / s / f"{r}_{part}").mkdir(parents=True, exist_ok=True)
                            cv2.imwrite(str(root / s / f"{r}_{part}" / name), m)
    return root


TINY_TRAIN = [
    "model.width=4",
    "schedule.epochs=1",
    "schedule.steps_per_epoch=2",
    "schedule.batch_size=2",
    "schedule.milestones=[1]",
    "data.crop=32",
    "validation.fraction=0.25",
    "runtime.threads=1",
]


def test_presets_and_validation() -> None:
    demo = reproduce_config("demo")
    paper = reproduce_config("paper")
    assert len(paper.models) == 10 and paper.seeds == [0, 1, 2, 3, 4] and paper.blur_kernels == list(range(1, 16))
    assert paper.ensemble_kinds == ["ens_s", "ens_is", "ens_concat", "ens_att_v1", "ens_att_v2"]
    assert len(demo.models) < len(paper.models) and demo.train_preset == "demo"
    assert reproduce_config("demo", overrides=["seeds=[3]"]).seeds == [3]
    with pytest.raises(ConfigError, match="valid presets"):
        reproduce_config("huge")
    with pytest.raises(ConfigError, match="valid models"):
        reproduce_config("demo", overrides=["models=[nope]"])
    with pytest.raises(ConfigError, match="trainable kinds"):
        reproduce_config("demo", overrides=["ensemble_kinds=[avg]"])
    from spermseg.config import parse_seeds

    assert parse_seeds("0-2,5") == [0, 1, 2, 5]


def test_score_with_curve_matches_a_brute_force_sweep() -> None:
    rng = np.random.default_rng(0)
    refs = [rng.random((16, 16)) < 0.2 for _ in range(3)]
    probs = [np.clip(r * 0.5 + rng.random(r.shape) * 0.6, 0, 1).astype(np.float32) for r in refs]
    metrics, curve = score_with_curve(probs, refs)
    p = np.concatenate([x.ravel() for x in probs])
    r = np.concatenate([x.ravel() for x in refs])
    best = max(np.sum((p >= t) & r) / np.sum((p >= t) | r) for t in np.unique(p))
    assert metrics["iou_opt"] == pytest.approx(best, abs=2e-3)
    assert len(curve["thresholds"]) == 101 and max(curve["iou"]) <= metrics["iou_opt"] + 1e-9
    i = int(np.argmin(np.abs(np.asarray(curve["thresholds"]) - 0.5)))
    assert curve["iou"][i] == pytest.approx(metrics["iou_0.5"], abs=0.02)


def _reproduce_cmd(data: Path, out: Path, steps: str, models: str = "unet,fpn") -> list[str]:
    return [
        sys.executable,
        "-m",
        "spermseg",
        "reproduce",
        "--data",
        str(data),
        "--out",
        str(out),
        "--preset",
        "demo",
        "--steps",
        steps,
        "--models",
        models,
        "--seeds",
        "0,1",
        "--set",
        f"train_overrides={json.dumps(TINY_TRAIN)}",
        "--set",
        "normalization_models=[unet]",
    ]


@pytest.mark.slow
def test_kill_during_base_step_does_not_retrain_finished_runs(tmp_path: Path) -> None:
    data = make_sperm_dataset(tmp_path / "data")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        _reproduce_cmd(data, out, "base"),
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    first = out / "runs/base/unet/minmax/s0/result.json"
    try:
        deadline = time.time() + 240
        while not first.exists():
            assert proc.poll() is None, f"reproduce exited early:\n{proc.stdout.read() if proc.stdout else ''}"
            assert time.time() < deadline, "the first training run did not finish in time"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # a real kill in the middle of step 3
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (out / "steps/base/DONE.json").exists(), "the kill came too late to test resume"
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "runs/base").rglob("result.json")}
    assert first in before
    done = subprocess.run(_reproduce_cmd(data, out, "base"), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for p, (mtime, content) in before.items():
        assert p.stat().st_mtime_ns == mtime and p.read_bytes() == content, f"{p} was retrained"
    result = json.loads((out / "steps/base/DONE.json").read_text())["result"]
    assert set(result["summary"]) == {"unet", "fpn"}
    assert result["summary"]["unet"]["ap"]["n"] == 2
    assert "report:" in done.stdout and (out / "report.html").is_file()


@pytest.mark.slow
def test_all_steps_end_to_end_on_tiny_data(tmp_path: Path) -> None:
    data = make_sperm_dataset(tmp_path / "data")
    out = tmp_path / "out"
    from spermseg.cli import main

    code = main(
        _reproduce_cmd(data, out, ",".join(STEP_NAMES))[3:]
        + ["--set", f"ensemble_overrides={json.dumps(TINY_TRAIN)}", "--set", "blur_kernels=[1,5]"]
    )
    steps = json.loads((out / "steps.json").read_text())
    for name in ("normalization", "base", "ensembles", "qualitative"):
        assert steps[name]["status"] == "done", (name, steps[name]["reason"])
    for name in STEP_NAMES:
        # Steps waiting for a library that is not there yet must say so, never pretend.
        assert steps[name]["status"] in ("done", "unavailable"), (name, steps[name])
        if steps[name]["status"] == "unavailable":
            assert steps[name]["reason"]
    assert code == (0 if all(s["status"] == "done" for s in steps.values()) else 1)
    table = steps["ensembles"]["result"]["table"]
    assert {"avg", "ens_att_v2"} <= set(table["ap"])
    html = (out / "report.html").read_text()
    assert "Table 3 (top)" in html and "data:image/png;base64," in html
    # every reproduce run writes the headline (best base, avg, featured ensemble; full/head/tail) and shows it first
    summary = json.loads((out / "summary.json").read_text())["headline"]
    assert [r["role"] for r in summary["rows"]] == ["best_base", "avg", "ensemble"]
    assert set(summary["rows"][0]) >= {"method", "full", "head", "tail"} and summary["split"] == "test"
    assert html.index("Headline") < html.index("Table 3 (top)")


@pytest.mark.slow
def test_demo_command_with_tiny_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`spermseg demo` end to end (synthetic data with a video, so all eight steps run), with tiny training."""
    from spermseg.cli import main

    tiny = json.dumps(TINY_TRAIN)
    code = main(
        [
            "demo",
            "--out",
            str(tmp_path / "demo"),
            "--set",
            f"train_overrides={tiny}",
            "--set",
            f"ensemble_overrides={tiny}",
            "--set",
            "blur_kernels=[1,9]",
            "--set",
            "seeds=[0]",
        ]
    )
    out = capsys.readouterr().out
    steps = json.loads((tmp_path / "demo/steps.json").read_text())
    assert {n: s["status"] for n, s in steps.items()} == {n: "done" for n in STEP_NAMES}, steps
    assert code == 0
    assert steps["temporal"]["result"].get("status") != "not_applicable", "synthetic data has a video"
    assert "summary on the synthetic test split" in out and "report:" in out and "demo finished in" in out
    assert "headline (test split vs GT1" in out and (tmp_path / "demo/summary.json").is_file()
    html = (tmp_path / "demo/report.html").read_text()
    for needle in ("Table 2 (top)", "Table 4: IoU_opt, tail", "Fig. 12", "Fig. 14", "Fig. 6"):
        assert needle in html, needle


@pytest.mark.slow
def test_ensembles_trained_two_at_a_time_equal_those_trained_one_after_another(tmp_path: Path) -> None:
    """jobs=2 trains the ensembles in worker processes; the weights must be those of the in-process runs."""
    import shutil

    from spermseg.cli import main

    data = make_sperm_dataset(tmp_path / "data")
    a, b = tmp_path / "a", tmp_path / "b"
    extra = ["--set", f"ensemble_overrides={json.dumps(TINY_TRAIN)}", "--set", "ensemble_seeds=[0,1]"]
    run = ["--set", "threads=1"]
    assert main(_reproduce_cmd(data, a, "base,ensembles")[3:] + extra + run + ["--set", "jobs=2"]) == 0
    shutil.copytree(a, b)
    shutil.rmtree(b / "runs" / "ensembles")
    shutil.rmtree(b / "steps" / "ensembles")
    assert main(_reproduce_cmd(data, b, "ensembles")[3:] + extra + run + ["--set", "jobs=1"]) == 0
    weights = sorted((a / "runs" / "ensembles").rglob("best.safetensors"))
    assert len(weights) == 2
    for w in weights:
        assert w.read_bytes() == (b / w.relative_to(a)).read_bytes(), w
