"""The training loop: one explicit, readable loop in plain PyTorch for base models and ensembling networks.

Data lives in memory (on the training device, :mod:`spermseg.training.train_data`): a batch is drawn by indexing,
randomly cropped, augmented on the device by :class:`spermseg.data.transforms.Augmenter`, normalized per image, and
fed to the model by :func:`spermseg.training.step.train_step`; :mod:`spermseg.training.validation` scores the
epochs. :func:`train` reads top to bottom: run directory, setup, (resume), the epochs, the result.

Reproducibility and resume: every epoch draws its shuffling, crops and augmentation from random streams derived
from ``(seed, epoch, rank)`` (and re-seeds the global torch/NumPy/Python generators the same way), so an epoch
computes the same thing whether the run was interrupted before it or not. After each epoch the model, optimizer,
scheduler, RNG states and history are saved atomically in ``RUN_DIR/state``; ``resume=True`` continues from there
and ends with weights identical to an uninterrupted run (same device, deterministic algorithms).

Run directory (only rank 0 writes): ``config.yaml``, ``metrics.csv``, ``best.safetensors/json`` (highest
validation AP; its sidecar holds ``threshold`` = t_opt), ``last.safetensors/json``, ``state/``, ``result.json``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spermseg.data.transforms import GEOMETRIC_OPS, augment_batch  # noqa: F401 - re-exported (old home)
from spermseg.errors import ConfigError, SpermsegError
from spermseg.training.run_dir import (  # noqa: F401 - is_finished re-exported
    CSV_FIELDS,
    TensorBoard,
    check_run_dir,
    clear_run_dir,
    is_finished,
    peak_memory_mb,
    write_metrics_csv,
)
from spermseg.training.step import (  # noqa: F401 - re-exported: the loop's building blocks lived here
    Inputs,
    ModelCall,
    amp_enabled,
    build_model,
    build_optimizer,
    call_base,
    call_ensemble,
    epoch_order,
    epoch_seed,
    make_inputs,
    reseed_epoch,
    steps_per_epoch,
    train_step,
    use_channels_last,
)
from spermseg.training.train_data import (  # noqa: F401 - re-exported
    DeviceData,
    SplitData,
    attach_cached_masks,
    load_config_split,
    load_split_data,
    nested_subset,
    split_by_group,
    whole_sperm_scale_of,
)
from spermseg.training.validation import METRIC_KEYS, evaluate_probs, evaluate_test, validate_model  # noqa: F401

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from spermseg.training.config import TrainConfig
    from spermseg.training.distributed import DistInfo


# --------------------------------------------------------------------------------------------------------------
# Hooks and results
# --------------------------------------------------------------------------------------------------------------


@dataclass
class TrainHooks:
    """Optional callbacks (for tests, notebooks and the experiment runner).

    Attributes:
        on_step_end: ``f(epoch, step, loss)`` after each optimizer step (epoch is 0-based).
        on_epoch_end: ``f(epoch, row)`` after each epoch's checkpoints and state were written (epoch 0-based).
        log: where one-line messages go (default: stderr on rank 0).
    """

    on_step_end: Callable[[int, int, float], None] | None = None
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None
    log: Callable[[str], None] | None = None


@dataclass
class TrainResult:
    """What :func:`train` returns: the run directory, ``result.json`` content, and whether it was skipped."""

    run_dir: Path
    result: dict[str, Any]
    skipped: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """What a run trains with, built once by :func:`_setup` (the loop's fixed parts)."""

    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    dist: DistInfo
    hooks: TrainHooks
    log: Callable[[str], None]
    train_data: SplitData
    val_data: SplitData
    dev_data: DeviceData
    inputs_ids: list[str]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    model_call: ModelCall
    augmenter: Any
    augment: Callable[..., Any]  # (augmenter, images, target, masks, gen, normalization) -> (images, target, masks)
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    alphas: tuple[float, ...]
    fmt: Any
    channels_last: bool
    parts: bool
    train_model: nn.Module | None = None  # the model, DDP-wrapped in a multi-process run
    distiller: Any = None  # training.distill.Distiller when the run learns a teacher's soft masks
    amp: bool = False
    steps: int = 1
    meta_base: dict[str, Any] = field(default_factory=dict)


@dataclass
class _RunState:
    """What changes from epoch to epoch and is saved for resume (``extra`` of the training state)."""

    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"ap": -math.inf, "epoch": None, "metrics": None})
    elapsed: float = 0.0
    images_seen: int = 0
    train_time: float = 0.0
    last_metrics: dict[str, Any] | None = None  # of the latest validated epoch (its t_opt is 'last's threshold)


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    hooks: TrainHooks | None = None,
    preset_name: str | None = None,
) -> TrainResult:
    """Train one base model or ensembling network and write ``run_dir``.

    Args:
        cfg: the resolved, validated config (``cfg.data.root`` must be set).
        run_dir: output directory.
        resume: continue an interrupted run from ``run_dir/state`` (same config required).
        force: delete previous outputs in ``run_dir`` and train from scratch.
        hooks: optional callbacks.
        preset_name: recorded in ``result.json``.

    Returns:
        A :class:`TrainResult`; ``skipped=True`` when ``run_dir`` already holds a finished run.

    Raises:
        SpermsegError: on unusable data, config, or an existing run that conflicts with the request.
    """
    import torch

    from spermseg.config import config_to_dict, save_config
    from spermseg.training import state
    from spermseg.training.config import validate
    from spermseg.training.distributed import barrier, init_distributed, shutdown_distributed
    from spermseg.utils.device import resolve_device
    from spermseg.utils.progress import progress

    validate(cfg)
    hooks = hooks or TrainHooks()
    run_dir = Path(run_dir)
    cfg_dict = config_to_dict(cfg)
    if not cfg.data.root:
        raise ConfigError("no training data: pass --data ROOT (or set data.root)")

    device = resolve_device(cfg.runtime.device)
    dist_info, device = init_distributed(device)
    log = hooks.log or (_stderr if dist_info.is_main else (lambda _msg: None))
    try:
        if run_dir.exists() and not force:
            finished = check_run_dir(run_dir, cfg_dict, resume, log)
            if finished is not None:
                return TrainResult(run_dir, finished, skipped=True)
        if force and dist_info.is_main and run_dir.exists():
            clear_run_dir(run_dir)
        barrier(dist_info)
        if cfg.runtime.threads > 0:
            torch.set_num_threads(cfg.runtime.threads)

        run = _setup(cfg, run_dir, device, dist_info, hooks, log)
        st = _RunState()
        if resume and state.has_training_state(run_dir):
            st = _resume(run)
        if dist_info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, run_dir / "config.yaml")
        run.train_model = run.model
        if dist_info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            run.train_model = DDP(run.model, device_ids=[device.index] if device.type == "cuda" else None)
        run.meta_base = {
            "normalization": cfg.data.normalization,
            "config": cfg_dict,
            "data_fingerprint": run.train_data.fingerprint,
            "seed": cfg.seed,
        }
        if cfg.model.ensemble:
            run.meta_base.update(
                {"n_masks": _n_masks(run.train_data), "inputs": run.inputs_ids, "mask_cache": str(cfg.model.masks)}
            )
        if not run.parts and cfg.data.part == "full":  # head/tail thickness: predict's whole-sperm filter
            run.meta_base["whole_sperm"] = whole_sperm_scale_of(cfg, run.train_data.names)
        if run.distiller is not None:  # the teacher's identity (and its radius when there are no labels)
            run.meta_base.update(run.distiller.meta(run.meta_base.get("whole_sperm")))
        run.steps = steps_per_epoch(cfg, run.dev_data.n, dist_info)
        run.amp = amp_enabled(cfg, device)
        tb = TensorBoard(run_dir, cfg.runtime.tensorboard and dist_info.is_main)
        bar = progress(
            total=(cfg.schedule.epochs - st.start_epoch) * run.steps,
            desc="train",
            unit="step",
            disable=None if (cfg.runtime.progress and dist_info.is_main) else True,
        )
        t_run = time.perf_counter()
        st.last_metrics = next((h["_metrics"] for h in reversed(st.history) if h.get("_metrics")), None)

        for epoch in range(st.start_epoch, cfg.schedule.epochs):
            t_epoch = time.perf_counter()
            row = _train_epoch(run, st, epoch, bar, t_epoch)
            if dist_info.is_main:
                _end_epoch(run, st, epoch, row, t_epoch, t_run, bar)
                tb.log(row)
            barrier(dist_info)
            if hooks.on_epoch_end is not None:
                hooks.on_epoch_end(epoch, row)
        bar.close()
        tb.close()

        result: dict[str, Any] = {}
        if dist_info.is_main:
            result = _finish(run, st, t_run, preset_name)
        barrier(dist_info)
        return TrainResult(
            run_dir, result, history=[{k: v for k, v in h.items() if k != "_metrics"} for h in st.history]
        )
    finally:
        shutdown_distributed(dist_info)


