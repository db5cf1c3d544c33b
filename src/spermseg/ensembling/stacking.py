"""Stacking without leakage: out-of-fold soft masks for training the ensembling networks.

The paper trains its ensembles on the base models' soft masks of the *training* images (``in-sample``, the
default here for reproduction). A base model has seen those images with their labels, so its masks there are
over-confident (cleaner than on new images), and an ensemble trained on them learns to trust its inputs more than
it should at test time.

``oof`` (k-fold cross-fitting by group) removes that mismatch:

1. the training images are split into k folds by group (video), so frames of one video never sit on both sides;
2. for each fold f and each base model, the model is retrained with its own recorded config on the other k-1
   folds (a symlinked copy of the dataset without fold f; its own validation split is taken from those folds)
   and predicts fold f; together the k predictions give honest out-of-fold masks for every training image;
3. test-time inputs come either from the original base model trained on all folds (``test_inputs="full"``,
   default: the models one deploys) or from the average of the k fold models (``"fold-avg"``).

The result is a mask cache in the usual format (:mod:`spermseg.ensembling.mask_cache`) whose ``train`` entries are
out-of-fold and whose manifest records ``stacking = {mode: "oof", k, seed, test_inputs, folds, source_cache}``;
the training engine reads it like any other cache. Fold trainings are ordinary run directories under
``OUT/folds/f/runs/<model_id>``, so a killed build resumes (finished fold runs are skipped).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spermseg.errors import ConfigError, DataError, SpermsegError

STACKING_MODES = ("in-sample", "oof")
TEST_INPUTS = ("full", "fold-avg")


def group_kfold(names: Sequence[str], groups: Sequence[str], k: int, seed: int = 0) -> dict[str, int]:
    """Assign whole groups to k folds of about equal image counts: ``{group: fold}``.

    Groups are shuffled with ``seed``, then taken largest first and each put into the fold with the fewest images
    so far (ties: the lower fold index), so the folds are balanced and the assignment is deterministic.

    Args:
        names: image names (only their count per group matters).
        groups: group (video) of each image.
        k: number of folds (>= 2).
        seed: shuffling seed.

    Raises:
        ConfigError: ``k < 2`` or fewer groups than folds.
    """
    if len(names) != len(groups):
        raise DataError(f"{len(names)} names but {len(groups)} groups")
    unique = sorted(set(groups))
    if k < 2:
        raise ConfigError(f"bad number of folds {k}; use --folds 2 or more")
    if len(unique) < k:
        raise ConfigError(
            f"only {len(unique)} groups (videos) for {k} folds; use --folds {max(2, len(unique))} or "
            "fewer, or give the images groups (groups.csv)"
        )
    counts = {g: 0 for g in unique}
    for g in groups:
        counts[g] += 1
    order = list(np.random.default_rng(seed).permutation(len(unique)))
    shuffled = [unique[i] for i in order]
    # Stable sort by size keeps the shuffled order among equal sizes.
    shuffled.sort(key=lambda g: -counts[g])
    load = [0] * k
    assign: dict[str, int] = {}
    for g in shuffled:
        fold = min(range(k), key=lambda f: (load[f], f))
        assign[g] = fold
        load[fold] += counts[g]
    return assign


def make_fold_root(data_root: str | Path, split: str, keep: Sequence[str], out: str | Path) -> Path:
    """A dataset folder holding only the samples ``keep`` of ``split``, as symlinks to the original files.

    The relative paths below the root are kept, so the layout (SegSperm or folders), mask folders and file names
    are the same as in the original; top-level files (``groups.csv``, ``synth.json``) are linked too. An existing
    fold root with the same sample set is reused.

    Args:
        data_root: the original dataset root.
        split: the split the samples come from.
        keep: names of the samples to include.
        out: the fold dataset root (created).

    Returns:
        ``out`` as a Path.
    """
    from spermseg.data.layouts import open_dataset

    root = Path(data_root).resolve()
    out = Path(out)
    dataset = open_dataset(root)
    if split not in dataset.splits:
        raise DataError(f"split '{split}' not found in {root}; splits: {', '.join(dataset.splits)}")
    wanted = set(keep)
    files: list[Path] = [p for p in root.iterdir() if p.is_file()]
    for sample in dataset.splits[split].samples:
        if sample.name not in wanted:
            continue
        files.append(sample.image_path)
        files.extend(p for parts in sample.mask_paths.values() for p in parts.values())
    for src in files:
        src = Path(src).resolve() if not Path(src).is_absolute() else Path(src)
        rel = src.relative_to(root) if src.is_relative_to(root) else Path(os.path.relpath(src, root))
        if rel.parts and rel.parts[0] == "..":
            raise DataError(f"{src} lies outside the dataset root {root}; cannot build a fold dataset")
        dst = out / rel
        if dst.is_symlink() or dst.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(src, dst)
    # Remove links of samples that are no longer wanted (a rebuilt fold assignment).
    wanted_files = {Path(f).resolve() for f in files}
    for link in list(out.rglob("*")):
        if link.is_symlink() and link.resolve() not in wanted_files:
            link.unlink()
    return out


def _default_trainer(cfg: Any, out_dir: Path) -> None:
    """Train one base model with the training engine (finished runs are skipped, killed runs resume)."""
    from spermseg.training.trainer import train

    train(cfg, out_dir, resume=True)


def build_oof_cache(
    source_cache: str | Path,
    out: str | Path,
    *,
    k: int = 5,
    seed: int = 0,
    model_ids: Sequence[str] | None = None,
    split: str = "train",
    test_splits: Sequence[str] = ("test",),
    test_inputs: str = "full",
    overrides: Sequence[str] = (),
    device: str = "auto",
    batch_size: int = 4,
    trainer: Callable[[Any, Path], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build an out-of-fold mask cache from an in-sample one (see the module docstring).

    Args:
        source_cache: the in-sample cache (``spermseg masks``); its models' run directories hold their configs.
        out: the out-of-fold cache directory (created; resumes an earlier build).
        k: number of folds.
        seed: fold-assignment seed.
        model_ids: which cached base models (default: all with masks on ``split``).
        split: the ensemble's training split.
        test_splits: splits that get test-time inputs (copied from the source for ``full``, fold-averaged for
            ``fold-avg``).
        test_inputs: ``full`` or ``fold-avg``.
        overrides: ``key=value`` changes applied to every fold training config (e.g. ``schedule.epochs=5``).
        device: device for predictions.
        batch_size: images per forward pass.
        trainer: ``trainer(cfg, run_dir)`` training one base model (default: the training engine).
        log: progress lines.

    Returns:
        The out-of-fold cache manifest.
    """

    from spermseg.config import parse_overrides
    from spermseg.data.arrays import load_split
    from spermseg.ensembling.mask_cache import (
        checkpoint_file,
        file_sha256,
        load_manifest,
        reference_masks,
        register_split,
        save_manifest,
    )
    from spermseg.utils.device import resolve_device

    say = log or (lambda _msg: None)
    train_fn = trainer or _default_trainer
    if test_inputs not in TEST_INPUTS:
        raise ConfigError(f"bad test inputs '{test_inputs}'; valid: {', '.join(TEST_INPUTS)}")
    source_cache = Path(source_cache)
    out = Path(out)
    if out.resolve() == source_cache.resolve():
        raise SpermsegError("the out-of-fold cache must be another directory than the in-sample cache")
    src = load_manifest(source_cache)
    if src.get("stacking"):
        raise SpermsegError(f"{source_cache} is already an out-of-fold cache; pass the in-sample cache")
    data_root = src.get("data_root")
    if not data_root:
        raise DataError(f"mask cache {source_cache} records no data root; rebuild it with spermseg masks")
    ids = list(model_ids) if model_ids else [m for m, v in src["models"].items() if split in v.get("entries", {})]
    if not ids:
        raise DataError(f"no base models with '{split}' masks in {source_cache}")
    dev = str(resolve_device(device))

    arrays = load_split(data_root, split)
    names, groups = list(arrays.names), list(arrays.groups)
    folds = group_kfold(names, groups, k, seed)
    fold_of = np.array([folds[g] for g in groups])
    manifest = load_manifest(out, missing_ok=True)
    stacking = {
        "mode": "oof",
        "k": k,
        "seed": seed,
        "test_inputs": test_inputs,
        "split": split,
        "source_cache": str(source_cache.resolve()),
        "folds": folds,
        "overrides": list(overrides),
    }
    if manifest.get("stacking") and {kk: manifest["stacking"].get(kk) for kk in ("k", "seed", "split")} != {
        kk: stacking[kk] for kk in ("k", "seed", "split")
    }:
        raise SpermsegError(
            f"{out} holds out-of-fold masks for another fold setting {manifest['stacking']['k']} "
            "folds; use another --out or delete it"
        )
    manifest["stacking"] = stacking
    manifest["data_root"] = str(Path(data_root).resolve())
    register_split(manifest, split, arrays)

    oof = _OofBuild(
        out=out,
        source_cache=source_cache,
        data_root=data_root,
        split=split,
        arrays=arrays,
        names=names,
        fold_of=fold_of,
        manifest=manifest,
        ref=reference_masks(arrays),
        device=dev,
        batch_size=batch_size,
        say=say,
    )
    extra = parse_overrides(overrides)
    for model_id in ids:
        info = src["models"][model_id]
        fold_runs = _train_folds(oof, model_id, info, k, extra, train_fn)
        shas = [file_sha256(checkpoint_file(r)) for r in fold_runs]
        manifest["models"][model_id] = {
            **{kk: v for kk, v in info.items() if kk != "entries"},
            "entries": manifest["models"].get(model_id, {}).get("entries", {}),
            "fold_runs": [str(r.resolve()) for r in fold_runs],
            "fold_sha256": shas,
        }
        _oof_entry(oof, model_id, info, fold_runs, shas)
        for test_split in test_splits:
            _test_entry(oof, model_id, info, fold_runs, shas, test_split, test_inputs, src)
    save_manifest(out, manifest)
    return manifest


