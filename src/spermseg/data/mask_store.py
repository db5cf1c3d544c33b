"""The soft-mask cache on disk: its manifest, its entries and how they are read (``spermseg.ensembling.mask_cache``
builds it).

* ``CACHE/masks/<model_id>/<split>.npy``: float16 array (N, H, W) in [0, 1], images in the order of
  ``manifest["splits"][split]["names"]`` (float16 keeps AP to about 1e-4; 8-bit storage measurably changes it);
* ``CACHE/manifest.json``: per split the image names, groups and data fingerprint; per model the checkpoint path,
  the sha256 of its ``.safetensors`` file, architecture, normalization, threshold, the spermseg version, and per
  (model, split) entry the file, the fingerprint it was computed on, and scores against the first rater.

Readers verify each entry's recorded size and sha256 before they use it and raise a one-line DataError for a
broken one. It is data (the ensembling networks' inputs): training reads it here without importing ensembling.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spermseg._version import __version__
from spermseg.errors import DataError, SpermsegError
from spermseg.utils.atomic import atomic_path, atomic_write_json, remove_stale_temporaries
from spermseg.utils.hashing import file_sha256

if TYPE_CHECKING:  # pragma: no cover
    from spermseg.data.arrays import SplitArrays

CACHE_FORMAT = 1
MANIFEST = "manifest.json"
MASK_DTYPE = np.float16
_ID_OK = re.compile(r"[^A-Za-z0-9_.+-]+")


def validate_id(model_id: str) -> str:
    if not model_id or _ID_OK.search(model_id) or model_id in (".", ".."):
        raise SpermsegError(
            f"bad model id '{model_id}': use letters, digits and _ . + - only (e.g. --models att_unet=RUN_DIR)"
        )
    return model_id


# ----------------------------------------------------------------------------------------------------------------
# Manifest
# ----------------------------------------------------------------------------------------------------------------


def _empty_manifest() -> dict[str, Any]:
    return {"format": CACHE_FORMAT, "spermseg_version": __version__, "splits": {}, "models": {}, "stacking": None}


def load_manifest(cache_dir: str | Path, *, missing_ok: bool = False) -> dict[str, Any]:
    """Read ``CACHE/manifest.json``.

    Args:
        cache_dir: the cache directory.
        missing_ok: return an empty manifest instead of raising when there is none.

    Raises:
        DataError: no manifest (and not ``missing_ok``), unreadable JSON, or an unknown format version.
    """
    path = Path(cache_dir) / MANIFEST
    if not path.is_file():
        if missing_ok:
            return _empty_manifest()
        raise DataError(f"no mask cache at {cache_dir} (missing {MANIFEST}); build one with 'spermseg masks'")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"corrupt mask cache manifest {path}: {exc}; delete the cache and rebuild it") from None
    if not isinstance(manifest, dict) or not all(isinstance(manifest.get(k), dict) for k in ("splits", "models")):
        raise DataError(
            f"corrupt mask cache manifest {path}: 'splits'/'models' missing; delete the cache and rebuild it"
        )
    if manifest.get("format") != CACHE_FORMAT:
        raise DataError(
            f"mask cache {path} has format {manifest.get('format')}, this spermseg reads {CACHE_FORMAT}; rebuild it"
        )
    return manifest


def save_manifest(cache_dir: str | Path, manifest: dict[str, Any]) -> None:
    """Write the manifest atomically (the cache's single source of truth)."""
    atomic_write_json(Path(cache_dir) / MANIFEST, manifest)
    # A build killed mid-write left a hidden temporary of the manifest: the complete one now replaces it.
    remove_stale_temporaries(cache_dir, Path(MANIFEST).stem)


def mask_file(cache_dir: str | Path, model_id: str, split: str) -> Path:
    """Where the soft masks of ``model_id`` on ``split`` live."""
    return Path(cache_dir) / "masks" / validate_id(model_id) / f"{split}.npy"


def register_split(manifest: dict[str, Any], split: str, arrays: SplitArrays) -> None:
    """Record (or update) a split's names, groups, image size and fingerprint in the manifest.

    Raises:
        DataError: when the split's images differ in size (one array per split needs one size).
    """
    shapes = {tuple(size) for size in arrays.sizes}  # sizes come from headers: no pixel is decoded
    if len(shapes) > 1:
        raise DataError(
            f"images of split '{split}' have different sizes {sorted(shapes)[:3]}; the mask cache stores one array "
            "per split, so resize them to one size first"
        )
    shape = list(next(iter(shapes))) if shapes else [0, 0]
    manifest["splits"][split] = {
        "names": list(arrays.names),
        "groups": list(arrays.groups),
        "fingerprint": arrays.fingerprint,
        "shape": [len(arrays.names), *shape],
    }


def write_entry(
    cache_dir: str | Path,
    manifest: dict[str, Any],
    model_id: str,
    split: str,
    masks: np.ndarray,
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """Store one (model, split) array and its manifest entry, atomically; the manifest is saved too.

    Args:
        cache_dir: the cache directory.
        manifest: the loaded manifest (updated in place); ``manifest["splits"][split]`` must be registered.
        model_id: the base model's id (must already be in ``manifest["models"]``).
        split: split name.
        masks: (N, H, W) soft masks in [0, 1], N and order as in the registered split.
        provenance: extra entry fields (e.g. ``checkpoint_sha256``, ``tta``, ``metrics``, fold checkpoints).

    Returns:
        The entry written into ``manifest["models"][model_id]["entries"][split]``.
    """
    expected = manifest["splits"][split]["shape"]
    if list(masks.shape) != list(expected):
        raise DataError(f"masks of '{model_id}' on '{split}' have shape {list(masks.shape)}, expected {expected}")
    path = mask_file(cache_dir, model_id, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = np.clip(masks, 0.0, 1.0).astype(MASK_DTYPE)
    with atomic_path(path) as tmp:
        np.save(tmp, stored)
    remove_stale_temporaries(path.parent, path.stem)  # debris of a write of this entry killed earlier
    entry = {
        "data_fingerprint": manifest["splits"][split]["fingerprint"],
        "spermseg_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **provenance,
        # after the provenance: a copied entry's checksums must describe this file
        "file": str(path.relative_to(cache_dir)),
        "dtype": np.dtype(MASK_DTYPE).name,
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
    }
    manifest["models"][model_id].setdefault("entries", {})[split] = entry
    save_manifest(cache_dir, manifest)
    return entry


def entry_problem(cache_dir: Path, entry: dict[str, Any], shape: Sequence[int]) -> str | None:
    """Why a cache entry's file cannot be used (missing, wrong size or checksum, unreadable), or None when sound.

    Entries written before checksums were recorded are checked by their ``.npy`` header (shape and dtype).
    """
    path = cache_dir / str(entry.get("file", ""))
    if not entry.get("file") or not path.is_file():
        return "the file is missing"
    if "bytes" in entry and path.stat().st_size != entry["bytes"]:
        return f"{path.stat().st_size} bytes instead of {entry['bytes']} (truncated or replaced)"
    if "sha256" in entry:
        if file_sha256(path) != entry["sha256"]:
            return "its sha256 differs from the manifest's (corrupted or replaced)"
        return None
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        return f"unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    if tuple(arr.shape) != tuple(shape) or arr.dtype != MASK_DTYPE:
        return f"shape {tuple(arr.shape)} {arr.dtype} instead of {tuple(shape)} {np.dtype(MASK_DTYPE).name}"
    return None


# ----------------------------------------------------------------------------------------------------------------
# Read
# ----------------------------------------------------------------------------------------------------------------


def cached_model_ids(cache_dir: str | Path, split: str | None = None) -> list[str]:
    """Ids of the base models in a cache (those with an entry for ``split`` when given), in build order."""
    manifest = load_manifest(cache_dir)
    return [m for m, info in manifest["models"].items() if split is None or split in info.get("entries", {})]


def load_cached_masks(
    cache_dir: str | Path,
    split: str,
    model_ids: Sequence[str],
    *,
    dtype: Any = np.float32,
    data_fingerprint: str | None = None,
) -> tuple[list[str], np.ndarray]:
    """Stack the cached soft masks of ``model_ids`` on ``split``.

    Args:
        cache_dir: a cache built by :func:`build_cache` (or an out-of-fold cache from stacking).
        split: split name (``train``, ``test``, ...).
        model_ids: which base models, in the channel order the ensemble will see.
        dtype: output dtype (float32 by default; float16 halves memory for large E1 stacks).
        data_fingerprint: the reader's current :attr:`SplitArrays.fingerprint`; when given and different from the
            one the cache was built on, the entries are stale and a DataError says to rebuild them.

    Returns:
        ``(names, masks)``: image names (N,) in the split's order and masks (N, n_models, H, W) in [0, 1].

    Raises:
        DataError: unknown model id or split (the message lists the cached ones), a missing file or a stale entry.
    """
    cache_dir = Path(cache_dir)
    manifest = load_manifest(cache_dir)
    if split not in manifest["splits"]:
        raise DataError(
            f"split '{split}' is not in mask cache {cache_dir}; cached: {', '.join(manifest['splits']) or 'none'}"
        )
    if not model_ids:
        raise DataError(f"no model ids given for mask cache {cache_dir}; cached: {', '.join(manifest['models'])}")
    info = manifest["splits"][split]
    if data_fingerprint is not None and data_fingerprint != info["fingerprint"]:
        raise DataError(
            f"mask cache {cache_dir} is stale for split '{split}' (the data changed since it was built); rerun "
            "'spermseg masks' to rebuild it"
        )
    n, h, w = info["shape"]
    out = np.empty((n, len(model_ids), h, w), dtype=dtype)
    for j, model_id in enumerate(model_ids):
        entry = manifest["models"].get(model_id, {}).get("entries", {}).get(split)
        if entry is None:
            have = [m for m, v in manifest["models"].items() if split in v.get("entries", {})]
            raise DataError(
                f"model '{model_id}' has no cached masks for split '{split}' in {cache_dir}; cached: {', '.join(have)}"
            )
        if entry.get("data_fingerprint") != info["fingerprint"]:
            raise DataError(
                f"cached masks of '{model_id}' on '{split}' in {cache_dir} are stale (data changed); rerun "
                "'spermseg masks' to rebuild them"
            )
        path = cache_dir / str(entry.get("file", ""))
        problem = entry_problem(cache_dir, entry, (n, h, w))
        if problem is not None:
            raise DataError(
                f"cached masks of '{model_id}' on '{split}' ({path}) are broken: {problem}; rerun 'spermseg masks' "
                "with the same runs (it rebuilds broken entries)"
            )
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if arr.shape != (n, h, w):
                raise ValueError(f"shape {arr.shape}, expected {(n, h, w)}")
            out[:, j] = arr
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(
                f"cached mask file {path} is unreadable ({exc}); rerun 'spermseg masks' to rebuild it"
            ) from None
    return list(info["names"]), out


def cached_scores(cache_dir: str | Path, split: str) -> dict[str, dict[str, float]]:
    """``{model_id: {"ap", "iou_0.5", "iou_opt", "t_opt"}}`` stored for ``split`` (models without scores omitted)."""
    manifest = load_manifest(cache_dir)
    out = {}
    for model_id, info in manifest["models"].items():
        metrics = info.get("entries", {}).get(split, {}).get("metrics")
        if metrics:
            out[model_id] = metrics
    return out
