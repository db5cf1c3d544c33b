"""Training configuration: one dataclass tree, presets selectable by name, YAML and ``--set`` overrides.

Sections: ``data``, ``model``, ``optim``, ``schedule``, ``loss``, ``augment`` (the data layer's
:class:`~spermseg.data.transforms.AugmentConfig`), ``validation``, ``runtime`` and ``distill`` (off unless a teacher
is named), plus the top-level ``seed``.
The defaults are the paper's protocol (Section 6); presets:

* ``paper``: the paper exactly: Adam, lr 1e-3, MultiStepLR milestones (30, 80) gamma 0.3, batch 5, 300 epochs, BCE,
  minmax normalization, the paper's augmentation, full 512x512 images, the model family's original width. With
  ``--ensemble`` the schedule becomes milestones (5, 15), batch 6 (the paper's ensembling settings).
* ``cpu`` (``cpu-small`` is an alias): a 2-core CPU with bf16 in under 30 minutes for ``unet`` on 192 images
  (about 1 h 45 min on an AVX2-only CPU, which trains in fp32; README): width 16,
  random 256x256 crops (half of them centred on a sperm pixel), batch 8, logit bias at the foreground prior,
  BCE, Adam lr 2e-3 with 2 warm-up epochs and cosine decay over 85 epochs, validation every 10 epochs;
  bf16 on CPUs with native bf16, AMX or AVX-512 BF16 (``runtime.amp=auto``).
* ``demo``: tiny, for a demonstration of the whole pipeline in a few minutes on 2 cores: width 4, 64x64 crops,
  4 epochs of at most 8 steps.

Example:
    >>> cfg = train_config("cpu", overrides=["optim.lr=3e-4", "schedule.epochs=20"])
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from spermseg.data.transforms import AugmentConfig
from spermseg.errors import ConfigError


@dataclass
class DataConfig:
    """Which images and masks to train on.

    Attributes:
        root: dataset root (SegSperm or folder layout); set by ``--data``.
        train_split: split to train on (its validation part is held out, see ``validation.fraction``).
        test_split: optional split evaluated once with the best checkpoint at the end ("" = none); its metrics go
            to ``result.json["test"]`` (the paper's Table 3 is on the test split).
        rater: rater whose masks are the target (``GT1`` in the paper; "" = the split's first rater).
        part: ``full``, ``head`` or ``tail`` (binary target).
        target: ``binary`` (one sigmoid output for ``part``) or ``parts`` (six-class softmax over the rater's
            ``GT{r}_parts`` codes; validation and best epoch by part mIoU; see spermseg.training.parts).
        normalization: per-image normalization ``none``/``mean``/``minmax`` (paper: minmax), stored in the checkpoint.
        crop: random square crop size for training (0 = whole images); validation always uses whole images.
        crop_foreground: probability that a training crop is centred on a random foreground pixel of its target
            instead of a uniformly random position (0 = uniform, the paper's whole images have no crops).
        max_images: use only the first N training images (0 = all), for quick experiments.
        train_images: train on N images of the training part, drawn after the validation split (0 = all): the
            validation images stay the same for every N, and the subsets are nested (the first N of one
            permutation seeded by ``validation.split_seed``, so 12 images are among the 24), for data-efficiency
            curves (scripts/data_efficiency.py).
        binarize_threshold: threshold for non-binary mask files (None = masks must be binary).
    """

    root: str = ""
    train_split: str = "train"
    test_split: str = ""
    rater: str = "GT1"
    part: Literal["full", "head", "tail"] = "full"
    target: Literal["binary", "parts"] = "binary"
    normalization: Literal["none", "mean", "minmax"] = "minmax"
    crop: int = 0
    crop_foreground: float = 0.0
    max_images: int = 0
    train_images: int = 0
    binarize_threshold: float | None = None


@dataclass
class ModelConfig:
    """The network.

    Attributes:
        name: base model name (``spermseg models``), e.g. ``unet``.
        width: base width of the family (None = the family's default, the original paper's width).
        kwargs: further family-specific keyword arguments.
        ensemble: ensembling kind (``ens_s``, ``ens_is``, ``ens_concat``, ``ens_att_v1``, ``ens_att_v2``); "" = train
            the base model ``name``. Set by ``--ensemble``.
        masks: soft-mask cache directory (``spermseg masks``) with the ensemble's inputs; set by ``--masks``.
        mask_models: model ids in the cache to use, in channel order (empty = all models cached for the split).
        mask_test_split: cache split holding the test-time soft masks for ``data.test_split`` ("" = same name).
        bias_prior: start the logit layers' bias at the training set's foreground prior, ``log(p / (1 - p))``,
            instead of 0 (p = 0.5); a part network (``data.target: parts``) at its code frequencies,
            ``log(p_c)`` (softmax); see :func:`spermseg.models.blocks.set_output_bias`.
        init: start from these weights (a run directory, a checkpoint, a single-model bundle or ``builtin``, of the
            same architecture) instead of a random initialisation (fine-tuning); set by ``--init``. "" = random.
    """

    name: str = "unet"
    width: int | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    ensemble: str = ""
    masks: str = ""
    mask_models: list[str] = field(default_factory=list)
    mask_test_split: str = ""
    bias_prior: bool = False
    init: str = ""


@dataclass
class OptimConfig:
    """Optimizer (paper: Adam, lr 1e-3, no weight decay)."""

    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    grad_clip: float = 0.0


@dataclass
class ScheduleConfig:
    """Epochs, batch size and the MultiStepLR schedule (paper: 300 epochs, batch 5, milestones 30/80, gamma 0.3).

    Attributes:
        epochs: training epochs.
        batch_size: images per optimizer step (per process under DDP).
        milestones: epochs after which the learning rate is multiplied by ``gamma``.
        gamma: learning-rate decay factor.
        steps_per_epoch: cap on optimizer steps per epoch (0 = one pass over the training images).
        exact_steps: make ``steps_per_epoch`` exact instead of a cap: an epoch whose one pass over the training
            images has fewer steps draws further permutations of them, so a fixed step budget holds for any number
            of training images (``scripts/data_efficiency.py``).
        name: ``multistep`` (the paper's), ``cosine`` (warm-up + cosine decay) or ``plateau`` (decay by ``gamma``
            when the training loss stops falling); see :mod:`spermseg.training.schedules`.
        warmup_epochs: linear warm-up epochs of ``cosine``.
        min_lr_ratio: final learning rate of ``cosine`` relative to ``optim.lr``.
        patience: epochs without a 1 % better training loss before ``plateau`` decays.
    """

    epochs: int = 300
    batch_size: int = 5
    milestones: tuple[int, ...] = (30, 80)
    gamma: float = 0.3
    steps_per_epoch: int = 0
    exact_steps: bool = False
    name: Literal["multistep", "cosine", "plateau"] = "multistep"
    warmup_epochs: int = 0
    min_lr_ratio: float = 0.01
    patience: int = 3


@dataclass
class LossConfig:
    """Loss (paper: BCE). The paper also tried Dice + BCE, focal loss and positive weights 2, 3, 5.

    Attributes:
        name: ``bce``, ``dice_bce``, ``focal``, ``cldice`` (Dice + BCE + ``thin_weight`` x clDice, Shit et al.
            2021) or ``skeleton_recall`` (Dice + BCE + ``thin_weight`` x Skeleton Recall, Kirchhoff et al. 2024).
        pos_weight: weight of positive pixels (1 = none).
        dice_weight: weight of the Dice term in ``dice_bce``, ``cldice`` and ``skeleton_recall``.
        thin_weight: weight of the thin-structure term of ``cldice`` / ``skeleton_recall``.
        cldice_iterations: soft-skeleton erosion steps of clDice (about the largest half-width, in pixels).
        focal_gamma: focusing parameter of the focal loss.
        focal_alpha: class balance of the focal loss in (0, 1); null = off.
        alphas: deep-supervision weights, main output first (empty = 1 for every output; paper Eq. 3).
        foreground_weight: part networks only: weight of a binary cross-entropy of the whole sperm
            (``1 - softmax[background]``) added to their loss (:func:`spermseg.training.losses.parts_loss`; 0 = off).
    """

    name: Literal["bce", "dice_bce", "focal", "cldice", "skeleton_recall"] = "bce"
    pos_weight: float = 1.0
    dice_weight: float = 1.0
    thin_weight: float = 1.0
    cldice_iterations: int = 5
    focal_gamma: float = 2.0
    focal_alpha: float | None = None
    alphas: tuple[float, ...] = ()
    foreground_weight: float = 0.0


@dataclass
class ValidationConfig:
    """Validation split and model selection.

    Attributes:
        fraction: fraction of the training images held out, whole groups (videos) at a time.
        split_seed: seed of the group split, the same for every run seed by default (so that the seeds of a grid
            differ only in initialisation and batches, and are compared on the same images); None = the run's seed.
        every: validate every N epochs (and always after the last one).
        tta: flip test-time augmentation during validation.
        batch_size: images per inference batch.
        metric_mode: ``fast`` (histogram) or ``exact`` AP/IoU computation.
    """

    fraction: float = 0.1
    split_seed: int | None = 0
    every: int = 1
    tta: bool = False
    batch_size: int = 4
    metric_mode: Literal["fast", "exact"] = "fast"


@dataclass
class RuntimeConfig:
    """Where and how to run.

    Attributes:
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        amp: ``auto`` (bf16 autocast on CUDA and on CPUs with native bf16 (AMX, AVX-512 BF16), where it is 2-4x
            faster), ``bf16`` (on CUDA or any CPU) or ``off``. The loss, validation and test scores are always float32.
        channels_last: ``auto`` (on CUDA, and on the CPU when bf16 runs there), ``on`` or ``off``.
        deterministic: deterministic algorithms (same seed and device give the same weights).
        threads: torch CPU threads (0 = leave the default).
        progress: show a progress bar (only on a terminal).
        tensorboard: also log to TensorBoard when it is installed.
        keep_states: how many per-epoch resume states to keep in ``state/``.
    """

    device: str = "auto"
    amp: Literal["auto", "bf16", "off"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    deterministic: bool = True
    threads: int = 0
    progress: bool = True
    tensorboard: bool = True
    keep_states: int = 1


@dataclass
class DistillConfig:
    """Distillation (``spermseg distill``, :mod:`spermseg.training.distill`): the model learns a teacher's soft masks.

    Attributes:
        teacher: the teacher (a bundle, run directory, checkpoint or ``builtin``); "" = no distillation.
        source: ``cache``: the teacher runs once over the training images and its soft masks (a mask cache) follow
            each crop through the geometric augmentation; ``online``: the teacher runs on every augmented batch.
        label_weight: share of the labels in the target, in [0, 1]: ``(1 - w) teacher + w label`` (0 = the teacher
            alone; data without labels need 0).
        cache: the teacher's mask cache for ``source=cache`` ("" = ``RUN_DIR/teacher_cache``); reused while the
            teacher and the data are unchanged, so several students can share one.
        tta: flip test-time augmentation of the teacher's cached masks (``source=cache``).
    """

    teacher: str = ""
    source: Literal["cache", "online"] = "cache"
    label_weight: float = 0.0
    cache: str = ""
    tta: bool = False


@dataclass
class TrainConfig:
    """Everything that defines a training run (written as ``RUN_DIR/config.yaml``)."""

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


# --------------------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------------------

# The paper's ensembling schedule (Section 6): milestones 5 and 15, batch 6. The paper does not state the number
# of ensemble epochs; 40 leaves 25 epochs at the final learning rate, like the base models' schedule relative to
# its milestones.
ENSEMBLE_SCHEDULE = {"milestones": (5, 15), "batch_size": 6, "epochs": 40}


def _paper() -> TrainConfig:
    return TrainConfig(data=DataConfig(test_split="test"))


def _cpu() -> TrainConfig:
    # Measured on spermparsing (docs/training.md, "The cpu preset"): every value here is a lever of the ablation.
    return TrainConfig(
        data=DataConfig(crop=256, crop_foreground=0.5),
        model=ModelConfig(width=16, bias_prior=True),
        optim=OptimConfig(lr=2e-3),
        schedule=ScheduleConfig(epochs=85, batch_size=8, name="cosine", warmup_epochs=2, milestones=()),
        loss=LossConfig(name="bce"),
        validation=ValidationConfig(fraction=0.1, every=10),
    )


def _demo() -> TrainConfig:
    return TrainConfig(
        data=DataConfig(crop=64),
        model=ModelConfig(width=4),
        schedule=ScheduleConfig(epochs=4, batch_size=4, milestones=(3,), gamma=0.3, steps_per_epoch=8),
        validation=ValidationConfig(fraction=0.2, every=2),
    )


PRESETS = {"paper": _paper, "cpu": _cpu, "demo": _demo}
#: Old preset names that still work (for one release): ``cpu-small`` is ``cpu``.
PRESET_ALIASES = {"cpu-small": "cpu"}
#: Every name ``--preset`` accepts.
PRESET_NAMES = (*PRESETS, *PRESET_ALIASES)


def preset(name: str, *, ensemble: bool = False) -> TrainConfig:
    """The named preset; with ``ensemble=True`` the paper's ensembling schedule (milestones 5/15, batch 6).

    For ``cpu`` and ``demo`` the ensemble variant keeps their epochs and batch size and scales the 5/15
    milestones to the epoch count (a cosine schedule needs no milestones).

    Raises:
        ConfigError: unknown preset (the message lists the valid ones).
    """
    name = PRESET_ALIASES.get(name, name)
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'; valid presets: {', '.join(PRESETS)}")
    cfg = PRESETS[name]()
    if ensemble:
        if name == "paper":
            sched = dataclasses.replace(cfg.schedule, **ENSEMBLE_SCHEDULE)
        else:
            epochs = cfg.schedule.epochs
            total = ENSEMBLE_SCHEDULE["epochs"]
            ms = tuple(sorted({max(1, round(m * epochs / total)) for m in ENSEMBLE_SCHEDULE["milestones"]}))
            sched = dataclasses.replace(cfg.schedule, milestones=ms)
        cfg = dataclasses.replace(cfg, schedule=sched)
    return cfg


def train_config(
    preset_name: str = "paper",
    *,
    yaml_path: str | Path | None = None,
    overrides: list[str] | None = None,
    ensemble: bool = False,
) -> TrainConfig:
    """Resolve a training config: preset <- YAML file <- ``key=value`` overrides, then validate it.

    Args:
        preset_name: ``paper``, ``cpu`` (alias ``cpu-small``) or ``demo``.
        yaml_path: optional YAML file with a partial config.
        overrides: ``key=value`` strings (``--set``).
        ensemble: start from the ensembling variant of the preset.

    Returns:
        The validated :class:`TrainConfig`.
    """
    from spermseg.config import resolve_config

    cfg = resolve_config(
        TrainConfig, base=preset(preset_name, ensemble=ensemble), yaml_path=yaml_path, overrides=overrides or []
    )
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    """Check value ranges that the type system cannot express.

    Raises:
        ConfigError: naming the key, the bad value and what is allowed.
    """
    checks = [
        (cfg.schedule.epochs >= 1, "schedule.epochs", cfg.schedule.epochs, "an integer >= 1"),
        (cfg.schedule.batch_size >= 1, "schedule.batch_size", cfg.schedule.batch_size, "an integer >= 1"),
        (cfg.schedule.gamma > 0, "schedule.gamma", cfg.schedule.gamma, "> 0"),
        (cfg.schedule.steps_per_epoch >= 0, "schedule.steps_per_epoch", cfg.schedule.steps_per_epoch, ">= 0"),
        (
            not cfg.schedule.exact_steps or cfg.schedule.steps_per_epoch > 0,
            "schedule.exact_steps",
            cfg.schedule.exact_steps,
            "false unless schedule.steps_per_epoch > 0 (the exact number of steps)",
        ),
        (
            all(m >= 1 for m in cfg.schedule.milestones),
            "schedule.milestones",
            cfg.schedule.milestones,
            "positive epoch numbers",
        ),
        (cfg.optim.lr > 0, "optim.lr", cfg.optim.lr, "> 0"),
        (
            0 <= cfg.schedule.warmup_epochs < cfg.schedule.epochs,
            "schedule.warmup_epochs",
            cfg.schedule.warmup_epochs,
            "in [0, schedule.epochs)",
        ),
        (0 <= cfg.schedule.min_lr_ratio <= 1, "schedule.min_lr_ratio", cfg.schedule.min_lr_ratio, "in [0, 1]"),
        (cfg.schedule.patience >= 0, "schedule.patience", cfg.schedule.patience, ">= 0"),
        (0.0 <= cfg.validation.fraction < 1.0, "validation.fraction", cfg.validation.fraction, "in [0, 1)"),
        (cfg.validation.every >= 1, "validation.every", cfg.validation.every, "an integer >= 1"),
        (cfg.data.crop >= 0, "data.crop", cfg.data.crop, ">= 0 (0 = whole images)"),
        (0 <= cfg.data.crop_foreground <= 1, "data.crop_foreground", cfg.data.crop_foreground, "in [0, 1]"),
        (cfg.data.max_images >= 0, "data.max_images", cfg.data.max_images, ">= 0 (0 = all)"),
        (cfg.data.train_images >= 0, "data.train_images", cfg.data.train_images, ">= 0 (0 = all)"),
        (cfg.model.width is None or cfg.model.width >= 1, "model.width", cfg.model.width, "null or >= 1"),
        (cfg.runtime.keep_states >= 1, "runtime.keep_states", cfg.runtime.keep_states, ">= 1"),
        (cfg.loss.foreground_weight >= 0, "loss.foreground_weight", cfg.loss.foreground_weight, ">= 0"),
        (
            cfg.loss.foreground_weight == 0 or cfg.data.target == "parts",
            "loss.foreground_weight",
            cfg.loss.foreground_weight,
            "0 unless data.target is parts (a binary network's loss is already a foreground loss)",
        ),
    ]
    for ok, key, value, allowed in checks:
        if not ok:
            raise ConfigError(f"bad value for '{key}': {value!r}; must be {allowed}")
    if cfg.data.target == "parts" and cfg.model.ensemble:
        raise ConfigError("data.target=parts trains base models only; the ensembling networks take binary soft masks")
    if bool(cfg.model.ensemble) != bool(cfg.model.masks):
        raise ConfigError("model.ensemble and model.masks go together: pass both --ensemble KIND and --masks CACHE")
    if cfg.distill.teacher:
        _validate_distill(cfg)
    from spermseg.inference.bundle import builtin_dir, is_builtin

    if is_builtin(cfg.model.init) or is_builtin(cfg.distill.teacher):
        builtin_dir(verify=False)  # no built-in weights: one line now, not after minutes of data loading
    if not cfg.model.ensemble:
        from spermseg.models import model_kwargs

        model_kwargs(cfg.model.name)  # an unknown name fails here, before minutes of data loading


def _validate_distill(cfg: TrainConfig) -> None:
    """What distillation needs: a binary base model, a loss that takes soft targets, a weight in [0, 1]."""
    d = cfg.distill
    if not 0.0 <= d.label_weight <= 1.0:
        raise ConfigError(f"bad value for 'distill.label_weight': {d.label_weight!r}; must be in [0, 1]")
    if cfg.model.ensemble or cfg.data.target == "parts":
        raise ConfigError("distillation trains a binary base model: leave model.ensemble empty and data.target=binary")
    if cfg.loss.name not in ("bce", "dice_bce"):
        raise ConfigError(
            f"loss '{cfg.loss.name}' needs binary targets; distillation's targets are soft: set loss.name=bce or "
            "dice_bce"
        )
    if d.tta and d.source != "cache":
        raise ConfigError("distill.tta averages the teacher's cached masks over flips: it needs distill.source=cache")