def _n_masks(data: SplitData) -> int:
    return 0 if data.masks is None else int(data.masks.shape[1])


def _setup(
    cfg: TrainConfig,
    run_dir: Path,
    device: torch.device,
    dist_info: DistInfo,
    hooks: TrainHooks,
    log: Callable[[str], None],
) -> _Run:
    """Load the data, split off validation, build model, optimizer, schedule, augmenter and loss (in this order:
    the seeds make the weights depend on it)."""
    import torch

    from spermseg.data.transforms import Augmenter
    from spermseg.training.losses import build_loss
    from spermseg.training.schedules import build_scheduler
    from spermseg.utils.seed import seed_everything

    # ---- data ----------------------------------------------------------------------------------------------------
    t_load = time.perf_counter()
    distiller = None
    if cfg.distill.teacher:  # the teacher's soft masks are the targets (training.distill)
        from spermseg.training.distill import Distiller

        distiller = Distiller(cfg, run_dir, device, log)
        full = distiller.training_split()
    else:
        full = load_config_split(cfg, cfg.data.train_split, max_images=cfg.data.max_images)
    inputs_ids: list[str] = []
    if cfg.model.ensemble:
        inputs_ids = attach_cached_masks(full, cfg.model.masks, cfg.data.train_split, cfg.model.mask_models)
    split_seed = cfg.seed if cfg.validation.split_seed is None else cfg.validation.split_seed
    train_idx, val_idx = split_by_group(full.groups, cfg.validation.fraction, split_seed)
    train_idx = nested_subset(train_idx, cfg.data.train_images, split_seed)
    train_data, val_data = full.subset(train_idx), full.subset(val_idx)
    if distiller is not None:
        val_data.masks = None  # the teacher's masks are the student's targets, not its inputs
    dev_data = DeviceData(train_data, device, cfg.data.crop, cfg.data.crop_foreground)
    del full
    log(
        f"spermseg train: {len(train_data)} training / {len(val_data)} validation images "
        f"({len(set(val_data.groups))} held-out groups), device {device}"
        + (f", {dist_info.world_size} processes" if dist_info.enabled else "")
        + f", data loaded in {time.perf_counter() - t_load:.1f} s"
    )

    # ---- model, optimizer, schedule --------------------------------------------------------------------------------
    seed_everything(cfg.seed, deterministic=cfg.runtime.deterministic)
    model = build_model(cfg, _n_masks(train_data))
    parts = cfg.data.target == "parts"
    # A mask-skip ensemble starts as 'avg' (zero last layer): a prior bias would move it off that start.
    skip = getattr(model, "mask_skip", False)
    if cfg.model.init:  # fine-tuning: trained weights (biases included) replace the random start
        from spermseg.training.init import init_weights

        log(f"spermseg train: initial weights from {init_weights(model, cfg.model.init)}")
    elif cfg.model.bias_prior and (parts or 0.0 < dev_data.prior < 1.0) and not skip:
        from spermseg.models.blocks import set_output_bias
        from spermseg.training.parts import N_CODES

        # a part network starts at the code frequencies (softmax prior), a binary one at the foreground share
        set_output_bias(model, dev_data.class_prior(N_CODES) if parts else dev_data.prior)
    channels_last = use_channels_last(cfg, device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device, memory_format=fmt)
    optimizer = build_optimizer(cfg, model.parameters())
    scheduler = build_scheduler(cfg.schedule, optimizer)
    augmenter = Augmenter(cfg.augment)
    augment: Callable[..., Any] = augment_batch if distiller is None else distiller.augment
    loss_fn = build_loss(cfg.loss)
    if parts:
        from spermseg.training.losses import parts_loss
        from spermseg.training.parts import augment_parts_batch as augment

        def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return parts_loss(logits, target, cfg.loss.dice_weight, foreground_weight=cfg.loss.foreground_weight)

    # Deep-supervision weights: the config's (main output first), else the model's own per-scale alphas (the
    # ensembling networks carry them, paper Eq. 3) with weight 1 for the fused output.
    alphas = tuple(cfg.loss.alphas) or ((1.0, *model.alphas) if getattr(model, "alphas", ()) else ())
    return _Run(
        cfg=cfg,
        run_dir=run_dir,
        device=device,
        dist=dist_info,
        hooks=hooks,
        log=log,
        train_data=train_data,
        val_data=val_data,
        dev_data=dev_data,
        inputs_ids=inputs_ids,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        model_call=call_ensemble if cfg.model.ensemble else call_base,
        augmenter=augmenter,
        augment=augment,
        loss_fn=loss_fn,
        alphas=alphas,
        fmt=fmt,
        channels_last=channels_last,
        parts=parts,
        distiller=distiller,
    )


