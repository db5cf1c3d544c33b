"""Prediction for users: images, folders, glob patterns and videos -> soft masks, binary masks, overlays, CSVs.

The work is a chain of small callables over batches of raw gray frames ``(B, H, W) float32 in [0, 1]``:
backend (PyTorch :class:`~spermseg.inference.bundle.Predictor` or ONNX Runtime) -> optional flip test-time
augmentation -> optional overlapped tiling. Videos stream in batches, so memory does not grow with length;
every output file and CSV row is written as soon as its frame is done, so an interrupted run keeps its results.

Outputs in ``OUT`` for an input ``NAME``:
    NAME_prob.png | NAME_prob.npy   soft mask (16-bit PNG 0-65535 or float32 .npy, ``soft_format``)
    NAME_mask.png                   binary mask (0/255) at the bundle's threshold or ``threshold``
    NAME_overlay.png                the image with the mask in colour (videos: NAME_overlay.mp4)
    predictions.csv                 one row per image or video frame
    sperm.csv                       one row per sperm instance (spermseg.inference.morphometry)
    NAME_instances.png|.tif         with ``instances``: one id per sperm (= sperm.csv's sperm_id)
    NAME_parts.png|.tif, NAME_rois.zip   part codes (part networks), ImageJ ROIs (``roi``); see label_outputs
Video frames go to ``OUT/NAME/frame_000000_{prob,mask}.png``.

An output folder is never shared by accident (:func:`prepare_out`):

* an ``OUT`` that is an input folder or holds any input is refused, so no output can replace an input and a
  second run never reads the first run's outputs as inputs;
* an ``OUT`` that holds an earlier run's results is refused unless ``existing="overwrite"`` (that run's outputs,
  the files its CSVs list, are removed first) or ``existing="append"`` (rows are added; an input predicted again
  replaces its earlier files and rows);
* a lock file (``OUT/.spermseg-predict.lock``, created with ``O_EXCL``) makes a concurrent second run fail.

The CSVs list exactly the files beside them: each frame's files are written atomically first, then its
``sperm.csv`` rows, then its ``predictions.csv`` row (the commit point), each row block with one ``write``
call. A run killed in between leaves at most one frame's files without a row (and hidden temporary files);
``overwrite``/``append`` remove those before they start.
"""

from __future__ import annotations

import glob
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spermseg.errors import DataError, SpermsegError
from spermseg.inference.backends import BatchFn, in_chunks, torch_backend, with_flip_tta, with_tiling
from spermseg.inference.options import PredictOptions, validate_options
from spermseg.inference.predict_outputs import (
    LOCK_NAME,
    PREDICTION_COLUMNS,
    _CsvWriter,
    _sperm_columns,
    check_out_holds_no_input,
    prepare_out,
)


@dataclass
class PredictSummary:
    """What a prediction run did."""

    n_images: int = 0
    n_frames: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    out: Path | None = None

    @property
    def frames_per_second(self) -> float:
        return (self.n_images + self.n_frames) / self.seconds if self.seconds > 0 else 0.0


# ----------------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------------


