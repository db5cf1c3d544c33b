"""Atomic file writes: write to a temporary file in the same directory, fsync, then rename.

A run killed at any moment leaves either the old file or the new one, never a truncated one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    Use for writers that need a file name (``safetensors.torch.save_file``, ``cv2.imwrite``, matplotlib).
    The temporary name keeps the final suffix so that writers choosing a format by suffix still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, default: Callable[[Any], Any] | None = None) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically (NaN becomes null)."""
    text = json.dumps(nan_to_none(obj), indent=2, sort_keys=True, default=default or _json_default)
    atomic_write_text(path, text + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def nan_to_none(obj: Any) -> Any:
    """Replace float NaN (at any depth of dicts/lists) by None, so JSON output has null instead of NaN."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [nan_to_none(v) for v in obj]
    return obj


def remove_stale_temporaries(folder: str | Path, stem: str | None = None) -> int:
    """Delete the temporary files that :func:`atomic_path` leaves when a process is killed mid-write.

    They are named ``.{stem}.{random}{suffix}`` beside their target. Call this once the target itself has been
    written again (a newer complete file exists), so that a run resumed after a kill leaves no debris.

    Args:
        folder: the folder of the targets.
        stem: only temporaries of this target stem (None: every ``.*`` file of ``atomic_path``'s pattern).

    Returns:
        How many files were removed.
    """
    folder = Path(folder)
    pattern = f".{stem}.*" if stem is not None else ".*.*"
    removed = 0
    for tmp in folder.glob(pattern):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed
