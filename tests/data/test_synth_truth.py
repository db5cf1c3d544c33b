"""Tracking truth of synthetic videos (spermseg.data.synth.truth): labels, head rows, kinematics."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from spermseg.data.synth import SynthConfig, generate_dataset, scene_for
from spermseg.data.synth.truth import head_rows, instance_labels, truth_kinematics


def _cfg() -> SynthConfig:
    from spermseg.config import resolve_config

    overrides = ["height=160", "width=160", "pixel_size_um=0.3", "sperm.count=[3,3]", "sperm.immotile_fraction=0.0"]
    return resolve_config(SynthConfig, overrides=[*overrides, "sperm.border_margin_um=-20"])


def test_video_truth_files_labels_union_is_full_and_ids_are_stable(tmp_path: Path) -> None:
    """instances/{frame}.png: one id per sperm, the union equals truth/full, the ids keep their sperm over frames;
    tracks.csv rows are the in-frame exact head centres; kinematics.csv carries the generator's beat frequency."""
    from spermseg.data.io import read_image_native, read_mask

    cfg = _cfg()
    generate_dataset(tmp_path, cfg, n_train=0, n_test=0, n_test_small=0, seed=2, n_videos=1, n_frames=4, mp4=False,
                     show_progress=False)  # fmt: skip
    vdir = next((tmp_path / "videos").iterdir())
    with open(vdir / "truth" / "tracks.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with open(vdir / "truth" / "kinematics.csv", newline="") as fh:
        kin = {int(r["track_id"]): r for r in csv.DictReader(fh)}
    scene = scene_for(cfg, 2, int(vdir.name))
    for f in range(4):
        labels = read_image_native(vdir / "truth" / "instances" / f"{f:04d}.png")
        full = read_mask(vdir / "truth" / "full" / f"{f:04d}.png")
        assert labels.dtype == np.uint16
        assert np.array_equal(labels > 0, full)
        for r in (r for r in rows if int(r["frame"]) == f):
            x, y = round(float(r["head_x"])), round(float(r["head_y"]))
            assert labels[y, x] == int(r["sperm_id"])  # the head centre carries its sperm's id in every frame
    assert {int(r["sperm_id"]) for r in rows} <= set(range(1, len(scene.sperm) + 1))
    for sid, r in kin.items():
        assert float(r["beat_hz"]) == pytest.approx(scene.sperm[sid - 1].beat_omega / (2 * math.pi), abs=1e-5)


def test_truth_kinematics_of_the_exact_path() -> None:
    """Truth VCL is the exact head path's length over time (here: rows of a sperm moved by hand)."""
    from spermseg.data.synth.dataset import render_item

    cfg = _cfg()
    scene = scene_for(cfg, 2, 1)
    frames = [render_item(cfg, scene, 2, 1, f) for f in range(6)]
    rows = [r for f, fr in enumerate(frames) for r in head_rows(fr, f)]
    kin = truth_kinematics(scene, rows, cfg.fps, scene.pixel_size_um)
    one = [r for r in rows if r["sperm_id"] == kin[0]["track_id"]]
    xy = np.array([[r["head_x"], r["head_y"]] for r in one]) * scene.pixel_size_um
    expected = np.hypot(*np.diff(xy, axis=0).T).sum() / ((one[-1]["frame"] - one[0]["frame"]) / cfg.fps)
    assert kin[0]["vcl_um_s"] == pytest.approx(expected, rel=1e-9)
    assert instance_labels(frames[0]).max() <= len(scene.sperm)
