"""The reproduction pipeline's shared pieces: :class:`Reproduction` (config, paths, cached splits, the base-model
grid runner, the mask cache and the predictors every step scores), scoring with the Fig. 7 curve, and the helpers
the steps share. The eight steps themselves live in :mod:`spermseg.experiments.steps`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spermseg.errors import ConfigError, DataError
from spermseg.experiments.config import ReproduceConfig
from spermseg.experiments.runner import StepUnavailable


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


def require(module: str, what: str) -> Any:
    """Import ``module`` or raise :class:`StepUnavailable` naming what is missing."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise StepUnavailable(f"{what} is not available ({module}: {exc})") from None


# ---------------------------------------------------------------------------------------------------------------


def fill_last_round(
    todo: Sequence[tuple[str, str, int]], later: Sequence[tuple[str, str, int]], jobs: int
) -> list[tuple[str, str, int]]:
    """``todo`` plus the first runs of ``later`` (those not in ``todo``) that fill the last round of ``jobs`` workers.

    Args:
        todo: runs to train now (unique).
        later: runs of a later step, in the order it would train them.
        jobs: workers training at once.

    Returns:
        ``todo`` followed by ``(-len(todo)) % jobs`` runs of ``later`` (fewer when ``later`` has fewer).
    """
    spare = (-len(todo)) % max(jobs, 1)
    extra = [r for r in dict.fromkeys(later) if r not in set(todo)][:spare]
    return [*todo, *extra]


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
        # Soft masks of a base model on given pixels, reused within this process: Table 4, the difference maps
        # and the blur sweep ask for the same base model on the same images several times (itself, inside avg|E,
        # inside the ensemble); a forward pass gives the same array each time, so results do not change.
        self._probs_memo: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    # -- shared pieces ----------------------------------------------------------------------------------------
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

    def base_run_keys(self) -> list[tuple[str, str, int]]:
        """(model, "minmax", seed) of every base run of step 3, in grid order."""
        return [(m, "minmax", s) for m in self.cfg.models for s in self.cfg.seeds]

    def train_all(
        self,
        runs: Sequence[tuple[str, str, int]],
        say: Callable[[str], None],
        fill_from: Sequence[tuple[str, str, int]] = (),
    ) -> dict[tuple, dict]:
        """Train (or skip) several base runs, ``cfg.jobs`` at a time; returns ``{(model, norm, seed): result}``.

        Args:
            runs: (model, normalization, seed) of the runs this step needs.
            say: progress printer.
            fill_from: runs a later step will need; as many of them as keep every worker busy in the last round
                are trained now (a run's result does not depend on which process trains it, and the later step
                then finds it finished), so that e.g. 3 normalization runs on 2 workers do not leave one idle.
        """
        from spermseg.training.trainer import is_finished

        todo = [r for r in dict.fromkeys(runs) if not is_finished(self.run_dir(*r))]
        if self.cfg.jobs > 1 and todo:
            later = [r for r in fill_from if not is_finished(self.run_dir(*r))]
            todo = fill_last_round(todo, later, self.cfg.jobs)
        if self.cfg.jobs > 1 and len(todo) > 1:
            say(f"training {len(todo)} runs, {self.cfg.jobs} at a time")
            done = run_in_workers(self.cfg, _train_worker, [(self.cfg, str(self.out), *r) for r in todo])
            for r, res in zip(todo, done):
                say(f"  {r[0]} ({r[1]}, seed {r[2]}): val AP {(res.get('validation') or {}).get('ap')}")
        results = {r: self.train_base(*r, say) for r in runs}
        set_main_threads(self.cfg)  # a run trained in this process set torch's threads to the per-run count
        return results

    def featured(self) -> tuple[str, str]:
        kind, sel = self.cfg.featured_ensemble.split("|", 1)
        return kind, sel

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
        runs += self.base_run_keys()
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
        return {f"{m}_s{s}": self.run_dir(m, norm, s) for m, norm, s in self.base_run_keys()}

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

    # -- step 4 -------------------------------------------------------------------------------------------------
    def ensemble_run_dir(self, kind: str, sel: str, seed: int) -> Path:
        return self.out / "runs" / "ensembles" / f"{kind}_{sel}" / f"s{seed}"

    def best_base_ids(self, results: dict[str, Any]) -> dict[str, str]:
        """Architecture -> cache id of its best seed (by validation AP)."""
        return {m: f"{m}_s{s}" for m, s in results["base"]["best_seed"].items()}

    def featured_run(self, results: dict[str, Any]) -> tuple[str, str, Path | None]:
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

    def _remember(self, key: tuple[str, str], probs: np.ndarray) -> None:
        """Keep ``probs`` in the memo, dropping the oldest entries beyond ``_MEMO_BYTES``."""
        self._probs_memo[key] = probs
        while len(self._probs_memo) > 1 and sum(a.nbytes for a in self._probs_memo.values()) > _MEMO_BYTES:
            self._probs_memo.popitem(last=False)

    def predictors(
        self, results: dict[str, Any], with_all_base: bool = True
    ) -> dict[str, Callable[[list[np.ndarray]], np.ndarray]]:
        """Named predictors ``f(images) -> (N, H, W) probs`` on raw [0, 1] images: the base models (best seed
        each), ``avg|E3`` and the featured ensemble, each recomputing the base models' soft masks from the images
        given (so blurred inputs propagate through the whole ensemble)."""
        from spermseg.ensembling.mask_cache import images_sha256
        from spermseg.inference.forward import predict_probs
        from spermseg.models.checkpoints import load_model

        base_ids = self.best_base_ids(results)
        models: dict[str, Any] = {}

        def base_fn(arch: str) -> Callable[[list[np.ndarray]], np.ndarray]:
            def f(images: list[np.ndarray]) -> np.ndarray:
                key = (base_ids[arch], images_sha256(images))
                if key in self._probs_memo:
                    self._probs_memo.move_to_end(key)
                    return self._probs_memo[key]
                probs = predict(images)
                probs.flags.writeable = False  # shared by every caller of the memo
                self._remember(key, probs)
                return probs

            def predict(images: list[np.ndarray]) -> np.ndarray:
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
        kind, sel, run = self.featured_run(results)
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


