"""``spermseg ensemble``: select inputs, train and evaluate ensembling networks (paper Section 4, Table 3).

Subcommands::

    spermseg ensemble select --cache CACHE [--rank-on val]
    spermseg ensemble train  --cache CACHE --kind ens_att_v2 --select E3 --out RUN_DIR [--seed 0] [--set k=v]
                             [--stacking in-sample|oof --folds 5 --oof-test full|fold-avg]
    spermseg ensemble oof    --cache CACHE --select E3 [--folds 5 --oof-test full|fold-avg]
    spermseg ensemble eval   --cache CACHE --runs RUN_DIR ... [--data ROOT] --out DIR

``train`` resolves the selection (E1-E4 ranked on the validation split by default, or model ids/architectures),
then delegates to the training engine (same loop, resume, seeds, DDP, checkpoints) with the paper's ensembling
schedule, and records the selection in ``RUN_DIR/ensemble.json``. With ``--stacking oof`` it first builds (or
reuses) an out-of-fold cache ``CACHE/oof-k{K}-s{SEED}-{TEST}`` (:mod:`spermseg.experiments.stacking`).

``oof`` only builds the out-of-fold cache (do this first, in one process, before training under ``torchrun``).

``eval`` scores the cached base models, ``avg`` for E1-E4 and the given ensemble runs, and writes Table 3
(``table3.md``, ``table3.json``) and all records (``evaluation.json``) into ``DIR``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from spermseg.errors import ConfigError, SpermsegError

HELP = "train and evaluate ensembling networks (paper Section 4, Table 3)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    sel = sub.add_parser("select", help="print the input selections E1-E4 of a mask cache")
    sel.add_argument("--cache", required=True, metavar="CACHE", help="mask cache (spermseg masks)")
    _rank_arg(sel)
    sel.add_argument("--json", action="store_true", help="print the selections as JSON")

    tr = sub.add_parser("train", help="train one ensembling network on cached soft masks")
    tr.add_argument("--cache", required=True, metavar="CACHE", help="in-sample mask cache (spermseg masks)")
    tr.add_argument("--kind", required=True, help="ens_s, ens_is, ens_concat, ens_att_v1 or ens_att_v2")
    tr.add_argument(
        "--select", default="E3", help="E1, E2, E3, E4 or comma-separated model ids/architectures (default: E3)"
    )
    _rank_arg(tr)
    tr.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory")
    tr.add_argument("--data", metavar="ROOT", help="dataset root (default: the one recorded in the cache)")
    tr.add_argument("--seed", type=int, default=None, help="training seed (default: the config's)")
    tr.add_argument("--preset", default="paper", help="training preset: paper, cpu-small or demo (default: paper)")
    tr.add_argument("--config", metavar="FILE", help="YAML file with training config overrides")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    tr.add_argument(
        "--stacking",
        choices=("in-sample", "oof"),
        default="in-sample",
        help="ensemble training inputs: the base models' own training-set masks (in-sample, the "
        "paper's way, default) or out-of-fold masks from k-fold cross-fitting by video (oof)",
    )
    _oof_args(tr)
    tr.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the config's)")
    tr.add_argument("--resume", action="store_true", help="continue an interrupted run")
    tr.add_argument("--force", action="store_true", help="retrain even when the run is finished")

    oof = sub.add_parser("oof", help="build the out-of-fold mask cache of a selection (k-fold cross-fitting)")
    oof.add_argument("--cache", required=True, metavar="CACHE", help="in-sample mask cache (spermseg masks)")
    oof.add_argument("--select", default="E3", help="E1-E4 or comma-separated model ids/architectures (default: E3)")
    _rank_arg(oof)
    _oof_args(oof)
    oof.add_argument("--device", default="auto", help="device for the fold models' predictions (default: auto)")

    ev = sub.add_parser("eval", help="evaluate avg and trained ensembles against the base models (Table 3)")
    ev.add_argument("--cache", required=True, metavar="CACHE", help="in-sample mask cache")
    ev.add_argument("--runs", nargs="*", default=[], metavar="RUN_DIR", help="ensemble run directories")
    ev.add_argument("--data", metavar="ROOT", help="dataset root (default: the one recorded in the cache)")
    ev.add_argument("--split", default="test", help="evaluation split (default: test)")
    _rank_arg(ev)
    ev.add_argument("--rater", default=None, help="reference rater (default: the split's first, GT1)")
    ev.add_argument("--mode", choices=("fast", "exact"), default="fast", help="metric computation (default: fast)")
    ev.add_argument("--device", default="auto", help="device for ensemble inference (default: auto)")
    ev.add_argument("--batch-size", type=int, default=4, help="images per forward pass (default: 4)")
    ev.add_argument("--out", required=True, metavar="DIR", help="output folder for table3.md/json, evaluation.json")
    ev.add_argument("--json", action="store_true", help="print table3.json on stdout instead of Markdown")


def _oof_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--folds", type=int, default=5, help="folds for out-of-fold stacking (default: 5)")
    parser.add_argument("--fold-seed", type=int, default=0, help="fold-assignment seed (default: 0)")
    parser.add_argument(
        "--oof-test",
        choices=("full", "fold-avg"),
        default="full",
        help="test-time inputs of out-of-fold stacking: the base models trained on all folds (full, "
        "default) or the average of the fold models (fold-avg)",
    )
    parser.add_argument(
        "--oof-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for the fold retrainings of the base models (repeatable)",
    )


def _rank_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rank-on",
        choices=("val", "train", "test"),
        default="val",
        help="split that ranks the base models for E2/E3 and picks seeds: val (held-out "
        "validation, default), train, or test (LEAKS test labels; the paper's way)",
    )


def run(args: argparse.Namespace) -> int:
    return {"select": _select, "train": _train, "oof": _oof, "eval": _eval}[args.action](args)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr)


def _select(args: argparse.Namespace) -> int:
    from spermseg.engine.mask_cache import load_manifest
    from spermseg.experiments.selection import all_selections

    selections = all_selections(load_manifest(args.cache), rank_on=args.rank_on)
    if args.json:
        print(json.dumps({k: v.to_dict() for k, v in selections.items()}, indent=2))
        return 0
    for name, sel in selections.items():
        leak = "  (LEAKS test labels)" if sel.leaks_test else ""
        print(f"{name} (ranked on {sel.rank_on}): {', '.join(sel.model_ids)}{leak}")
    return 0


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

    Returns:
        The provenance written to ``RUN_DIR/ensemble.json`` (kind, selection, stacking, cache, seed, config).
    """
    import dataclasses

    from spermseg.engine.config import train_config
    from spermseg.engine.mask_cache import load_manifest
    from spermseg.experiments.selection import select_inputs
    from spermseg.experiments.table3 import ENSEMBLE_PROVENANCE, TRAINED_KINDS
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
    from spermseg.engine.distributed import env_info

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

    cfg = train_config(preset, yaml_path=config, overrides=list(overrides or []), ensemble=True)
    model_cfg = dataclasses.replace(
        cfg.model, ensemble=kind, masks=str(mask_cache.resolve()), mask_models=list(selection.model_ids)
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
    shared = None if explicit or config else base_validation_split(manifest, selection.model_ids)
    if shared is not None:
        # Validate the ensemble on the groups its input models held out: no input mask there is in-sample, so
        # checkpoint selection and t_opt are honest even with in-sample stacking.
        cfg = dataclasses.replace(
            cfg, validation=dataclasses.replace(cfg.validation, split_seed=shared[0], fraction=shared[1])
        )
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
        "validation_from_base": shared is not None,
    }
    if dist.is_main:
        atomic_write_json(out / ENSEMBLE_PROVENANCE, provenance)
    _run_trainer(cfg, out, resume=resume, force=force)
    return provenance


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
    from spermseg.engine.mask_cache import load_manifest
    from spermseg.experiments.stacking import build_oof_cache

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
    from spermseg.engine.mask_cache import load_manifest

    manifest = load_manifest(path, missing_ok=True)
    st = manifest.get("stacking") or {}
    missing = [m for m in model_ids if "train" not in manifest["models"].get(m, {}).get("entries", {})]
    if st.get("k") != folds or st.get("seed") != fold_seed or missing:
        raise ConfigError(
            f"out-of-fold cache {path} is missing or incomplete; build it first in a single process with "
            f"'spermseg ensemble oof --cache CACHE --select ... --folds {folds}', then start torchrun"
        )


