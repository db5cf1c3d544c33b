"""Inference for users: memory of video prediction vs length, frames/s of the E3 + ens_att_v2 pipeline, and a
distilled student beside its teacher.

Cases:
* peak RSS of ``spermseg predict`` (fresh process each) on a synthetic 512x512 video of 200 and of 2,000 frames
  (quick: 20 and 200), with a small model (unet width 4): streaming must keep the 2,000-frame peak within 20 % of
  the 200-frame one (memory is set by the batch, not by the video length);
* frames/s at 512x512 of a bundle of three base models (att_unet, unet3p, unet: the paper's E3) and
  ens_att_v2: PyTorch eager fp32, PyTorch channels_last, ONNX Runtime. Width: ``SPERMSEG_BENCH_WIDTH``
  (default 16; ``0`` = the families' default widths, about 1.4 TMACs per frame, minutes per frame on a small CPU;
  quick: 8);
* student vs teacher: frames/s at 512x512 (batch 2, the whole ``predict`` pipeline without file writing: backend
  and whole-sperm filter) of the teacher bundle in PyTorch, the student in PyTorch (fp32, eager), in ONNX Runtime
  fp32 and in ONNX Runtime int8 (static, calibrated), side by side with ratios to the teacher; with ``--data`` also
  AP (and IoU_opt) on the ``test`` split (rater GT1, full sperm) for each. ``--teacher BUNDLE --student RUN``
  name trained models; without them untrained stand-ins (E3 + ens_att_v2 and a unet, small widths) make a smoke
  run. Calibration frames: ``--calibration DIR``, else the first 32 of ``--data``'s train split, else random frames.

Usage::

    python benchmarks/bench_predict.py --quick                              # all sections, untrained stand-ins
    python benchmarks/bench_predict.py --only student --teacher bundles/e3 --student runs/student \
        --data ../shared/data/spermparsing                                   # the real rows (minutes)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Measurement, Table, bench_main, measure  # noqa: E402


def _make_video(path: Path, frames: int, size: int = 512) -> None:
    import numpy as np

    from spermseg.inference.video import VideoWriter

    rng = np.random.default_rng(0)
    base = rng.normal(110, 10, (size, size)).clip(0, 255).astype(np.uint8)
    with VideoWriter(path, fps=25, size=(size, size)) as writer:
        for i in range(frames):
            frame = np.roll(base, i, axis=1)
            writer.write(np.repeat(frame[..., None], 3, axis=2))


def _save_runs(root: Path, width: int | None, ens_width: int | None) -> tuple[list[Path], Path]:
    import torch

    from spermseg.models import create_ensemble, create_model
    from spermseg.models.checkpoints import save_checkpoint

    torch.manual_seed(0)
    bases = []
    for name in ("att_unet", "unet3p", "unet"):
        kwargs = {} if width is None else {"width": width}
        bases.append(save_checkpoint(root / name / "best", create_model(name, **kwargs), {"normalization": "minmax"}))
    kwargs = {} if ens_width is None else {"width": ens_width}
    ens = save_checkpoint(
        root / "ens" / "best", create_ensemble("ens_att_v2", 3, **kwargs), {"normalization": "minmax"}
    )
    return [b.parent for b in bases], ens.parent


def _peak_rss_of_predict(model: Path, video: Path, out: Path) -> float:
    """Run predict in a fresh process; return its peak RSS in MB (ru_maxrss of the child)."""
    code = (
        "import resource, sys; from spermseg.cli import main; "
        f"rc = main(['predict', {str(video)!r}, '--model', {str(model)!r}, '--out', {str(out)!r}, "
        "'--batch-size', '4', '--device', 'cpu']); "
        "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024); sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(next(line for line in done.stdout.splitlines() if line.startswith("PEAK")).split()[1])


def _memory(quick: bool, tmp: Path) -> str:
    from spermseg.inference.bundle import create_bundle

    bases, _ = _save_runs(tmp / "small", width=4, ens_width=4)
    bundle = create_bundle(bases[2:], tmp / "unet_bundle")
    short, long = (20, 200) if quick else (200, 2000)
    t = Table("Peak memory of video prediction (unet width 4, 512x512, batch 4, all outputs written)")
    rows = []
    for n in (short, long):
        video = tmp / f"v{n}.mp4"
        _make_video(video, n)
        t0 = time.perf_counter()
        peak = _peak_rss_of_predict(bundle, video, tmp / f"pred{n}")
        seconds = time.perf_counter() - t0
        m = Measurement(name=f"{n} frames", times=[seconds], rss_peak_mb=peak, items=n)
        t.add(m)
        rows.append(peak)
    ratio = rows[1] / rows[0]
    verdict = "within" if ratio <= 1.2 else "NOT within"
    return t.markdown() + f"\n\nPeak RSS ratio {long}/{short} frames: **{ratio:.3f}** ({verdict} the 1.20 target).\n"


def _throughput(quick: bool, tmp: Path) -> str:
    import numpy as np

    from spermseg.inference.backends import torch_backend
    from spermseg.inference.bundle import create_bundle, load_predictor
    from spermseg.inference.onnx import export_onnx, onnx_backend

    chosen = 8 if quick else int(os.environ.get("SPERMSEG_BENCH_WIDTH", "16"))
    width = ens_width = chosen or None
    bases, ens = _save_runs(tmp / "e3", width=width, ens_width=ens_width)
    bundle = create_bundle(bases, tmp / "e3_bundle", ensemble=ens)
    frames = np.random.default_rng(0).random((2, 512, 512), dtype=np.float32)
    repeat = 2 if quick else 3
    label = f"width {chosen}" + (" (quick)" if quick else "") if chosen else "default widths"
    t = Table(f"E3 + ens_att_v2 at 512x512, batch 2, {label}", ratio_to="torch eager fp32", unit="frame")
    eager = torch_backend(load_predictor(bundle), "cpu", channels_last=False)
    t.add(measure(lambda: eager(frames), name="torch eager fp32", repeat=repeat, items=2, trace_memory=False))
    cl = torch_backend(load_predictor(bundle), "cpu", channels_last=True)
    t.add(measure(lambda: cl(frames), name="torch channels_last", repeat=repeat, items=2, trace_memory=False))
    onnx_path = export_onnx(bundle, tmp / "e3.onnx")
    ort = onnx_backend(onnx_path)
    t.add(measure(lambda: ort(frames), name="onnxruntime", repeat=repeat, items=2, trace_memory=False))
    return t.markdown()


SECTIONS = ("memory", "throughput", "student")


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--only", action="append", choices=SECTIONS, default=None, help="sections to run (repeat)")
    parser.add_argument("--teacher", type=Path, default=None, help="teacher bundle (default: untrained E3 + ens)")
    parser.add_argument(
        "--student",
        type=Path,
        nargs="*",
        default=None,
        help="student runs or bundles, rows each (default: an untrained unet)",
    )
    parser.add_argument("--data", type=Path, default=None, help="dataset with a test split: AP per row")
    parser.add_argument("--calibration", type=Path, default=None, help="int8 calibration images (folder)")
    parser.add_argument("--ap-images", type=int, default=0, help="score only the first N test images (0: all)")
    parser.add_argument("--cpu-time", action="store_true", help="student table: CPU seconds, not wall (busy machine)")
    parser.add_argument("--bases", type=Path, nargs="*", default=[], help="the teacher's base runs: a row each")
    return parser.parse_known_args(argv)


def _stand_ins(quick: bool, tmp: Path) -> tuple[Path, Path]:
    """Untrained teacher (E3 + ens_att_v2) and student (unet) bundles, for a smoke run."""
    import torch

    from spermseg.inference.bundle import create_bundle
    from spermseg.models import create_model
    from spermseg.models.checkpoints import save_checkpoint

    bases, ens = _save_runs(tmp / "teacher_runs", width=4 if quick else 8, ens_width=4 if quick else 8)
    teacher = create_bundle(bases, tmp / "teacher", ensemble=ens)
    torch.manual_seed(1)
    stem = save_checkpoint(tmp / "student_run" / "best", create_model("unet", width=4 if quick else 8),
                           {"normalization": "minmax"})  # fmt: skip
    return teacher, create_bundle([stem], tmp / "student")


def _calibration(opts: argparse.Namespace) -> list:
    import numpy as np

    from spermseg.data.io import read_image
    from spermseg.inference.predict import collect_inputs

    if opts.calibration is not None:
        return [read_image(f) for f in collect_inputs([opts.calibration])[:32]]
    if opts.data is not None:
        return [read_image(f) for f in sorted((opts.data / "train" / "images").iterdir())[:32]]
    return list(np.random.default_rng(1).random((8, 512, 512), dtype=np.float32))


def _scores(fn, data: Path, n: int) -> tuple[float, float]:
    """AP and IoU_opt (full sperm, rater GT1) of a batch callable on the test split."""
    from spermseg.data.arrays import load_split
    from spermseg.metrics import full_scores, score

    test = load_split(data, "test", raters=["GT1"], parts=("full",), lazy=True)
    refs = test.masks("GT1", "full")
    count = len(test) if n <= 0 else min(n, len(test))
    probs = [fn(test.images[i][None])[0] for i in range(count)]
    s = full_scores(score(probs, [refs[i] for i in range(count)]), ("ap", "iou_opt"))
    return s["ap"], s["iou_opt"]


def _run_name(run: Path) -> str:
    """A base run's model and seed (its result.json), else its folder name."""
    import json

    f = Path(run) / "result.json"
    if not f.is_file():
        return Path(run).name
    r = json.loads(f.read_text())
    return f"`{r.get('model', Path(run).name)}` s{r.get('seed', '?')}"


