"""Soft-mask cache: the soft masks of trained base models, stored once, with provenance.

Ensembling networks (paper Section 4) learn from the soft masks of several base models. Running every base model
over every image at each ensemble epoch would be wasteful, so ``spermseg masks`` runs them once and stores

* ``CACHE/masks/<model_id>/<split>.npy``: float16 array (N, H, W) in [0, 1], images in the order of
  ``manifest["splits"][split]["names"]`` (float16 keeps AP to about 1e-4; 8-bit storage measurably changes it);
* ``CACHE/manifest.json``: per split the image names, groups and data fingerprint; per model the checkpoint path,
  the sha256 of its ``.safetensors`` file, architecture, normalization, threshold, the spermseg version, and per
  (model, split) entry the file, the fingerprint it was computed on, and scores against the first rater.

Re-running skips entries whose checkpoint hash and data fingerprint still match and whose file still has the
recorded size and sha256; a stale entry (checkpoint retrained, data changed, TTA setting changed) or a broken one
(file truncated, replaced or corrupted) is rebuilt. Readers verify the same size and sha256 before they use an
entry and raise a one-line DataError for a broken one. Every file is written atomically and the manifest is
rewritten after each entry, so a killed build keeps what it finished.

The same format holds out-of-fold masks (``spermseg.ensembling.stacking``): such a cache simply has different
provenance (``manifest["stacking"]``), and :func:`load_cached_masks` reads both alike.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spermseg._version import __version__
from spermseg.data.mask_store import (  # noqa: F401 - the cache's format and reader, re-exported for callers
    _ID_OK,
    CACHE_FORMAT,
    MANIFEST,
    MASK_DTYPE,
    cached_model_ids,
    cached_scores,
    entry_problem,
    load_cached_masks,
    load_manifest,
    mask_file,
    register_split,
    save_manifest,
    validate_id,
    write_entry,
)
from spermseg.errors import CheckpointError, DataError, SpermsegError
from spermseg.utils.hashing import file_sha256  # noqa: F401 - re-exported: callers hash checkpoints with it

if TYPE_CHECKING:  # pragma: no cover
    from spermseg.data.arrays import SplitArrays

# Images per predict_probs call: bounds the float32 working memory (64 x 512 x 512 x 4 B = 64 MiB).
_CHUNK = 64


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints and ids
# ----------------------------------------------------------------------------------------------------------------


def checkpoint_file(path: str | Path) -> Path:
    """The ``.safetensors`` file of a run directory (its ``best`` checkpoint, else ``last``), stem or file.

    Args:
        path: ``RUN_DIR``, ``RUN_DIR/best``, ``RUN_DIR/best.safetensors`` or ``RUN_DIR/best.json``.

    Returns:
        The existing ``.safetensors`` path (resolution as in :func:`spermseg.models.checkpoints.resolve_checkpoint`).

    Raises:
        CheckpointError: when no checkpoint is found there.
    """
    from spermseg.models.checkpoints import resolve_checkpoint

    return resolve_checkpoint(path).with_suffix(".safetensors")


def default_model_ids(paths: Sequence[str | Path]) -> list[str]:
    """Readable, unique, file-system-safe ids for base-model runs.

    The id is the run directory's name (``runs/att_unet_s0`` -> ``att_unet_s0``); when names collide (``a/seed0``,
    ``b/seed0``) more parent folders are joined with ``-`` until they are unique.

    Args:
        paths: run directories or checkpoint paths.

    Returns:
        One id per path, in order.
    """
    runs = [_run_dir_of(Path(p)).resolve() for p in paths]
    if len(set(runs)) != len(runs):
        raise SpermsegError("the same base model run is listed twice; list each run directory once")
    depth = [1] * len(runs)
    while True:
        ids = [_ID_OK.sub("_", "-".join(r.parts[-d:])) for r, d in zip(runs, depth)]
        clashes = [i for i, x in enumerate(ids) if ids.count(x) > 1 and depth[i] < len(runs[i].parts)]
        if not clashes:
            return ids
        for i in clashes:  # only the colliding ids grow, so unique names stay short
            depth[i] += 1


def _run_dir_of(path: Path) -> Path:
    """The run directory a checkpoint belongs to (the folder itself when given a folder)."""
    return path if path.is_dir() else path.parent


def _run_info(run_dir: Path) -> dict[str, Any]:
    """What the run directory says about itself: seed and validation scores from result.json / config.yaml."""
    info: dict[str, Any] = {}
    result = run_dir / "result.json"
    if result.is_file():
        try:
            info["result"] = json.loads(result.read_text())
        except json.JSONDecodeError:
            info["result"] = None  # a corrupt result does not invalidate the weights
    return info


# ----------------------------------------------------------------------------------------------------------------
# Scores (for ranking E2-E4 and Table 3's base-model block)
# ----------------------------------------------------------------------------------------------------------------


def reference_masks(arrays: SplitArrays, rater: str | None = None) -> tuple[str, Sequence[np.ndarray]] | None:
    """The full-sperm reference of a split: ``rater`` (default: its first rater, GT1 on SegSperm).

    Returns:
        ``(rater, masks)`` or ``None`` when the split has no full-sperm labels.
    """
    raters = list(getattr(arrays, "raters", None) or [])
    if rater is not None:
        candidates = [rater]
    else:
        candidates = raters or ["GT1"]
    for name in candidates:
        try:
            masks = arrays.masks(name, "full")
        except (KeyError, DataError):
            masks = None
        if masks is not None:
            return name, masks
    return None


def score_masks(probs: np.ndarray, refs: Sequence[np.ndarray], *, mode: str = "fast") -> dict[str, float]:
    """AP, IoU_0.5, IoU_opt and t_opt of soft masks (N, H, W) against boolean references (full sperm)."""
    from spermseg.metrics import full_scores, score

    return full_scores(score(probs, refs, mode=mode))


# ----------------------------------------------------------------------------------------------------------------
# Build
# ----------------------------------------------------------------------------------------------------------------


def _entry_is_fresh(
    cache_dir: Path, manifest: dict[str, Any], model_id: str, split: str, sha: str, tta: bool, precision: str = "fp32"
) -> bool:
    entry = manifest["models"].get(model_id, {}).get("entries", {}).get(split)
    if not entry:
        return False
    return (
        entry.get("checkpoint_sha256") == sha
        and entry.get("data_fingerprint") == manifest["splits"][split]["fingerprint"]
        and bool(entry.get("tta")) == bool(tta)
        and entry.get("precision", "fp32") == precision
        and entry_problem(cache_dir, entry, manifest["splits"][split]["shape"]) is None
    )


def images_sha256(images: Sequence[np.ndarray]) -> str:
    """sha256 of the pixels of a list of images (shape, dtype and bytes of each, in order)."""
    import hashlib

    h = hashlib.sha256()
    for img in images:
        arr = np.ascontiguousarray(img)
        h.update(f"{arr.shape}{arr.dtype.str};".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _twin_entry(
    cache_dir: Path,
    entries: dict[str, Any],
    images_sha: str,
    sha: str,
    tta: bool,
    precision: str,
    shape: Sequence[int],
) -> dict[str, Any] | None:
    """An entry of the same checkpoint on the same pixels (another split name), sound on disk, or None."""
    for entry in entries.values():
        if (
            entry.get("images_sha256") == images_sha
            and entry.get("checkpoint_sha256") == sha
            and bool(entry.get("tta")) == bool(tta)
            and entry.get("precision", "fp32") == precision
            and entry_problem(cache_dir, entry, shape) is None
        ):
            return entry
    return None


def predict_split(
    model: Any,
    images: Sequence[np.ndarray],
    normalization: str,
    *,
    device: str,
    batch_size: int,
    tta: bool,
    precision: str = "fp32",
) -> np.ndarray:
    """Soft masks (N, H, W) float32 of a base model on raw [0, 1] images, in chunks to bound memory."""
    from spermseg.inference.forward import predict_probs

    n = len(images)
    if n == 0:
        return np.zeros((0, 0, 0), dtype=np.float32)
    out: np.ndarray | None = None
    for start in range(0, n, _CHUNK):
        chunk = [np.asarray(images[i], dtype=np.float32) for i in range(start, min(n, start + _CHUNK))]
        probs = predict_probs(
            model, chunk, normalization, device=device, batch_size=batch_size, tta=tta, precision=precision
        )
        if out is None:
            out = np.empty((n, *probs.shape[1:]), dtype=np.float32)
        out[start : start + len(chunk)] = probs
    assert out is not None
    return out


def build_cache(
    run_dirs: Sequence[str | Path],
    data_root: str | Path,
    splits: Sequence[str],
    out: str | Path,
    *,
    model_ids: Sequence[str] | None = None,
    device: str = "auto",
    batch_size: int = 4,
    tta: bool = False,
    precision: str = "fp32",
    force: bool = False,
    score: bool = True,
    rater: str | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Run trained base models over the images of ``splits`` and cache their soft masks.

    Args:
        run_dirs: base-model run directories (their ``best`` checkpoint) or checkpoint files.
        data_root: dataset root (any layout :func:`spermseg.data.layouts.open_dataset` reads).
        splits: split names, e.g. ``("train", "test")``.
        out: the cache directory (created; an existing cache is updated).
        model_ids: one id per run (default: :func:`default_model_ids`).
        device: ``auto|cpu|cuda[:N]``.
        batch_size: images per forward pass.
        tta: test-time augmentation in :func:`spermseg.inference.forward.predict_probs`.
        precision: ``fp32`` (default: the cached masks feed Table 3, scored in float32 as in the paper) or ``bf16``.
        force: rebuild every entry even when fresh.
        score: compute AP / IoU_0.5 / IoU_opt of each entry against the reference (needed for E2-E4 ranking).
        rater: reference rater for the scores (default: the split's first rater).
        log: ``callable(str)`` for progress lines (default: silent).

    Returns:
        The manifest (also written to ``out/manifest.json``), with ``manifest["last_build"]`` listing which
        entries were built and which were skipped as fresh.
    """
    from spermseg.data.arrays import load_split
    from spermseg.utils.device import resolve_device

    say = log or (lambda _msg: None)
    cache_dir = Path(out)
    cache_dir.mkdir(parents=True, exist_ok=True)
    run_dirs = [Path(p) for p in run_dirs]
    if not run_dirs:
        raise SpermsegError("no base models given; pass trained run directories with --models")
    ids = [validate_id(i) for i in model_ids] if model_ids is not None else default_model_ids(run_dirs)
    if len(ids) != len(run_dirs) or len(set(ids)) != len(ids):
        raise SpermsegError(f"need one unique id per base model, got {ids}")
    manifest = load_manifest(cache_dir, missing_ok=True)
    if manifest.get("stacking"):
        raise SpermsegError(
            f"{cache_dir} holds out-of-fold masks (stacking={manifest['stacking'].get('mode')}); "
            "build in-sample masks into another directory"
        )
    dev = str(resolve_device(device))

    # Hash every checkpoint first: cheap, and lets us skip loading models whose entries are all fresh.
    checkpoints = [checkpoint_file(p) for p in run_dirs]
    hashes = [file_sha256(c) for c in checkpoints]
    built: list[str] = []
    skipped: list[str] = []
    for split in splits:
        arrays = load_split(data_root, split)
        register_split(manifest, split, arrays)
        ref = reference_masks(arrays, rater) if score else None
        for model_id, run, ckpt, sha in zip(ids, run_dirs, checkpoints, hashes):
            if not force and _entry_is_fresh(cache_dir, manifest, model_id, split, sha, tta, precision):
                skipped.append(f"{model_id}/{split}")
                continue
            model_info = _load_model_info(run, ckpt, sha)
            previous = manifest["models"].get(model_id, {})
            # A retrained checkpoint invalidates every split of that model, not only the one being rebuilt.
            kept = previous.get("entries", {}) if previous.get("checkpoint_sha256") == sha else {}
            manifest["models"][model_id] = {**model_info, "entries": kept}
            t0 = time.perf_counter()
            images_sha = images_sha256(arrays.images)
            twin = _twin_entry(cache_dir, kept, images_sha, sha, tta, precision, manifest["splits"][split]["shape"])
            if twin is not None:
                # Same pixels, same checkpoint: e.g. test_small holds the test images with more raters.
                stored = np.load(cache_dir / twin["file"], allow_pickle=False)
            else:
                model = _load_model(ckpt)
                probs = predict_split(
                    model,
                    arrays.images,
                    model_info["normalization"],
                    device=dev,
                    batch_size=batch_size,
                    tta=tta,
                    precision=precision,
                )
                stored = np.clip(probs, 0.0, 1.0).astype(MASK_DTYPE)
            provenance: dict[str, Any] = {
                "checkpoint": str(ckpt.resolve()),
                "checkpoint_sha256": sha,
                "normalization": model_info["normalization"],
                "tta": bool(tta),
                "precision": precision,
                "device": dev,
                "images_sha256": images_sha,
                "seconds": round(time.perf_counter() - t0, 3),
            }
            if twin is not None:
                provenance["copied_from"] = twin["file"]
            if ref is not None:
                # Score what the ensemble will read (float16), so rankings match the cached inputs exactly.
                provenance["metrics"] = {**score_masks(stored, ref[1]), "reference": f"{ref[0]}/full"}
            write_entry(cache_dir, manifest, model_id, split, stored, provenance)
            built.append(f"{model_id}/{split}")
            how = f" (same images as {twin['file']})" if twin is not None else ""
            say(f"cached {model_id}/{split}: {len(arrays.names)} images in {provenance['seconds']:.1f} s{how}")
    manifest["data_root"] = str(Path(data_root).resolve())
    manifest["last_build"] = {"built": built, "skipped_fresh": skipped}
    save_manifest(cache_dir, manifest)
    return manifest


