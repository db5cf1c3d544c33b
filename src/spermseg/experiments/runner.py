"""A small resumable-step runner for long experiment pipelines.

Each step has a name and a function ``fn(ctx) -> dict`` that writes its outputs under its own directory
``OUT/steps/NAME/`` and returns a JSON-serializable result. When the function returns, the runner writes
``OUT/steps/NAME/DONE.json`` atomically (result, wall time, timestamps). That marker is the only thing that makes a
step finished:

* a finished step is skipped on re-run (its recorded result is loaded instead),
* a run killed in the middle of a step leaves no marker, so the next run calls the step again; steps make their
  own inner work resumable (e.g. training runs that are already finished are skipped),
* ``names=[...]`` runs a subset; ``force=[...]`` re-runs finished steps.

A step that cannot run yet (a library it needs is missing, or a step it requires has not finished) raises
:class:`StepUnavailable`; the runner records ``UNAVAILABLE.json`` (no ``DONE``), so the next run tries again and
the report says "not available: <why>". Any other exception is recorded in ``FAILED.json`` with its traceback;
the runner continues with the steps that do not require the failed one.

Example:
    >>> runner = StepRunner(out_dir, [Step("a", fa), Step("b", fb, requires=("a",))])
    >>> records = runner.run()             # runs a then b
    >>> records = runner.run()             # both skipped
    >>> records["b"].status, records["b"].wall_s
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from spermseg.errors import ConfigError
from spermseg.utils.atomic import atomic_write_json
from spermseg.utils.progress import fmt_seconds

Status = Literal["done", "skipped", "unavailable", "failed", "pending"]

DONE_FILE = "DONE.json"
FAILED_FILE = "FAILED.json"
UNAVAILABLE_FILE = "UNAVAILABLE.json"
ATTEMPTS_FILE = "attempts.json"


class StepUnavailable(Exception):  # noqa: N818 - reads as a state, like StopIteration
    """Raised by a step that cannot run now; the message is the reason shown in the report."""


@dataclass
class StepContext:
    """What a step function receives.

    Attributes:
        name: the step's name.
        dir: the step's own output directory (created), ``OUT/steps/NAME``.
        out_dir: the pipeline's output directory ``OUT``.
        results: results of the steps finished so far (this run or earlier ones), by name.
        log: print one progress line (prefixed with the step name).
    """

    name: str
    dir: Path
    out_dir: Path
    results: dict[str, dict[str, Any]]
    log: Callable[[str], None]


@dataclass(frozen=True)
class Step:
    """One named step.

    Attributes:
        name: identifier used on the command line (``--steps``) and as the directory name.
        fn: ``fn(ctx: StepContext) -> dict`` doing the work; its return value is the recorded result.
        title: human-readable title for logs and reports.
        requires: names of steps whose results this step needs; when one is not finished, the step is
            recorded as unavailable instead of being called.
    """

    name: str
    fn: Callable[[StepContext], dict[str, Any]]
    title: str = ""
    requires: tuple[str, ...] = ()


@dataclass
class StepRecord:
    """The state of one step after a run (what the report shows).

    Attributes:
        name: the step's name.
        status: ``done`` (ran now), ``skipped`` (finished earlier, loaded), ``unavailable``, ``failed``, or
            ``pending`` (not selected and never finished).
        result: the step's result dict (``done``/``skipped``), else ``None``.
        wall_s: wall time of the attempt that finished the step (or of the failed attempt).
        reason: why a step is unavailable or failed (one line).
        attempts: how many times the step was started (a killed attempt counts).
        finished_at: ISO timestamp of completion.
    """

    name: str
    status: Status
    result: dict[str, Any] | None = None
    wall_s: float | None = None
    reason: str = ""
    attempts: int = 0
    finished_at: str = ""
    title: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """True when the step has a result (ran now or earlier)."""
        return self.status in ("done", "skipped")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON) form."""
        return {
            "name": self.name,
            "title": self.title,
            "status": self.status,
            "result": self.result,
            "wall_s": self.wall_s,
            "reason": self.reason,
            "attempts": self.attempts,
            "finished_at": self.finished_at,
        }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


