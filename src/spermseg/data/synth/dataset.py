"""Write a synthetic dataset in the SegSperm layout, with noise-free truth, three raters and optional videos.

Output (``OUT``)::

    OUT/{train,test,test_small}/images/{video}_{frame}_{n}.png     8-bit gray frames
    OUT/{train,test}/GT1_{full,head,tail}/NAME.png                  rater GT1 (0/255)
    OUT/test_small/GT{1,2,3}_{full,head,tail}/NAME.png              three raters
    OUT/truth/SPLIT/{full,head,tail}/NAME.png                       exact masks
    OUT/truth/SPLIT/{instances,parts}/NAME.png                      exact per-sperm ids (16-bit), part codes
    OUT/videos/{video}/frames/{frame}.png, truth/{part}/{frame}.png and {video}.mp4 (with ``n_videos``)
    OUT/videos/{video}/truth/instances/{frame}.png, truth/tracks.csv, truth/kinematics.csv (tracking truth,
        :mod:`spermseg.data.synth.truth`)
    OUT/synth.json                                                  every parameter, written last

``test_small`` is the first ``n_test_small`` images of the test videos (a subset of ``test``, as in SegSperm, so
``n_test_small <= n_test`` is required), and its GT1 equals test's GT1. Train and test never share a video.

Reproducibility: each video, frame and rater draws from its own generator ``default_rng([seed, video, ...])``, so
the output is byte-identical for the same seed and independent of the order of generation.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spermseg.data.layouts import PARTS  # defined once, in the data layer
from spermseg.data.synth.config import MODES, SynthConfig
from spermseg.data.synth.raters import rate_frame
from spermseg.data.synth.render import Frame, render_frame
from spermseg.data.synth.scene import Scene, sample_scene
from spermseg.errors import ConfigError, DataError

#: Generator streams (the third seed word) of one video: scene, frame choice, noise, raters.
STREAM_SCENE, STREAM_FRAMES, STREAM_NOISE, STREAM_RATER = 0, 1, 2, 3
SPLITS = ("train", "test", "test_small")
MANIFEST = "synth.json"


@dataclass
class Item:
    """One dataset image: which video and frame it shows and where it goes."""

    split: str
    video: int
    frame: int
    name: str
    n_raters: int


def scene_for(cfg: SynthConfig, seed: int, video: int) -> Scene:
    """The scene of video ``video`` (its own generator)."""
    return sample_scene(cfg, np.random.default_rng([seed, video, STREAM_SCENE]))


def video_frames(cfg: SynthConfig, seed: int, video: int, count: int) -> list[int]:
    """``count`` distinct frame indices of a video, sorted (its own generator, so any count is consistent)."""
    rng = np.random.default_rng([seed, video, STREAM_FRAMES])
    order = rng.permutation(max(cfg.video_length, count))
    return sorted(int(f) for f in order[:count])


def render_item(cfg: SynthConfig, scene: Scene, seed: int, video: int, frame: int) -> Frame:
    """Render frame ``frame`` of a video (time ``frame / fps``) with that frame's noise generator."""
    rng = np.random.default_rng([seed, video, STREAM_NOISE, frame])
    return render_frame(scene, frame / cfg.fps, rng, min_mask_width=cfg.min_mask_width_px)


def rater_masks(
    cfg: SynthConfig, frame: Frame, seed: int, video: int, frame_index: int, n_raters: int
) -> list[dict[str, np.ndarray]]:
    """Masks of raters GT1..GT``n_raters`` for one frame (each rater its own generator)."""
    raters = cfg.raters.as_list()
    return [
        rate_frame(frame, raters[r], np.random.default_rng([seed, video, STREAM_RATER, frame_index, r]))
        for r in range(n_raters)
    ]


