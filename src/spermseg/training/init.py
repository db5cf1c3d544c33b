"""Start a training run from trained weights (``spermseg train --init``): fine-tuning instead of random init.

The source is a run directory (its ``best`` checkpoint), a checkpoint stem or file, a bundle directory with
exactly one member, or ``builtin`` (the model that ships with spermseg, :func:`spermseg.inference.bundle.builtin_dir`).
A bundle's files are checked against its checksums first. The network built from the run's config must have
the same architecture (model, width, keyword arguments): weights are loaded strictly, and any mismatch is one
clear error naming the source's architecture and the first differing tensor. Only the weights are taken;
optimizer state, schedule and epoch count start fresh.
"""

from __future__ import annotations

import json
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
    from spermseg.inference.bundle import MANIFEST, builtin_dir, is_builtin, read_bundle_manifest, verify_members
    from spermseg.models.checkpoints import resolve_checkpoint

    path = builtin_dir() if is_builtin(source) else Path(source)
    if (path / MANIFEST).is_file():
        manifest = read_bundle_manifest(path)
        verify_members(path, manifest)
        members = manifest["members"]
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

    from spermseg.models.checkpoints import load_weights, read_meta

    weights = init_checkpoint(source)
    meta = read_meta(weights)
    arch = f"{meta.get('model')} {json.dumps(meta.get('model_kwargs') or {}, sort_keys=True)}"
    load_weights(model, load_file(str(weights)), where=f"--init {source} (a {arch})")
    return weights
