"""Model bundles: base models + optional ensembling network + normalization + threshold in one directory.

Layout of ``MODEL_DIR``::

    bundle.json                      manifest: format, versions, combine rule, threshold, members (+ sha256 of
                                     weights and sidecars), manifest_sha256 (of the manifest itself)
    base_0_<name>.safetensors/.json  base model checkpoints (weights + sidecar, as written by training)
    ensemble.safetensors/.json       the ensembling network (when combine == "ensemble")

``combine`` is ``single`` (one base model), ``average`` (mean of the base models' probabilities, the paper's Avg)
or ``ensemble`` (the base models' soft masks, in the order the network was trained on, feed the ensembling
network together with the image). :class:`Predictor` is the whole pipeline as one ``nn.Module`` mapping raw
[0, 1] images to probabilities, normalization included, so it exports to ONNX as one graph.

Threshold: the ensemble's (or single model's) validation t_opt from its checkpoint; for an average of several
models, whose own t_opt was never measured, the mean of the members' t_opt (recorded as such); ``--threshold``
overrides it.

The built-in model (``--model builtin``) is a bundle at :data:`BUILTIN_DIR` (package data, written by
:mod:`spermseg.inference.builtin`); :func:`builtin_dir` finds and verifies it.

Loading validates the manifest before any weight is read (:func:`validate_manifest`): its own checksum (so a
hand-edited threshold or a removed key is caught), the schema, the threshold in [0, 1], known normalizations,
a consistent combine rule, and member paths that stay inside the bundle. Every problem is one
:class:`~spermseg.errors.CheckpointError` line naming ``bundle.json``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spermseg._version import __version__
from spermseg.errors import CheckpointError
from spermseg.utils.atomic import atomic_path, atomic_write_json

BUNDLE_FORMAT = 2  # 2: manifest_sha256 and per-member meta_sha256
READABLE_FORMATS = (1, 2)
MANIFEST = "bundle.json"
COMBINES = ("single", "average", "ensemble")
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: The model name that means "the bundle that ships with spermseg" (written by :mod:`spermseg.inference.builtin`).
BUILTIN = "builtin"
#: Where the built-in bundle lives (package data). Tests point it elsewhere with ``monkeypatch.setattr``.
BUILTIN_DIR = Path(__file__).resolve().parents[1] / "builtin"


class Predictor(nn.Module):
    """Raw images (B, 1, H, W) in [0, 1] -> probabilities (B, 1, H, W), the bundle's whole pipeline.

    Each base model sees the image normalized as in its training; the ensembling network sees its own
    normalization of the image and the base models' probabilities, stacked in its training order.
    """

    def __init__(
        self,
        bases: Sequence[nn.Module],
        base_normalizations: Sequence[str],
        ensemble: nn.Module | None = None,
        ensemble_normalization: str | None = None,
        threshold: float = 0.5,
    ) -> None:
        super().__init__()
        if not bases:
            raise CheckpointError("a bundle needs at least one base model")
        self.bases = nn.ModuleList(bases)
        self.base_normalizations = list(base_normalizations)
        self.ensemble = ensemble
        self.ensemble_normalization = ensemble_normalization or "minmax"
        self.threshold = float(threshold)
        # The whole-sperm radius of the training labels (inference.postprocess): the smallest the members recorded
        # (the least removal), None when none did (parts networks, data without head/tail labels, old runs).
        from spermseg.inference.postprocess import min_head_radius_of

        radii = [min_head_radius_of(getattr(b, "spermseg_meta", {}) or {}) for b in bases]
        radii = [r for r in radii if r is not None]
        self.min_head_radius: float | None = min(radii) if radii else None

    @property
    def combine(self) -> str:
        if self.ensemble is not None:
            return "ensemble"
        return "single" if len(self.bases) == 1 else "average"

    @property
    def divisor(self) -> int:
        """Least common multiple of the members' padding divisors: inputs are padded once to it."""
        import math

        divisor = 1
        for module in self.modules():
            d = getattr(module, "divisor", None) if module is not self else None
            if isinstance(d, int) and d > 0:
                divisor = math.lcm(divisor, d)
        return divisor

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Probabilities for raw images.

        Args:
            x: (B, 1, H, W) raw images in [0, 1], any H and W (padded centrally to :attr:`divisor` here), or already
                padded to it when ``valid`` is given.
            valid: (B, 1, H, W) 0/1 map of the real pixels of a pre-padded ``x`` (the ONNX graph's second input).

        Returns:
            (B, 1, H, W) probabilities.
        """
        from spermseg.models.blocks import crop_to, pad_to_divisor

        if valid is not None:
            return self.forward_padded(x, valid)
        # Pad once for the whole pipeline, so that the ensemble sees the base models' own predictions in the
        # padding (not a reflection of cropped masks) and the ONNX graph, which takes pre-padded input, agrees.
        padded, box = pad_to_divisor(x, self.divisor)
        top, left, h, w = box
        mask = torch.zeros_like(padded[:, :1])
        mask[..., top : top + h, left : left + w] = 1.0
        return crop_to(self.forward_padded(padded, mask), *box)

    def forward_padded(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The pipeline on input padded to :attr:`divisor`; normalization statistics use the ``valid`` pixels."""
        from spermseg.data.transforms import normalize
        from spermseg.models.blocks import split_outputs

        probs = [
            torch.sigmoid(split_outputs(model(normalize(x, norm, valid)))[0].float())
            for model, norm in zip(self.bases, self.base_normalizations)
        ]
        stacked = torch.cat(probs, dim=1)
        if self.ensemble is None:
            # one base: its outputs as they are (a part network's six per-code sigmoids); several: their mean
            return stacked if len(self.bases) == 1 else stacked.mean(dim=1, keepdim=True)
        logits = split_outputs(self.ensemble(normalize(x, self.ensemble_normalization, valid), stacked))[0]
        return torch.sigmoid(logits.float())


# ----------------------------------------------------------------------------------------------------------------
# Creating a bundle
# ----------------------------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    from spermseg.utils.hashing import file_sha256

    return file_sha256(path)


def _bases_of_ensemble(meta: dict[str, Any], where: str) -> list[Path]:
    """Base checkpoints of an ensembling network, in its input order, from the mask cache it was trained on."""
    from spermseg.data.mask_store import load_manifest

    ids = meta.get("inputs") or []
    cache = meta.get("mask_cache")
    if not ids or not cache:
        raise CheckpointError(f"{where} does not record its input models; pass them with --base in training order")
    models = load_manifest(cache)["models"]
    missing = [i for i in ids if i not in models]
    if missing:
        raise CheckpointError(f"mask cache {cache} no longer lists {', '.join(missing)}; pass --base explicitly")
    return [Path(models[i]["checkpoint"]) for i in ids]


def _check_base_order(meta: dict[str, Any], bases: Sequence[Path], where: str) -> None:
    """When the ensemble's mask cache is still there, check that ``bases`` are its inputs in training order."""
    from spermseg.data.mask_store import load_manifest

    ids, cache = meta.get("inputs") or [], meta.get("mask_cache")
    if not ids or not cache or not (Path(cache) / "manifest.json").is_file():
        return
    models = load_manifest(cache)["models"]
    for position, (model_id, base) in enumerate(zip(ids, bases)):
        expected = models.get(model_id, {}).get("checkpoint_sha256")
        if expected and expected != _sha256(base.with_suffix(".safetensors")):
            raise CheckpointError(
                f"--base number {position + 1} ({base}) is not '{model_id}', the model the ensemble {where} was "
                f"trained on at that position; pass the base runs in this order: {', '.join(ids)}"
            )


def create_bundle(
    base: Sequence[str | Path], out: str | Path, ensemble: str | Path | None = None, threshold: float | None = None
) -> Path:
    """Pack base models (and an ensembling network) into ``out``.

    Args:
        base: base-model run directories or checkpoints; with an ensemble, in the order it was trained on (empty:
            taken from the ensemble's mask cache).
        out: the bundle directory (created; an existing bundle there is replaced).
        ensemble: an ensembling-network run directory or checkpoint, or None (single model or average).
        threshold: decision threshold; default: see the module docstring.

    Returns:
        The bundle directory.
    """
    from spermseg.models.checkpoints import read_meta, resolve_checkpoint

    out = Path(out)
    ens_stem = resolve_checkpoint(ensemble) if ensemble is not None else None
    ens_meta = read_meta(ens_stem) if ens_stem is not None else None
    if ens_meta is not None and ens_meta.get("kind") != "ensemble":
        raise CheckpointError(f"--ensemble {ensemble} is a base model; pass it with --base")
    stems = [resolve_checkpoint(b) for b in base]
    if ens_meta is not None:
        if not stems:
            stems = [resolve_checkpoint(p) for p in _bases_of_ensemble(ens_meta, str(ens_stem))]
        if len(stems) != int(ens_meta["n_masks"]):
            raise CheckpointError(
                f"the ensemble {ens_stem} takes {ens_meta['n_masks']} soft masks but {len(stems)} base models were "
                "given; pass exactly its input models with --base"
            )
        _check_base_order(ens_meta, stems, str(ens_stem))
    if not stems:
        raise CheckpointError("no model given: pass --base RUN_DIR (one or more) and optionally --ensemble RUN_DIR")
    metas = [read_meta(s) for s in stems]
    for stem, meta in zip(stems, metas):
        if meta.get("kind", "base") != "base":
            raise CheckpointError(f"--base {stem} is an ensembling network; pass it with --ensemble")

    if threshold is not None:
        if not (isinstance(threshold, int | float) and 0.0 <= float(threshold) <= 1.0):
            raise CheckpointError(f"--threshold {threshold} is outside [0, 1]; a probability threshold is needed")
        thr, source = float(threshold), "given"
    elif ens_meta is not None:
        thr, source = float(ens_meta.get("threshold", 0.5)), "ensemble validation t_opt"
    elif len(metas) == 1:
        thr, source = float(metas[0].get("threshold", 0.5)), "validation t_opt"
    else:
        thr = sum(float(m.get("threshold", 0.5)) for m in metas) / len(metas)
        source = "mean of the members' validation t_opt (the average's own t_opt was not measured)"

    if out.exists():
        if not (out / MANIFEST).is_file():
            raise CheckpointError(f"{out} exists and is not a bundle; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    members: list[dict[str, Any]] = []
    for i, (stem, meta) in enumerate(zip(stems, metas)):
        members.append(_copy_member(stem, meta, out, f"base_{i}_{meta['model']}", "base"))
    if ens_stem is not None and ens_meta is not None:
        members.append(_copy_member(ens_stem, ens_meta, out, "ensemble", "ensemble"))
    combine = "ensemble" if ens_meta is not None else ("single" if len(stems) == 1 else "average")
    manifest = {
        "format": BUNDLE_FORMAT,
        "spermseg_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "combine": combine,
        "threshold": thr,
        "threshold_source": source,
        "members": members,
    }
    manifest["manifest_sha256"] = manifest_digest(manifest)
    atomic_write_json(out / MANIFEST, manifest)
    return out


def _copy_member(stem: Path, meta: dict[str, Any], out: Path, name: str, role: str) -> dict[str, Any]:
    src = stem.with_suffix(".safetensors")
    with atomic_path(out / f"{name}.safetensors") as tmp:
        shutil.copyfile(src, tmp)
    atomic_write_json(out / f"{name}.json", meta)
    return {
        "role": role,
        "file": f"{name}.safetensors",
        "sha256": _sha256(out / f"{name}.safetensors"),
        "meta_sha256": _sha256(out / f"{name}.json"),
        "model": meta["model"],
        "normalization": meta.get("normalization", "minmax"),
        "threshold": meta.get("threshold"),
        "source": str(stem.resolve()),
    }


# ----------------------------------------------------------------------------------------------------------------
# The built-in bundle: its name and place (spermseg.inference.builtin writes it)
# ----------------------------------------------------------------------------------------------------------------


def is_builtin(model: object) -> bool:
    """True for the model name ``builtin`` (the string only: ``Path("builtin")`` or ``./builtin`` is a folder)."""
    return isinstance(model, str) and model == BUILTIN


def builtin_model_path() -> Path | None:
    """The built-in bundle's folder when this installation has its weights, else None (nothing is verified)."""
    return BUILTIN_DIR if (BUILTIN_DIR / MANIFEST).is_file() else None


def builtin_dir(*, verify: bool = True) -> Path:
    """The built-in bundle's folder, by default after checking its manifest's checksum and every file's sha256.

    Raises:
        SpermsegError: this installation has no built-in weights (one line, with what to pass instead).
        CheckpointError: a file is missing or does not match its checksum (the installation is damaged).
    """
    from spermseg.errors import SpermsegError

    path = builtin_model_path()
    if path is None:
        raise SpermsegError(
            f"this spermseg ({__version__}) has no built-in model: its weights are missing from "
            "this installation (reinstall spermseg, or make them with scripts/train_builtin.py); "
            "give a bundle, run directory or .onnx file instead of 'builtin'"
        )
    if verify:
        try:
            verify_members(path, read_bundle_manifest(path))
        except CheckpointError as exc:
            raise CheckpointError(
                f"the built-in model failed its checksum test, so the installation is damaged; reinstall spermseg "
                f"(pip install --force-reinstall spermseg). Details: {exc}"
            ) from None
    return path


def resolve_model(model: str | Path) -> str | Path:
    """``builtin`` -> the verified built-in folder; any other model argument unchanged."""
    return builtin_dir() if is_builtin(model) else model


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------


def load_predictor(path: str | Path, *, threshold: float | None = None) -> Predictor:
    """Load a bundle directory, a run directory, a checkpoint or ``"builtin"`` as a :class:`Predictor` (eval, CPU).

    ``"builtin"`` (the string) is the model that ships with spermseg (:func:`builtin_dir`), checked against its
    checksums first. A base-model run or checkpoint gives a single-model predictor; an ensembling
    network's run gives the full ensemble when its mask cache still names its base models.

    Raises:
        CheckpointError: missing files, a checksum or format mismatch, or incompatible versions (explained).
    """
    path = builtin_dir() if is_builtin(path) else Path(path)
    if (path / MANIFEST).is_file():
        predictor = _load_bundle_dir(path)
    else:
        from spermseg.models.checkpoints import load_model, read_meta, resolve_checkpoint

        stem = resolve_checkpoint(path)
        meta = read_meta(stem)
        if meta.get("kind") == "ensemble":
            bases = [load_model(p) for p in _bases_of_ensemble(meta, str(stem))]
            predictor = Predictor(
                bases,
                [b.spermseg_meta.get("normalization", "minmax") for b in bases],  # type: ignore[union-attr]
                load_model(stem),
                meta.get("normalization", "minmax"),
                float(meta.get("threshold", 0.5)),
            )
        else:
            model = load_model(stem)
            predictor = Predictor(
                [model], [meta.get("normalization", "minmax")], None, None, float(meta.get("threshold", 0.5))
            )
    if threshold is not None:
        predictor.threshold = float(threshold)
    return predictor.eval()


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest without its own ``manifest_sha256`` key (canonical JSON: sorted keys, no spaces)."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _bad(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{path / MANIFEST}: {what}; recreate the bundle with 'spermseg bundle'")


def _check_member(path: Path, i: int, member: Any, fmt: int) -> None:
    from spermseg.data.transforms import NORMALIZATIONS

    if not isinstance(member, dict):
        raise _bad(path, f"member {i} is not an object")
    need = ("role", "file", "sha256", "model", "normalization") + (("meta_sha256",) if fmt >= 2 else ())
    missing = [k for k in need if not isinstance(member.get(k), str) or not member.get(k)]
    if missing:
        raise _bad(path, f"member {i} lacks {', '.join(missing)} (or it is not a text)")
    if member["role"] not in ("base", "ensemble"):
        raise _bad(path, f"member {i} has role '{member['role']}'; expected base or ensemble")
    for key in ("sha256", "meta_sha256"):
        if key in member and not _SHA256.fullmatch(str(member[key])):
            raise _bad(path, f"member {i} has a malformed {key} '{member[key]}' (64 hex digits expected)")
    if member["normalization"] not in NORMALIZATIONS:
        raise _bad(path, f"member {i} has unknown normalization '{member['normalization']}' (valid: "
                         f"{', '.join(NORMALIZATIONS)})")  # fmt: skip
    rel = Path(member["file"])
    inside = (path / rel).resolve().parent == path.resolve()
    if rel.is_absolute() or ".." in rel.parts or len(rel.parts) != 1 or not inside or rel.suffix != ".safetensors":
        raise _bad(path, f"member {i} file '{member['file']}' is not a .safetensors file inside the bundle")


def validate_manifest(manifest: Any, path: str | Path) -> dict[str, Any]:
    """Check a parsed ``bundle.json``: checksum, schema, ranges, combine rule and member paths.

    Args:
        manifest: the parsed JSON.
        path: the bundle directory (for messages and the inside-the-bundle check).

    Returns:
        The manifest.

    Raises:
        CheckpointError: one line naming the first problem.
    """
    path = Path(path)
    if not isinstance(manifest, dict):
        raise _bad(path, "not a JSON object")
    fmt = manifest.get("format")
    if fmt not in READABLE_FORMATS:
        raise CheckpointError(
            f"{path} has bundle format {fmt}, this spermseg {__version__} reads formats "
            f"{', '.join(map(str, READABLE_FORMATS))}; recreate the bundle with this version"
        )
    if fmt >= 2:
        recorded = manifest.get("manifest_sha256")
        if not isinstance(recorded, str):
            raise _bad(path, "manifest_sha256 is missing, so the manifest cannot be verified")
        if recorded != manifest_digest(manifest):
            raise _bad(path, "checksum mismatch: the manifest was edited or corrupted (to change the threshold, "
                             "use 'spermseg bundle --threshold' or 'spermseg predict --threshold')")  # fmt: skip
    thr = manifest.get("threshold")
    if isinstance(thr, bool) or not isinstance(thr, int | float) or not math.isfinite(thr) or not 0 <= thr <= 1:
        raise _bad(path, f"threshold {thr!r} is not a probability in [0, 1]")
    members = manifest.get("members")
    if not isinstance(members, list) or not members:
        raise _bad(path, "members is missing or empty")
    for i, member in enumerate(members):
        _check_member(path, i, member, int(fmt))
    roles = [m["role"] for m in members]
    n_base, n_ens = roles.count("base"), roles.count("ensemble")
    combine = manifest.get("combine")
    expected = "ensemble" if n_ens else ("single" if n_base == 1 else "average")
    if combine not in COMBINES or combine != expected or n_ens > 1 or n_base < 1:
        raise _bad(path, f"combine '{combine}' does not fit {n_base} base member(s) and {n_ens} ensemble member(s)")
    return manifest


def read_bundle_manifest(path: str | Path) -> dict[str, Any]:
    """Read and validate ``bundle.json`` (:func:`validate_manifest`) and the spermseg major version."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"cannot read {path / MANIFEST}: {exc}; recreate the bundle with 'spermseg bundle'"
        ) from None
    validate_manifest(manifest, path)
    made_with = str(manifest.get("spermseg_version", "?"))
    if made_with.split(".")[0] != __version__.split(".")[0]:
        raise CheckpointError(
            f"{path} was made with spermseg {made_with}, incompatible with {__version__} (major version differs); "
            f"install spermseg {made_with.split('.')[0]}.x or recreate the bundle"
        )
    return manifest


def verify_members(path: str | Path, manifest: dict[str, Any]) -> None:
    """Check that every member's weights and sidecar exist and match the sha256 recorded in ``manifest``.

    Args:
        path: the bundle directory.
        manifest: its validated manifest (:func:`read_bundle_manifest`).

    Raises:
        CheckpointError: a missing file or a checksum mismatch (naming the file).
    """
    path = Path(path)
    for member in manifest["members"]:
        weights = path / member["file"]
        for file, key in ((weights, "sha256"), (weights.with_suffix(".json"), "meta_sha256")):
            if key not in member:
                continue  # format 1 bundles have no meta_sha256
            if not file.is_file():
                raise CheckpointError(f"bundle {path} lacks {file.name}; the bundle is incomplete, recreate it")
            digest = _sha256(file)
            if digest != member[key]:
                raise CheckpointError(
                    f"checksum mismatch for {file} (bundle says {member[key][:12]}..., file is {digest[:12]}...): "
                    "the file was changed or corrupted; recreate the bundle"
                )


def _load_bundle_dir(path: Path) -> Predictor:
    from spermseg.models.checkpoints import load_model

    manifest = read_bundle_manifest(path)
    verify_members(path, manifest)
    bases: list[nn.Module] = []
    norms: list[str] = []
    ensemble: nn.Module | None = None
    ens_norm: str | None = None
    for member in manifest["members"]:
        model = load_model(path / member["file"])
        if member["role"] == "ensemble":
            ensemble, ens_norm = model, member["normalization"]
        else:
            bases.append(model)
            norms.append(member["normalization"])
    return Predictor(bases, norms, ensemble, ens_norm, float(manifest["threshold"]))
