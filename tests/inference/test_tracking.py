"""spermseg track: linking with gap closing, outputs (CSV, label stack, H.264 overlay), stacks, truncation."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from spermseg.cli import main
from spermseg.data.io import write_mask

PX = 0.5  # um per pixel


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _sperm(mask: np.ndarray, x: float, y: float, tail_angle: float) -> None:
    """Draw a head (ellipse 10 x 6 px) at (x, y) pointing left, and a 30 px tail to the right bent by tail_angle."""
    cv2.ellipse(mask, (round(x), round(y)), (5, 3), 0, 0, 360, 1, -1)
    x1, y1 = x + 15, y
    x2, y2 = x1 + 15 * math.cos(tail_angle), y1 + 15 * math.sin(tail_angle)
    cv2.line(mask, (round(x + 4), round(y)), (round(x1), round(y1)), 1, 2)
    cv2.line(mask, (round(x1), round(y1)), (round(x2), round(y2)), 1, 2)


def _masks(folder: Path, n: int = 20, gap: tuple[int, ...] = ()) -> list[list[tuple[float, float]]]:
    """Two sperm on straight paths (1 px and 0.5 px per frame); the second is missing in the ``gap`` frames."""
    truth = []
    for f in range(n):
        m = np.zeros((80, 120), np.uint8)
        a = (10.0 + f, 20.0)
        b = (20.0 + 0.5 * f, 60.0)
        _sperm(m, *a, 0.4 * math.sin(2 * math.pi * 2.5 * f / 10))  # 2.5 Hz beat at 10 fps
        if f not in gap:
            _sperm(m, *b, 0.0)
        truth.append([a, b])
        write_mask(folder / f"m{f}.png", m.astype(bool))
    return truth


def test_track_masks_links_closes_gaps_and_writes_every_output(tmp_path: Path) -> None:
    """Two sperm, the second missed in frames 8-9: two tracks, the gap closed (same id), kinematics by hand."""
    from spermseg.inference.video import video_codec

    _masks(tmp_path / "m", gap=(8, 9))
    out = tmp_path / "out"
    assert (
        main(["track", "--masks", str(tmp_path / "m"), "--fps", "10", "--pixel-size", str(PX), "--out", str(out)]) == 0
    )
    rows = _csv(out / "tracks.csv")
    assert {int(r["track_id"]) for r in rows} == {1, 2}
    by = {t: [r for r in rows if int(r["track_id"]) == t] for t in (1, 2)}
    slow = min(by, key=lambda t: float(by[t][-1]["head_x"]) - float(by[t][0]["head_x"]))
    assert len(by[slow]) == 18 and [int(r["frame"]) for r in by[slow]] == [f for f in range(20) if f not in (8, 9)]
    kin = {int(r["track_id"]): r for r in _csv(out / "kinematics.csv")}
    fast = 3 - slow
    # 1 px per frame at 10 fps and 0.5 um/px: 5 um/s; the slow one 2.5 um/s (head centroids of drawn ellipses)
    assert float(kin[fast]["vsl_um_s"]) == pytest.approx(5.0, rel=0.05)
    assert float(kin[slow]["vsl_um_s"]) == pytest.approx(2.5, rel=0.1)
    assert float(kin[fast]["beat_hz"]) == pytest.approx(2.5, abs=0.3)
    assert float(kin[slow]["beat_hz"]) == 0.0  # a straight, still tail: no beat
    with tifffile.TiffFile(out / "labels.tif") as tif:
        labels = tif.asarray()
        assert tif.is_imagej and tif.series[0].axes == "TYX" and labels.dtype == np.uint16
        assert tif.imagej_metadata["finterval"] == pytest.approx(0.1)
        xres = tif.pages[0].tags["XResolution"].value
        assert xres[1] / xres[0] == pytest.approx(PX, rel=1e-3)
    assert labels.shape == (20, 80, 120)
    r0 = by[fast][0]
    assert labels[0, round(float(r0["head_y"])), round(float(r0["head_x"]))] == fast
    assert set(np.unique(labels[9]).tolist()) == {0, fast}
    assert video_codec(out / "overlay.mp4") == "h264"
    meta = json.loads((out / "track.json").read_text())
    assert meta["frames_processed"] == 20 and meta["pixel_size_source"] == "flag" and meta["error"] is None
    html = (out / "report.html").read_text()
    assert "Head trajectories" in html and "data:image/png;base64" in html


def test_track_refuses_bad_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No input, inputs with --masks, or a missing calibration: one line and exit 2."""
    _masks(tmp_path / "m", n=3)
    assert main(["track", "--out", str(tmp_path / "o")]) == 2
    assert main(["track", "--masks", str(tmp_path / "m"), "--fps", "10", "--out", str(tmp_path / "o")]) == 2
    assert "--pixel-size" in capsys.readouterr().err