def collect_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files, folders (images and videos inside, sorted) and glob patterns into a list of files.

    Raises:
        DataError: an input that does not exist, or nothing to predict at all.
    """
    from spermseg.data.io import is_image_file
    from spermseg.inference.video import is_video

    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and (is_image_file(p) or is_video(p)))
            if not found:
                raise DataError(f"folder {path} holds no image (PNG/TIFF/JPEG/BMP) or video (MP4/AVI) files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif any(ch in str(item) for ch in "*?["):
            matched = sorted(Path(p) for p in glob.glob(str(item), recursive=True) if Path(p).is_file())
            if not matched:
                raise DataError(f"pattern '{item}' matches no file")
            files.extend(matched)
        else:
            raise DataError(f"input not found: {path}")
    if not files:
        raise DataError("nothing to predict: give image files, folders, glob patterns or videos")
    return list(dict.fromkeys(files))


def build_batch_fn(model: str | Path, options: PredictOptions) -> tuple[BatchFn, float]:
    """The prediction callable for ``model`` (bundle dir, run dir, checkpoint, ``.onnx`` or ``builtin``) and its
    threshold."""
    from spermseg.inference.bundle import is_builtin
    from spermseg.inference.postprocess import with_whole_sperm

    if is_builtin(model) and options.backend == "onnx":
        raise SpermsegError(
            "the built-in model is a PyTorch bundle; for ONNX Runtime export it first (spermseg export --model "
            "builtin --out builtin.onnx) and pass --model builtin.onnx"
        )
    if options.backend == "onnx" or str(model).endswith(".onnx"):
        from spermseg.inference.onnx import onnx_backend, onnx_min_head_radius, onnx_threshold

        fn = onnx_backend(model, "cuda" if options.device.startswith("cuda") else "cpu")
        threshold, radius = onnx_threshold(model), onnx_min_head_radius(model)
    else:
        from spermseg.inference.bundle import load_predictor

        predictor = load_predictor(model)
        fn = torch_backend(predictor, options.device, precision=options.precision)
        threshold, radius = predictor.threshold, predictor.min_head_radius
    if options.tta:
        fn = with_flip_tta(fn)
    fn = with_tiling(fn, options.tile, options.tile_overlap, options.batch_size) if options.tile else fn
    if options.threshold is not None:
        threshold = float(options.threshold)
    if options.min_head_radius is not None:
        radius = float(options.min_head_radius)
    # on whole images (after tiling): a piece's thickness is a property of the whole piece
    fn = with_whole_sperm(fn, threshold, radius)
    return in_chunks(fn, options.batch_size), threshold


# ----------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------


def overlay_rgb(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 60, 0)) -> np.ndarray:
    """The gray image (H, W) in [0, 1] as RGB uint8 with the mask blended in ``color`` (alpha 0.45) and outlined."""
    import cv2

    gray = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    m = mask.astype(bool)
    rgb[m] = 0.55 * rgb[m] + 0.45 * np.asarray(color, np.float32)
    edge = m & ~cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    rgb[edge] = color
    return rgb.astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------


def _frames_of(path: Path, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    from spermseg.data.io import read_image
    from spermseg.inference.video import is_video, iter_video_batches

    if is_video(path):
        yield from iter_video_batches(path, batch_size)
    else:
        yield 0, read_image(path)[None]


class _Outputs:
    """Writes one frame's files and CSV rows as soon as the frame is done (files first, the row last)."""

    def __init__(self, out: Path, options: PredictOptions, threshold: float) -> None:
        self.out, self.options, self.threshold = out, options, threshold
        self.rows = _CsvWriter(out / "predictions.csv", PREDICTION_COLUMNS)
        self.sperm = _CsvWriter(out / "sperm.csv", _sperm_columns())
        self.soft_suffix = ".png" if options.soft_format == "png16" else ".npy"

    def write_frame(
        self, source: Path, stem: Path, index: int, image: np.ndarray, prob: np.ndarray, video: Any
    ) -> None:
        """Write soft mask, binary mask, overlay (PNG, or a frame of ``video``), measurements and the CSV row."""
        import cv2

        from spermseg.data.io import write_mask, write_soft_mask
        from spermseg.inference.label_outputs import split_parts_prob, write_label_outputs
        from spermseg.inference.morphometry import measure_instances, measure_sperm
        from spermseg.utils.atomic import atomic_path

        parts = None
        if prob.ndim == 3:  # a part network
            parts, prob = split_parts_prob(prob)
        soft_path = stem.with_name(stem.name + "_prob" + self.soft_suffix)
        mask_path = stem.with_name(stem.name + "_mask.png")
        write_soft_mask(soft_path, prob, fmt=self.options.soft_format)
        mask = prob >= self.threshold if parts is None else parts > 0  # part networks: the arg-max code
        write_mask(mask_path, mask)
        overlay = ""
        if self.options.overlay:
            rgb = overlay_rgb(image, mask)
            if video is not None:
                video.write(rgb)
                overlay = video.path.relative_to(self.out).as_posix()
            else:
                target = stem.with_name(stem.name + "_overlay.png")
                with atomic_path(target) as tmp:
                    cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                overlay = target.relative_to(self.out).as_posix()
        opt = self.options
        labels = write_label_outputs(
            stem, mask, parts, instances=opt.instances, roi=opt.roi, label_format=opt.label_format,
            method=opt.instance_method,
        ).labels  # fmt: skip
        if labels is not None:
            instances = measure_sperm(labels, parts, opt.pixel_size)
        else:
            instances = measure_instances(mask, opt.pixel_size, min_area=opt.min_area)
        self.sperm.write(*({"input": str(source), "frame": index, **m.as_dict()} for m in instances))
        self.rows.write(  # the commit point of this frame
            {
                "input": str(source),
                "frame": index,
                "height": prob.shape[0],
                "width": prob.shape[1],
                "threshold": round(self.threshold, 6),
                "foreground_px": int(mask.sum()),
                "mean_prob": round(float(prob.mean()), 6),
                "n_sperm": len(instances),
                "soft_mask": soft_path.relative_to(self.out).as_posix(),
                "binary_mask": mask_path.relative_to(self.out).as_posix(),
                "overlay": overlay,
            }
        )

    def close(self) -> None:
        self.rows.close()
        self.sperm.close()


