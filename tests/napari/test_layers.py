"""segment_layers and the reader without Qt: layers of a frame and a stack, equality with predict/track outputs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from spermseg.cli import main
from spermseg.data.io import write_image
from spermseg.data.labels import read_labels
from spermseg.errors import SpermsegError
from spermseg.napari import segment_layers
from spermseg.napari.layers import META_KEY, Cancelled
from spermseg.napari.reader import napari_get_reader, read_outputs
from spermseg.utils.table import read_rows_csv

PX, FPS = 0.3, 25.0


def _same(a: Any, b: Any) -> bool:
    """One table cell of ours against the CSV's (numbers to 1e-6, NaN = NaN = empty, bools as CSV text)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return str(a) == str(b)
    if a is None:
        return b is None or (isinstance(b, float) and math.isnan(b)) or b == ""
    if isinstance(a, int | float) and isinstance(b, int | float):
        return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-6, abs=1e-6)
    return str(a) == str(b)


def _assert_rows_equal(ours: list[dict], theirs: list[dict], columns: list[str]) -> None:
    assert len(ours) == len(theirs) > 0
    for mine, csv_row in zip(ours, theirs):
        bad = [c for c in columns if not _same(mine.get(c), csv_row.get(c))]
        assert not bad, {c: (mine.get(c), csv_row.get(c)) for c in bad}


def _table(layers: list, kind: str = "labels") -> dict:
    return next(meta["metadata"][META_KEY] for _, meta, k in layers if k == kind and META_KEY in meta["metadata"])


def test_frame_layers_ids_match_the_table_and_predict_sperm_csv(dark_model: Path, frames, tmp_path: Path) -> None:
    image = frames[0][0]
    steps: list[tuple[int, int, str]] = []
    layers = segment_layers(image, dark_model, pixel_size_um=PX, name="f", progress=lambda *a: steps.append(a))
    kinds = [(meta["name"], kind) for _, meta, kind in layers]
    assert kinds == [("f sperm prob", "image"), ("f sperm", "labels")]  # a binary network: no parts
    prob, labels = layers[0][0], layers[1][0]
    assert layers[0][1]["visible"] is False and prob.dtype == np.float32 and prob.shape == image.shape
    table = _table(layers)
    ids = sorted(int(r["sperm_id"]) for r in table["rows"])
    assert ids == sorted(set(np.unique(labels).tolist()) - {0}) and len(ids) >= 2
    assert table["threshold"] == 0.5 and table["id_column"] == "sperm_id" and steps[-1][:2] == (3, 3)
    # the same image through `spermseg predict --instances`: the same labels and the same sperm.csv
    write_image(tmp_path / "f.png", image)
    out = tmp_path / "pred"
    argv = ["predict", str(tmp_path / "f.png"), "--model", str(dark_model), "--out", str(out), "--instances"]
    assert main([*argv, "--pixel-size", str(PX), "--no-overlay"]) == 0
    np.testing.assert_array_equal(labels, read_labels(out / "f_instances.png"))
    _assert_rows_equal(table["rows"], read_rows_csv(out / "sperm.csv"), table["columns"])
    # ... and the reader opens that folder with the same table
    assert napari_get_reader(str(out)) is not None and napari_get_reader(str(tmp_path / "f.png")) is None
    opened = read_outputs(str(out / "f_instances.png"))
    assert [(m["name"], k) for _, m, k in opened] == kinds
    np.testing.assert_array_equal(opened[1][0], labels)
    np.testing.assert_allclose(opened[0][0], prob, atol=1 / 65535)  # the 16-bit soft mask file
    _assert_rows_equal(_table(opened)["rows"], table["rows"], table["columns"])


