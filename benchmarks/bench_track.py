"""Tracking: peak memory of ``spermseg track --model`` vs video length (issue 16: 2,000 frames within 20 % of 200).

Each case runs ``spermseg track VIDEO --model MODEL`` in a fresh process on a 512x512 H.264 MP4 of 200 and of
2,000 frames (quick: 20 and 200) with every output written (tracks.csv, kinematics.csv, the label stack, the
overlay MP4); peak RSS is the process's ``ru_maxrss``; beside it, the largest child's (the FFmpeg overlay
encoder; a forked child's ``ru_maxrss`` also counts the parent's pages it shared before ``exec``, so this is an upper
bound of FFmpeg's own). The video is a 250-frame clip of six sperm swimming on circles with beating tails, looped:
at each loop the sperm jump, so their tracks end and six new ones start, and the number of tracks grows with the video
as it does when sperm leave and enter the field. Models (no training):

* ``dark detector``: an ONNX graph that marks pixels darker than their surroundings (the napari tests' stand-in,
  ``tests/napari/napari_helpers.py``), so every frame has heads to separate, link and draw (the six drawn sperm
  and false heads in their tails and the noise: ~25-30 detections per frame, most tracks short): this case
  measures what grows with the tracks (their rows, their samples, the overlay trails);
* ``unet width 4``: an untrained PyTorch unet through the ``predict`` backend, threshold 0.99 (its near-constant
  output gives empty masks): the PyTorch side of the streaming (decoding, batches, the label stack pages).

``SPERMSEG_BENCH_TRACK_CASES`` (``dark,unet`` by default) picks the cases, e.g. ``dark`` alone: the PyTorch
side's memory against video length is also measured by bench_predict's video case.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Measurement, Table, bench_main  # noqa: E402

SIZE = 512
CASES = ("dark", "unet")


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


CLIP = 250  # frames drawn; longer videos loop the clip


def _video(tmp: Path, n: int) -> Path:
    """A 512x512 H.264 MP4 of ``n`` frames: the drawn clip, looped."""
    import numpy as np

    from spermseg.inference.video import VideoWriter

    clip = [np.repeat(_draw(f)[0][..., None], 3, axis=2) for f in range(min(n, CLIP))]
    video = tmp / f"v{n}.mp4"
    with VideoWriter(video, fps=25, size=(SIZE, SIZE)) as writer:
        for f in range(n):
            writer.write(clip[f % CLIP])
    return video


def _peak(argv: list[str]) -> tuple[float, float, float]:
    """(peak RSS in MB of the process, of its largest child (FFmpeg), seconds) of ``spermseg`` ARGV, run fresh."""
    code = (
        "import resource, sys; from spermseg.cli import main; "
        f"rc = main({argv!r}); "
        "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "
        "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024); sys.exit(rc)"
    )
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    _, own, child = next(line for line in done.stdout.splitlines() if line.startswith("PEAK")).split()
    return float(own), float(child), time.perf_counter() - t0


def run(quick: bool) -> str:
    import json

    import torch

    from spermseg.models import create_model
    from spermseg.models.checkpoints import save_checkpoint

    sys.path.insert(0, str(HERE.parent / "tests" / "napari"))
    from napari_helpers import write_dark_detector

    chosen = os.environ.get("SPERMSEG_BENCH_TRACK_CASES", "dark,unet").split(",")
    if set(chosen) - set(CASES):
        raise SystemExit(f"SPERMSEG_BENCH_TRACK_CASES={','.join(chosen)}: choose from {','.join(CASES)}")
    short, long = (20, 200) if quick else (200, 2000)
    parts = []
    with tempfile.TemporaryDirectory(prefix="bench_track_") as d:
        tmp = Path(d)
        torch.manual_seed(0)
        save_checkpoint(tmp / "unet" / "best", create_model("unet", width=4), {"normalization": "minmax"})
        dark = write_dark_detector(tmp / "dark.onnx")
        videos = {n: _video(tmp, n) for n in (short, long)}
        cases = {
            "dark": ("dark detector (ONNX), six drawn sperm", dark, []),
            "unet": ("unet width 4 (PyTorch), empty masks", tmp / "unet", ["--set", "threshold=0.99"]),
        }
        for title, model, extra in (cases[c] for c in chosen):
            t = Table(f"Peak memory of track --model, {title}, {SIZE}x{SIZE}, all outputs written", unit="frame")
            peaks = []
            for n in (short, long):
                out = tmp / f"{model.stem}{n}"
                argv = ["track", str(videos[n]), "--model", str(model), "--device", "cpu", "--out", str(out),
                        "--pixel-size", "0.3", "--no-report", "--set", "batch_size=4", *extra]  # fmt: skip
                own, child, seconds = _peak(argv)
                meta = json.loads((out / "track.json").read_text())
                t.add(Measurement(name=f"{n} frames", times=[seconds], rss_peak_mb=own, items=n,
                                  extra={"largest child peak MiB": round(child, 1), "tracks": meta["n_tracks"],
                                         "detections": meta["n_detections"]}))  # fmt: skip
                peaks.append(own)
            ratio = peaks[1] / peaks[0]
            verdict = "within" if ratio <= 1.2 else "NOT within"
            parts.append(t.markdown() + f"\n\nPeak RSS ratio {long}/{short} frames: **{ratio:.3f}** ({verdict} "
                         "the 1.20 target).\n")  # fmt: skip
    return "\n".join(parts)


if __name__ == "__main__":
    bench_main("track", run)