def _tiny_model(root: Path) -> Path:
    import torch

    from spermseg.models import create_model
    from spermseg.models.checkpoints import save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(root / "best", create_model("unet", width=4), {"normalization": "minmax", "threshold": 0.5})
    return root


def test_track_model_on_ome_stack_uses_every_page_and_its_pixel_size(tmp_path: Path) -> None:
    """A 5-page OME-TIFF with PhysicalSizeX 0.25: 5 frames processed, the pixel size from the metadata."""
    frames = np.full((5, 48, 64), 200, np.uint8)
    for k in range(5):
        cv2.ellipse(frames[k], (10 + 3 * k, 24), (5, 3), 0, 0, 360, 40, -1)
    path = tmp_path / "clip.ome.tif"
    tifffile.imwrite(path, frames, metadata={"axes": "TYX", "PhysicalSizeX": 0.25, "TimeIncrement": 0.2})
    out = tmp_path / "out"
    model = _tiny_model(tmp_path / "model")
    assert main(["track", str(path), "--model", str(model), "--out", str(out), "--no-report"]) == 0
    meta = json.loads((out / "track.json").read_text())
    assert meta["frames_processed"] == 5 and meta["frames_announced"] == 5
    assert meta["pixel_size_um"] == pytest.approx(0.25) and meta["pixel_size_source"] == "metadata"
    assert meta["fps"] == pytest.approx(5.0)
    with tifffile.TiffFile(out / "labels.tif") as tif:
        assert len(tif.pages) == 5


