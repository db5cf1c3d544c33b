"""Inference for users: memory of video prediction vs length, and frames/s of the E3 + ens_att_v2 pipeline.

Cases:
* peak RSS of ``spermseg predict`` (fresh process each) on a synthetic 512x512 video of 200 and of 2,000 frames
  (quick: 20 and 200), with a small model (unet width 4): streaming must keep the 2,000-frame peak within 20 % of
  the 200-frame one (memory is set by the batch, not by the video length);
* frames/s at 512x512 of a bundle of three base models (att_unet, unet3p, unet: the paper's E3) and
  ens_att_v2: PyTorch eager fp32, PyTorch channels_last, ONNX Runtime. Width: ``SPERMSEG_BENCH_WIDTH``
  (default 16; ``0`` = the families' default widths, about 1.4 TMACs per frame, minutes per frame on a small CPU;
  quick: 8).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
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
        import time

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


def run(quick: bool) -> str:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        return _memory(quick, tmp) + "\n\n" + _throughput(quick, tmp)


if __name__ == "__main__":
    sys.exit(bench_main("Prediction: video memory and pipeline throughput", run))
