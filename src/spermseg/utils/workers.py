"""Worker processes that end with their parent.

A ``ProcessPoolExecutor`` shuts its workers down only when the parent leaves its ``with`` block. A parent killed
by a signal (``kill PID``, a batch scheduler's SIGTERM, an out-of-memory kill) never gets there, and its workers
go on training in the background: they hold the cores, and they keep writing checkpoints into run directories
that a resumed run is writing too. Each worker started here watches its parent and exits when the parent is
gone, so killing the main process stops the whole run, and a resume starts from checkpoints no orphan touches
afterwards (checkpoints are written atomically, so a worker stopped mid-run leaves its last complete one).
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

#: How often a worker checks that its parent is alive (seconds).
PARENT_POLL_S = 0.5


def _exit_with_parent(parent_pid: int, poll_s: float) -> None:
    """Initializer of a worker: a daemon thread that ends the process once its parent has gone.

    A process whose parent dies is re-parented (to init or a subreaper), so ``os.getppid()`` changes; ``os._exit``
    because the main thread may be deep in a torch kernel that no exception would interrupt.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="spermseg-parent-watch", daemon=True).start()


def spawn_pool(max_workers: int, poll_s: float = PARENT_POLL_S) -> ProcessPoolExecutor:
    """A process pool of ``max_workers`` spawned workers (not forked: forking a process whose torch thread pools
    are running can deadlock) that exit when this process dies.

    Args:
        max_workers: number of worker processes.
        poll_s: how often each worker checks its parent, in seconds.

    Returns:
        The executor; use it as a context manager.
    """
    import multiprocessing

    return ProcessPoolExecutor(
        max_workers=max_workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_exit_with_parent,
        initargs=(os.getpid(), poll_s),
    )