@dataclass
class _OofBuild:
    """What every model's out-of-fold entries share: the cache being built, the split and its folds."""

    out: Path
    source_cache: Path
    data_root: str
    split: str
    arrays: Any
    names: list[str]
    fold_of: np.ndarray
    manifest: dict[str, Any]
    ref: Any
    device: str
    batch_size: int
    say: Callable[[str], None]


def _train_folds(
    b: _OofBuild,
    model_id: str,
    info: dict[str, Any],
    k: int,
    extra: dict[str, Any],
    train_fn: Callable[[Any, Path], None],
) -> list[Path]:
    """Train ``model_id`` once per fold on the other folds (its run's own config, data swapped).

    Returns:
        The fold run directories, fold order.
    """
    import yaml

    from spermseg.config import config_from_dict
    from spermseg.training.config import TrainConfig, validate

    out, split, names, fold_of, say, data_root = b.out, b.split, b.names, b.fold_of, b.say, b.data_root
    run_dir = Path(info["run_dir"])
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise DataError(f"base model run {run_dir} has no config.yaml; cannot retrain it on folds")
    base_cfg = yaml.safe_load(config_path.read_text()) or {}
    fold_runs: list[Path] = []
    for f in range(k):
        keep = [n for n, fo in zip(names, fold_of) if fo != f]
        fold_root = make_fold_root(data_root, split, keep, out / "folds" / f"fold{f}" / "data")
        cfg_dict = copy.deepcopy(base_cfg)
        cfg_dict.setdefault("data", {})
        cfg_dict["data"].update({"root": str(fold_root), "train_split": split, "test_split": ""})
        cfg = config_from_dict(TrainConfig, _merge(cfg_dict, extra))
        validate(cfg)
        run = out / "folds" / f"fold{f}" / "runs" / model_id
        say(f"fold {f + 1}/{k}: training {model_id} on {len(keep)} images")
        train_fn(cfg, run)
        fold_runs.append(run)
    return fold_runs


