"""The paper's experimental protocol end to end, as eight resumable steps, and the report.

``spermseg reproduce --data ROOT --out DIR [--preset paper|cpu|demo]`` runs, in order (each step writes
``DIR/steps/NAME/`` and a ``DONE.json`` with its result; see :mod:`spermseg.experiments.steps`):

1. ``agreement``: Table 2 on ``test_small`` (strict IoU and IoU' at k = 3, 5; full/head/tail) and a Fig. 6
   example of the aggregated ground truths.
2. ``normalization``: Fig. 9, validation AP of each model trained with ``none``, ``mean`` and ``minmax``.
3. ``base``: every base model x seed (minmax) -> Table 3 top block (test vs. GT1, mean ± std over seeds) and Fig. 7.
   Runs live in ``DIR/runs/base/MODEL/NORM/sSEED``; a finished run is never retrained (the trainer skips it and
   resumes an interrupted one), so killing the pipeline during this step and re-running it loses at most the
   current epoch. The normalization step's ``minmax`` runs are the same directories, so they are trained once.
4. ``ensembles``: the soft-mask cache (``DIR/cache``), selections E1-E4 (ranked on validation AP by default),
   ``avg`` and the trained kinds x selections x seeds -> Table 3 lower blocks.
5. ``raters``: Table 4 on ``test_small``: the best base model, ``avg|E3`` and the featured ensemble
   (``ens_att_v2|E3``) against GT1-GT3 and the union / majority / intersection / STAPLE aggregates.
6. ``blur``: Fig. 12, each base model (best seed) and the featured ensemble on blurred test images.
7. ``qualitative``: Figs. 10/11 difference maps on chosen test images.
8. ``temporal``: Fig. 14 on a frame sequence when the dataset has one.

Result schemas (what :mod:`spermseg.experiments.report` reads) are given in each step's docstring. Paths inside
results are relative to ``DIR``.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spermseg.errors import ConfigError, DataError
from spermseg.experiments.steps import Step, StepContext, StepRecord, StepRunner, StepUnavailable
from spermseg.metrics.score import mean_std
from spermseg.models.registry import BASE_MODEL_MODULES
from spermseg.utils.atomic import atomic_write_json

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
    return ReproduceConfig(
        preset="cpu",
        models=["unet", "att_unet", "unet3p", "fpn", "sa_unet"],
        seeds=[0, 1, 2],
        train_preset="cpu",
        ensemble_kinds=["ens_s", "ens_att_v2"],
        selections=["E1", "E3"],
        ensemble_seeds=[0, 1, 2],
        blur_kernels=[1, 3, 5, 7, 9, 11, 13, 15],
    )


def _demo() -> ReproduceConfig:
    # Sized for `spermseg demo` on a 2-core CPU (< 10 min in all, install included): three U-shaped families (FPN's
    # stride-4 output loses 1-3 px tails at this budget), two seeds, width 8, one trained ensemble kind on E3, a few
    # blur levels. Training uses the cpu preset's levers at a small budget: 480 steps of 96x96 crops (half centred
    # on sperm), logit bias at the foreground prior, BCE (graded soft masks: what averaging and the ensemble need),
    # cosine decay; the ensembling network starts as avg|E3 (mask_skip), since at 480 steps the paper's network
    # is still below its own inputs (docs/ensembling.md). Measured: docs/reproduce.md, "spermseg demo".
    schedule = [
        "schedule.epochs=40",
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
        models=["unet", "att_unet", "sa_unet"],
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


# ---------------------------------------------------------------------------------------------------------------
# Small helpers
def _full_metrics(res: dict[str, Any]) -> dict[str, float]:
    full = res.get("full") or {}
    return {k: full.get(k) for k in ("ap", "iou_0.5", "iou_opt", "t_opt")}


def score_with_curve(
    probs: Sequence[np.ndarray], refs: Sequence[Any], mode: str = "fast", n_points: int = 101
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Full-sperm AP / IoU_0.5 / IoU_opt / t_opt and the IoU-vs-threshold curve (Fig. 7).

    Args:
        probs: soft masks, each (H, W) float in [0, 1].
        refs: matching bool (H, W) references.
        mode: metric mode for the scalar scores (the curve always comes from the fast histogram).
        n_points: the curve is resampled at this many evenly spaced thresholds in [0, 1] (the histogram has
            65536 bins; a plot needs ~100 points).

    Returns:
        ``(metrics, curve)`` with ``curve = {"thresholds", "iou", "t_opt", "iou_opt"}``.
    """
    from spermseg.metrics import SegmentationAccumulator

    fast = SegmentationAccumulator(mode="fast", kernels=(), parts=False)
    exact = SegmentationAccumulator(mode="exact", kernels=(), parts=False) if mode == "exact" else None
    for p, r in zip(probs, refs, strict=True):
        p = np.asarray(p, dtype=np.float32)
        r = np.asarray(r, dtype=bool)
        fast.update(p, r)
        if exact is not None:
            exact.update(p, r)
    metrics = _full_metrics((exact or fast).result())
    c = fast.curves("full")
    t = np.asarray(c["thresholds"], dtype=float)[::-1]  # increasing for np.interp
    v = np.asarray(c["iou"], dtype=float)[::-1]
    grid = np.linspace(0.0, 1.0, n_points)
    curve = {
        "thresholds": grid.tolist(),
        "iou": np.interp(grid, t, v).tolist(),
        "t_opt": metrics["t_opt"],
        "iou_opt": metrics["iou_opt"],
    }
    return metrics, curve