#: Largest total size of the remembered soft masks (2 GiB: the blur sweep's 4 levels x 4 base models of 64
#: 640x512 test images in float32 take 1.3 GiB).
_MEMO_BYTES = 2 << 30


def set_main_threads(cfg: ReproduceConfig) -> None:
    """Torch threads of the main process: ``threads`` per worker x ``jobs`` workers (what the run may use), so the
    steps that run in one process (cache, scoring, figures) use every core granted; unchanged when threads=0."""
    if cfg.threads > 0:
        import torch

        torch.set_num_threads(cfg.threads * cfg.jobs)


def run_in_workers(cfg: ReproduceConfig, fn: Callable[..., Any], calls: Sequence[tuple]) -> list[Any]:
    """``fn(*args)`` for each ``args`` of ``calls`` in ``cfg.jobs`` worker processes with ``cfg.threads`` torch
    threads each (base runs, ensemble runs; results do not depend on the process); returns the results in order.
    ``fn`` must be a module-level function (it is pickled)."""
    from spermseg.utils.workers import spawn_pool

    # spawned workers that exit with this process: a killed reproduce leaves no training behind
    with spawn_pool(cfg.jobs) as pool:
        futures = [pool.submit(_with_threads, cfg.threads, fn, args) for args in calls]
        return [f.result() for f in futures]


def _with_threads(threads: int, fn: Callable[..., Any], args: tuple) -> Any:
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    return fn(*args)


def _train_worker(cfg: ReproduceConfig, out_dir: str, model: str, norm: str, seed: int) -> dict[str, Any]:
    """One base run in a worker process (see :meth:`Reproduction.train_all`)."""
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
