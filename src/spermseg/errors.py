"""User-facing errors.

Raise :class:`SpermsegError` (or a subclass) for anything the user can fix: a missing file, a bad value, a
mismatched checkpoint. The CLI prints its message as one line and exits with code 2, without a traceback.
Messages say what is wrong, which file, and how to fix it.
"""

from __future__ import annotations


class SpermsegError(Exception):
    """An error caused by input the user can fix (printed as one line by the CLI)."""


class DataError(SpermsegError):
    """Unreadable, missing, malformed or inconsistent data files."""


class ConfigError(SpermsegError):
    """Unknown or invalid configuration keys and values."""


class CheckpointError(SpermsegError):
    """A checkpoint or bundle that is missing, corrupt, or does not match the requested architecture."""