def _require(module: str, what: str) -> Any:
    """Import ``module`` or raise :class:`StepUnavailable` naming what is missing."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise StepUnavailable(f"{what} is not available ({module}: {exc})") from None


# ---------------------------------------------------------------------------------------------------------------
class Reproduction:
    """The pipeline: config, paths and the eight step functions.

    Args:
        cfg: the resolved config (``cfg.data`` set).
        out_dir: output directory.
        log: progress printer.
    """

    def __init__(self, cfg: ReproduceConfig, out_dir: str | Path, log: Callable[[str], None] | None = None) -> None:
        if not cfg.data:
            raise ConfigError("no dataset: pass --data ROOT (or set data)")
        self.cfg = cfg
        self.out = Path(out_dir)
        self.root = Path(cfg.data)
        if not self.root.is_dir():
            raise DataError(f"dataset root {self.root} does not exist; pass --data with a SegSperm-layout folder")
        self.log = log or (lambda m: print(m, flush=True))
        self.cache_dir = self.out / "cache"
        self._arrays: dict[str, Any] = {}

    # -- shared pieces ----------------------------------------------------------------------------------------
    def steps(self) -> list[Step]:
        """The eight steps with their dependencies."""
        return [
            Step("agreement", self.step_agreement, "inter-rater agreement (Table 2, Fig. 6)"),
            Step("normalization", self.step_normalization, "normalization study (Fig. 9)"),
            Step("base", self.step_base, "base models x seeds (Table 3 top, Fig. 7)"),
            Step(
                "ensembles", self.step_ensembles, "mask cache, avg and trained ensembles (Table 3)", requires=("base",)
            ),
            Step(
                "raters",
                self.step_raters,
                "evaluation vs. raters and aggregates (Table 4)",
                requires=("base", "ensembles"),
            ),
            Step("blur", self.step_blur, "robustness to blur (Fig. 12)", requires=("base", "ensembles")),
            Step(
                "qualitative", self.step_qualitative, "difference maps (Figs. 10, 11)", requires=("base", "ensembles")
            ),
            Step("temporal", self.step_temporal, "temporal consistency (Fig. 14)", requires=("base", "ensembles")),
        ]

    def dataset(self) -> Any:
        from spermseg.data.layouts import open_dataset

        return open_dataset(self.root)

    def arrays(self, split: str) -> Any:
        """The split in memory (cached on the instance)."""
        if split not in self._arrays:
            from spermseg.data.arrays import load_split

            self._arrays[split] = load_split(self.root, split)
        return self._arrays[split]

    def full_refs(self, split: str, rater: str | None = None) -> list[np.ndarray]:
        arrays = self.arrays(split)
        rater = rater or self.cfg.rater
        masks = arrays.masks(rater, "full")
        if masks is None:
            raise DataError(f"split '{split}' of {self.root} has no full-sperm masks of rater {rater}")
        return [np.asarray(m, dtype=bool) for m in masks]

    def run_dir(self, model: str, norm: str, seed: int) -> Path:
        return self.out / "runs" / "base" / model / norm / f"s{seed}"

    def base_train_config(self, model: str, norm: str, seed: int) -> Any:
        """The engine's TrainConfig of one base run (identical for the normalization and base steps)."""
        from spermseg.training.config import train_config

        tc = train_config(self.cfg.train_preset, overrides=list(self.cfg.train_overrides))
        tc = dataclasses.replace(
            tc,
            seed=seed,
            # test_split "": this pipeline evaluates on test itself (with curves), so the run stays test-free.
            data=dataclasses.replace(
                tc.data,
                root=str(self.root.resolve()),
                train_split=self.cfg.train_split,
                test_split="",
                rater=self.cfg.rater,
                part="full",
                normalization=norm,
            ),
            model=dataclasses.replace(tc.model, name=model),
            runtime=dataclasses.replace(
                tc.runtime,
                device=self.cfg.device,
                progress=False,
                tensorboard=False,
                threads=self.cfg.threads or tc.runtime.threads,
            ),
        )
        return tc

    def train_base(self, model: str, norm: str, seed: int, say: Callable[[str], None]) -> dict[str, Any]:
        """Train (or skip / resume) one base run; returns its ``result.json``."""
        from spermseg.training.trainer import TrainHooks, is_finished, train

        rd = self.run_dir(model, norm, seed)
        if is_finished(rd):
            return json.loads((rd / "result.json").read_text())
        say(f"training {model} ({norm}, seed {seed}) -> {rd.relative_to(self.out)}")
        t0 = time.perf_counter()
        res = train(
            self.base_train_config(model, norm, seed),
            rd,
            resume=True,
            hooks=TrainHooks(log=lambda m: None),
            preset_name=self.cfg.train_preset,
        )
        say(
            f"  {model} ({norm}, seed {seed}): val AP {res.result.get('validation', {}).get('ap')} "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        return res.result

    def train_all(self, runs: Sequence[tuple[str, str, int]], say: Callable[[str], None]) -> dict[tuple, dict]:
        """Train (or skip) several base runs, ``cfg.jobs`` at a time; returns ``{(model, norm, seed): result}``."""
        from spermseg.training.trainer import is_finished

        todo = [r for r in dict.fromkeys(runs) if not is_finished(self.run_dir(*r))]
        if self.cfg.jobs > 1 and len(todo) > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            say(f"training {len(todo)} runs, {self.cfg.jobs} at a time")
            # spawn, not fork: forking a process that already initialized torch's thread pools can deadlock.
            with ProcessPoolExecutor(self.cfg.jobs, mp_context=mp.get_context("spawn")) as pool:
                futures = {r: pool.submit(_train_worker, self.cfg, str(self.out), *r) for r in todo}
                for r, fut in futures.items():
                    res = fut.result()
                    say(f"  {r[0]} ({r[1]}, seed {r[2]}): val AP {(res.get('validation') or {}).get('ap')}")
        return {r: self.train_base(*r, say) for r in runs}

    def featured(self) -> tuple[str, str]:
        kind, sel = self.cfg.featured_ensemble.split("|", 1)
        return kind, sel

    # -- step 1 -------------------------------------------------------------------------------------------------
    def step_agreement(self, ctx: StepContext) -> dict[str, Any]:
        """Table 2 and a Fig. 6 example.

        Result: ``{"split", "n_images", "raters", "kernels", "iou": {part: {a: {b: v}}},
        "iou_prime": {k: {part: {ref: {pred: v}}}}, "mean_iou_prime": {k: {part: v}},
        "aggregation_example": npz path}`` or ``{"status": "not_applicable", "reason"}``.
        """
        ds = self.dataset()
        split = self.cfg.multi_rater_split
        if split not in ds.splits or len(ds.splits[split].raters) < 2:
            return {
                "status": "not_applicable",
                "reason": f"the dataset has no split '{split}' labelled by two or more raters",
            }
        ev = _require("spermseg.evaluation.agreement", "inter-rater agreement (spermseg.evaluation.agreement)")
        res = ev.agreement(self.root, split=split, kernels=tuple(self.cfg.kernels))
        raters = list(ds.splits[split].raters)
        out: dict[str, Any] = {
            "split": split,
            "n_images": len(ds.splits[split].samples),
            "raters": raters,
            "kernels": list(self.cfg.kernels),
            "iou": res["iou"],
            "iou_prime": res["iou_prime"],
        }
        out["mean_iou_prime"] = {
            str(k): {
                part: statistics.fmean(m[a][b] for a in raters for b in raters if a != b)
                for part, m in by_part.items()
                if m
            }
            for k, by_part in res["iou_prime"].items()
        }
        out["aggregation_example"] = self._aggregation_example(ctx, split, raters)
        return out

    def _aggregation_example(self, ctx: StepContext, split: str, raters: list[str]) -> str | None:
        agg = _require("spermseg.evaluation.aggregation", "ground-truth aggregation (spermseg.evaluation.aggregation)")
        arrays = self.arrays(split)
        fulls = {r: arrays.masks(r, "full") for r in raters}
        # The image where the raters disagree most (largest union minus intersection) shows the aggregates best.
        best, best_i = -1, 0
        for i in range(len(arrays.names)):
            stack = np.stack([np.asarray(fulls[r][i], dtype=bool) for r in raters])
            d = int(stack.any(0).sum() - stack.all(0).sum())
            if d > best:
                best, best_i = d, i
        stack = np.stack([np.asarray(fulls[r][best_i], dtype=bool) for r in raters])
        masks = {r: stack[j] for j, r in enumerate(raters)}
        for method in ("union", "majority", "intersection", "staple"):
            try:
                masks[method] = np.asarray(agg.aggregate_masks(list(stack), method), dtype=bool)
            except Exception as exc:  # noqa: BLE001 - one missing aggregate must not lose the figure
                ctx.log(f"aggregate {method} unavailable: {exc}")
        path = ctx.dir / "aggregation_example.npz"
        np.savez_compressed(
            path,
            image=np.asarray(arrays.images[best_i], dtype=np.float32),
            labels=np.array(list(masks)),
            name=arrays.names[best_i],
            **{f"mask_{k}": v for k, v in masks.items()},
        )
        return str(path.relative_to(self.out))

    # -- step 2 -------------------------------------------------------------------------------------------------
    def step_normalization(self, ctx: StepContext) -> dict[str, Any]:
        """Fig. 9: validation AP per model and normalization.

        Result: ``{"models", "normalizations", "seeds", "metric", "ap": {model: {norm: {"mean","std","n"}}}}``.
        """
        models = self.cfg.normalization_models or self.cfg.models
        done = self.train_all(
            [(m, n, s) for m in models for n in self.cfg.normalizations for s in self.cfg.normalization_seeds],
            ctx.log,
        )
        ap: dict[str, dict[str, Any]] = {}
        for model in models:
            ap[model] = {}
            for norm in self.cfg.normalizations:
                vals = [
                    (done[(model, norm, s)].get("validation") or {}).get("ap") for s in self.cfg.normalization_seeds
                ]
                ap[model][norm] = mean_std(vals)
        return {
            "models": list(models),
            "normalizations": list(self.cfg.normalizations),
            "seeds": list(self.cfg.normalization_seeds),
            "metric": "validation AP",
            "ap": ap,
        }

    def plan_base_runs(self, plan_dir: str | Path) -> list[str]:
        """Write the training runs of steps 2-3 that are not finished as independent commands.

        Each run's resolved config goes to ``plan_dir/MODEL_NORM_sSEED.yaml``; the returned command lines
        (``spermseg train --data ROOT --config YAML --out RUN_DIR --resume``) produce exactly the run that the
        pipeline would train, in the directory where it looks for it, so they can run in parallel on many GPUs or
        cluster nodes (one per GPU, e.g. ``CUDA_VISIBLE_DEVICES=i``); ``spermseg reproduce`` then skips them.

        Returns:
            The command lines (also written to ``plan_dir/commands.txt``).
        """
        import shlex

        from spermseg.config import save_config
        from spermseg.training.trainer import is_finished
        from spermseg.utils.atomic import atomic_write_text

        plan = Path(plan_dir)
        runs: list[tuple[str, str, int]] = []
        for model in self.cfg.normalization_models or self.cfg.models:
            runs += [(model, n, s) for n in self.cfg.normalizations for s in self.cfg.normalization_seeds]
        runs += [(m, "minmax", s) for m in self.cfg.models for s in self.cfg.seeds]
        cmds: list[str] = []
        for model, norm, seed in dict.fromkeys(runs):  # unique, in order
            rd = self.run_dir(model, norm, seed)
            if is_finished(rd):
                continue
            yml = plan / f"{model}_{norm}_s{seed}.yaml"
            save_config(self.base_train_config(model, norm, seed), yml)
            cmds.append(
                " ".join(
                    shlex.quote(a)
                    for a in (
                        "spermseg",
                        "train",
                        "--data",
                        str(self.root.resolve()),
                        "--config",
                        str(yml.resolve()),
                        "--out",
                        str(rd.resolve()),
                        "--resume",
                    )
                )
            )
        atomic_write_text(plan / "commands.txt", "".join(c + "\n" for c in cmds))
        return cmds

    # -- step 3 -------------------------------------------------------------------------------------------------
    def base_runs(self) -> dict[str, Path]:
        """Cache id -> run directory of every base run (minmax)."""
        return {f"{m}_s{s}": self.run_dir(m, "minmax", s) for m in self.cfg.models for s in self.cfg.seeds}

    def build_cache(self, splits: Sequence[str], say: Callable[[str], None]) -> dict[str, Any]:
        from spermseg.ensembling.mask_cache import build_cache

        runs = self.base_runs()
        return build_cache(
            list(runs.values()),
            self.root,
            list(splits),
            self.cache_dir,
            model_ids=list(runs),
            device=self.cfg.device,
            batch_size=self.cfg.batch_size,
            precision=self.cfg.precision,
            log=say,
        )

    def cached(self, split: str, ids: Sequence[str]) -> np.ndarray:
        """(N, len(ids), H, W) float32 cached soft masks, checked against the split's image order."""
        from spermseg.ensembling.mask_cache import load_cached_masks

        names, stack = load_cached_masks(self.cache_dir, split, list(ids))
        if names != list(self.arrays(split).names):
            raise DataError(f"cached '{split}' images in {self.cache_dir} differ from {self.root}; delete the cache")
        return stack

    def step_base(self, ctx: StepContext) -> dict[str, Any]:
        """Table 3 top block and Fig. 7.

        Result: ``{"split", "rater", "models", "seeds", "runs": {model: {seed: {"run", "val_ap", "test": M}}},
        "summary": {model: {metric: {"mean","std","n"}}}, "ranking": [model by mean test AP],
        "best_seed": {model: seed (by validation AP)}, "curves": {model: curve of the best seed}}``.
        """
        runs: dict[str, dict[str, Any]] = {}
        done = self.train_all([(m, "minmax", s) for m in self.cfg.models for s in self.cfg.seeds], ctx.log)
        for model in self.cfg.models:
            for seed in self.cfg.seeds:
                r = done[(model, "minmax", seed)]
                runs.setdefault(model, {})[str(seed)] = {
                    "run": str(self.run_dir(model, "minmax", seed).relative_to(self.out)),
                    "val_ap": (r.get("validation") or {}).get("ap"),
                    "threshold": r.get("threshold"),
                    "train_s": r.get("wall_time_s"),
                }
        ctx.log("caching test soft masks of every run")
        self.build_cache([self.cfg.test_split], ctx.log)
        refs = self.full_refs(self.cfg.test_split)
        summary: dict[str, Any] = {}
        curves: dict[str, Any] = {}
        best_seed: dict[str, int] = {}
        for model in self.cfg.models:
            seeds = self.cfg.seeds
            best_seed[model] = max(seeds, key=lambda s: (runs[model][str(s)]["val_ap"] or -1.0, -s))
            per_metric: dict[str, list[float | None]] = {k: [] for k in ("ap", "iou_0.5", "iou_opt", "t_opt")}
            for seed in seeds:
                probs = self.cached(self.cfg.test_split, [f"{model}_s{seed}"])[:, 0]
                metrics, curve = score_with_curve(probs, refs, self.cfg.metric_mode)
                runs[model][str(seed)]["test"] = metrics
                for k in per_metric:
                    per_metric[k].append(metrics.get(k))
                if seed == best_seed[model]:
                    curves[model] = curve
            summary[model] = {k: mean_std(v) for k, v in per_metric.items()}
        ranking = sorted(self.cfg.models, key=lambda m: -(summary[m]["ap"]["mean"] or -1.0))
        return {
            "split": self.cfg.test_split,
            "rater": self.cfg.rater,
            "models": list(self.cfg.models),
            "seeds": list(self.cfg.seeds),
            "runs": runs,
            "summary": summary,
            "ranking": ranking,
            "best_seed": best_seed,
            "curves": curves,
        }

    # -- step 4 -------------------------------------------------------------------------------------------------
    def ensemble_run_dir(self, kind: str, sel: str, seed: int) -> Path:
        return self.out / "runs" / "ensembles" / f"{kind}_{sel}" / f"s{seed}"

    def step_ensembles(self, ctx: StepContext) -> dict[str, Any]:
        """Table 3 lower blocks.

        Result: ``{"selections": {E: [architectures]}, "selection_ids": {E: [cache ids]}, "rank_on",
        "leaks_test", "kinds", "seeds", "runs": {"kind|E": [run dirs]}, "table": {metric: {kind: {E: stat}}},
        "best": "kind|E" by mean AP, "best_base": architecture ranked first on rank_on}``.
        """
        from spermseg.ensembling.ensemble_training import train_ensemble
        from spermseg.ensembling.selection import all_selections
        from spermseg.ensembling.table3 import evaluate_ensembles
        from spermseg.experiments.headline import headline

        splits = [self.cfg.train_split, self.cfg.test_split]
        if self.cfg.multi_rater_split in self.dataset().splits:
            splits.append(self.cfg.multi_rater_split)
        ctx.log(f"caching soft masks on {', '.join(splits)}")
        manifest = self.build_cache(splits, ctx.log)
        selections = all_selections(manifest, rank_on=self.cfg.rank_on)
        run_dirs: dict[str, list[str]] = {}
        for kind in self.cfg.ensemble_kinds:
            for sel in self.cfg.selections:
                for seed in self.cfg.ensemble_seeds:
                    rd = self.ensemble_run_dir(kind, sel, seed)
                    if not (rd / "result.json").is_file():
                        ctx.log(f"training {kind}|{sel} seed {seed} on {', '.join(selections[sel].model_ids)}")
                    train_ensemble(
                        self.cache_dir,
                        kind,
                        rd,
                        select=sel,
                        rank_on=self.cfg.rank_on,
                        data_root=self.root,
                        seed=seed,
                        preset=self.cfg.train_preset,
                        overrides=[
                            *self.cfg.ensemble_overrides,
                            "runtime.progress=false",
                            "runtime.tensorboard=false",
                            "data.test_split=",
                        ],
                        device=self.cfg.device,
                        resume=True,
                        log=ctx.log,
                    )
                    run_dirs.setdefault(f"{kind}|{sel}", []).append(str(rd))
        all_runs = [r for rs in run_dirs.values() for r in rs]
        ev = evaluate_ensembles(
            self.cache_dir,
            all_runs,
            self.root,
            split=self.cfg.test_split,
            rank_on=self.cfg.rank_on,
            rater=self.cfg.rater,
            mode=self.cfg.metric_mode,
            device=self.cfg.device,
            batch_size=self.cfg.batch_size,
            include_base=True,  # every base run with head/tail too: the headline's best base model
        )
        atomic_write_json(ctx.dir / "evaluation.json", ev)
        cells: dict[str, dict[str, dict[str, list[float]]]] = {}
        for rec in ev["records"]:
            if rec["kind"] == "base":
                continue
            full = rec["metrics"]["full"]
            for metric in ("ap", "iou_0.5", "iou_opt"):
                cells.setdefault(metric, {}).setdefault(rec["kind"], {}).setdefault(rec["select"], []).append(
                    full.get(metric)
                )
        table = {
            m: {k: {e: mean_std(v) for e, v in by_sel.items()} for k, by_sel in by_kind.items()}
            for m, by_kind in cells.items()
        }
        best = max(
            ((k, e) for k, by_sel in table["ap"].items() for e in by_sel),
            key=lambda ke: table["ap"][ke[0]][ke[1]]["mean"] or -1.0,
        )
        return {
            "selections": {e: list(s.architectures) for e, s in selections.items()},
            "selection_ids": {e: list(s.model_ids) for e, s in selections.items()},
            "rank_on": self.cfg.rank_on,
            "leaks_test": bool(ev.get("leaks_test")),
            "kinds": ["avg", *self.cfg.ensemble_kinds],
            "seeds": list(self.cfg.ensemble_seeds),
            "runs": {k: [str(Path(r).relative_to(self.out)) for r in v] for k, v in run_dirs.items()},
            "table": table,
            "best": f"{best[0]}|{best[1]}",
            "best_base": selections["E2"].architectures[0],
            "headline": headline(ev, self.cfg.featured_ensemble, self.cfg.rater),
        }

    # -- prediction helpers for steps 5-8 ------------------------------------------------------------------------
    def _best_base_ids(self, results: dict[str, Any]) -> dict[str, str]:
        """Architecture -> cache id of its best seed (by validation AP)."""
        return {m: f"{m}_s{s}" for m, s in results["base"]["best_seed"].items()}

    def _featured_run(self, results: dict[str, Any]) -> tuple[str, str, Path | None]:
        """(kind, selection, run dir of the best seed by validation AP, or None for avg / not trained)."""
        kind, sel = self.featured()
        runs = results["ensembles"].get("runs", {}).get(f"{kind}|{sel}", [])
        if kind == "avg" or not runs:
            return kind, sel, None
        best = max(
            runs,
            key=lambda r: (
                (json.loads((self.out / r / "result.json").read_text()).get("validation") or {}).get("ap") or -1.0
            ),
        )
        return kind, sel, self.out / best

    def predictors(
        self, results: dict[str, Any], with_all_base: bool = True
    ) -> dict[str, Callable[[list[np.ndarray]], np.ndarray]]:
        """Named predictors ``f(images) -> (N, H, W) probs`` on raw [0, 1] images: the base models (best seed
        each), ``avg|E3`` and the featured ensemble, each recomputing the base models' soft masks from the images
        given (so blurred inputs propagate through the whole ensemble)."""
        from spermseg.inference.forward import predict_probs
        from spermseg.models.checkpoints import load_model

        base_ids = self._best_base_ids(results)
        models: dict[str, Any] = {}

        def base_fn(arch: str) -> Callable[[list[np.ndarray]], np.ndarray]:
            def f(images: list[np.ndarray]) -> np.ndarray:
                if arch not in models:
                    models[arch] = load_model(
                        self.out / results["base"]["runs"][arch][base_ids[arch].rsplit("_s", 1)[1]]["run"]
                    )
                m = models[arch]
                return predict_probs(
                    m,
                    images,
                    m.spermseg_meta.get("normalization", "minmax"),
                    device=self.cfg.device,
                    batch_size=self.cfg.batch_size,
                    precision=self.cfg.precision,
                )

            return f

        preds: dict[str, Callable[[list[np.ndarray]], np.ndarray]] = {}
        if with_all_base:
            for arch in self.cfg.models:
                preds[arch] = base_fn(arch)
        kind, sel, run = self._featured_run(results)
        sel_archs = results["ensembles"]["selections"].get(sel, [])

        def stack_fn(images: list[np.ndarray]) -> np.ndarray:
            return np.stack([base_fn(a)(images) for a in sel_archs], axis=1)

        preds[f"avg|{sel}"] = lambda images: stack_fn(images).mean(axis=1)
        if run is not None:
            ens = load_model(run)

            def ens_fn(images: list[np.ndarray]) -> np.ndarray:
                return predict_probs(
                    ens,
                    images,
                    ens.spermseg_meta.get("normalization", "minmax"),
                    device=self.cfg.device,
                    batch_size=self.cfg.batch_size,
                    masks=stack_fn(images),
                    precision=self.cfg.precision,
                )

            preds[f"{kind}|{sel}"] = ens_fn
        return preds

    # -- step 5 -------------------------------------------------------------------------------------------------
    def step_raters(self, ctx: StepContext) -> dict[str, Any]:
        """Table 4: IoU_opt of the best base model, avg|E3 and the featured ensemble vs. every rater and aggregate.

        Result: ``{"split", "n_images", "methods": {key: description}, "gt_variants": [...],
        "iou_opt": {part: {variant: {method key: value}}}}``.
        """
        ds = self.dataset()
        split = self.cfg.multi_rater_split
        if split not in ds.splits or len(ds.splits[split].raters) < 2:
            return {"status": "not_applicable", "reason": f"the dataset has no multi-rater split '{split}'"}
        agg = _require("spermseg.evaluation.aggregation", "ground-truth aggregation (spermseg.evaluation.aggregation)")
        from spermseg.metrics import SegmentationAccumulator

        raters = list(ds.splits[split].raters)
        arrays = self.arrays(split)
        images = [np.asarray(im, dtype=np.float32) for im in arrays.images]
        preds = self.predictors(ctx.results, with_all_base=False)
        best_base = ctx.results["ensembles"]["best_base"]
        methods = {"best_base": best_base}
        probs = {"best_base": self.predictors(ctx.results)[best_base](images)}
        for key, fn in preds.items():
            methods[key] = key
            probs[key] = fn(images)
        has_parts = all(arrays.masks(r, "head") is not None and arrays.masks(r, "tail") is not None for r in raters)
        parts = ("full", "head", "tail") if has_parts else ("full",)
        refs_by_var: dict[str, list[dict[str, np.ndarray]]] = {}
        for r in raters:
            refs_by_var[r] = [
                {p: np.asarray(arrays.masks(r, p)[i], dtype=bool) for p in parts} for i in range(len(images))
            ]
        for method in ("intersection", "majority", "union", "staple"):
            try:
                per_part = {
                    p: agg.aggregate([[refs_by_var[r][i][p] for i in range(len(images))] for r in raters], method)
                    for p in parts
                }
                refs_by_var[method] = [
                    {p: np.asarray(per_part[p][i], dtype=bool) for p in parts} for i in range(len(images))
                ]
            except Exception as exc:  # noqa: BLE001 - e.g. STAPLE without SimpleITK: report the others
                ctx.log(f"aggregate {method} skipped: {exc}")
        table: dict[str, dict[str, dict[str, float]]] = {p: {} for p in parts}
        for var, refs in refs_by_var.items():
            for key, pr in probs.items():
                acc = SegmentationAccumulator(mode=self.cfg.metric_mode, kernels=(), parts=has_parts)
                for i in range(len(images)):
                    acc.update(pr[i], refs[i] if has_parts else refs[i]["full"])
                res = acc.result()
                for p in parts:
                    table[p].setdefault(var, {})[key] = (res.get(p) or {}).get("iou_opt")
        return {
            "split": split,
            "n_images": len(images),
            "methods": methods,
            "method_order": list(methods),
            "gt_variants": list(refs_by_var),
            "iou_opt": table,
        }

    # -- step 6 -------------------------------------------------------------------------------------------------
    def step_blur(self, ctx: StepContext) -> dict[str, Any]:
        """Fig. 12: AP and IoU_opt per blur kernel size for each base model and the featured ensemble.

        Result: ``{"kernels", "rater", "sigma_rule", "highlight", "values": {method: {"ap": [..], "iou_opt": [..]}}}``.
        """
        blur = _require("spermseg.evaluation.blur", "blur robustness (spermseg.evaluation.blur)")
        images = [np.asarray(im, dtype=np.float32) for im in self.arrays(self.cfg.test_split).images]
        refs = self.full_refs(self.cfg.test_split)
        sizes = list(self.cfg.blur_kernels)
        values: dict[str, dict[str, list[float]]] = {}
        for name, fn in self.predictors(ctx.results).items():
            if name.startswith("avg|"):
                continue  # Fig. 12 shows the base models and the best ensemble
            ctx.log(f"blur sweep: {name}")
            res = blur.blur_robustness(fn, images, refs, sizes, mode=self.cfg.metric_mode, kernels=(), parts=False)
            values[name] = {key: [(res[k].get("full") or {}).get(key) for k in sizes] for key in ("ap", "iou_opt")}
        kind, sel = self.featured()
        sigmas = ", ".join(f"k={k}: {blur.blur_sigma(k):.2f}" for k in sizes)
        return {
            "kernels": sizes,
            "rater": self.cfg.rater,
            "highlight": f"{kind}|{sel}",
            "values": values,
            "sigma_rule": f"Gaussian sigma = 0.3((k-1)/2-1)+0.8, OpenCV's rule; k=1 is no blur; {sigmas}",
        }

    # -- step 7 -------------------------------------------------------------------------------------------------
    def step_qualitative(self, ctx: StepContext) -> dict[str, Any]:
        """Figs. 10/11: difference maps of chosen test images, each method binarized at its test t_opt.

        Result: ``{"examples": npz, "images": [names], "rater", "fig10_methods", "fig11_methods",
        "thresholds": {method: t}}``.
        """
        arrays = self.arrays(self.cfg.test_split)
        refs = self.full_refs(self.cfg.test_split)
        n = min(self.cfg.qualitative_images, len(refs))
        # Images with the most reference pixels show sperm best; ties broken by order (deterministic).
        order = sorted(range(len(refs)), key=lambda i: (-int(refs[i].sum()), i))[:n]
        order.sort()
        images = [np.asarray(arrays.images[i], dtype=np.float32) for i in order]
        preds = self.predictors(ctx.results)
        all_images = [np.asarray(im, dtype=np.float32) for im in arrays.images]
        arrays_out: dict[str, np.ndarray] = {}
        thresholds: dict[str, float] = {}
        for name, fn in preds.items():
            full_probs = fn(all_images)
            m, _ = score_with_curve(full_probs, refs, self.cfg.metric_mode)
            t = float(m["t_opt"]) if m["t_opt"] is not None else 0.5
            thresholds[name] = t
            for j, i in enumerate(order):
                arrays_out[f"{j}/{name}"] = full_probs[i] >= t
        for j, i in enumerate(order):
            arrays_out[f"{j}/image"] = images[j]
            arrays_out[f"{j}/ref"] = refs[i]
        path = ctx.dir / "examples.npz"
        np.savez_compressed(path, **arrays_out)
        kind, sel = self.featured()
        sel_archs = ctx.results["ensembles"]["selections"].get(sel, [])
        fig11 = [*sel_archs, *[k for k in preds if k == f"{kind}|{sel}"]]
        return {
            "examples": str(path.relative_to(self.out)),
            "images": [arrays.names[i] for i in order],
            "rater": self.cfg.rater,
            "fig10_methods": list(self.cfg.models),
            "fig11_methods": fig11,
            "thresholds": thresholds,
        }

    # -- step 8 -------------------------------------------------------------------------------------------------
    def step_temporal(self, ctx: StepContext) -> dict[str, Any]:
        """Fig. 14: temporal consistency on a frame sequence (when the dataset has one).

        Result: ``{"sequence", "n_frames", "series": {method: {"iou": [F-1], "kept": [F-1], "mean_iou",
        "mean_kept"}}}`` or ``{"status": "not_applicable", "reason"}``.
        """
        seq = find_sequence(self.root, self.cfg.temporal_frames)
        if seq is None:
            return {
                "status": "not_applicable",
                "reason": f"no frame sequence in {self.root} (expected VIDEO_DIR/frames/*.png under videos/)",
            }
        temporal = _require("spermseg.evaluation.temporal", "temporal consistency (spermseg.evaluation.temporal)")
        name, frames = seq
        series: dict[str, Any] = {}
        # Each method binarized at its t_opt on the test set: from the qualitative step when it ran, else the
        # base models' best-seed t_opt (0.5 for an ensemble without one).
        thresholds = dict((ctx.results.get("qualitative") or {}).get("thresholds", {}))
        base = ctx.results["base"]
        for m, seed in base.get("best_seed", {}).items():
            t_best = (base["runs"][m][str(seed)].get("test") or {}).get("t_opt")
            if t_best is not None:
                thresholds.setdefault(m, t_best)
        for method, fn in self.predictors(ctx.results).items():
            probs = fn(frames)
            t = thresholds.get(method, 0.5)
            res = temporal.temporal_consistency(list(probs), threshold=t)
            series[method] = {
                "iou": list(res["iou"]),
                "kept": list(res["kept"]),
                "mean_iou": mean_std(res["iou"])["mean"],
                "mean_kept": mean_std(res["kept"])["mean"],
            }
        return {"sequence": name, "n_frames": len(frames), "series": series}


def _train_worker(cfg: ReproduceConfig, out_dir: str, model: str, norm: str, seed: int) -> dict[str, Any]:
    """One base run in a worker process (see :meth:`Reproduction.train_all`)."""
    if cfg.threads > 0:
        import torch

        torch.set_num_threads(cfg.threads)
    return Reproduction(cfg, out_dir, log=lambda m: None).train_base(model, norm, seed, lambda m: None)


# ---------------------------------------------------------------------------------------------------------------
def find_sequence(root: str | Path, max_frames: int = 0) -> tuple[str, list[np.ndarray]] | None:
    """The first frame sequence of a dataset: ``ROOT/videos/ID/frames/*.png`` (the layout ``spermseg synth
    --videos`` writes), frames in name order.

    Args:
        root: dataset root.
        max_frames: read at most this many frames (0 = all).

    Returns:
        ``(video id, frames)`` with frames (H, W) float32 in [0, 1], or None when there is no sequence.
    """
    from spermseg.data.io import read_image

    videos = Path(root) / "videos"
    if not videos.is_dir():
        return None
    for vdir in sorted(p for p in videos.iterdir() if (p / "frames").is_dir()):
        files = sorted(f for f in (vdir / "frames").iterdir() if f.suffix.lower() in (".png", ".tif", ".tiff"))
        if len(files) >= 2:
            files = files[:max_frames] if max_frames > 0 else files
            return vdir.name, [read_image(f) for f in files]
    return None


# ---------------------------------------------------------------------------------------------------------------
def compare_with_paper(cfg: ReproduceConfig) -> bool:
    """Whether the report shows the paper's numbers (``auto``: only on SegSperm itself)."""
    from spermseg.experiments.paper_numbers import is_segsperm

    if cfg.compare_paper == "on":
        return True
    if cfg.compare_paper == "off":
        return False
    return is_segsperm(cfg.data)


def run_reproduce(
    cfg: ReproduceConfig,
    out_dir: str | Path,
    *,
    steps: Sequence[str] | None = None,
    force: Sequence[str] = (),
    log: Callable[[str], None] | None = None,
    command: str = "",
) -> tuple[dict[str, StepRecord], Path, Path]:
    """Run the selected steps (skipping finished ones) and write the report.

    Args:
        cfg: the resolved config.
        out_dir: output directory.
        steps: subset of :data:`STEP_NAMES` (``None``: all).
        force: steps to re-run even when finished.
        log: progress printer.
        command: the command line, shown in the report.

    Returns:
        ``(records, report_md, report_html)``.
    """
    from spermseg.config import config_to_dict, save_config
    from spermseg.experiments.report import collect_environment, write_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "config.yaml"
    current = config_to_dict(cfg)
    if saved.is_file():
        import yaml

        old = yaml.safe_load(saved.read_text()) or {}
        # Steps that finished under another config would mix results; the user must choose. Keys that only change
        # how the work is executed or shown (not its results) may change between invocations.
        changed = sorted(k for k in set(old) | set(current) if old.get(k) != current.get(k) and k not in EXECUTION_KEYS)
        if changed and not force:
            raise ConfigError(
                f"{out} holds a reproduction with a different config ({', '.join(changed)} differ; "
                f"see {saved}); use another --out, or --force STEP to redo the affected steps"
            )
    save_config(cfg, saved)
    if cfg.threads > 0:
        import torch

        torch.set_num_threads(cfg.threads)
    pipe = Reproduction(cfg, out, log=log)
    runner = StepRunner(out, pipe.steps(), log=log)
    records = runner.run(steps, force=force)
    info = {
        "dataset": str(Path(cfg.data).resolve()),
        "preset": cfg.preset,
        "models": ", ".join(cfg.models),
        "seeds": ", ".join(map(str, cfg.seeds)),
    }
    if command:
        info["command"] = command
    md, html = write_report(
        out, records, current, collect_environment(), compare_paper=compare_with_paper(cfg), info=info
    )
    atomic_write_json(out / "steps.json", {k: r.to_dict() for k, r in records.items()})
    ens = records.get("ensembles")
    table = (ens.result or {}).get("headline") if ens is not None and ens.finished else None
    atomic_write_json(out / "summary.json", {"headline": table, "command": command or None})
    return records, md, html
