"""Start a training run from trained weights (``spermseg train --init``): fine-tuning instead of random init.

The source is a run directory (its ``best`` checkpoint), a checkpoint stem or file, or a bundle directory with
exactly one member. The network built from the run's config must have the same architecture (model, width,
keyword arguments): weights are loaded strictly, and any mismatch is one clear error naming the first tensor.
Only the weights are taken; optimizer state, schedule and epoch count start fresh.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from spermseg.errors import CheckpointError

if TYPE_CHECKING:
    from torch import nn


def init_checkpoint(source: str | Path) -> Path:
    """The ``.safetensors`` file that ``--init SOURCE`` names.

    Raises:
        CheckpointError: nothing loadable there, or a bundle of several members.
    """
    from spermseg.inference.bundle import MANIFEST, read_bundle_manifest
    from spermseg.models.checkpoints import resolve_checkpoint

    path = Path(source)
    if (path / MANIFEST).is_file():
        members = read_bundle_manifest(path)["members"]
        if len(members) != 1:
            raise CheckpointError(
                f"--init {path}: the bundle holds {len(members)} models; pass one of its members' run directories"
            )
        return path / members[0]["file"]
    if not path.exists() and not path.with_suffix(".json").exists():
        raise CheckpointError(f"--init {path}: not found; pass a run directory, a checkpoint or a bundle")
    return resolve_checkpoint(path).with_suffix(".safetensors")


def init_weights(model: nn.Module, source: str | Path) -> Path:
    """Load the weights of ``source`` into ``model`` (same architecture, strict).

    Args:
        model: the freshly built network of the run.
        source: see :func:`init_checkpoint`.

    Returns:
        The weights file used.

    Raises:
        CheckpointError: see :func:`init_checkpoint`, or an architecture mismatch (the first differing tensor).
    """
    from safetensors.torch import load_file

    from spermseg.models.checkpoints import load_weights

    weights = init_checkpoint(source)
    load_weights(model, load_file(str(weights)), where=f"--init {source}")
    return weights