class StepRunner:
    """Run a fixed, ordered list of steps with resume and subset selection.

    Args:
        out_dir: pipeline output directory; step ``NAME`` writes into ``out_dir/steps/NAME``.
        steps: the steps, in execution order (names must be unique).
        log: progress printer (default: ``print`` to stdout with flush).
    """

    def __init__(self, out_dir: str | Path, steps: Sequence[Step], log: Callable[[str], None] | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.steps = list(steps)
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate step names: {names}")
        self._log = log or (lambda msg: print(msg, flush=True))

    # -- paths and markers --------------------------------------------------------------------------------------
    def step_dir(self, name: str) -> Path:
        """The output directory of step ``name``."""
        return self.out_dir / "steps" / name

    def load_record(self, step: Step) -> StepRecord:
        """The recorded state of ``step`` from its markers on disk (no work is done)."""
        d = self.step_dir(step.name)
        attempts = (_read_json(d / ATTEMPTS_FILE) or {}).get("attempts", 0)
        done = _read_json(d / DONE_FILE)
        if done is not None:
            return StepRecord(
                step.name,
                "skipped",
                result=done.get("result"),
                wall_s=done.get("wall_s"),
                attempts=attempts,
                finished_at=done.get("finished_at", ""),
                title=step.title,
            )
        for fname, status in ((FAILED_FILE, "failed"), (UNAVAILABLE_FILE, "unavailable")):
            marker = _read_json(d / fname)
            if marker is not None:
                return StepRecord(
                    step.name,
                    status,
                    wall_s=marker.get("wall_s"),
                    reason=marker.get("reason", ""),
                    attempts=attempts,
                    title=step.title,
                )
        return StepRecord(step.name, "pending", attempts=attempts, title=step.title)

    def records(self) -> dict[str, StepRecord]:
        """The recorded state of every step, in order."""
        return {s.name: self.load_record(s) for s in self.steps}

    def resolve_names(self, names: Iterable[str] | None) -> list[str]:
        """Validate a ``--steps`` selection (comma lists allowed); ``None`` means all steps, in order.

        Raises:
            ConfigError: for an unknown step name (the message lists the valid ones).
        """
        valid = [s.name for s in self.steps]
        if names is None:
            return valid
        wanted: list[str] = []
        for item in names:
            for part in str(item).split(","):
                part = part.strip()
                if not part:
                    continue
                if part not in valid:
                    raise ConfigError(f"unknown step '{part}'; valid steps: {', '.join(valid)}")
                wanted.append(part)
        return [n for n in valid if n in wanted]  # always in pipeline order

    # -- running --------------------------------------------------------------------------------------------------
    def run(self, names: Iterable[str] | None = None, force: Iterable[str] = ()) -> dict[str, StepRecord]:
        """Run the selected steps in order, skipping finished ones.

        Args:
            names: steps to run (``None``: all). Unselected steps keep their recorded state.
            force: steps to re-run even when finished.

        Returns:
            The state of every step (selected or not), by name, in pipeline order.
        """
        selected = set(self.resolve_names(names))
        forced = set(self.resolve_names(force)) if force else set()
        records = self.records()
        results = {n: r.result for n, r in records.items() if r.finished and r.result is not None}
        for step in self.steps:
            if step.name not in selected:
                continue
            rec = records[step.name]
            if rec.finished and step.name not in forced:
                self._log(f"[{step.name}] finished earlier ({fmt_seconds(rec.wall_s)}); skipping")
                continue
            records[step.name] = self._run_one(step, results)
            if records[step.name].finished and records[step.name].result is not None:
                results[step.name] = records[step.name].result  # type: ignore[assignment]
        return records

    def _run_one(self, step: Step, results: dict[str, dict[str, Any]]) -> StepRecord:
        d = self.step_dir(step.name)
        d.mkdir(parents=True, exist_ok=True)
        missing = [r for r in step.requires if r not in results]
        if missing:
            reason = f"requires step(s) {', '.join(missing)} which have not finished"
            return self._unavailable(step, reason, 0.0)
        # The attempt counter is written before the work: a killed attempt still counts.
        attempts = (_read_json(d / ATTEMPTS_FILE) or {}).get("attempts", 0) + 1
        atomic_write_json(d / ATTEMPTS_FILE, {"attempts": attempts, "last_started_at": _now()})
        for stale in (FAILED_FILE, UNAVAILABLE_FILE, DONE_FILE):
            (d / stale).unlink(missing_ok=True)
        self._log(f"[{step.name}] {step.title or 'running'} ...")
        ctx = StepContext(step.name, d, self.out_dir, dict(results), lambda m: self._log(f"[{step.name}] {m}"))
        t0 = time.perf_counter()
        try:
            result = step.fn(ctx)
        except StepUnavailable as exc:
            return self._unavailable(step, str(exc), time.perf_counter() - t0, attempts)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded, and the independent steps still run
            wall = time.perf_counter() - t0
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            atomic_write_json(
                d / FAILED_FILE,
                {"reason": reason, "traceback": traceback.format_exc(), "wall_s": wall, "failed_at": _now()},
            )
            self._log(f"[{step.name}] FAILED after {fmt_seconds(wall)}: {reason} (details: {d / FAILED_FILE})")
            return StepRecord(step.name, "failed", wall_s=wall, reason=reason, attempts=attempts, title=step.title)
        wall = time.perf_counter() - t0
        if not isinstance(result, dict):
            raise TypeError(f"step '{step.name}' returned {type(result).__name__}, expected a dict")
        finished = _now()
        # DONE is written last and atomically: its presence is the proof that the step's outputs are complete.
        atomic_write_json(
            d / DONE_FILE,
            {"name": step.name, "result": result, "wall_s": wall, "finished_at": finished, "attempts": attempts},
        )
        self._log(f"[{step.name}] done in {fmt_seconds(wall)}")
        return StepRecord(
            step.name,
            "done",
            result=_read_json(d / DONE_FILE)["result"],
            wall_s=wall,  # type: ignore[index]
            attempts=attempts,
            finished_at=finished,
            title=step.title,
        )

    def _unavailable(self, step: Step, reason: str, wall: float, attempts: int = 0) -> StepRecord:
        d = self.step_dir(step.name)
        atomic_write_json(d / UNAVAILABLE_FILE, {"reason": reason, "wall_s": wall, "at": _now()})
        self._log(f"[{step.name}] not available: {reason}")
        return StepRecord(step.name, "unavailable", wall_s=wall, reason=reason, attempts=attempts, title=step.title)
