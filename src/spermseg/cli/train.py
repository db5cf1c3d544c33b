"""``spermseg train``: train one base model (or, with ``--ensemble``, one ensembling network).

Examples:
    spermseg train --data ROOT --model unet --out runs/unet/seed0 --preset cpu
    spermseg train --data ROOT --model unet --out RUN --set optim.lr=3e-4 --set schedule.epochs=50
    torchrun --nproc-per-node 4 -m spermseg train --data ROOT --model att_unet --out RUN
    spermseg train --data ROOT --kind ens_att_v2 --cache CACHE --mask-models unet,att_unet --out RUN

``--ensemble KIND`` and ``--masks CACHE`` are the old names of ``--kind`` and ``--cache`` (hidden, kept for one
release): ``--ensemble`` names a run directory in ``spermseg bundle``, ``--cache`` is the mask cache everywhere.
"""

from __future__ import annotations

import argparse

from spermseg.cli._common import add_alias, add_run_arguments, add_set_argument

HELP = "train one base model or ensembling network (the paper's protocol by default)"
EXAMPLE = "spermseg train --data data/segsperm --model unet --out runs/unet/seed0 --preset cpu"


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by ``train`` and ``train-many``: data, preset, config file, overrides, runtime."""
    from spermseg.training.config import PRESET_NAMES

    parser.add_argument("--data", required=True, help="dataset root (SegSperm or folder layout)")
    parser.add_argument(
        "--preset",
        default="paper",
        choices=PRESET_NAMES,
        help="starting configuration (default: paper; cpu: a 2-core CPU with bf16 in < 30 min per model, "
        "cpu-small is its old name; demo: tiny)",
    )
    parser.add_argument("--config", default=None, metavar="FILE.yaml", help="YAML file with config values")
    add_set_argument(parser, "optim.lr=3e-4", dest="overrides")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: runtime.device)")
    parser.add_argument("--force", action="store_true", help="retrain even if the run directory holds a result")
    parser.add_argument(
        "--target",
        choices=("binary", "parts"),
        default=None,
        help="binary (default: data.part as one mask) or parts (six-class network on GT{r}_parts)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--model", default=None, help="base model name (see 'spermseg models'); default: unet")
    add_run_arguments(parser)
    parser.add_argument(
        "--init",
        default=None,
        metavar="builtin|RUN_DIR|BUNDLE",
        help="start from these weights (same architecture; builtin: the model that ships with spermseg) instead of a "
        "random initialisation (fine-tuning)",
    )
    parser.add_argument(
        "--kind",
        dest="ensemble",
        default=None,
        metavar="KIND",
        help="train an ensembling network of this kind (ens_s, ens_is, ens_concat, ens_att_v1, "
        "ens_att_v2) on soft masks from --cache",
    )
    add_alias(parser, "--ensemble", dest="ensemble")
    parser.add_argument(
        "--cache", dest="masks", default=None, metavar="CACHE", help="soft-mask cache (spermseg masks) for --kind"
    )
    add_alias(parser, "--masks", dest="masks")
    parser.add_argument(
        "--mask-models",
        default=None,
        metavar="A,B,C",
        help="model ids in the cache to ensemble, in order (default: all cached)",
    )
    parser.add_argument("--json", action="store_true", help="print result.json to stdout")
    parser.add_argument("--json-out", default=None, metavar="FILE", help="also write result.json to FILE")


def build_config(
    args: argparse.Namespace,
    *,
    model: str | None = None,
    seed: int | None = None,
    extra: dict[str, object] | None = None,
) -> object:
    """Resolve the TrainConfig: preset <- ``--config`` YAML <- CLI flags (and ``extra``) <- ``--set`` overrides.

    Flag values are set directly (not parsed as YAML), so paths with any characters are safe.
    """
    from spermseg.config import config_from_dict, resolve_config
    from spermseg.training.config import TrainConfig, preset, validate

    ensemble = getattr(args, "ensemble", None)
    flags: dict[str, dict[str, object]] = {"data": {"root": str(args.data)}}
    top: dict[str, object] = {}
    if model:
        flags.setdefault("model", {})["name"] = model
    if seed is not None:
        top["seed"] = seed
    if args.device:
        flags["runtime"] = {"device": args.device}
    if getattr(args, "target", None):
        flags["data"]["target"] = args.target
    if getattr(args, "init", None):
        flags.setdefault("model", {})["init"] = str(args.init)
    if ensemble:
        flags.setdefault("model", {}).update({"ensemble": ensemble, "masks": str(getattr(args, "masks", "") or "")})
        mask_models = getattr(args, "mask_models", None)
        if mask_models:
            flags["model"]["mask_models"] = [m for m in mask_models.split(",") if m]
    for key, value in (extra or {}).items():
        section, _, name = key.rpartition(".")
        (flags.setdefault(section, {}) if section else top)[name] = value
    cfg = resolve_config(TrainConfig, base=preset(args.preset, ensemble=bool(ensemble)), yaml_path=args.config)
    cfg = config_from_dict(TrainConfig, {**top, **flags}, base=cfg)
    cfg = resolve_config(TrainConfig, base=cfg, overrides=args.overrides)
    validate(cfg)
    return cfg


def run(args: argparse.Namespace) -> int:
    from spermseg.cli._common import emit_json
    from spermseg.errors import ConfigError
    from spermseg.training.trainer import train

    if args.ensemble and not args.masks:
        raise ConfigError("--kind needs --cache CACHE (formerly --masks; build it with 'spermseg masks')")
    cfg = build_config(args, model=args.model, seed=args.seed)
    out = train(cfg, args.out, resume=args.resume, force=args.force, preset_name=args.preset)  # type: ignore[arg-type]
    emit_json(args, out.result)
    return 0
