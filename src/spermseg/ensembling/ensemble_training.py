"""Training ensembling networks on cached soft masks: selection, stacking (in-sample or out-of-fold), training.

The library behind ``spermseg ensemble train`` and ``spermseg ensemble oof``, also used by ``spermseg reproduce``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spermseg.errors import ConfigError, SpermsegError


def oof_cache_dir(cache: str | Path, folds: int, fold_seed: int, test_inputs: str) -> Path:
    """Where ``ensemble train --stacking oof`` keeps the out-of-fold cache built from ``cache``."""
    return Path(cache) / f"oof-k{folds}-s{fold_seed}-{test_inputs}"


def train_ensemble(
    cache: str | Path,
    kind: str,
    out: str | Path,
    *,
    select: str = "E3",
    rank_on: str = "val",
    data_root: str | Path | None = None,
    seed: int | None = None,
    preset: str = "paper",
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    stacking: str = "in-sample",
    folds: int = 5,
    fold_seed: int = 0,
    oof_test: str = "full",
    oof_overrides: list[str] | None = None,
    device: str | None = None,
    resume: bool = False,
    force: bool = False,
    log: Any = None,
    allow_validation_overlap: bool = False,
) -> dict[str, Any]:
    """Resolve the selection, (for ``oof``) build the out-of-fold cache, and train one ensembling network.

    Args:
        cache: the in-sample mask cache.
        kind: ensemble kind (``ens_s`` ... ``ens_att_v2``; ``avg`` has nothing to train).
        out: run directory.
        select: ``E1``..``E4`` or comma-separated model ids/architectures.
        rank_on: ranking split (``val`` default; ``test`` leaks).
        data_root: dataset root (default: the cache's).
        seed: training seed (default: the config's).
        preset: training preset (the ensembling variant of it is used).
        config: YAML config overrides.
        overrides: ``key=value`` overrides.
        stacking: ``in-sample`` (paper) or ``oof``.
        folds: folds for ``oof``.
        fold_seed: fold-assignment seed.
        oof_test: ``full`` or ``fold-avg`` test-time inputs for ``oof``.
        oof_overrides: config overrides for the fold retrainings.
        device: training device (default: the config's).
        resume: continue an interrupted run.
        force: retrain a finished run.
        log: progress lines.
        allow_validation_overlap: with in-sample stacking, train even when some of the ensemble's validation
            images were training images of an input model (a loud warning instead of an error).

    Returns:
        The provenance written to ``RUN_DIR/ensemble.json`` (kind, selection, stacking, cache, seed, config).

    Raises:
        SpermsegError: with in-sample stacking, when the ensemble's validation images overlap an input model's
            training images (unless ``allow_validation_overlap``).
    """

    from spermseg.data.mask_store import load_manifest
    from spermseg.ensembling.selection import select_inputs
    from spermseg.ensembling.table3 import ENSEMBLE_PROVENANCE, TRAINED_KINDS
    from spermseg.utils.atomic import atomic_write_json

    if kind == "avg":
        raise ConfigError("'avg' has no parameters to train; 'spermseg ensemble eval' scores it for E1-E4")
    if kind not in TRAINED_KINDS:
        raise ConfigError(f"unknown ensemble kind '{kind}'; trainable kinds: {', '.join(TRAINED_KINDS)}")
    cache = Path(cache)
    manifest = load_manifest(cache)
    if manifest.get("stacking"):
        raise SpermsegError(f"{cache} is an out-of-fold cache; pass the in-sample cache and --stacking oof")
    selection = select_inputs(manifest, select, rank_on=rank_on)
    root = data_root or manifest.get("data_root")
    if not root:
        raise SpermsegError(f"mask cache {cache} records no data root; pass --data ROOT")
    from spermseg.training.distributed import env_info

    dist = env_info()
    mask_cache = cache
    if stacking == "oof":
        mask_cache = oof_cache_dir(cache, folds, fold_seed, oof_test)
        if dist.world_size > 1:
            # Fold retrainings inside a torchrun job would run once per process; they must exist already.
            _require_oof_cache(mask_cache, selection.model_ids, folds, fold_seed)
        else:
            build_oof(
                cache,
                selection.model_ids,
                folds=folds,
                fold_seed=fold_seed,
                oof_test=oof_test,
                oof_overrides=oof_overrides,
                device=device or "auto",
                log=log,
            )
    elif stacking != "in-sample":
        raise ConfigError(f"bad stacking '{stacking}'; valid: in-sample, oof")

    cfg, shared = _ensemble_config(
        manifest,
        selection.model_ids,
        kind,
        mask_cache,
        root,
        preset=preset,
        config=config,
        overrides=overrides,
        seed=seed,
        device=device,
    )
    base_split = shared or base_validation_split(manifest, selection.model_ids)
    split_seed = cfg.seed if cfg.validation.split_seed is None else cfg.validation.split_seed
    effective_split = (int(split_seed), float(cfg.validation.fraction))
    overlap = _check_overlap(manifest, selection.model_ids, cfg, stacking, allow_validation_overlap, log)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    provenance = {
        "kind": kind,
        "select": selection.name,
        "selection": selection.to_dict(),
        "stacking": stacking,
        "oof": {"folds": folds, "fold_seed": fold_seed, "test_inputs": oof_test} if stacking == "oof" else None,
        "cache": str(mask_cache.resolve()),
        "source_cache": str(cache.resolve()),
        "seed": cfg.seed,
        "preset": preset,
        "validation_from_base": base_split is not None and effective_split == base_split,
        "validation_overlap": {k: sorted(v) for k, v in overlap.items()},
    }
    if dist.is_main:
        atomic_write_json(out / ENSEMBLE_PROVENANCE, provenance)
    _run_trainer(cfg, out, resume=resume, force=force, log=log)
    return provenance


def _ensemble_config(
    manifest: dict[str, Any],
    model_ids: list[str],
    kind: str,
    mask_cache: Path,
    root: str | Path,
    *,
    preset: str,
    config: str | Path | None,
    overrides: list[str] | None,
    seed: int | None,
    device: str | None,
) -> tuple[Any, tuple[int, float] | None]:
    """The ensembling network's TrainConfig (preset <- config <- overrides, then kind, inputs, data, seed and
    device) and the base models' shared validation split it adopted (None when the config chose its own).
    """
    import dataclasses

    from spermseg.training.config import train_config

    cfg = train_config(preset, yaml_path=config, overrides=list(overrides or []), ensemble=True)
    model_cfg = dataclasses.replace(
        cfg.model, ensemble=kind, masks=str(mask_cache.resolve()), mask_models=list(model_ids)
    )
    data_cfg = dataclasses.replace(cfg.data, root=str(root))
    if data_cfg.test_split and data_cfg.test_split not in manifest["splits"]:
        data_cfg = dataclasses.replace(data_cfg, test_split="")  # no cached test-time inputs: skip the test pass
    cfg = dataclasses.replace(cfg, model=model_cfg, data=data_cfg)
    if seed is not None:
        cfg = dataclasses.replace(cfg, seed=seed)
    if device is not None:
        cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, device=device))
    explicit = any(
        o.split("=", 1)[0].strip() in ("validation.split_seed", "validation.fraction") for o in (overrides or [])
    )
    shared = None if explicit or config else base_validation_split(manifest, model_ids)
    if shared is not None:
        # Validate the ensemble on the groups its input models held out: no input mask there is in-sample, so
        # checkpoint selection and t_opt are honest even with in-sample stacking.
        cfg = dataclasses.replace(
            cfg, validation=dataclasses.replace(cfg.validation, split_seed=shared[0], fraction=shared[1])
        )
    return cfg, shared


def _check_overlap(
    manifest: dict[str, Any], model_ids: list[str], cfg: Any, stacking: str, allow: bool, log: Any
) -> dict[str, set[str]]:
    """With in-sample stacking, refuse (or, when ``allow``, warn about) validation groups an input model trained
    on; returns them per model.

    Raises:
        SpermsegError: an overlap without ``allow``.
    """
    overlap = validation_overlap(manifest, model_ids, cfg) if stacking == "in-sample" else {}
    if overlap:
        worst = max(overlap, key=lambda k: len(overlap[k]))
        msg = (
            f"{len(overlap[worst])} of the ensemble's validation groups (e.g. '{sorted(overlap[worst])[0]}') were "
            f"training images of input model '{worst}'"
            + (f" and {len(overlap) - 1} other model(s)" if len(overlap) > 1 else "")
            + ": their soft masks there are in-sample, so checkpoint selection and t_opt would be optimistic. "
            "Train the base models on one validation split (validation.split_seed, the same for every seed by "
            "default), or use --stacking oof"
        )
        if not allow:
            raise SpermsegError(msg + ", or pass --allow-validation-overlap to train anyway")
        (log or _warn)(f"WARNING: {msg}; training anyway (--allow-validation-overlap)")
    return overlap


def _warn(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr)


def validation_overlap(manifest: dict[str, Any], model_ids: list[str], cfg: Any) -> dict[str, set[str]]:
    """Validation groups of the ensemble run ``cfg`` that an input model trained on, per model id.

    The ensemble's groups come from the same split rule as the trainer (:func:`~spermseg.training.trainer.
    split_by_group` on the cache's groups of ``cfg.data.train_split``); a base model trained on every group of
    the split except its ``result.json["val_groups"]``. Models whose run records no validation groups count as
    having trained on every group.

    Returns:
        ``{model_id: overlapping groups}``, only for models with an overlap; empty when none (or no validation).
    """
    from spermseg.training.trainer import split_by_group

    split = (manifest.get("splits") or {}).get(cfg.data.train_split)
    if not split or cfg.validation.fraction <= 0:
        return {}
    groups = list(split["groups"])
    seed = cfg.seed if cfg.validation.split_seed is None else cfg.validation.split_seed
    _, val_idx = split_by_group(groups, cfg.validation.fraction, seed)
    ens_val = {groups[i] for i in val_idx}
    out: dict[str, set[str]] = {}
    for model_id in model_ids:
        result = Path(manifest["models"][model_id].get("run_dir", "")) / "result.json"
        held_out: set[str] = set()
        if result.is_file():
            try:
                held_out = set(json.loads(result.read_text()).get("val_groups") or [])
            except (json.JSONDecodeError, AttributeError):
                held_out = set()
        trained = ens_val - held_out
        if trained:
            out[model_id] = trained
    return out


def base_validation_split(manifest: dict[str, Any], model_ids: list[str]) -> tuple[int, float] | None:
    """``(split seed, fraction)`` of the validation split shared by the base runs ``model_ids``, else None.

    Read from each run's ``config.yaml`` (effective split seed: ``validation.split_seed`` or the run's seed).
    None when a config is missing or the runs held out different groups (e.g. different seeds).
    """
    import yaml

    found = set()
    for model_id in model_ids:
        path = Path(manifest["models"][model_id].get("run_dir", "")) / "config.yaml"
        if not path.is_file():
            return None
        cfg = yaml.safe_load(path.read_text()) or {}
        val = cfg.get("validation") or {}
        split_seed = val.get("split_seed")
        found.add((int(cfg.get("seed", 0) if split_seed is None else split_seed), float(val.get("fraction", 0.0))))
    return found.pop() if len(found) == 1 else None


def build_oof(
    cache: str | Path,
    model_ids: list[str],
    *,
    folds: int = 5,
    fold_seed: int = 0,
    oof_test: str = "full",
    oof_overrides: list[str] | None = None,
    device: str = "auto",
    log: Any = None,
) -> Path:
    """Build (or bring up to date) the out-of-fold cache of ``model_ids`` beside ``cache``; returns its path."""
    from spermseg.data.mask_store import load_manifest
    from spermseg.ensembling.stacking import build_oof_cache

    out = oof_cache_dir(cache, folds, fold_seed, oof_test)
    manifest = load_manifest(cache)
    build_oof_cache(
        cache,
        out,
        k=folds,
        seed=fold_seed,
        model_ids=model_ids,
        test_splits=[s for s in manifest["splits"] if s != "train"],
        test_inputs=oof_test,
        overrides=oof_overrides or [],
        device=device,
        log=log,
    )
    return out


def _require_oof_cache(path: Path, model_ids: list[str], folds: int, fold_seed: int) -> None:
    from spermseg.data.mask_store import load_manifest

    manifest = load_manifest(path, missing_ok=True)
    st = manifest.get("stacking") or {}
    missing = [m for m in model_ids if "train" not in manifest["models"].get(m, {}).get("entries", {})]
    if st.get("k") != folds or st.get("seed") != fold_seed or missing:
        raise ConfigError(
            f"out-of-fold cache {path} is missing or incomplete; build it first in a single process with "
            f"'spermseg ensemble oof --cache CACHE --select ... --folds {folds}', then start torchrun"
        )


def _run_trainer(cfg: Any, out: Path, *, resume: bool, force: bool, log: Any = None) -> None:
    """Delegate to the training engine (one training loop for base models and ensembles)."""
    from spermseg.training.trainer import TrainHooks, train

    train(cfg, out, resume=resume, force=force, hooks=TrainHooks(log=log) if log is not None else None)
