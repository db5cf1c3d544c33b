"""Checkpoints: safetensors weights + a JSON sidecar, written atomically; training state for ``--resume``.

Model checkpoints (``STEM.safetensors`` + ``STEM.json``) carry everything needed to rebuild the model with no
other input: ``model`` (registry name or ensemble kind), ``model_kwargs``, ``kind`` (``base``/``ensemble``),
``normalization``, ``threshold`` (t_opt found on validation), ``config``, ``version``, ``data_fingerprint`` and,
for ensembles, ``n_masks`` and ``inputs`` (the base-model ids whose soft masks it reads).

Training state (for resume) lives in ``RUN_DIR/state/``: ``epoch_NNNN.safetensors`` holds every tensor (model
weights and buffers, optimizer moments, torch RNG states) and ``epoch_NNNN.json`` everything else (optimizer
hyper-parameters, scheduler, NumPy and Python RNG states, epoch, history). ``state/latest.json`` names the newest
complete pair and is replaced atomically last, so a kill at any moment leaves a consistent state. The epoch JSON
records the size and sha256 of its ``.safetensors`` file and ``latest.json`` the sha256 of the epoch JSON, so a
state changed on disk (a flipped bit, a truncated copy) is refused on resume instead of resuming silently. Nothing
is ever unpickled.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spermseg.errors import CheckpointError
from spermseg.utils.atomic import atomic_path, atomic_write_json, remove_stale_temporaries

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

FORMAT_VERSION = 1
STATE_DIR = "state"


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
    from spermseg import __version__

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


# --------------------------------------------------------------------------------------------------------------
# Training state (resume)
# --------------------------------------------------------------------------------------------------------------


def _jsonable(obj: Any) -> Any:
    """Convert optimizer/scheduler state pieces (Counters, tuples, tensors of one value) to JSON values."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.item() if obj.numel() == 1 else obj.tolist()
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


