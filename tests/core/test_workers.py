"""Worker pools end with their parent (spermseg.utils.workers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spermseg.utils.workers import spawn_pool

# The parent: a pool with one worker busy for a minute; prints the worker's pid, then waits to be killed.
PARENT = """
import os, sys, time
from spermseg.utils.workers import spawn_pool
pool = spawn_pool(1, poll_s=0.1)
print(pool.submit(os.getpid).result(), flush=True)
pool.submit(time.sleep, 60)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its new parent to reap it counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_worker_exits_when_its_parent_is_killed() -> None:
    """A run killed with SIGKILL (no cleanup in the parent) must not leave a worker training in the background."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(parent.stdout.readline())
        assert _alive(worker)
        time.sleep(0.5)
        assert _alive(worker), "the worker must keep running while its parent lives"
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 20
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), "the worker outlived its killed parent"
    finally:
        parent.kill()
        parent.wait()


def test_pool_runs_tasks_in_other_processes() -> None:
    """The pool is an ordinary executor: results come back in order, computed outside this process."""
    with spawn_pool(2) as pool:
        pids = [f.result() for f in [pool.submit(os.getpid) for _ in range(3)]]
        assert pool.submit(sum, [1, 2, 3]).result() == 6
    assert os.getpid() not in pids