def _resume(run: _Run) -> _RunState:
    """Restore model, optimizer, scheduler and RNG states of an interrupted run; the run state it had saved."""
    from spermseg.training import state

    st = _RunState()
    st.start_epoch, _extra_t, extra = state.load_training_state(
        run.run_dir, model=run.model, optimizer=run.optimizer, scheduler=run.scheduler
    )
    st.history = list(extra.get("history", []))
    st.best = dict(extra.get("best", st.best))
    if st.best.get("ap") is None:
        st.best["ap"] = -math.inf
    st.elapsed = float(extra.get("elapsed_s", 0.0))
    st.images_seen = int(extra.get("images_seen", 0))
    st.train_time = float(extra.get("train_time_s", 0.0))
    run.log(f"spermseg train: resuming {run.run_dir} after epoch {st.start_epoch}")
    return st


def _train_epoch(run: _Run, st: _RunState, epoch: int, bar: Any, t_epoch: float) -> dict[str, Any]:
    """The optimizer steps of one epoch; returns the epoch's row (lr, mean train loss, images per second)."""
    import torch

    from spermseg.training.distributed import all_reduce_mean
    from spermseg.training.schedules import step_scheduler

    cfg, device, dist_info, model = run.cfg, run.device, run.dist, run.model
    epochs, bs, steps = cfg.schedule.epochs, cfg.schedule.batch_size, run.steps
    rank_seed = reseed_epoch(cfg.seed, epoch, dist_info.rank)
    crop_gen = torch.Generator().manual_seed(rank_seed)
    aug_gen = torch.Generator().manual_seed(rank_seed + 1)  # CPU: same draws on any device
    order = epoch_order(cfg, epoch, run.dev_data.n, dist_info, steps)
    model.train()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    n_steps = 0
    n_images = 0
    lr = run.optimizer.param_groups[0]["lr"]
    for step in range(steps):
        idx = order[step * bs : (step + 1) * bs]
        if len(idx) == 0:
            break
        images, target, masks = run.dev_data.batch(idx, crop_gen)
        # Augment raw [0,1] images, target and soft masks together, then normalize the images with the
        # statistics from before contrast/brightness (which per-image normalization would otherwise undo).
        images, target, masks = run.augment(run.augmenter, images, target, masks, aug_gen, cfg.data.normalization)
        inputs = make_inputs(images, masks, run.fmt)
        loss = train_step(
            run.train_model,
            run.model_call,
            inputs,
            target,
            run.optimizer,
            run.loss_fn,
            alphas=run.alphas,
            amp=run.amp,
            device=device,
            grad_clip=cfg.optim.grad_clip,
        )

        loss_sum += loss.detach()
        n_steps += 1
        n_images += len(idx)
        if run.hooks.on_step_end is not None:
            run.hooks.on_step_end(epoch, step, float(loss.detach()))
        bar.update(1)
        if not bar.disable and (step % 5 == 0 or step == steps - 1):
            dt = time.perf_counter() - t_epoch
            bar.set_description(f"epoch {epoch + 1}/{epochs}")
            bar.set_postfix(
                loss=f"{float(loss_sum) / n_steps:.4f}",
                lr=f"{lr:.2e}",
                img_s=f"{n_images * dist_info.world_size / max(dt, 1e-9):.1f}",
            )
    if not torch.isfinite(loss_sum):  # checked once per epoch: a per-step check would sync the GPU
        raise SpermsegError(
            f"training diverged (non-finite loss) in epoch {epoch + 1}; lower optim.lr or check the data"
        )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    epoch_train_s = time.perf_counter() - t_epoch
    train_loss = all_reduce_mean(float(loss_sum) / max(n_steps, 1), dist_info, device)
    step_scheduler(run.scheduler, train_loss)
    epoch_images = n_images * dist_info.world_size
    st.images_seen += epoch_images
    st.train_time += epoch_train_s
    return {
        "epoch": epoch + 1,
        "lr": lr,
        "train_loss": train_loss,
        "images_per_s": epoch_images / max(epoch_train_s, 1e-9),
    }


