"""Model checkpoints: safetensors weights + a JSON sidecar, written atomically, rebuilt with no other input.

Model checkpoints (``STEM.safetensors`` + ``STEM.json``) carry everything needed to rebuild the model with no
other input: ``model`` (registry name or ensemble kind), ``model_kwargs``, ``kind`` (``base``/``ensemble``),
``normalization``, ``threshold`` (t_opt found on validation), ``config``, ``version``, ``data_fingerprint`` and,
for ensembles, ``n_masks`` and ``inputs`` (the base-model ids whose soft masks it reads). Training writes them,
inference and ensembling read them; the resumable training state is :mod:`spermseg.training.state`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spermseg.errors import CheckpointError
from spermseg.utils.atomic import atomic_path, atomic_write_json, remove_stale_temporaries

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

FORMAT_VERSION = 1


def unwrap(model: nn.Module) -> nn.Module:
    """Return the plain module inside a DistributedDataParallel (or ``torch.compile``) wrapper."""
    inner = getattr(model, "module", None)
    if inner is not None:
        return unwrap(inner)
    inner = getattr(model, "_orig_mod", None)
    return unwrap(inner) if inner is not None else model


def _tensor_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # clone() breaks storage sharing (safetensors refuses tied tensors) and detaches from the device.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def _save_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(_tensor_dict(tensors), str(tmp))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"cannot read weights {path}: {exc}; the file is corrupt, retrain or restore it"
        ) from None


def model_identity(model: nn.Module) -> dict[str, Any]:
    """The metadata that rebuilds ``model``: name, kwargs and kind, from the attributes the factories set."""
    inner = unwrap(model)
    name = getattr(inner, "spermseg_name", None)
    if name is None:
        raise CheckpointError(
            "cannot checkpoint a model that was not built by spermseg.create_model/create_ensemble "
            "(no spermseg_name attribute)"
        )
    kind = getattr(inner, "spermseg_kind", None) or ("ensemble" if hasattr(inner, "n_masks") else "base")
    out: dict[str, Any] = {"model": name, "model_kwargs": dict(getattr(inner, "spermseg_kwargs", {})), "kind": kind}
    if kind == "ensemble":
        out["n_masks"] = int(inner.n_masks)
    return out


def resolve_checkpoint(path: str | Path) -> Path:
    """Map a run directory, a stem, or a ``.safetensors``/``.json`` file to the checkpoint stem (no suffix).

    Raises:
        CheckpointError: when nothing matching exists.
    """
    path = Path(path)
    if path.is_dir():
        for name in ("best", "last"):
            if (path / f"{name}.json").is_file():
                return path / name
        raise CheckpointError(f"no checkpoint (best.json or last.json) in {path}; train a model there first")
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    if not path.with_suffix(".json").is_file() or not path.with_suffix(".safetensors").is_file():
        raise CheckpointError(f"checkpoint {path}.safetensors/.json not found; pass a run directory or a checkpoint")
    return path


def save_checkpoint(stem: str | Path, model: nn.Module, meta: Mapping[str, Any]) -> Path:
    """Write ``stem.safetensors`` (weights and buffers) and ``stem.json`` (metadata), each atomically.

    The weights are written first and the sidecar records their size, so a kill between the two writes is
    detected by :func:`load_model` instead of silently pairing new weights with old metadata.

    Args:
        stem: path without suffix, e.g. ``RUN_DIR/best``.
        model: the model (DDP wrappers are unwrapped).
        meta: metadata; ``model``, ``model_kwargs`` and ``kind`` are filled in from the model when absent.

    Returns:
        The stem as a Path.
    """
    from spermseg._version import __version__

    stem = Path(stem)
    weights = stem.with_suffix(".safetensors")
    _save_tensors(weights, unwrap(model).state_dict())
    full = {**model_identity(model), "version": __version__, **dict(meta)}
    full["format"] = FORMAT_VERSION
    full["weights_bytes"] = weights.stat().st_size
    atomic_write_json(stem.with_suffix(".json"), full)
    remove_stale_temporaries(stem.parent, stem.name)  # debris of a write killed in an earlier epoch
    return stem


def read_meta(path: str | Path) -> dict[str, Any]:
    """Read the JSON sidecar of a checkpoint (any form accepted by :func:`resolve_checkpoint`)."""
    stem = resolve_checkpoint(path)
    try:
        return json.loads(stem.with_suffix(".json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read checkpoint metadata {stem}.json: {exc}") from None


def build_from_meta(meta: Mapping[str, Any], where: str = "checkpoint") -> nn.Module:
    """Instantiate the (untrained) architecture described by checkpoint metadata."""
    from spermseg.errors import ConfigError

    for key in ("model", "kind"):
        if key not in meta:
            raise CheckpointError(f"{where}: metadata has no '{key}'; it was not written by spermseg save_checkpoint")
    kwargs = dict(meta.get("model_kwargs") or {})
    try:
        if meta["kind"] == "ensemble":
            from spermseg.models import create_ensemble

            return create_ensemble(meta["model"], int(meta["n_masks"]), **kwargs)
        from spermseg.models import create_model

        return create_model(meta["model"], **kwargs)
    except ConfigError as exc:
        raise CheckpointError(f"{where}: cannot rebuild model '{meta['model']}': {exc}") from None


def load_weights(model: nn.Module, tensors: Mapping[str, torch.Tensor], where: str) -> None:
    """Load ``tensors`` into ``model`` strictly; raise one clear CheckpointError on any architecture mismatch."""
    own = unwrap(model).state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    shapes = [
        f"{k} {tuple(tensors[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in tensors and tuple(tensors[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shapes:
            parts.append(f"{len(shapes)} with other shapes (e.g. {shapes[0]})")
        name = getattr(unwrap(model), "spermseg_name", type(unwrap(model)).__name__)
        raise CheckpointError(
            f"{where} does not match the architecture of '{name}': {'; '.join(parts)}; "
            "use the same model name and keyword arguments (width, ...) as in training"
        )
    unwrap(model).load_state_dict(dict(tensors), strict=True)


def load_model(path: str | Path) -> nn.Module:
    """Rebuild a model from a checkpoint with no other input (see :func:`spermseg.load_model`).

    Args:
        path: a run directory (loads ``best``, else ``last``), a checkpoint stem, or its ``.safetensors``/``.json``.

    Returns:
        The model in eval mode on the CPU, with ``model.spermseg_meta`` set to the metadata dict.

    Raises:
        CheckpointError: missing or corrupt files, or weights that do not fit the recorded architecture.
    """
    stem = resolve_checkpoint(path)
    meta = read_meta(stem)
    weights = stem.with_suffix(".safetensors")
    if "weights_bytes" in meta and weights.stat().st_size != meta["weights_bytes"]:
        raise CheckpointError(
            f"{weights} does not belong to {stem}.json (size differs; a write was interrupted); "
            "resume or rerun the training that wrote it"
        )
    model = build_from_meta(meta, where=str(stem))
    load_weights(model, _load_tensors(weights), where=str(weights))
    model.eval()
    model.spermseg_meta = meta  # type: ignore[attr-defined]
    return model