def _run_trainer(cfg: Any, out: Path, *, resume: bool, force: bool) -> None:
    """Delegate to the training engine (one training loop for base models and ensembles)."""
    from spermseg.engine.trainer import train

    train(cfg, out, resume=resume, force=force)


def _train(args: argparse.Namespace) -> int:
    prov = train_ensemble(
        args.cache,
        args.kind,
        args.out,
        select=args.select,
        rank_on=args.rank_on,
        data_root=args.data,
        seed=args.seed,
        preset=args.preset,
        config=args.config,
        overrides=args.set,
        stacking=args.stacking,
        folds=args.folds,
        fold_seed=args.fold_seed,
        oof_test=args.oof_test,
        oof_overrides=args.oof_set,
        device=args.device,
        resume=args.resume,
        force=args.force,
        log=_say,
    )
    sel = prov["selection"]
    print(f"trained {args.kind}|{sel['name']} on {', '.join(sel['model_ids'])} ({prov['stacking']}) -> {args.out}")
    return 0


def _oof(args: argparse.Namespace) -> int:
    from spermseg.engine.mask_cache import load_manifest
    from spermseg.experiments.selection import select_inputs

    selection = select_inputs(load_manifest(args.cache), args.select, rank_on=args.rank_on)
    out = build_oof(
        args.cache,
        selection.model_ids,
        folds=args.folds,
        fold_seed=args.fold_seed,
        oof_test=args.oof_test,
        oof_overrides=args.oof_set,
        device=args.device,
        log=_say,
    )
    manifest = load_manifest(out)
    for model_id in selection.model_ids:
        entries = manifest["models"][model_id]["entries"]
        oof_ap = entries.get("train", {}).get("metrics", {}).get("ap")
        print(f"{model_id}: out-of-fold train AP {oof_ap if oof_ap is None else round(oof_ap, 4)}")
    print(f"out-of-fold cache -> {out}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from spermseg.experiments.table3 import evaluate_ensembles, render_markdown, write_table3

    evaluation = evaluate_ensembles(
        args.cache,
        args.runs,
        args.data,
        split=args.split,
        rank_on=args.rank_on,
        rater=args.rater,
        mode=args.mode,
        device=args.device,
        batch_size=args.batch_size,
        log=_say,
    )
    table = write_table3(evaluation, args.out)
    if args.json:
        print(json.dumps(table, indent=2))
    else:
        print(render_markdown(table))
    return 0