def _end_epoch(
    run: _Run, st: _RunState, epoch: int, row: dict[str, Any], t_epoch: float, t_run: float, bar: Any
) -> None:
    """Rank 0 after an epoch: validation, ``best``/``last`` checkpoints, metrics.csv, the resume state, one line."""
    from spermseg.models import checkpoints as ckpt
    from spermseg.training import state

    cfg, model, val_data, parts = run.cfg, run.model, run.val_data, run.parts
    epochs = cfg.schedule.epochs
    do_val = len(val_data) > 0 and ((epoch + 1) % cfg.validation.every == 0 or epoch + 1 == epochs)
    metrics = None
    if do_val and parts:
        from spermseg.training.parts import validate_parts

        metrics = validate_parts(model, val_data, cfg.data.normalization, run.device)
        metrics["ap"] = metrics["miou"]  # the selection score of part networks (see training.parts)
    elif do_val:
        metrics = validate_model(
            model,
            val_data,
            cfg.data.normalization,
            run.device,
            batch_size=cfg.validation.batch_size,
            tta=cfg.validation.tta,
            mode=cfg.validation.metric_mode,
        )
        row.update({f"val_{k}": metrics.get(k) for k in METRIC_KEYS})
    # Without a validation set every epoch "improves": best is then the last epoch.
    improved = (metrics is not None and metrics["ap"] > st.best["ap"]) or len(val_data) == 0
    row["best"] = int(improved)
    if metrics is not None:
        st.last_metrics = metrics
    threshold = (st.last_metrics or {}).get("t_opt", 0.5)
    meta = {**run.meta_base, "epoch": epoch + 1, "threshold": threshold, "validation": st.last_metrics}
    if improved:
        st.best = {"ap": metrics["ap"] if metrics else None, "epoch": epoch + 1, "metrics": metrics}
        ckpt.save_checkpoint(run.run_dir / "best", model, {**meta, "threshold": threshold})
    ckpt.save_checkpoint(run.run_dir / "last", model, meta)
    row["epoch_s"] = time.perf_counter() - t_epoch
    st.history.append({**row, "_metrics": metrics})
    write_metrics_csv(run.run_dir / "metrics.csv", st.history)
    elapsed_now = st.elapsed + (time.perf_counter() - t_run)
    state.save_training_state(
        run.run_dir,
        epoch=epoch + 1,
        model=model,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        extra={
            "history": st.history,
            "best": {**st.best, "ap": None if st.best["ap"] == -math.inf else st.best["ap"]},
            "elapsed_s": elapsed_now,
            "images_seen": st.images_seen,
            "train_time_s": st.train_time,
        },
        keep=cfg.runtime.keep_states,
    )
    val_txt = (
        f", val AP {metrics['ap']:.4f} IoU_opt {metrics['iou_opt']:.4f} t_opt {metrics['t_opt']:.2f}"
        if metrics and not parts
        else (f", val mIoU {metrics['miou']:.4f} full IoU {metrics['full']:.4f}" if metrics else "")
    )
    line = (
        f"epoch {epoch + 1}/{epochs}: loss {row['train_loss']:.4f}, lr {row['lr']:.2e}, "
        f"{row['images_per_s']:.1f} img/s{val_txt}{' *' if improved and metrics else ''}"
    )
    if getattr(bar, "disable", True) or run.hooks.log is not None:
        run.log(line)
    else:  # above the live bar, so that the per-epoch history stays on screen
        bar.write(line, file=sys.stderr)


