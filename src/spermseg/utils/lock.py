"""An exclusive lock file (``O_CREAT | O_EXCL``) so that two runs never write into one output folder at once.

The lock records the holder's process id and host. A lock left by a killed process on this host (its process id
no longer runs) is stale and is taken over; any other lock makes the second run fail with a clear message.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from spermseg.errors import SpermsegError

_EMPTY_GRACE_S = 10.0  # a lock file still empty after this long was left by a process killed while creating it


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _is_stale(path: Path) -> bool:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return True
    if not text.strip():
        return time.time() - path.stat().st_mtime > _EMPTY_GRACE_S
    try:
        info = json.loads(text)
        pid, host = int(info["pid"]), str(info["host"])
    except (ValueError, KeyError, TypeError):
        return True  # not ours to interpret; a corrupt lock cannot protect anything
    return host == socket.gethostname() and not _pid_alive(pid)


@contextmanager
def exclusive_lock(path: str | os.PathLike[str], what: str) -> Iterator[Path]:
    """Hold ``path`` as a lock file for the duration of the ``with`` block.

    Args:
        path: the lock file (its folder must exist).
        what: what is being protected, for the message (e.g. ``"spermseg predict into preds"``).

    Raises:
        SpermsegError: another live process holds the lock.
    """
    path = Path(path)
    payload = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
    for attempt in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if attempt == 0 and _is_stale(path):
                path.unlink(missing_ok=True)  # left by a killed run: take it over
                continue
            try:
                holder = json.loads(path.read_text())
                who = f"process {holder.get('pid')} on {holder.get('host')}"
            except (OSError, ValueError):
                who = "another process"
            raise SpermsegError(
                f"{what}: {who} is already writing there (lock {path}); wait for it to finish or choose another "
                f"folder (delete {path.name} only if no such process runs)"
            ) from None
        with os.fdopen(fd, "w") as fh:
            fh.write(payload)
        break
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
