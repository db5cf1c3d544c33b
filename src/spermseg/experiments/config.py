"""The configuration of ``spermseg reproduce``: :class:`ReproduceConfig`, its presets (``paper``, ``cpu``, ``demo``)
and its check. Base-model trainings take their own config from a training preset (``train_preset``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spermseg.errors import ConfigError
from spermseg.models.registry import BASE_MODEL_MODULES

STEP_NAMES = ("agreement", "normalization", "base", "ensembles", "raters", "blur", "qualitative", "temporal")
ALL_MODELS = tuple(BASE_MODEL_MODULES)  # the paper's ten base models, in the order of its Table 3
# Config keys that do not change results (a resumed reproduction may change them).
EXECUTION_KEYS = frozenset({"jobs", "threads", "batch_size", "compare_paper"})
TRAINED_KINDS = ("ens_s", "ens_is", "ens_concat", "ens_att_v1", "ens_att_v2")


@dataclass
class ReproduceConfig:
    """Everything that defines a reproduction (written to ``DIR/config.yaml``).

    Attributes:
        preset: the preset this config started from (``paper``, ``cpu`` (alias ``cpu-small``), ``demo``).
        data: dataset root (SegSperm layout with train / test / test_small).
        models: base models (registry names).
        seeds: training seeds of the base models (paper: 5 runs).
        train_preset: training preset of :mod:`spermseg.training.config` for base models and ensembles.
        train_overrides: extra ``key=value`` overrides for every base-model training run.
        ensemble_overrides: extra ``key=value`` overrides for every ensembling-network training run.
        normalizations: normalizations compared in step 2 (Fig. 9).
        normalization_models: models of step 2 (empty = ``models``).
        normalization_seeds: seeds of step 2 (``minmax`` runs with a seed in ``seeds`` are shared with step 3).
        ensemble_kinds: trained ensembling networks (``avg`` is always evaluated; it has nothing to train).
        selections: input selections the trained kinds use (``avg`` is scored on all of E1-E4).
        ensemble_seeds: training seeds of each ensembling network.
        featured_ensemble: the ensemble of Table 4, Fig. 11 and Fig. 12 (paper: ``ens_att_v2|E3``).
        rank_on: ranking split for E2-E4 (``val``, as the paper's ``test`` leaks test labels).
        train_split / test_split / multi_rater_split: split names.
        rater: reference rater of Table 3 and Figs. 7, 10-12 (paper: GT1).
        kernels: IoU' kernel sizes of Table 2.
        metric_mode: ``fast`` (histogram) or ``exact`` AP / IoU computation.
        blur_kernels: Gaussian kernel sizes of Fig. 12.
        qualitative_images: how many test images the difference maps show.
        temporal_frames: at most this many frames of the sequence in Fig. 14.
        device: ``auto``, ``cpu`` or ``cuda[:N]`` (training and inference).
        threads: torch CPU threads for the whole pipeline (0 = torch's default). On a small, shared CPU one
            thread is often faster: OpenMP threads spin-wait when cores are contended.
        jobs: base-model training runs trained at once in worker processes (steps 2-3). Use it on a multi-core
            CPU with ``threads=1``; on GPUs prefer ``--plan`` (one run per GPU).
        batch_size: images per inference forward pass.
        precision: inference precision of every scored prediction: ``fp32`` (the paper's; default) or ``bf16``
            (faster on GPUs; docs/evaluation.md gives the AP difference).
        compare_paper: show the paper's Tables 2-4 beside ours: ``auto`` (when the data is SegSperm), ``on``,
            ``off``.
    """

    preset: str = "paper"
    data: str = ""
    models: list[str] = field(default_factory=lambda: list(ALL_MODELS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    train_preset: str = "paper"
    train_overrides: list[str] = field(default_factory=list)
    ensemble_overrides: list[str] = field(default_factory=list)
    normalizations: list[str] = field(default_factory=lambda: ["none", "mean", "minmax"])
    normalization_models: list[str] = field(default_factory=list)
    normalization_seeds: list[int] = field(default_factory=lambda: [0])
    ensemble_kinds: list[str] = field(default_factory=lambda: list(TRAINED_KINDS))
    selections: list[str] = field(default_factory=lambda: ["E1", "E2", "E3", "E4"])
    ensemble_seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    featured_ensemble: str = "ens_att_v2|E3"
    rank_on: str = "val"
    train_split: str = "train"
    test_split: str = "test"
    multi_rater_split: str = "test_small"
    rater: str = "GT1"
    kernels: list[int] = field(default_factory=lambda: [3, 5])
    metric_mode: str = "fast"
    blur_kernels: list[int] = field(default_factory=lambda: list(range(1, 16)))
    qualitative_images: int = 4
    temporal_frames: int = 40
    device: str = "auto"
    threads: int = 0
    jobs: int = 1
    batch_size: int = 4
    precision: str = "fp32"
    compare_paper: str = "auto"


def _cpu() -> ReproduceConfig:
    # Sized for one 2-core CPU on spermparsing in under 2 hours (docs/reproduce.md, "Presets";
    # docs/results-spermparsing.md, "What it cost"): four families, three U-shaped with full-resolution decoders and
    # FPN, whose stride-4 output is weaker on thin tails but whose training step is 4x cheaper than unet's (unet_pp
    # cost a third of the whole run: 21 min a run; unet3p would cost 4 unets; sa_unet's training step is 5x slower
    # than unet's on this CPU though it has fewer FLOPs), 3 seeds, the `cpu` training preset's levers at 16 epochs
    # instead of 85, both trained kinds on E1 and E3 with 3 seeds each (width 8, 192 crops, 6 epochs: in the
    # 12-epoch run all 12 networks' validation AP moved by at most 0.001 after epoch 4), starting as
    # avg (mask_skip: at this budget the paper's network is still below its own inputs, docs/ensembling.md), Fig. 9
    # on unet only, 4 blur levels. Two runs (base or ensemble) at a time with one thread each: OpenMP threads
    # spin-wait on shared cores; the one-process steps (cache, scoring, figures) use threads x jobs.
    base = ["schedule.epochs=16", "validation.every=4"]
    return ReproduceConfig(
        preset="cpu",
        models=["unet", "att_unet", "manet", "fpn"],
        seeds=[0, 1, 2],
        train_preset="cpu",
        train_overrides=base,
        ensemble_overrides=[
            "model.width=8",
            "data.crop=192",
            "schedule.epochs=6",
            "validation.every=3",
            "model.kwargs={mask_skip: true}",
        ],
        normalization_models=["unet"],
        normalization_seeds=[0],
        ensemble_kinds=["ens_s", "ens_att_v2"],
        selections=["E1", "E3"],
        ensemble_seeds=[0, 1, 2],
        blur_kernels=[1, 5, 9, 15],
        threads=1,
        jobs=2,
    )


def _demo() -> ReproduceConfig:
    # Sized for `spermseg demo` on a 2-core CPU (< 10 min in all, install included): three U-shaped families (FPN's
    # stride-4 output loses 2-3 px tails at this budget; sa_unet's step is 5x slower than unet's on a CPU), two
    # seeds, width 8, one trained ensemble kind on E3, a few blur levels. Training uses the cpu preset's levers at a
    # small budget: 720 steps of 96x96 crops (half centred on sperm), logit bias at the foreground prior, BCE
    # (graded soft masks: what averaging and the ensemble need), cosine decay; the ensembling network starts as
    # avg|E3 (mask_skip), since at this budget the paper's network is still below its own inputs
    # (docs/ensembling.md). Measured: docs/reproduce.md, "spermseg demo".
    schedule = [
        "schedule.epochs=60",
        "schedule.steps_per_epoch=12",
        "schedule.name=cosine",
        "schedule.warmup_epochs=2",
        "data.crop=96",
        "optim.lr=0.003",
        "loss.name=bce",
        "validation.every=5",
    ]
    return ReproduceConfig(
        preset="demo",
        models=["unet", "att_unet", "unet_pp"],
        seeds=[0, 1],
        train_preset="demo",
        train_overrides=["model.width=8", *schedule, "data.crop_foreground=0.5", "model.bias_prior=true"],
        ensemble_overrides=[*schedule, "model.kwargs={mask_skip: true}"],
        normalization_models=["unet"],
        normalization_seeds=[0],
        ensemble_kinds=["ens_att_v2"],
        selections=["E3"],
        ensemble_seeds=[0],
        blur_kernels=[1, 5, 9, 15],
        qualitative_images=3,
        temporal_frames=12,
        device="cpu",
        threads=1,
        jobs=2,
    )


PRESETS: dict[str, Callable[[], ReproduceConfig]] = {"paper": ReproduceConfig, "cpu": _cpu, "demo": _demo}
#: Old preset names that still work (for one release).
PRESET_ALIASES = {"cpu-small": "cpu"}


def reproduce_config(
    preset: str = "paper", *, yaml_path: str | Path | None = None, overrides: Sequence[str] = ()
) -> ReproduceConfig:
    """Resolve a :class:`ReproduceConfig`: preset <- YAML <- ``key=value`` overrides, then validate.

    Raises:
        ConfigError: unknown preset, key or value.
    """
    from spermseg.config import resolve_config

    preset = PRESET_ALIASES.get(preset, preset)
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; valid presets: {', '.join(PRESETS)}")
    cfg = resolve_config(ReproduceConfig, base=PRESETS[preset](), yaml_path=yaml_path, overrides=list(overrides))
    validate(cfg)
    return cfg


def validate(cfg: ReproduceConfig) -> None:
    """Check names and ranges (models, kinds, selections, kernels).

    Raises:
        ConfigError: naming the key and the valid values.
    """
    from spermseg.models import list_models

    valid = list_models()
    for key, names in (("models", cfg.models), ("normalization_models", cfg.normalization_models)):
        bad = [m for m in names if m not in valid]
        if bad:
            raise ConfigError(f"unknown model(s) {', '.join(bad)} in '{key}'; valid models: {', '.join(valid)}")
    if not cfg.models:
        raise ConfigError("'models' is empty; name at least one base model")
    if not cfg.seeds:
        raise ConfigError("'seeds' is empty; give at least one seed")
    if cfg.precision not in ("fp32", "bf16"):
        raise ConfigError(f"bad 'precision' {cfg.precision!r}; valid: fp32, bf16")
    if cfg.jobs < 1 or cfg.threads < 0:
        raise ConfigError(f"bad 'jobs' {cfg.jobs} or 'threads' {cfg.threads}: jobs >= 1, threads >= 0 (0 = default)")
    bad = [k for k in cfg.ensemble_kinds if k not in TRAINED_KINDS]
    if bad:
        raise ConfigError(
            f"unknown ensemble kind(s) {', '.join(bad)}; trainable kinds: {', '.join(TRAINED_KINDS)} "
            "(avg is always evaluated)"
        )
    bad = [s for s in cfg.selections if s not in ("E1", "E2", "E3", "E4")]
    if bad:
        raise ConfigError(f"unknown selection(s) {', '.join(bad)}; valid: E1, E2, E3, E4")
    bad_n = [n for n in cfg.normalizations if n not in ("none", "mean", "minmax")]
    if bad_n:
        raise ConfigError(f"unknown normalization(s) {', '.join(bad_n)}; valid: none, mean, minmax")
    if any(k < 1 or k % 2 == 0 for k in cfg.kernels):
        raise ConfigError(f"bad 'kernels' {cfg.kernels}: IoU' kernels must be odd and >= 1")
    if any(k < 1 for k in cfg.blur_kernels):
        raise ConfigError(f"bad 'blur_kernels' {cfg.blur_kernels}: sizes must be >= 1")
    if cfg.metric_mode not in ("fast", "exact"):
        raise ConfigError(f"bad 'metric_mode' {cfg.metric_mode!r}; valid: fast, exact")
    if cfg.compare_paper not in ("auto", "on", "off"):
        raise ConfigError(f"bad 'compare_paper' {cfg.compare_paper!r}; valid: auto, on, off")
    if cfg.rank_on not in ("val", "train", "test"):
        raise ConfigError(f"bad 'rank_on' {cfg.rank_on!r}; valid: val, train, test (test leaks)")
    if "|" not in cfg.featured_ensemble:
        raise ConfigError(f"bad 'featured_ensemble' {cfg.featured_ensemble!r}; use KIND|SELECTION, e.g. ens_att_v2|E3")