def _width(run: Path) -> int | None:
    """A run's model width (its config.yaml), else None."""
    import yaml

    f = Path(run) / "config.yaml"
    if not f.is_file():
        return None
    return (yaml.safe_load(f.read_text()).get("model") or {}).get("width")


def _onnx_fn(path: Path, optimization: str):
    """predict's ONNX pipeline (backend + whole-sperm filter) at a given ONNX Runtime optimization level."""
    from spermseg.inference.onnx import onnx_backend, onnx_min_head_radius, onnx_threshold
    from spermseg.inference.postprocess import with_whole_sperm

    return with_whole_sperm(onnx_backend(path, "cpu", optimization), onnx_threshold(path), onnx_min_head_radius(path))


def _student(quick: bool, tmp: Path, opts: argparse.Namespace) -> str:
    import numpy as np

    from spermseg.inference.onnx import export_onnx
    from spermseg.inference.options import PredictOptions
    from spermseg.inference.predict import build_batch_fn
    from spermseg.inference.quantize import quantize_onnx

    teacher, students = opts.teacher, list(opts.student or [])
    if teacher is None or not students:
        made_teacher, made_student = _stand_ins(quick, tmp)
        teacher, students = teacher or made_teacher, students or [made_student]
    calibration = _calibration(opts)
    cpu = PredictOptions(device="cpu", precision="fp32", batch_size=2)
    rows = [
        ("teacher pipeline (torch fp32)", teacher, cpu),
        *((f"base {_run_name(b)} (torch fp32)", b, cpu) for b in opts.bases),
    ]
    for k, student in enumerate(students):
        onnx = export_onnx(student, tmp / f"student{k}.onnx")
        int8 = quantize_onnx(onnx, tmp / f"student{k}.int8.onnx", calibration)
        who = f"student {_run_name(student)}" + (f" w{_width(student)}" if _width(student) else "")
        # ONNX Runtime at both graph optimization levels (onnx_session's "auto" picks one by the narrowest conv)
        rows += [
            (f"{who} torch eager fp32", student, cpu),
            (f"{who} onnxruntime fp32, NCHWc layout (all)", onnx, "all"),
            (f"{who} onnxruntime fp32, no NCHWc (extended)", onnx, "extended"),
            (f"{who} onnxruntime int8, NCHWc layout (all)", int8, "all"),
            (f"{who} onnxruntime int8, no NCHWc (extended)", int8, "extended"),
        ]
    frames = np.random.default_rng(0).random((2, 512, 512), dtype=np.float32)
    repeat = 2 if quick else 5
    clock = time.process_time if opts.cpu_time else time.perf_counter
    what_time = ", CPU time (all threads)" if opts.cpu_time else ""
    t = Table(f"Student vs teacher at 512x512, batch 2{what_time}{' (quick)' if quick else ''}", unit="frame")
    teacher_ap = None
    for name, model, options in rows:
        fn = _onnx_fn(model, options) if isinstance(options, str) else build_batch_fn(model, options)[0]
        m = t.add(measure(lambda fn=fn: fn(frames), name=name, repeat=repeat, items=2, trace_memory=False,
                          clock=clock))  # fmt: skip
        m.extra["speed vs teacher"] = f"{t.rows[0].median / m.median:.2f}x"
        if opts.data is not None:
            ap, iou = _scores(fn, opts.data, opts.ap_images)
            teacher_ap = ap if teacher_ap is None else teacher_ap
            m.extra.update({"AP test": f"{ap:.4f}", "AP - teacher": f"{ap - teacher_ap:+.4f}", "IoU_opt": f"{iou:.4f}"})
    named = "students " + ", ".join(f"`{s}`" for s in opts.student) if opts.student else "untrained student (unet)"
    what = (f"teacher `{opts.teacher}`" if opts.teacher else "untrained teacher (E3 + ens_att_v2)") + ", " + named
    where = (f"; AP on `{opts.data}` test" + (f" (first {opts.ap_images} images)" if opts.ap_images > 0 else "")
             if opts.data is not None else "; no --data: no AP")  # fmt: skip
    return t.markdown() + f"\n\n{what}; int8 calibrated on {len(calibration)} frames{where}.\n"


def run(quick: bool, opts: argparse.Namespace | None = None) -> str:
    opts = opts or _parse([])[0]
    only = opts.only or SECTIONS
    parts = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if "memory" in only:
            parts.append(_memory(quick, tmp))
        if "throughput" in only:
            parts.append(_throughput(quick, tmp))
        if "student" in only:
            parts.append(_student(quick, tmp, opts))
    return "\n\n".join(parts)


if __name__ == "__main__":
    options, rest = _parse(sys.argv[1:])
    # --only writes its own RESULTS.md section, so a run of one table never replaces the full section
    title = "Prediction: " + (" + ".join(options.only) if options.only else "video memory and pipeline throughput")
    sys.exit(bench_main(title, lambda q: run(q, options), rest))
