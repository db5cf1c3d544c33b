"""The built-in model: a small network that ships inside the package, so ``--model builtin`` works offline.

It is an ordinary single-model bundle (:mod:`spermseg.inference.bundle`) kept as package data in
``spermseg/builtin/``::

    bundle.json                      the bundle manifest, plus ``builtin``: how the model was made (the command,
                                     the synthetic data's seed, the spermseg version, the weights' dtype)
    base_0_<name>.safetensors/.json  the network's weights (float16: half the size, computed in float32 after
                                     loading) and its checkpoint sidecar

It is trained only on synthetic data (``spermseg synth``), by ``scripts/train_builtin.py``, which writes the folder
with :func:`write_builtin`. Wherever a model is named (``predict``, ``track``, ``export``, ``train --init``, the
napari widget, :func:`spermseg.load_predictor`), the string ``builtin`` means this folder
(:data:`spermseg.inference.bundle.BUILTIN_DIR`; the name, the place and the checks live with the bundle loader,
:func:`spermseg.inference.bundle.builtin_dir`, which this module builds on): every load verifies the manifest's
checksum and each file's sha256 first, and a mismatch is one line saying to reinstall. A spermseg without the
weights (an installation that lost them, or a checkout before they were made) says so in one line.

A local folder that happens to be called ``builtin`` is still reachable as ``./builtin``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from spermseg.errors import CheckpointError


def write_builtin(bundle: str | Path, dest: str | Path, provenance: dict[str, Any]) -> Path:
    """Write a single-model bundle as the built-in model: float16 weights, the manifest with ``provenance``.

    Floating-point tensors are stored as float16 (integer buffers such as BatchNorm's counters keep their type);
    the sidecar's ``weights_bytes`` and the manifest's checksums describe the new files. Files of an earlier
    built-in model in ``dest`` are replaced; other files there (its README) are kept.

    Args:
        bundle: a bundle directory with one base model (``spermseg bundle --base RUN_DIR``).
        dest: the folder to write (normally :data:`spermseg.inference.bundle.BUILTIN_DIR`).
        provenance: how the model was made (``command``, ``data_seed``, ...); recorded as ``bundle.json["builtin"]``
            with ``dtype`` and ``spermseg_version`` added.

    Returns:
        ``dest``.

    Raises:
        CheckpointError: ``bundle`` is not a valid single-model bundle.
    """
    import torch
    from safetensors.torch import load_file, save_file

    from spermseg._version import __version__
    from spermseg.inference.bundle import BUILTIN, MANIFEST, manifest_digest, read_bundle_manifest, verify_members
    from spermseg.utils.atomic import atomic_path, atomic_write_json
    from spermseg.utils.hashing import file_sha256

    bundle, dest = Path(bundle), Path(dest)
    manifest = read_bundle_manifest(bundle)
    verify_members(bundle, manifest)
    if manifest["combine"] != "single":
        raise CheckpointError(
            f"{bundle} is a '{manifest['combine']}' bundle; the built-in model must be one network (--init builtin "
            "fine-tunes it): bundle a single run, e.g. a distilled student"
        )
    dest.mkdir(parents=True, exist_ok=True)
    _remove_earlier(dest)
    members = []
    for member in manifest["members"]:
        src = bundle / member["file"]
        tensors = {k: (v.to(torch.float16) if v.is_floating_point() else v) for k, v in load_file(str(src)).items()}
        weights = dest / member["file"]
        with atomic_path(weights) as tmp:
            save_file(tensors, str(tmp))
        weights.chmod(0o644)  # package data: readable by every user of an installation (temporaries are 0600)
        meta = json.loads(src.with_suffix(".json").read_text())
        meta.update(weights_bytes=weights.stat().st_size, weights_dtype="float16")
        sidecar = weights.with_suffix(".json")
        atomic_write_json(sidecar, meta)
        digests = {"sha256": file_sha256(weights), "meta_sha256": file_sha256(sidecar)}
        members.append({**member, **digests, "source": BUILTIN})
    out = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    out.update(
        members=members,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        builtin={**provenance, "dtype": "float16", "spermseg_version": __version__},
    )
    out["manifest_sha256"] = manifest_digest(out)
    atomic_write_json(dest / MANIFEST, out)
    verify_members(dest, read_bundle_manifest(dest))
    return dest


def _remove_earlier(dest: Path) -> None:
    """Delete the files of an earlier built-in model in ``dest`` (those its manifest lists), nothing else."""
    from spermseg.inference.bundle import MANIFEST

    try:
        old = json.loads((dest / MANIFEST).read_text())
        files = [str(m["file"]) for m in old.get("members", [])]
    except (OSError, ValueError, KeyError, TypeError):
        return  # nothing readable there: nothing of ours to remove
    for name in files:
        if Path(name).name == name:  # only plain names inside dest
            (dest / name).unlink(missing_ok=True)
            (dest / name).with_suffix(".json").unlink(missing_ok=True)
    (dest / MANIFEST).unlink(missing_ok=True)


def builtin_info() -> dict[str, Any]:
    """How the built-in model was made (``bundle.json["builtin"]``: command, data seed, versions, dtype).

    Raises:
        SpermsegError: no built-in weights (see :func:`spermseg.inference.bundle.builtin_dir`).
    """
    from spermseg.inference.bundle import builtin_dir, read_bundle_manifest

    return dict(read_bundle_manifest(builtin_dir(verify=False)).get("builtin") or {})