def _finish(run: _Run, st: _RunState, t_run: float, preset_name: str | None) -> dict[str, Any]:
    """Rank 0 at the end: score the best checkpoint on the test split and write ``result.json``."""
    from spermseg.models import checkpoints as ckpt
    from spermseg.utils.atomic import atomic_write_json

    cfg, device, best = run.cfg, run.device, st.best
    total_s = st.elapsed + (time.perf_counter() - t_run)
    best_model = ckpt.load_model(run.run_dir / "best")
    test = None
    if cfg.data.test_split:
        test = evaluate_test(cfg, best_model, device, run.inputs_ids, run.log)
    result = {
        "model": cfg.model.ensemble or cfg.model.name,
        "base_model": cfg.model.name if not cfg.model.ensemble else None,
        "kind": "ensemble" if cfg.model.ensemble else "base",
        "inputs": run.inputs_ids or None,
        "seed": cfg.seed,
        "preset": preset_name,
        "epochs": cfg.schedule.epochs,
        "steps_per_epoch": run.steps,
        "best_epoch": best["epoch"],
        "validation": best["metrics"],
        "threshold": best_model.spermseg_meta.get("threshold"),
        "test": test,
        "wall_time_s": total_s,
        "train_time_s": st.train_time,
        "images_per_s": st.images_seen / max(st.train_time, 1e-9),
        "n_train": len(run.train_data),
        "n_val": len(run.val_data),
        "val_groups": sorted(set(run.val_data.groups)),
        "params": sum(p.numel() for p in run.model.parameters()),
        "device": str(device),
        "world_size": run.dist.world_size,
        "amp": "bf16" if run.amp else "off",
        "channels_last": run.channels_last,
        "data_fingerprint": run.train_data.fingerprint,
        **peak_memory_mb(device),
    }
    atomic_write_json(run.run_dir / "result.json", result)
    run.log(
        f"spermseg train: done in {total_s:.0f} s; best epoch {best['epoch']}"
        # part networks select on mIoU, which they also store as "ap" (the selection score)
        + (f", val {'mIoU' if run.parts else 'AP'} {best['ap']:.4f}" if best.get("metrics") else "")
        + f" -> {run.run_dir}"
    )
    return result
