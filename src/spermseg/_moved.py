"""Old import paths of modules that moved to their pipeline stage (issue 13), kept for one release.

``spermseg.engine.trainer`` and the like resolve to the module that now holds the code (the same module object,
so monkeypatching either name patches both) and warn once with the new path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``OLD`` names of ``moved`` and loads them as the module at the new path."""

    def __init__(self, moved: Mapping[str, str]) -> None:
        self.moved = dict(moved)

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        """A spec for a moved module's old name, else None (other finders go on)."""
        if fullname not in self.moved:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        """The module at the new path (imported now), so both names are one module object."""
        new = self.moved[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; the old path goes in the next release", DeprecationWarning, 2)
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the new module was executed by its own import."""


def install(moved: Mapping[str, str]) -> None:
    """Make each old dotted name in ``moved`` import the module at its new name.

    Args:
        moved: ``{"spermseg.engine.trainer": "spermseg.training.trainer", ...}``.
    """
    sys.meta_path.append(_Alias(moved))
