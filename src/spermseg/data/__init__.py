"""Reading datasets: file I/O, layouts and validation, in-memory arrays, normalization and augmentation.

Names are re-exported lazily (``from spermseg.data import load_split`` works), so ``import spermseg.data`` stays
cheap; see ``docs/data.md`` for the layouts and formulas.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "read_image": "io",
    "read_mask": "io",
    "read_soft_mask": "io",
    "write_image": "io",
    "write_mask": "io",
    "write_soft_mask": "io",
    "IMAGE_SUFFIXES": "io",
    "PARTS": "layouts",
    "Dataset": "layouts",
    "Split": "layouts",
    "Sample": "layouts",
    "Problem": "layouts",
    "open_dataset": "layouts",
    "validate_split": "layouts",
    "SplitArrays": "arrays",
    "load_split": "arrays",
    "NORMALIZATIONS": "transforms",
    "normalize": "transforms",
    "AugmentConfig": "transforms",
    "Augmenter": "transforms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"spermseg.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'spermseg.data' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
