"""Open what ``spermseg predict`` and ``spermseg track`` wrote, with their measurements (no Qt, no napari import).

Accepted paths (anything else returns None, so napari's own readers take it):

* a ``predict`` output folder (it holds ``predictions.csv``), or its ``predictions.csv`` / ``sperm.csv``, or one
  ``NAME_instances.png|.tif`` / ``NAME_parts.png|.tif`` in it: per input, ``NAME sperm`` (Labels from
  ``NAME_instances``, the input's ``sperm.csv`` rows as its table), ``NAME parts`` (part networks) and
  ``NAME sperm prob`` (hidden). A video's frames become one (T, H, W) stack; its table has a ``frame`` column.
  Without ``--instances`` the binary mask opens as ``NAME mask`` (Labels, no table: its ``sperm.csv`` rows are
  connected components, not label ids).
* a ``track`` output folder (it holds ``track.json`` or ``tracks.csv``), or its ``labels.tif``, ``tracks.csv``,
  ``kinematics.csv`` or ``track.json``: ``NAME sperm`` (Labels from ``labels.tif``, ids = track ids, the
  ``kinematics.csv`` rows as its table) and ``NAME tracks`` (Tracks from ``tracks.csv``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from spermseg.napari import _core
from spermseg.napari.layers import LayerDataTuple, labels_layer, parts_layer, prob_layer, table_meta, tracks_layer

ReaderFn = Callable[[Any], list[LayerDataTuple]]
_LABEL_SUFFIXES = ("_instances.png", "_instances.tif", "_parts.png", "_parts.tif")
_TRACK_FILES = ("labels.tif", "tracks.csv", "kinematics.csv", "track.json")


def _folder_kind(path: Path) -> tuple[str, Path] | None:
    """(``predict`` | ``track``, output folder) of a path, or None when it is neither tool's output."""
    if path.is_dir():
        if (path / "predictions.csv").is_file():
            return "predict", path
        if (path / "track.json").is_file() or (path / "tracks.csv").is_file():
            return "track", path
        return None
    name = path.name
    if name in _TRACK_FILES and ((path.parent / "track.json").is_file() or (path.parent / "tracks.csv").is_file()):
        return "track", path.parent
    if name in ("predictions.csv", "sperm.csv") and (path.parent / "predictions.csv").is_file():
        return "predict", path.parent
    if name.endswith(_LABEL_SUFFIXES):
        for folder in (path.parent, path.parent.parent):  # images, or a video's frame folder
            if (folder / "predictions.csv").is_file():
                return "predict", folder
    return None


def napari_get_reader(path: str | list[str]) -> ReaderFn | None:
    """npe2 reader hook: a reader function for spermseg output paths, None for anything else.

    Args:
        path: one path or a list (only the first is inspected; each is opened).

    Returns:
        :func:`read_outputs` or None.
    """
    first = path[0] if isinstance(path, list) and path else path
    if not isinstance(first, str | Path):
        return None
    return read_outputs if _folder_kind(Path(first)) is not None else None


def read_outputs(path: str | Path | list[str | Path]) -> list[LayerDataTuple]:
    """The layers of one or several spermseg output paths (module docstring).

    Args:
        path: a path or a list of paths accepted by :func:`napari_get_reader`.

    Returns:
        ``LayerDataTuple`` s; a single ``NAME_instances`` file opens only its input.

    Raises:
        SpermsegError: a path that is not a predict or track output, or unreadable files in it.
    """
    from spermseg.errors import DataError

    layers: list[LayerDataTuple] = []
    for p in path if isinstance(path, list) else [path]:
        p = Path(p)
        found = _folder_kind(p)
        if found is None:
            raise DataError(f"{p} is neither a 'spermseg predict' nor a 'spermseg track' output folder or file")
        kind, folder = found
        if kind == "track":
            layers.extend(read_track_outputs(folder))
        else:
            only = p if p.name.endswith(_LABEL_SUFFIXES) else None
            layers.extend(read_predict_outputs(folder, only=only))
    return layers


def _stem_of(row: dict[str, Any]) -> str:
    """``NAME`` (or ``NAME/frame_000000``) of a predictions.csv row: its binary mask path without ``_mask.png``."""
    mask = str(row["binary_mask"])
    return mask[: -len("_mask.png")] if mask.endswith("_mask.png") else mask.rsplit(".", 1)[0]


