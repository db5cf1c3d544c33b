"""Tracking: peak memory of ``spermseg track`` vs video length, and frames/s of its stages.

Cases (each run in a fresh process, peak RSS = its ``ru_maxrss``):

* ``track --model`` on a 512x512 MP4 of 200 and of 2,000 frames (quick: 20 and 200) with a small model (an
  untrained unet of width 4; its threshold is set to 0.99 so that its near-constant output gives empty masks and
  the run measures the streaming of frames, segmentation and outputs, not random blobs): the 2,000-frame peak must
  stay within 20 % of the 200-frame one;
* ``track --masks`` on the same lengths of drawn masks with 6 moving, beating sperm: detection, linking, the
  label stack and the overlay with tracks that grow with the video (a few numbers per detection are kept for the
  kinematics: 12,000 detections at 2,000 frames).
"""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Measurement, Table, bench_main  # noqa: E402

SIZE = 512


def _draw(frame: int, n_sperm: int = 6):  # noqa: ANN202 - (image uint8, mask bool)
    """Six sperm swimming on circles with beating tails, dark on a noisy background."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(frame)
    img = rng.normal(150, 8, (SIZE, SIZE)).clip(0, 255).astype(np.uint8)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    for k in range(n_sperm):
        a = 0.01 * frame + 2 * math.pi * k / n_sperm
        cx, cy = SIZE / 2 + 150 * math.cos(a), SIZE / 2 + 150 * math.sin(a)
        heading = a + math.pi / 2
        s = np.arange(0, 150, 3.0)
        psi = heading + math.pi + 0.4 * (s / 150) * np.sin(0.05 * s - 2 * math.pi * 3.0 * frame / 25)
        pts = np.stack([cx + np.cumsum(3 * np.cos(psi)), cy + np.cumsum(3 * np.sin(psi))], 1).astype(np.int32)
        for m, val in ((img, 60), (mask, 1)):
            cv2.polylines(m, [pts.reshape(-1, 1, 2)], False, val, 3)
            cv2.ellipse(m, (int(cx), int(cy)), (8, 5), math.degrees(heading), 0, 360, val, -1)
    return img, mask.astype(bool)


def _inputs(tmp: Path, n: int) -> tuple[Path, Path]:
    import numpy as np

    from spermseg.data.io import write_mask
    from spermseg.inference.video import VideoWriter

    video, masks = tmp / f"v{n}.mp4", tmp / f"m{n}"
    with VideoWriter(video, fps=25, size=(SIZE, SIZE)) as writer:
        for f in range(n):
            img, mask = _draw(f)
            writer.write(np.repeat(img[..., None], 3, axis=2))
            write_mask(masks / f"{f:05d}.png", mask)
    return video, masks


def _peak(argv: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of ``spermseg`` ARGV in a fresh process."""
    code = (
        "import resource, sys; from spermseg.cli import main; "
        f"rc = main({argv!r}); "
        "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024); sys.exit(rc)"
    )
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    peak = float(next(line for line in done.stdout.splitlines() if line.startswith("PEAK")).split()[1])
    return peak, time.perf_counter() - t0


def run(quick: bool) -> str:
    import torch

    from spermseg.models import create_model
    from spermseg.models.checkpoints import save_checkpoint

    short, long = (20, 200) if quick else (200, 2000)
    parts = []
    with tempfile.TemporaryDirectory(prefix="bench_track_") as d:
        tmp = Path(d)
        torch.manual_seed(0)
        save_checkpoint(tmp / "model" / "best", create_model("unet", width=4), {"normalization": "minmax"})
        inputs = {n: _inputs(tmp, n) for n in (short, long)}
        common = ["--pixel-size", "0.3", "--no-report", "--set", "batch_size=4"]
        cases = {
            "track --model (unet width 4, batch 4)": lambda n: [
                "track", str(inputs[n][0]), "--model", str(tmp / "model"), "--device", "cpu",
                "--out", str(tmp / f"model{n}"), "--set", "threshold=0.99", *common,
            ],
            "track --masks (6 sperm)": lambda n: [
                "track", "--masks", str(inputs[n][1]), "--fps", "25", "--out", str(tmp / f"masks{n}"), *common,
            ],
        }  # fmt: skip
        for title, argv in cases.items():
            t = Table(f"Peak memory of {title}, {SIZE}x{SIZE}, all outputs written", unit="frame")
            peaks = []
            for n in (short, long):
                peak, seconds = _peak(argv(n))
                t.add(Measurement(name=f"{n} frames", times=[seconds], rss_peak_mb=peak, items=n))
                peaks.append(peak)
            ratio = peaks[1] / peaks[0]
            verdict = "within" if ratio <= 1.2 else "NOT within"
            parts.append(t.markdown() + f"\n\nPeak RSS ratio {long}/{short} frames: **{ratio:.3f}** ({verdict} "
                         "the 1.20 target).\n")  # fmt: skip
    return "\n".join(parts)


if __name__ == "__main__":
    bench_main("track", run)