def rng_states() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Capture torch (CPU and CUDA), NumPy and Python RNG states: (tensors, JSON part)."""
    import numpy as np
    import torch

    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    np_state = np.random.get_state()  # noqa: NPY002 - the legacy global state is what user code may consume
    py_state = random.getstate()
    info = {
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    return tensors, info


def set_rng_states(tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> None:
    """Restore the states captured by :func:`rng_states`."""
    import numpy as np
    import torch

    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        cuda = [
            tensors[k]
            for k in sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
        ]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    n = info["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))  # noqa: NPY002
    p = info["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def save_training_state(
    run_dir: str | Path,
    *,
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    extra_tensors: Mapping[str, torch.Tensor] | None = None,
    extra: Mapping[str, Any] | None = None,
    keep: int = 1,
) -> Path:
    """Write the resumable state after ``epoch`` (1-based count of finished epochs) into ``RUN_DIR/state``.

    Args:
        run_dir: the run directory.
        epoch: number of finished epochs.
        model: the model being trained (unwrapped automatically).
        optimizer: its optimizer; tensors of ``optimizer.state`` go to safetensors, the rest to JSON.
        scheduler: an LR scheduler with ``state_dict()``.
        extra_tensors: more tensors to keep (e.g. a generator state), stored under ``extra.<key>``.
        extra: more JSON values (history, best score, ...).
        keep: how many epoch states to keep (older ones are deleted after the pointer moves).

    Returns:
        The stem of the written state.
    """
    state_dir = Path(run_dir) / STATE_DIR
    state_dir.mkdir(parents=True, exist_ok=True)
    stem = state_dir / f"epoch_{epoch:04d}"

    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in unwrap(model).state_dict().items()}
    opt = optimizer.state_dict()
    opt_scalars: dict[str, dict[str, Any]] = {}
    for idx, pstate in opt["state"].items():
        for key, value in pstate.items():
            if hasattr(value, "dim"):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                opt_scalars.setdefault(str(idx), {})[key] = value
    rng_t, rng_info = rng_states()
    tensors.update(rng_t)
    for key, value in (extra_tensors or {}).items():
        tensors[f"extra.{key}"] = value
    _save_tensors(stem.with_suffix(".safetensors"), tensors)
    info = {
        "format": FORMAT_VERSION,
        "epoch": epoch,
        "tensors_bytes": stem.with_suffix(".safetensors").stat().st_size,
        "tensors_sha256": _file_sha256(stem.with_suffix(".safetensors")),
        "optimizer": {"param_groups": _jsonable(opt["param_groups"]), "scalars": opt_scalars},
        "scheduler": _jsonable(scheduler.state_dict()) if scheduler is not None else None,
        "rng": rng_info,
        "extra": dict(extra or {}),
    }
    atomic_write_json(stem.with_suffix(".json"), info)
    pointer = {"epoch": epoch, "stem": stem.name, "json_sha256": _file_sha256(stem.with_suffix(".json"))}
    atomic_write_json(state_dir / "latest.json", pointer)  # the commit point
    # Only this process writes here: what is left is the debris of a write killed before a resume.
    remove_stale_temporaries(state_dir)
    for name in ("best", "last", "metrics", "config", "result"):
        remove_stale_temporaries(Path(run_dir), name)
    for old in sorted(state_dir.glob("epoch_*.json"))[:-keep] if keep > 0 else []:
        if old.stem != stem.name:
            old.unlink(missing_ok=True)
            old.with_suffix(".safetensors").unlink(missing_ok=True)
    return stem


def _file_sha256(path: Path) -> str:
    from spermseg.ensembling.mask_cache import file_sha256

    return file_sha256(path)


def _verify(path: Path, sha256: str | None, size: int | None) -> None:
    """Compare a state file with its recorded size and sha256 (states written before checksums: not checked)."""
    if size is not None and path.stat().st_size != int(size):
        raise CheckpointError(
            f"training state {path} has {path.stat().st_size} bytes, {size} were written (truncated or replaced); "
            "rerun with --force to start over"
        )
    if sha256 is not None and _file_sha256(path) != sha256:
        raise CheckpointError(
            f"training state {path} does not match its recorded sha256 (changed or corrupted on disk); rerun with "
            "--force to start over"
        )


def has_training_state(run_dir: str | Path) -> bool:
    """True when ``RUN_DIR/state/latest.json`` exists."""
    return (Path(run_dir) / STATE_DIR / "latest.json").is_file()


def load_training_state(
    run_dir: str | Path, *, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, restore_rng: bool = True
) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]]:
    """Restore what :func:`save_training_state` wrote into ``model``, ``optimizer`` and ``scheduler``.

    Returns:
        ``(epoch, extra_tensors, extra)``: the number of finished epochs and the extras given at save time.

    Raises:
        CheckpointError: missing/corrupt state or a model that does not match it.
    """
    state_dir = Path(run_dir) / STATE_DIR
    try:
        pointer = json.loads((state_dir / "latest.json").read_text())
        stem = state_dir / pointer["stem"]
        _verify(stem.with_suffix(".json"), pointer.get("json_sha256"), None)
        info = json.loads(stem.with_suffix(".json").read_text())
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"cannot read training state in {state_dir}: {exc}; rerun with --force") from None
    _verify(stem.with_suffix(".safetensors"), info.get("tensors_sha256"), info.get("tensors_bytes"))
    tensors = _load_tensors(stem.with_suffix(".safetensors"))

    model_t = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    load_weights(model, model_t, where=str(stem.with_suffix(".safetensors")))

    # Rebuild the optimizer state dict: tensors from safetensors, scalars and param groups from JSON.
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            opt_state.setdefault(int(idx), {})[name] = value
    for idx, scalars in info["optimizer"]["scalars"].items():
        opt_state.setdefault(int(idx), {}).update(scalars)
    groups = info["optimizer"]["param_groups"]
    for group in groups:  # JSON turned tuples (e.g. Adam betas) into lists
        for key, value in list(group.items()):
            if isinstance(value, list) and key != "params":
                group[key] = tuple(value)
    try:
        optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    except (ValueError, KeyError) as exc:
        raise CheckpointError(
            f"optimizer state in {stem}.json does not fit this run: {exc}; rerun with --force"
        ) from None
    if scheduler is not None and info.get("scheduler") is not None:
        sched = dict(info["scheduler"])
        if "milestones" in sched:  # MultiStepLR keeps a Counter {milestone: count}
            from collections import Counter

            sched["milestones"] = Counter({int(k): int(v) for k, v in sched["milestones"].items()})
        scheduler.load_state_dict(sched)
    if restore_rng:
        set_rng_states(tensors, info["rng"])
    extra_t = {k[len("extra.") :]: v for k, v in tensors.items() if k.startswith("extra.")}
    return int(info["epoch"]), extra_t, dict(info.get("extra") or {})
