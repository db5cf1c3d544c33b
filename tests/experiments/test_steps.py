"""Tests of the resumable step runner: skip finished steps, resume after a kill, subsets, failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spermseg.errors import ConfigError
from spermseg.experiments.steps import Step, StepContext, StepRunner, StepUnavailable


def _counting_step(calls: list[str], name: str, value: int):
    def fn(ctx: StepContext) -> dict:
        calls.append(name)
        (ctx.dir / "out.txt").write_text(str(value))
        return {"value": value, "seen": sorted(ctx.results)}

    return fn


def test_finished_steps_are_skipped_and_results_reloaded(tmp_path: Path) -> None:
    calls: list[str] = []
    steps = [Step("a", _counting_step(calls, "a", 1)), Step("b", _counting_step(calls, "b", 2), requires=("a",))]
    recs = StepRunner(tmp_path, steps, log=lambda m: None).run()
    assert calls == ["a", "b"]
    assert recs["a"].status == "done" and recs["b"].status == "done"
    assert recs["b"].result == {"value": 2, "seen": ["a"]}
    assert recs["a"].wall_s is not None and recs["a"].wall_s >= 0
    assert (tmp_path / "steps" / "a" / "DONE.json").is_file()

    recs2 = StepRunner(tmp_path, steps, log=lambda m: None).run()
    assert calls == ["a", "b"], "finished steps must not run again"
    assert recs2["a"].status == "skipped" and recs2["b"].result == recs["b"].result
    assert recs2["a"].wall_s == pytest.approx(recs["a"].wall_s)

    StepRunner(tmp_path, steps, log=lambda m: None).run(force=["b"])
    assert calls == ["a", "b", "b"]


def test_subset_selection_and_unknown_names(tmp_path: Path) -> None:
    calls: list[str] = []
    steps = [Step(n, _counting_step(calls, n, i)) for i, n in enumerate(["x", "y", "z"])]
    runner = StepRunner(tmp_path, steps, log=lambda m: None)
    recs = runner.run(["z,x"])
    assert calls == ["x", "z"], "subset runs in pipeline order"
    assert recs["y"].status == "pending"
    with pytest.raises(ConfigError, match="valid steps: x, y, z"):
        runner.run(["nope"])


def test_failure_and_unavailable_are_recorded_and_retried(tmp_path: Path) -> None:
    state = {"fail": True}

    def flaky(ctx: StepContext) -> dict:
        if state["fail"]:
            raise RuntimeError("boom\nsecond line")
        return {"ok": True}

    def missing(ctx: StepContext) -> dict:
        raise StepUnavailable("spermseg.evaluation.blur is not implemented yet")

    calls: list[str] = []
    steps = [
        Step("flaky", flaky),
        Step("after", _counting_step(calls, "after", 3), requires=("flaky",)),
        Step("indep", _counting_step(calls, "indep", 4)),
        Step("missing", missing),
    ]
    recs = StepRunner(tmp_path, steps, log=lambda m: None).run()
    assert recs["flaky"].status == "failed" and recs["flaky"].reason == "RuntimeError: boom"
    assert "Traceback" in json.loads((tmp_path / "steps/flaky/FAILED.json").read_text())["traceback"]
    assert recs["after"].status == "unavailable" and "flaky" in recs["after"].reason
    assert recs["indep"].status == "done", "independent steps still run after a failure"
    assert recs["missing"].status == "unavailable" and "blur" in recs["missing"].reason

    state["fail"] = False
    recs = StepRunner(tmp_path, steps, log=lambda m: None).run()
    assert recs["flaky"].status == "done" and recs["after"].status == "done"
    assert recs["indep"].status == "skipped"
    assert not (tmp_path / "steps/flaky/FAILED.json").exists()
    assert recs["flaky"].attempts == 2


_KILL_SCRIPT = """
import sys, time
from pathlib import Path
from spermseg.experiments.steps import Step, StepRunner

out = Path(sys.argv[1])
def first(ctx):
    with open(out / "first_calls.txt", "a") as fh:
        fh.write("x")
    return {"v": 1}
def second(ctx):
    (out / "second_started").write_text("1")
    if not (out / "let_finish").exists():
        time.sleep(60)
    return {"v": 2}
StepRunner(out, [Step("first", first), Step("second", second)], log=lambda m: None).run()
"""


def test_killed_run_continues_where_it_stopped(tmp_path: Path) -> None:
    script = tmp_path / "pipe.py"
    script.write_text(_KILL_SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, str(script), str(out)], start_new_session=True)
    try:
        deadline = time.time() + 30
        while not (out / "second_started").exists():
            assert time.time() < deadline, "the pipeline did not reach step 2"
            assert proc.poll() is None, "the pipeline exited early"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # a real kill in the middle of step 2
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (out / "steps/first/DONE.json").exists()
    assert not (out / "steps/second/DONE.json").exists(), "a killed step must not be marked finished"
    (out / "let_finish").write_text("1")
    subprocess.run([sys.executable, str(script), str(out)], check=True, timeout=60)
    assert (out / "first_calls.txt").read_text() == "x", "the finished step must not run again"
    done = json.loads((out / "steps/second/DONE.json").read_text())
    assert done["result"] == {"v": 2} and done["attempts"] == 2
