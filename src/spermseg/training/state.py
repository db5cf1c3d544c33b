"""Training state for ``--resume``, written atomically and verified on reading.

Training state lives in ``RUN_DIR/state/``: ``epoch_NNNN.safetensors`` holds every tensor (model
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
from spermseg.models.checkpoints import FORMAT_VERSION, _load_tensors, _save_tensors, load_weights, unwrap
from spermseg.utils.atomic import atomic_write_json, remove_stale_temporaries
from spermseg.utils.hashing import file_sha256

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

STATE_DIR = "state"


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
        "tensors_sha256": file_sha256(stem.with_suffix(".safetensors")),
        "optimizer": {"param_groups": _jsonable(opt["param_groups"]), "scalars": opt_scalars},
        "scheduler": _jsonable(scheduler.state_dict()) if scheduler is not None else None,
        "rng": rng_info,
        "extra": dict(extra or {}),
    }
    atomic_write_json(stem.with_suffix(".json"), info)
    pointer = {"epoch": epoch, "stem": stem.name, "json_sha256": file_sha256(stem.with_suffix(".json"))}
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


def _verify(path: Path, sha256: str | None, size: int | None) -> None:
    """Compare a state file with its recorded size and sha256 (states written before checksums: not checked)."""
    if size is not None and path.stat().st_size != int(size):
        raise CheckpointError(
            f"training state {path} has {path.stat().st_size} bytes, {size} were written (truncated or replaced); "
            "rerun with --force to start over"
        )
    if sha256 is not None and file_sha256(path) != sha256:
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