def test_stack_layers_are_the_tracks_of_spermseg_track(dark_model: Path, frames, tmp_path: Path) -> None:
    stack, cal = frames
    layers = segment_layers(stack, dark_model, pixel_size_um=cal["pixel_size_um"], fps=cal["fps"], name="v")
    kinds = [(meta["name"], kind) for _, meta, kind in layers]
    assert kinds == [("v sperm prob", "image"), ("v sperm", "labels"), ("v tracks", "tracks")]
    labels, tracks = layers[1][0], layers[2][0]
    assert labels.shape == stack.shape and tracks.shape[1] == 4
    table = _table(layers)
    assert table["kind"] == "kinematics" and table["id_column"] == "track_id"
    assert set(np.unique(labels).tolist()) - {0} == {int(r["track_id"]) for r in table["rows"]}
    assert set(tracks[:, 0].astype(int).tolist()) == {int(r["track_id"]) for r in table["rows"]}
    assert sorted(set(tracks[:, 1].astype(int).tolist())) == list(range(5))
    # the same stack through `spermseg track --model`: the same label stack and kinematics
    tifffile.imwrite(tmp_path / "v.tif", stack)
    out = tmp_path / "track"
    argv = ["track", str(tmp_path / "v.tif"), "--model", str(dark_model), "--out", str(out), "--no-report"]
    calibration = ["--fps", str(cal["fps"]), "--pixel-size", str(cal["pixel_size_um"])]
    assert main([*argv, *calibration, "--set", "overlay=false"]) == 0
    np.testing.assert_array_equal(labels, tifffile.imread(out / "labels.tif"))
    _assert_rows_equal(table["rows"], read_rows_csv(out / "kinematics.csv"), table["columns"])
    opened = read_outputs(str(out))
    assert [k for _, _, k in opened] == ["labels", "tracks"]
    np.testing.assert_array_equal(opened[0][0], labels)
    np.testing.assert_allclose(opened[1][0], tracks, atol=1e-5)


def test_part_network_adds_a_parts_layer(tmp_path: Path) -> None:
    import torch

    from spermseg.models import create_model
    from spermseg.models.checkpoints import save_checkpoint

    torch.manual_seed(0)
    run = tmp_path / "parts"
    save_checkpoint(run / "best", create_model("unet", out_channels=6, width=4), {"normalization": "minmax",
                                                                                 "threshold": 0.5})  # fmt: skip
    image = np.random.default_rng(0).random((48, 64)).astype(np.float32)
    layers = segment_layers(image, run, name="p")
    assert [(m["name"], k) for _, m, k in layers] == [("p sperm prob", "image"), ("p sperm", "labels"),
                                                      ("p parts", "labels")]  # fmt: skip
    parts = layers[2][0]
    assert parts.dtype == np.uint8 and parts.shape == image.shape and int(parts.max()) <= 5


def test_refusals_and_cancel(dark_model: Path, frames, tmp_path: Path, monkeypatch) -> None:
    from spermseg.inference import bundle

    stack, _ = frames
    with pytest.raises(SpermsegError, match="frame rate and the pixel size"):
        segment_layers(stack, dark_model)
    monkeypatch.setattr(bundle, "BUILTIN_DIR", tmp_path / "no-weights")  # an installation without built-in weights
    with pytest.raises(SpermsegError, match="no built-in model"):
        segment_layers(stack[0])  # model="builtin"
    with pytest.raises(SpermsegError, match="model not found"):
        segment_layers(stack[0], "/nonexistent/bundle")
    with pytest.raises(SpermsegError, match="has shape"):
        segment_layers(np.zeros((2, 3, 8, 8)), dark_model)

    def stop(done: int, total: int, stage: str) -> None:
        if stage == "tracking":
            raise Cancelled()

    with pytest.raises(Cancelled):
        segment_layers(stack, dark_model, pixel_size_um=PX, fps=FPS, progress=stop)


def test_reader_opens_a_predicted_video_as_a_stack(dark_model: Path, frames, tmp_path: Path) -> None:
    from spermseg.inference.video import VideoWriter

    stack = frames[0][:3]
    video = tmp_path / "clip.mp4"
    with VideoWriter(video, fps=FPS, size=stack.shape[1:]) as writer:
        for frame in stack:
            writer.write(np.repeat(frame[..., None], 3, axis=2))
    out = tmp_path / "pred"
    assert main(["predict", str(video), "--model", str(dark_model), "--out", str(out), "--instances"]) == 0
    assert napari_get_reader(str(out / "clip" / "frame_000001_instances.png")) is not None
    opened = read_outputs(str(out))
    assert [(m["name"], k) for _, m, k in opened] == [("clip sperm prob", "image"), ("clip sperm", "labels")]
    labels = opened[1][0]
    assert labels.shape == (3, *stack.shape[1:])
    np.testing.assert_array_equal(labels[2], read_labels(out / "clip" / "frame_000002_instances.png"))
    table = _table(opened)
    assert table["columns"][0] == "frame" and {int(r["frame"]) for r in table["rows"]} <= {0, 1, 2}
    for f in range(3):
        ids = {int(r["sperm_id"]) for r in table["rows"] if int(r["frame"]) == f}
        assert ids == set(np.unique(labels[f]).tolist()) - {0}