def _oof_entry(b: _OofBuild, model_id: str, info: dict[str, Any], fold_runs: Sequence[Path], shas: list[str]) -> None:
    """The out-of-fold masks of ``model_id`` on the training split, each image predicted by the fold run that did
    not see it; skipped when the entry is fresh."""
    from spermseg.ensembling.mask_cache import predict_split, score_masks, write_entry
    from spermseg.models.checkpoints import load_model, read_meta

    out, manifest, split, arrays, names, fold_of = b.out, b.manifest, b.split, b.arrays, b.names, b.fold_of
    ref, dev, batch_size, say = b.ref, b.device, b.batch_size, b.say
    fresh = manifest["models"][model_id]["entries"].get(split, {})
    if (
        fresh.get("fold_sha256") != shas
        or not (out / fresh.get("file", "missing")).is_file()
        or fresh.get("data_fingerprint") != arrays.fingerprint
    ):
        oof = np.zeros((len(names), *manifest["splits"][split]["shape"][1:]), dtype=np.float32)
        for f, run in enumerate(fold_runs):
            idx = np.flatnonzero(fold_of == f)
            model = load_model(run)
            normalization = read_meta(run).get("normalization", info.get("normalization", "minmax"))
            oof[idx] = predict_split(
                model, [arrays.images[i] for i in idx], normalization, device=dev, batch_size=batch_size, tta=False
            )
        stored = np.clip(oof, 0, 1).astype(np.float16)
        prov: dict[str, Any] = {
            "fold_sha256": shas,
            "normalization": info.get("normalization"),
            "tta": False,
            "stacking": "oof",
        }
        if ref is not None:
            prov["metrics"] = {**score_masks(stored, ref[1]), "reference": f"{ref[0]}/full"}
        write_entry(out, manifest, model_id, split, stored, prov)
        say(
            f"out-of-fold masks of {model_id}: train AP {prov.get('metrics', {}).get('ap', float('nan')):.4f} "
            f"(in-sample {info.get('entries', {}).get(split, {}).get('metrics', {}).get('ap', float('nan')):.4f})"
        )