def plan(
    cfg: SynthConfig, n_train: int, n_test: int, n_test_small: int, seed: int, *, n_videos: int = 0
) -> tuple[list[Item], dict[str, dict[str, Any]], list[int], int]:
    """Assign videos and frames to every image.

    Returns:
        The items in generation order (grouped by video), a summary ``{split: {"videos": [...], "images": [...]}}``,
        the ids of the extra videos (``n_videos`` of them, used by no split) and the digits of video ids in names.
    """
    ipv = int(cfg.images_per_video)
    n_test_pool = max(n_test, n_test_small)
    n_train_videos = math.ceil(n_train / ipv) if n_train else 0
    n_test_videos = math.ceil(n_test_pool / ipv) if n_test_pool else 0
    extra = list(range(1 + n_train_videos + n_test_videos, 1 + n_train_videos + n_test_videos + n_videos))
    width = max(2, len(str(n_train_videos + n_test_videos + n_videos)))
    items: list[Item] = []
    summary: dict[str, dict[str, Any]] = {s: {"videos": [], "images": []} for s in SPLITS}
    for k in range(n_train):
        video = 1 + k // ipv
        frames = video_frames(cfg, seed, video, min(ipv, n_train - (video - 1) * ipv))
        frame = frames[k % ipv]
        items.append(Item("train", video, frame, f"{video:0{width}d}_{frame:04d}_{k + 1}.png", 1))
    for k in range(n_test_pool):
        video = 1 + n_train_videos + k // ipv
        frames = video_frames(cfg, seed, video, min(ipv, n_test_pool - (k // ipv) * ipv))
        frame = frames[k % ipv]
        name = f"{video:0{width}d}_{frame:04d}_{k + 1}.png"
        if k < n_test:
            items.append(Item("test", video, frame, name, 1))
        if k < n_test_small:
            items.append(Item("test_small", video, frame, name, 3))
    for it in items:
        if it.video not in summary[it.split]["videos"]:
            summary[it.split]["videos"].append(it.video)
        summary[it.split]["images"].append(it.name)
    return items, summary, extra, width


def generate_dataset(
    out_dir: str | Path,
    cfg: SynthConfig,
    *,
    n_train: int,
    n_test: int,
    n_test_small: int,
    seed: int = 0,
    n_videos: int = 0,
    n_frames: int = 0,
    mp4: bool = True,
    overwrite: bool = False,
    workers: int = 1,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Generate a synthetic dataset (see the module docstring for the layout).

    Args:
        out_dir: output folder; it must be empty or absent, unless ``overwrite`` and it holds a previous
            synthetic dataset (a ``synth.json``), which is then replaced.
        cfg: generator parameters.
        n_train, n_test, n_test_small: images per split.
        seed: non-negative seed.
        n_videos, n_frames: also write this many videos of consecutive frames (videos not used by any split).
        mp4: also encode each video as MP4 when an encoder (imageio-ffmpeg) is available.
        overwrite: replace a previous synthetic dataset in ``out_dir``.
        workers: processes, one video at a time each; the files do not depend on it.
        show_progress: progress bar on a terminal.

    Returns:
        The manifest that is also written to ``OUT/synth.json``.
    """
    from spermseg._version import __version__
    from spermseg.config import config_to_dict
    from spermseg.utils.atomic import atomic_write_json
    from spermseg.utils.progress import progress

    _validate(cfg, n_train, n_test, n_test_small, seed, n_videos, n_frames)
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    out = Path(out_dir)
    _prepare_out(out, overwrite)
    items, summary, extra, width = plan(cfg, n_train, n_test, n_test_small, seed, n_videos=n_videos)
    by_video: dict[int, list[Item]] = {}
    for it in items:
        by_video.setdefault(it.video, []).append(it)
    # (function, arguments, progress units) per video; every task is independent and seeded by its own ids
    tasks: list[tuple[Any, tuple, int]] = [
        (_write_items, (out, cfg, seed, v, its), len(its)) for v, its in by_video.items()
    ] + [(_write_video, (out, cfg, seed, v, n_frames, mp4, width), n_frames) for v in extra]
    bar = progress(total=sum(t[2] for t in tasks), desc="synth", unit="img", disable=None if show_progress else True)
    results: dict[int, Any] = {}
    if workers == 1 or len(tasks) <= 1:
        for k, (fn, args, units) in enumerate(tasks):
            results[k] = fn(*args)
            bar.update(units)
    else:
        from concurrent.futures import as_completed

        from spermseg.utils.workers import spawn_pool

        with spawn_pool(min(workers, len(tasks))) as pool:
            futures = {pool.submit(fn, *args): (k, units) for k, (fn, args, units) in enumerate(tasks)}
            for fut in as_completed(futures):
                k, units = futures[fut]
                results[k] = fut.result()
                bar.update(units)
    bar.close()
    videos = [results[k] for k in range(len(by_video), len(tasks))]
    # the imaging conditions of every dataset video (pixel size and contrast mode are drawn per video)
    conditions = {f"{v:0{width}d}": results[k] for k, v in enumerate(by_video)}

    manifest = {
        "generator": "spermseg.data.synth",
        "version": __version__,
        "seed": seed,
        "counts": {
            "train": n_train,
            "test": n_test,
            "test_small": n_test_small,
            "videos": n_videos,
            "frames": n_frames,
        },
        "raters": {"train": ["GT1"], "test": ["GT1"], "test_small": ["GT1", "GT2", "GT3"]},
        "splits": summary,
        "videos": videos,
        "conditions": conditions,
        "config": config_to_dict(cfg),
    }
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def _write_items(out: Path, cfg: SynthConfig, seed: int, video: int, items: list[Item]) -> dict[str, Any]:
    """Render, rate and write the dataset images of one video; returns its imaging conditions."""
    from spermseg.data.io import write_image, write_mask

    scene = scene_for(cfg, seed, video)
    cache: dict[int, tuple[Frame, list[dict[str, np.ndarray]]]] = {}
    for it in items:
        if it.frame in cache and len(cache[it.frame][1]) >= it.n_raters:
            frame, raters = cache[it.frame]
        else:
            # test and test_small share frames: render once, rate with as many raters as needed
            frame = cache[it.frame][0] if it.frame in cache else render_item(cfg, scene, seed, video, it.frame)
            raters = rater_masks(cfg, frame, seed, video, it.frame, it.n_raters)
            cache[it.frame] = (frame, raters)
        split_dir = out / it.split
        write_image(split_dir / "images" / it.name, frame.image)
        for r in range(it.n_raters):
            for part in PARTS:
                write_mask(split_dir / f"GT{r + 1}_{part}" / it.name, raters[r][part])
        for part in PARTS:
            write_mask(out / "truth" / it.split / part / it.name, frame.truth[part])
        _write_label_truth(out / "truth" / it.split, it.name, frame)
    return {"pixel_size_um": round(scene.pixel_size_um, 6), "mode": scene.mode}


def _write_label_truth(folder: Path, name: str, frame: Frame) -> None:
    """The exact instance ids and part codes of a frame (spermseg.data.labels format)."""
    from spermseg.data.labels import relabel_sequential, write_labels

    write_labels(folder / "instances" / name, relabel_sequential(frame.truth["instances"]))
    write_labels(folder / "parts" / name, frame.truth["parts"], "parts")


def _write_video(
    out: Path, cfg: SynthConfig, seed: int, video: int, n_frames: int, mp4: bool, width: int
) -> dict[str, Any]:
    """Consecutive frames of one video, their truth, and an MP4 when possible."""
    import spermseg.data.synth.truth as T
    from spermseg.data.io import write_image, write_mask
    from spermseg.kinematics import KINEMATICS_COLUMNS
    from spermseg.utils.table import write_rows_csv

    scene = scene_for(cfg, seed, video)
    vid = f"{video:0{width}d}"
    vdir = out / "videos" / vid
    images = []
    heads: list[dict[str, float | int]] = []
    for f in range(n_frames):
        frame = render_item(cfg, scene, seed, video, f)
        name = f"{f:04d}.png"
        write_image(vdir / "frames" / name, frame.image)
        for part in PARTS:
            write_mask(vdir / "truth" / part / name, frame.truth[part])
        T.write_labels_png(vdir / "truth" / "instances" / name, T.instance_labels(frame))
        heads += T.head_rows(frame, f)
        images.append(frame.image)
    # tracking truth (spermseg.data.synth.truth): exact head positions and the kinematics of the exact path
    write_rows_csv(vdir / "truth" / "tracks.csv", T.TRUTH_TRACK_COLUMNS, heads)
    kin = T.truth_kinematics(scene, heads, cfg.fps, scene.pixel_size_um)
    write_rows_csv(vdir / "truth" / "kinematics.csv", KINEMATICS_COLUMNS, kin)
    movie = None
    if mp4 and images:
        movie = write_mp4(vdir / f"{vid}.mp4", images, cfg.fps)
    return {
        "video": video,
        "id": vid,
        "frames": n_frames,
        "fps": cfg.fps,
        "pixel_size_um": scene.pixel_size_um,
        "mode": scene.mode,
        "mp4": str(movie.relative_to(out)) if movie is not None else None,
    }


def write_mp4(path: Path, frames: list[np.ndarray], fps: float) -> Path | None:
    """Encode gray uint8 frames as H.264 MP4 with imageio-ffmpeg; returns None when no encoder is available.

    Encoding is single-threaded with bit-exact flags and no metadata, so the same frames give the same file.
    """
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    from spermseg.utils.atomic import atomic_path

    h, w = frames[0].shape
    with atomic_path(path) as tmp:
        try:
            writer = imageio_ffmpeg.write_frames(
                str(tmp),
                (w, h),
                pix_fmt_in="gray",
                pix_fmt_out="yuv420p",
                fps=fps,
                codec="libx264",
                macro_block_size=2,
                quality=None,
                bitrate=None,
                output_params=[
                    "-crf",
                    "18",
                    "-threads",
                    "1",
                    "-fflags",
                    "+bitexact",
                    "-flags",
                    "+bitexact",
                    "-map_metadata",
                    "-1",
                ],
                ffmpeg_log_level="error",
            )
            writer.send(None)
            for img in frames:
                writer.send(np.ascontiguousarray(img))
            writer.close()
        except (RuntimeError, OSError):
            return None
    return path


def _validate(
    cfg: SynthConfig, n_train: int, n_test: int, n_test_small: int, seed: int, n_videos: int, n_frames: int
) -> None:
    for name, v in (
        ("--train", n_train),
        ("--test", n_test),
        ("--test-small", n_test_small),
        ("--videos", n_videos),
        ("--frames", n_frames),
    ):
        if v < 0:
            raise ConfigError(f"{name} must be >= 0, got {v}")
    if n_test_small > n_test:
        # test_small is a subset of test in SegSperm (its GT1 equals test's): more images than test cannot be one
        raise ConfigError(
            f"--test-small ({n_test_small}) must not exceed --test ({n_test}): test_small is a subset of test"
        )
    if n_videos and n_frames < 1:
        raise ConfigError("--videos needs --frames >= 1 (frames per video)")
    if seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {seed}")
    if cfg.height < 16 or cfg.width < 16:
        raise ConfigError(f"image size must be at least 16x16, got {cfg.height}x{cfg.width}")
    if cfg.pixel_size_um is not None and cfg.pixel_size_um <= 0:
        raise ConfigError(f"pixel_size_um must be > 0 (or null: drawn per video), got {cfg.pixel_size_um}")
    for look in MODES:
        lo, hi = getattr(cfg.appearance, look).pixel_size_um
        if not 0 < lo <= hi:
            raise ConfigError(f"appearance.{look}.pixel_size_um must be 0 < low <= high, got {[lo, hi]}")
    mode, modes = cfg.appearance.mode, ("mix", *MODES)
    if mode not in modes:
        raise ConfigError(f"unknown appearance.mode '{mode}'; choose one of {', '.join(modes)}")
    weights = cfg.appearance.mix_weights
    if len(weights) != len(MODES) or min(weights) < 0 or sum(weights) <= 0:
        raise ConfigError(f"appearance.mix_weights needs {len(MODES)} weights >= 0 ({', '.join(MODES)}), got {weights}")
    if cfg.images_per_video < 1 or cfg.video_length < cfg.images_per_video:
        raise ConfigError(
            f"images_per_video must be >= 1 and <= video_length (got {cfg.images_per_video} and {cfg.video_length})"
        )
    if cfg.fps <= 0:
        raise ConfigError(f"fps must be > 0, got {cfg.fps}")


def _prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse to mix with existing files; with ``overwrite`` remove a previous synthetic dataset."""
    if out.exists() and not out.is_dir():
        raise DataError(f"output {out} exists and is not a folder; choose another OUT")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DataError(f"output folder {out} is not empty; choose another OUT or pass --overwrite")
        if not (out / MANIFEST).is_file():
            raise DataError(
                f"output folder {out} is not empty and holds no {MANIFEST}, so it is not a previous "
                "synthetic dataset; refusing to overwrite it, choose another OUT"
            )
        (out / MANIFEST).unlink()
        for sub in (*SPLITS, "truth", "videos"):
            if (out / sub).exists():
                shutil.rmtree(out / sub)
    out.mkdir(parents=True, exist_ok=True)
