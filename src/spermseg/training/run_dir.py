"""The run directory of a training run: is it finished, may it be resumed or skipped, metrics.csv, TensorBoard,
peak memory for result.json, and clearing it for ``--force``.

``RUN_DIR/`` holds ``config.yaml``, ``metrics.csv``, ``best.safetensors/json``, ``last.safetensors/json``,
``state/`` (resume), ``result.json`` (written last: its presence marks a finished run).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spermseg.errors import SpermsegError

if TYPE_CHECKING:  # pragma: no cover
    import torch

CSV_FIELDS = (
    "epoch",
    "lr",
    "train_loss",
    "val_ap",
    "val_iou_0.5",
    "val_iou_opt",
    "val_t_opt",
    "epoch_s",
    "images_per_s",
    "best",
)


def is_finished(run_dir: str | Path) -> bool:
    """True when ``RUN_DIR/result.json`` exists (the last thing a run writes)."""
    return (Path(run_dir) / "result.json").is_file()


def check_run_dir(
    run_dir: Path, cfg_dict: dict[str, Any], resume: bool, log: Callable[[str], None]
) -> dict[str, Any] | None:
    """An existing run directory: the ``result.json`` of a finished run to skip, or None to go on (fresh, resume).

    Raises:
        SpermsegError: a run with a different config, or an unfinished run without ``resume``.
    """
    from spermseg.training import state

    saved = run_dir / "config.yaml"
    if saved.is_file():
        import yaml

        old = yaml.safe_load(saved.read_text()) or {}
        if comparable(old) != comparable(cfg_dict):
            raise SpermsegError(
                f"{run_dir} holds a run with a different config (see {saved}); use --force to overwrite it "
                "or choose another --out"
            )
    if is_finished(run_dir):
        result = json.loads((run_dir / "result.json").read_text())
        # "validation" is null for runs trained without a validation split (validation.fraction=0).
        val_ap = (result.get("validation") or {}).get("ap")
        log(f"spermseg train: {run_dir} is finished (AP {val_ap}); skipping (use --force to retrain)")
        return result
    if state.has_training_state(run_dir) and not resume:
        raise SpermsegError(f"{run_dir} holds an unfinished run; pass --resume to continue it or --force to start over")
    return None


def peak_memory_mb(device: torch.device) -> dict[str, Any]:
    import torch

    if device.type == "cuda":
        return {"peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20, "peak_memory_kind": "cuda"}
    import resource

    # ru_maxrss is in KiB on Linux: the process' peak resident memory (data, model and activations).
    return {"peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_memory_kind": "rss"}


def write_metrics_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    from spermseg.utils.atomic import atomic_write_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_FIELDS})
    atomic_write_text(path, buf.getvalue())


def comparable(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """The part of a config that must match to resume or skip a run (runtime options may change).

    Keys the saved config lacks take the defaults of :class:`~spermseg.training.config.TrainConfig`: a run written
    before a setting existed (``model.init``, the ``distill`` section) ran with that setting off, which is its
    default, so it still matches the same run asked for today.
    """
    from spermseg.config import config_to_dict
    from spermseg.training.config import TrainConfig

    out = _with_defaults(cfg_dict, config_to_dict(TrainConfig()))
    out.pop("runtime", None)
    return out


def _with_defaults(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    for key, default in defaults.items():
        if key not in out:
            out[key] = default
        elif isinstance(default, dict) and isinstance(out[key], dict):
            out[key] = _with_defaults(out[key], default)
    return out


class TensorBoard:
    """Optional TensorBoard logging (only when the ``tensorboard`` package is installed)."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                return
            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "epoch" and isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def clear_run_dir(run_dir: Path) -> None:
    """Remove the outputs a previous run wrote (only the files this trainer creates)."""
    import shutil

    for name in (
        "result.json",
        "metrics.csv",
        "config.yaml",
        "best.safetensors",
        "best.json",
        "last.safetensors",
        "last.json",
    ):
        (run_dir / name).unlink(missing_ok=True)
    for name in ("state", "tensorboard"):
        if (run_dir / name).is_dir():
            shutil.rmtree(run_dir / name)
