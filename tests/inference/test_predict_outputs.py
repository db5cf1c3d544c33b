"""The output folder of ``spermseg predict`` (issue 14): no input is ever replaced, an earlier run's results are
never silently dropped, the CSVs list exactly the files beside them, concurrent runs are locked out, and bad
option values are one-line errors."""

from __future__ import annotations

import csv
import os
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from spermseg.cli import main
from spermseg.models import create_model
from spermseg.models.checkpoints import save_checkpoint


def _frame(seed: int, size: tuple[int, int] = (40, 48)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.normal(100, 8, size).clip(0, 255).astype(np.uint8)
    cv2.line(img, (5, 5 + seed), (40, 30), 200, 2)
    return img


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    save_checkpoint(root / "best", create_model("unet", width=4), {"normalization": "minmax", "threshold": 0.5})
    return root


def _images(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        cv2.imwrite(str(folder / name), _frame(i))
    return folder


def _predict(model: Path, *args: str) -> int:
    return main(["predict", *args, "--model", str(model), "--no-overlay"])


def _listed_and_present(out: Path) -> tuple[set[str], set[str]]:
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    listed = {r[c] for r in rows for c in ("soft_mask", "binary_mask", "overlay") if r[c]}
    present = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and not p.name.endswith(".csv")}
    return listed, present


def test_out_equal_to_the_input_folder_is_refused_and_the_input_kept(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 14.1: with --out = the input folder, 'a.png''s soft mask would replace the input 'a_prob.png'."""
    folder = _images(tmp_path / "in", ["a.png", "a_prob.png"])
    before = (folder / "a_prob.png").read_bytes()
    assert _predict(model, str(folder), "--out", str(folder)) == 2
    err = capsys.readouterr().err
    assert "is the input folder" in err and err.count("\n") == 1
    assert (folder / "a_prob.png").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "a_prob.png"]
    # an --out that merely contains an input file (given by name) is refused too
    assert _predict(model, str(folder / "a.png"), "--out", str(tmp_path)) == 2
    assert "holds the input" in capsys.readouterr().err


def test_reusing_an_out_is_refused_unless_overwrite_or_append(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 14.2: a second run replaced the CSVs with its rows only and left the first run's masks unlisted."""
    first = _images(tmp_path / "first", ["a.png", "b.png"])
    second = _images(tmp_path / "second", ["c.png"])
    out = tmp_path / "out"
    assert _predict(model, str(first), "--out", str(out)) == 0
    assert _predict(model, str(second), "--out", str(out)) == 2
    assert "already holds the results of an earlier run" in capsys.readouterr().err
    assert len(list(csv.DictReader((out / "predictions.csv").open()))) == 2

    assert _predict(model, str(second), "--out", str(out), "--append") == 0
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert sorted(Path(r["input"]).name for r in rows) == ["a.png", "b.png", "c.png"]
    listed, present = _listed_and_present(out)
    assert listed == present

    # append the same input again: its row and files are replaced, not duplicated
    a_mask = (out / "a_mask.png").read_bytes()
    assert _predict(model, str(first / "a.png"), "--out", str(out), "--append") == 0
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert sorted(Path(r["input"]).name for r in rows) == ["a.png", "b.png", "c.png"]
    assert (out / "a_mask.png").read_bytes() == a_mask

    assert _predict(model, str(second), "--out", str(out), "--overwrite") == 0
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [Path(r["input"]).name for r in rows] == ["c.png"]
    listed, present = _listed_and_present(out)
    assert listed == present == {"c_prob.png", "c_mask.png"}
    sperm_inputs = {Path(r["input"]).name for r in csv.DictReader((out / "sperm.csv").open())}
    assert sperm_inputs <= {"c.png"}


def test_overwrite_cleans_what_an_interrupted_run_left(model: Path, tmp_path: Path) -> None:
    """A killed run leaves a half-written CSV row, a frame's files without a row and hidden temporary files;
    --overwrite removes them, so the CSVs again list exactly the files in the folder."""
    inputs = _images(tmp_path / "in", ["a.png", "b.png"])
    out = tmp_path / "out"
    assert _predict(model, str(inputs), "--out", str(out)) == 0
    with open(out / "predictions.csv", "a") as fh:
        fh.write(str(inputs / "zz.png") + ",0,40,4")  # a row cut off by the kill
    (out / "zz_prob.png").write_bytes((out / "a_prob.png").read_bytes())  # files of the frame in progress
    (out / ".a_mask.x1y2.png").write_bytes(b"partial")  # atomic writer's temporary file
    assert _predict(model, str(inputs / "b.png"), "--out", str(out), "--append") == 0
    listed, present = _listed_and_present(out)
    assert listed == present == {"a_prob.png", "a_mask.png", "b_prob.png", "b_mask.png"}
    assert all(line.count(",") == 10 for line in (out / "predictions.csv").read_text().splitlines())


def test_a_concurrent_run_is_locked_out_and_a_stale_lock_taken_over(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 14.2: two concurrent runs into one folder; the last CSV writer won. Now the second one fails."""
    from spermseg.utils.lock import exclusive_lock

    inputs = _images(tmp_path / "in", ["a.png"])
    out = tmp_path / "out"
    out.mkdir()
    with exclusive_lock(out / ".spermseg-predict.lock", "test"):
        assert _predict(model, str(inputs), "--out", str(out)) == 2
    assert "already writing there" in capsys.readouterr().err
    assert not (out / "predictions.csv").exists()
    # a lock left by a killed process (no such pid) does not block the next run
    (out / ".spermseg-predict.lock").write_text(f'{{"pid": {2**22 + 12345}, "host": "{socket.gethostname()}"}}')
    assert _predict(model, str(inputs), "--out", str(out)) == 0
    assert not (out / ".spermseg-predict.lock").exists()


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--tile", "32", "--tile-overlap", "32"], "--tile-overlap must be in [0, --tile)"),
        (["--tile", "32", "--tile-overlap", "-4"], "--tile-overlap"),
        (["--pixel-size", "-0.5"], "--pixel-size"),
    ],
)
def test_impossible_values_are_refused_before_any_work(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], needle: str
) -> None:
    """Issue 14.5/14.9: overlap >= tile was accepted (40x slower), a negative overlap made every file fail with
    NaN, a negative pixel size was accepted."""
    inputs = _images(tmp_path / "in", ["a.png"])
    try:
        code = _predict(model, str(inputs), "--out", str(tmp_path / "out"), *flags)
    except SystemExit as exc:  # argparse's usage error for a value its type rejects
        code = int(exc.code or 0)
    assert code == 2 and needle in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_library_validates_tile_overlap_too(model: Path, tmp_path: Path) -> None:
    from spermseg.errors import SpermsegError
    from spermseg.inference.predict import PredictOptions, predict_inputs

    inputs = _images(tmp_path / "in", ["a.png"])
    with pytest.raises(SpermsegError, match="tile-overlap"):
        predict_inputs(model, [inputs], tmp_path / "out", PredictOptions(tile=16, tile_overlap=20))


@pytest.mark.parametrize("cmd", ["predict", "train", "masks", "export"])
def test_out_that_is_a_file_or_under_a_file_is_one_line(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], cmd: str
) -> None:
    """Issue 14.8: these gave a FileExistsError/NotADirectoryError traceback."""
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    inputs = _images(tmp_path / "in", ["a.png"])
    argv = {
        "predict": ["predict", str(inputs), "--model", str(model)],
        "train": ["train", "--data", str(tmp_path / "in"), "--preset", "demo"],
        "masks": ["masks", "--runs", str(model), "--data", str(tmp_path)],
        "export": ["export", "--model", str(model)],
    }[cmd]
    outs = [a_file / "sub"] if cmd == "export" else [a_file, a_file / "sub"]
    for out in outs:
        assert main([*argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"spermseg {cmd}: error: --out") and err.count("\n") == 1, err


def test_progress_without_a_terminal_is_a_few_lines(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seam: predict forced a tqdm bar into logs (one carriage-return update per batch)."""
    inputs = _images(tmp_path / "in", [f"f{i}.png" for i in range(12)])
    assert _predict(model, str(inputs), "--out", str(tmp_path / "out")) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("predict:")]
    assert 1 <= len(lines) <= 11 and lines[-1].startswith("predict: 12/12 file")


def test_overlay_video_is_h264(model: Path, tmp_path: Path) -> None:
    """Seam: overlay videos were mp4v (MPEG-4 Part 2), which browsers do not play."""
    from spermseg.inference.video import VideoWriter, video_codec

    clip = tmp_path / "clip.avi"
    with VideoWriter(clip, fps=5, size=(40, 48)) as writer:
        for i in range(3):
            writer.write(np.repeat(_frame(i)[..., None], 3, axis=2))
    out = tmp_path / "out"
    assert main(["predict", str(clip), "--model", str(model), "--out", str(out)]) == 0
    assert video_codec(out / "clip_overlay.mp4") == "h264"
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.suffix == ".mp4"]
    os.remove(out / "clip_overlay.mp4")