def predict_inputs(
    model: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    options: PredictOptions | None = None,
    *,
    progress_bar: bool | None = None,
) -> PredictSummary:
    """Segment every input and write the outputs described in the module docstring.

    Args:
        model: a bundle directory, a run directory, a checkpoint, an exported ``.onnx`` file, or ``"builtin"``.
        inputs: image files, folders, glob patterns or videos.
        out: output directory (created); see :func:`prepare_out` for a folder that holds results.
        options: see :class:`PredictOptions`.
        progress_bar: False to disable progress (default: a bar on a terminal, a line per 10 % of files otherwise).

    Returns:
        A :class:`PredictSummary`. A file that cannot be read (corrupt, unsupported) is listed in
        ``summary.failed`` and skipped; the others are processed.

    Raises:
        SpermsegError: bad options, missing inputs, a model that cannot be loaded, or an ``out`` the rule refuses.
    """
    from spermseg.inference.video import VideoWriter, is_video, video_info
    from spermseg.utils.lock import exclusive_lock
    from spermseg.utils.progress import progress

    options = options or PredictOptions()
    validate_options(options)
    files = collect_inputs(inputs)
    out = Path(out)
    check_out_holds_no_input(inputs, files, out)
    fn, threshold = build_batch_fn(model, options)  # a model that cannot be loaded fails before OUT is touched
    out.mkdir(parents=True, exist_ok=True)
    summary = PredictSummary(out=out)
    with exclusive_lock(out / LOCK_NAME, f"spermseg predict into {out}"):
        names = prepare_out(out, inputs, files, options)
        outputs = _Outputs(out, options, threshold)
        start = time.perf_counter()
        bar = progress(
            total=len(files), desc="predict", unit="file", disable=None if progress_bar is None else not progress_bar
        )
        try:
            for path, name in zip(files, names):
                writer = None
                try:
                    if is_video(path):
                        info = video_info(path)
                        (out / name).mkdir(exist_ok=True)
                        if options.overlay:
                            writer = VideoWriter(out / f"{name}_overlay.mp4", info.fps, (info.height, info.width))
                    for first, frames in _frames_of(path, options.batch_size):
                        for j, (image, prob) in enumerate(zip(frames, fn(frames))):
                            stem = out / name / f"frame_{first + j:06d}" if is_video(path) else out / name
                            outputs.write_frame(path, stem, first + j, image, prob, writer)
                            if is_video(path):
                                summary.n_frames += 1
                            else:
                                summary.n_images += 1
                        done = summary.n_images + summary.n_frames
                        bar.set_postfix(frames_per_s=f"{done / (time.perf_counter() - start):.1f}")
                except SpermsegError as exc:
                    summary.failed.append((str(path), str(exc)))
                finally:
                    if writer is not None:
                        writer.close()
                bar.update(1)
        finally:
            bar.close()
            outputs.close()
            summary.seconds = time.perf_counter() - start
    return summary