def _load_model(ckpt: Path) -> Any:
    from spermseg.models.checkpoints import load_model

    return load_model(ckpt)


def _load_model_info(run: Path, ckpt: Path, sha: str) -> dict[str, Any]:
    """Provenance of a base model from its checkpoint sidecar (``.json``) and its run directory."""
    from spermseg.models.checkpoints import read_meta

    meta = read_meta(ckpt)
    if meta.get("kind", "base") != "base":
        raise CheckpointError(f"{ckpt} is an ensembling network, not a base model; pass base-model runs to --models")
    config = meta.get("config") or {}
    info = {
        "run_dir": str(_run_dir_of(run).resolve()),
        "checkpoint": str(ckpt.resolve()),
        "checkpoint_sha256": sha,
        "model": meta.get("model"),
        "model_kwargs": meta.get("model_kwargs", {}),
        "normalization": meta.get("normalization", "minmax"),
        "threshold": meta.get("threshold"),
        "seed": config.get("seed") if isinstance(config, dict) else None,
        "checkpoint_version": meta.get("version"),
        "checkpoint_data_fingerprint": meta.get("data_fingerprint"),
        "spermseg_version": __version__,
    }
    run_result = _run_info(_run_dir_of(run)).get("result")
    if isinstance(run_result, dict):
        info["run_result"] = run_result
    return info