def test_truncated_stack_keeps_processed_frames_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A TIFF stack cut at 60 %: the frames before the cut are tracked and written; the error names file and
    frame; exit code 1."""
    from spermseg.inference.stacks import open_stack
    from spermseg.inference.tracking import track

    path = tmp_path / "cut.tif"
    with tifffile.TiffWriter(path) as tif:
        for k in range(6):
            m = np.zeros((64, 96), np.uint8)
            _sperm(m, 10.0 + 2 * k, 30.0, 0.2)
            tif.write(m * 255)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    stack = open_stack(path, fps=10, pixel_size=PX)
    items = ((i, f, f > 0.5) for i, f in stack.frames())
    out = tmp_path / "out"
    from spermseg.inference.stacks import TruncatedInputError

    with pytest.raises(TruncatedInputError) as err:
        track(items, stack.info, out)
    k = err.value.frame
    assert 1 <= k < 6 and "cut.tif" in str(err.value)
    rows = _csv(out / "tracks.csv")
    assert sorted({int(r["frame"]) for r in rows}) == list(range(k))
    with tifffile.TiffFile(out / "labels.tif") as tif:
        assert len(tif.pages) == k
    assert json.loads((out / "track.json").read_text())["error"] == str(err.value)
    # the CLI: the same outputs, the error line, exit code 1
    model = _tiny_model(tmp_path / "model")
    code = main(["track", str(path), "--model", str(model), "--fps", "10", "--pixel-size", "0.5",
                 "--out", str(tmp_path / "cli")])  # fmt: skip
    assert code == 1
    assert f"frame {k}" in capsys.readouterr().err
    assert (tmp_path / "cli" / "report.html").is_file()


@pytest.mark.slow
def test_acceptance_exact_masks_of_a_75_frame_synthetic_video(tmp_path: Path) -> None:
    """Issue 16 acceptance: from a 75-frame synthetic video's exact binary masks, >= 90 % of truth head positions
    are followed by the same track, median relative VCL error <= 10 %, median beat-frequency error <= 1 Hz."""
    from spermseg.data.synth import SynthConfig, generate_dataset
    from spermseg.evaluation.tracking import evaluate_tracks

    manifest = generate_dataset(tmp_path / "s", SynthConfig(), n_train=0, n_test=0, n_test_small=0, seed=1,
                                n_videos=1, n_frames=75, mp4=False, show_progress=False)  # fmt: skip
    v = next((tmp_path / "s" / "videos").iterdir())
    # the pixel size is drawn per video from its contrast mode's range: calibrate with the one drawn
    (video,) = manifest["videos"]
    calibration = ["--fps", str(video["fps"]), "--pixel-size", str(video["pixel_size_um"])]
    out = tmp_path / "t"
    argv = ["track", "--masks", str(v / "truth" / "full"), *calibration, "--out", str(out)]
    assert main([*argv, "--no-report"]) == 0
    ev = evaluate_tracks(out, v / "truth")
    assert ev["identity_consistent"] >= 0.9
    assert ev["kinematics"]["median_vcl_rel_error"] <= 0.10
    assert ev["kinematics"]["median_beat_error_hz"] <= 1.0


def test_open_tracks_keep_only_tracks_the_linker_can_still_extend() -> None:
    """Memory does not grow with the video: 40 short tracks one after another leave at most 2 open at a time, each
    closed track's kinematics row equals that of its whole path, and a head missed for exactly gap_frames frames
    (the longest gap trackpy closes) is still open and keeps its track."""
    from spermseg.inference.tracking import HeadLinker, OpenTracks
    from spermseg.kinematics import KinematicsConfig, track_kinematics

    memory, fps = 3, 10.0
    SAMPLE = ("frame", "head_x_um", "head_y_um", "tail_angle_rad", "tail_length_um")  # noqa: N806
    linker, tracks = HeadLinker(5.0, memory), OpenTracks(fps, KinematicsConfig(), memory)
    paths: dict[int, list[tuple[float, float, float, float, float]]] = {}
    most_open = 0
    for f in range(40 * 14):
        k, age = divmod(f, 14)  # sperm k lives 12 frames, then 2 empty frames; 100 px from the previous one
        seen = age < 12 and not (k == 0 and age in (4, 5, 6))  # sperm 0 missed for 3 frames
        xy = np.array([[100.0 * k + age, 50.0 + 2 * math.sin(age)]]) if seen else np.zeros((0, 2))
        ids = linker.link(f, xy)
        rows = [{"track_id": t, "frame": f, "head_x_um": x * PX, "head_y_um": y * PX, "tail_angle_rad": 0.1 * age,
                 "tail_length_um": 40.0} for t, (x, y) in zip(ids, xy)]  # fmt: skip
        for r in rows:
            paths.setdefault(r["track_id"], []).append(tuple(r[c] for c in SAMPLE))
        tracks.add(rows)
        tracks.close_ended(f)
        most_open = max(most_open, len(tracks.samples))
    kin = tracks.finish_all()
    assert len(paths) == 40 and most_open <= 2  # sperm 0's gap was closed: 40 tracks for 40 sperm
    assert [r["track_id"] for r in kin] == sorted(paths)
    for row in kin:
        s = np.array(paths[row["track_id"]])
        want = track_kinematics(s[:, 0], s[:, 1:3], fps, KinematicsConfig(), tail_angle=s[:, 3], tail_length_um=s[:, 4])
        assert {k: v for k, v in row.items() if k != "track_id"} == pytest.approx(want, nan_ok=True)
    with pytest.raises(RuntimeError, match="after it was closed"):
        tracks.add([{"track_id": 1, "frame": 10_000, "head_x_um": 0, "head_y_um": 0, "tail_angle_rad": 0,
                     "tail_length_um": 0}])  # fmt: skip


def test_velocity_prediction_keeps_ids_of_heads_passing_each_other() -> None:
    """Two heads pass each other 1 px apart at 5 px per frame: nearest-neighbour linking swaps their ids in the
    frame after they meet (each is nearer the other's next position); predicting each track at its velocity
    keeps them."""
    from spermseg.inference.tracking import HeadLinker

    def run(predict: bool) -> list[list[int]]:
        linker = HeadLinker(10.0, 3, predict=predict)
        out = []
        for f in range(17):
            xy = np.array([[5.0 * f, 0.0], [82.0 - 5.0 * f, 1.0]])  # A moves right, B left
            out.append(linker.link(f, xy))
        return out

    assert all(ids == [1, 2] for ids in run(True))
    assert any(ids == [2, 1] for ids in run(False))


def test_tail_path_jumps_gaps_inside_one_instance() -> None:
    """A sperm whose tail is cut by a 9 px gap (another sperm crossing it, or a thin neck lost by the
    segmentation) keeps its whole tail length; without gap edges only the piece touching the head is measured."""
    from dataclasses import replace

    from spermseg.inference.detection import detect, options_for

    labels = np.zeros((60, 200), np.int32)
    cv2.ellipse(labels, (20, 30), (8, 5), 0, 0, 360, 1, -1)
    cv2.line(labels, (28, 30), (60, 30), 1, 2)
    cv2.line(labels, (70, 30), (180, 30), 1, 2)  # 9 px gap, then the rest of the tail
    opt = options_for(0.3)
    (det,) = detect(labels, opt)
    assert det.tail_length_px == pytest.approx(180 - 28, abs=6)
    (cut,) = detect(labels, replace(opt, tail_gap_px=0.0))
    assert cut.tail_length_px < 45