def _label_file(out: Path, stem: str, kind: str) -> Path | None:
    for suffix in (".png", ".tif"):
        candidate = out / f"{stem}_{kind}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def read_predict_outputs(out: Path, only: Path | None = None) -> list[LayerDataTuple]:
    """Layers of a ``spermseg predict`` folder, one group per input (module docstring).

    Args:
        out: the folder holding ``predictions.csv``.
        only: one ``NAME_instances``/``NAME_parts`` file: open only its input.

    Returns:
        ``LayerDataTuple`` s: soft mask, sperm (or mask) and parts per input.
    """
    rows = _core.read_csv(out / "predictions.csv")
    sperm = _core.read_csv(out / "sperm.csv")
    by_input: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_input.setdefault(str(row["input"]), []).append(row)
    layers: list[LayerDataTuple] = []
    for source, frames in by_input.items():
        frames = sorted(frames, key=lambda r: int(r["frame"]))
        stems = [_stem_of(r) for r in frames]
        if only is not None and not any(_label_file(out, s, k) == only for s in stems for k in ("instances", "parts")):
            continue
        name = stems[0].split("/")[0] if len(stems) > 1 else stems[0]
        layers.extend(_input_layers(out, source, name, stems, [int(r["frame"]) for r in frames], sperm))
    return layers


def _stacked(arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.stack(arrays)


def _input_layers(
    out: Path, source: str, name: str, stems: list[str], frames: list[int], sperm: list[dict[str, Any]]
) -> list[LayerDataTuple]:
    """The layers of one input (an image: one stem; a video: one stem per frame)."""
    layers: list[LayerDataTuple] = []
    probs = [p for p in (_prob_file(out, s) for s in stems) if p is not None]
    if len(probs) == len(stems):
        layers.append(prob_layer(_stacked([_core.read_prob_image(p) for p in probs]), name))
    inst = [_label_file(out, s, "instances") for s in stems]
    if all(p is not None for p in inst):
        rows = [r for r in sperm if str(r.get("input")) == source and int(r.get("frame", 0)) in set(frames)]
        cols = ["frame", *_core.sperm_columns()] if len(stems) > 1 else _core.sperm_columns()
        table = table_meta("sperm", cols, rows, source=source, folder=str(out))
        labels = _stacked([_core.read_label_image(p, "instances") for p in inst])  # type: ignore[arg-type]
        layers.append(labels_layer(labels, f"{name} sperm", table))
    else:
        masks = [out / f"{s}_mask.png" for s in stems]
        if all(m.is_file() for m in masks):
            binary = _stacked([(_core.read_label_image(m) > 0).astype(np.uint8) for m in masks])
            layers.append(labels_layer(binary, f"{name} mask"))
    parts = [_label_file(out, s, "parts") for s in stems]
    if all(p is not None for p in parts):
        layers.append(parts_layer(_stacked([_core.read_label_image(p, "parts") for p in parts]), name))  # type: ignore[arg-type]
    return layers


def _prob_file(out: Path, stem: str) -> Path | None:
    for suffix in ("_prob.png", "_prob.npy"):
        if (out / f"{stem}{suffix}").is_file():
            return out / f"{stem}{suffix}"
    return None


def read_track_outputs(out: Path) -> list[LayerDataTuple]:
    """Layers of a ``spermseg track`` folder: the track-id label stack (kinematics table) and the tracks.

    Args:
        out: the folder holding ``track.json`` / ``tracks.csv``.

    Returns:
        ``LayerDataTuple`` s: ``NAME sperm`` (when ``labels.tif`` exists) and ``NAME tracks``.
    """
    import json

    import tifffile

    name = out.name
    summary = json.loads((out / "track.json").read_text()) if (out / "track.json").is_file() else {}
    tracks = _core.read_csv(out / "tracks.csv")
    table = table_meta("kinematics", _core.kinematics_columns(), _core.read_csv(out / "kinematics.csv"),
                       tracks=tracks, fps=summary.get("fps"), pixel_size_um=summary.get("pixel_size_um"),
                       folder=str(out))  # fmt: skip
    layers: list[LayerDataTuple] = []
    if (out / "labels.tif").is_file():
        labels = np.asarray(tifffile.imread(out / "labels.tif"), np.uint16)
        layers.append(labels_layer(labels if labels.ndim == 3 else labels[None], f"{name} sperm", table))
    layer = tracks_layer(tracks, name, table)
    if layer is not None:
        layers.append(layer)
    return layers