def _test_entry(
    b: _OofBuild,
    model_id: str,
    info: dict[str, Any],
    fold_runs: Sequence[Path],
    shas: list[str],
    test_split: str,
    test_inputs: str,
    src: dict[str, Any],
) -> None:
    """The test-time inputs of ``model_id`` on ``test_split``: copied from the source cache (``full``) or the mean
    of the fold runs' masks (``fold-avg``)."""
    from spermseg.data.arrays import load_split
    from spermseg.data.mask_store import load_cached_masks, mask_file, write_entry
    from spermseg.ensembling.mask_cache import predict_split, reference_masks, score_masks
    from spermseg.models.checkpoints import load_model, read_meta

    out, manifest, source_cache, data_root = b.out, b.manifest, b.source_cache, b.data_root
    dev, batch_size = b.device, b.batch_size
    if test_split not in src["splits"] or test_split not in info.get("entries", {}):
        raise DataError(f"'{test_split}' masks of {model_id} are not in {source_cache}; cache that split first")
    manifest["splits"][test_split] = copy.deepcopy(src["splits"][test_split])
    src_entry = info["entries"][test_split]
    if test_inputs == "full":
        _, stack = load_cached_masks(source_cache, test_split, [model_id], dtype=np.float16)
        path = mask_file(out, model_id, test_split)
        if not path.is_file() or manifest["models"][model_id]["entries"].get(test_split, {}).get(
            "checkpoint_sha256"
        ) != src_entry.get("checkpoint_sha256"):
            prov = {kk: v for kk, v in src_entry.items() if kk not in ("file", "dtype", "created")}
            write_entry(out, manifest, model_id, test_split, stack[:, 0], {**prov, "test_inputs": "full"})
    else:
        entry = manifest["models"][model_id]["entries"].get(test_split, {})
        if entry.get("fold_sha256") == shas and (out / entry.get("file", "missing")).is_file():
            return
        tarrays = load_split(data_root, test_split)
        total = None
        for run in fold_runs:
            model = load_model(run)
            normalization = read_meta(run).get("normalization", info.get("normalization", "minmax"))
            probs = predict_split(model, tarrays.images, normalization, device=dev, batch_size=batch_size, tta=False)
            total = probs if total is None else total + probs
        assert total is not None
        avg = total / len(fold_runs)
        tref = reference_masks(tarrays)
        prov = {"fold_sha256": shas, "test_inputs": "fold-avg", "tta": False}
        if tref is not None:
            prov["metrics"] = {**score_masks(avg.astype(np.float16), tref[1]), "reference": f"{tref[0]}/full"}
        write_entry(out, manifest, model_id, test_split, avg, prov)


def _merge(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out
