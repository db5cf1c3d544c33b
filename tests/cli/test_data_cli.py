"""``spermseg data check``: summary, every problem, exit codes, JSON; and the real SegSperm-layout dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from spermseg.cli import main

H, W = 10, 16


def _dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, names, raters in (
        ("train", ["v1_0001_1.png", "v1_0002_1.png", "v2_0001_1.png"], 1),
        ("test_small", ["q.png"], 3),
    ):
        for name in names:
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (H, W), dtype=np.uint8)).save(root / split / "images" / name)
            full = rng.random((H, W)) > 0.6
            head = full & (np.arange(W) < 6)
            for r in range(1, raters + 1):
                for part, m in (("full", full), ("head", head), ("tail", full & ~head)):
                    (root / split / f"GT{r}_{part}").mkdir(exist_ok=True)
                    Image.fromarray(m.astype(np.uint8) * 255).save(root / split / f"GT{r}_{part}" / name)
    return root


def test_check_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _dataset(tmp_path)
    assert main(["data", "check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "train: 3 images, size 16x10 (WxH)" in out
    assert "test_small: 1 images" in out
    assert "GT1: full, head, tail; GT2: full, head, tail; GT3: full, head, tail" in out
    assert "2 groups (largest: v1, 2 images)" in out
    assert "problems: none" in out and "OK" in out


def test_check_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _dataset(tmp_path)
    assert main(["data", "check", str(root), "--json", "--json-out", str(tmp_path / "r.json")]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep == {**json.loads((tmp_path / "r.json").read_text()), "wall_s": rep["wall_s"]}
    assert rep["ok"] and rep["layout"] == "segsperm"
    assert rep["splits"]["train"]["sizes"] == [{"width": W, "height": H, "count": 3}]
    assert list(rep["splits"]["test_small"]["raters"]) == ["GT1", "GT2", "GT3"]
    assert rep["splits"]["train"]["parts"] == ["full", "head", "tail"]


def test_check_reports_every_problem_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _dataset(tmp_path)
    tr = root / "train"
    (tr / "GT1_full" / "v1_0001_1.png").unlink()  # missing mask
    Image.fromarray(np.zeros((H, W), np.uint8)).save(tr / "GT1_head" / "extra.png")  # extra mask
    data = (tr / "images" / "v1_0002_1.png").read_bytes()
    (tr / "images" / "v1_0002_1.png").write_bytes(data[: len(data) - 30])  # truncated image (cut before IEND)
    Image.fromarray(np.zeros((H + 2, W), np.uint8)).save(tr / "GT1_tail" / "v2_0001_1.png")  # size mismatch
    soft = np.zeros((H, W), np.uint8)
    soft[2:5, 2:5] = 128
    Image.fromarray(soft).save(root / "test_small" / "GT2_full" / "q.png")  # non-binary
    (root / "test" / "images").mkdir(parents=True)  # empty split
    assert main(["data", "check", str(root)]) == 1
    out = capsys.readouterr().out
    problems = [line for line in out.splitlines() if line.startswith("  error:")]
    assert len(problems) == 6, out
    for needle in ("missing mask", "extra mask", "truncated or corrupt", "size mismatch", "not binary", "empty split"):
        assert sum(needle in p for p in problems) == 1, (needle, out)
    assert "FAILED" in out
    # the threshold accepts the non-binary mask; the rest remain
    assert main(["data", "check", str(root), "--binarize-threshold", "0.3", "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert rep["n_errors"] == 5 and not any("not binary" in p["message"] for p in rep["problems"])


def test_check_non_binary_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _dataset(tmp_path)
    soft = np.zeros((H, W), np.uint8)
    soft[1:4, 1:4] = 77
    Image.fromarray(soft).save(root / "train" / "GT1_full" / "v2_0001_1.png")
    assert main(["data", "check", str(root)]) == 1
    assert "--binarize-threshold" in capsys.readouterr().out  # the message says how to fix it
    assert main(["data", "check", str(root), "--binarize-threshold", "0.5"]) == 0


def test_check_nan_float_tiff_and_folders_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.full((H, W), np.inf, np.float32))
    tifffile.imwrite(tmp_path / "images" / "b.tif", np.full((H, W), 0.5, np.float32))
    for s in "ab":
        Image.fromarray(np.zeros((H, W), np.uint8)).save(tmp_path / "masks" / f"{s}.png")
    assert main(["data", "check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "layout: folders" in out and "all: 2 images" in out
    assert "a.tif has" in out and "NaN/Inf" in out


def test_check_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", str(tmp_path / "missing")]) == 2
    assert "dataset folder not found" in capsys.readouterr().err
    assert main(["data", "check", str(_dataset(tmp_path)), "--binarize-threshold", "2"]) == 2


def test_check_real_dataset_structure(spermparsing_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Fast: file lists only (the full decode runs in the slow test below)."""
    assert main(["data", "check", str(spermparsing_root), "--structure-only", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    splits = rep["splits"]
    assert {k: v["n_images"] for k, v in splits.items()} == {"train": 192, "test": 64, "test_small": 64}
    assert list(splits["train"]["raters"]) == ["GT1"] and list(splits["test"]["raters"]) == ["GT1"]
    assert list(splits["test_small"]["raters"]) == ["GT1", "GT2", "GT3"]
    assert all(v["parts"] == ["full", "head", "tail"] for v in splits.values())


@pytest.mark.slow
def test_check_real_dataset_full(spermparsing_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", str(spermparsing_root)]) == 0
    out = capsys.readouterr().out
    for split, n in (("train", 192), ("test", 64), ("test_small", 64)):
        assert f"{split}: {n} images, size 640x512 (WxH)" in out
    labelled = "full, head, tail; labels: instances, parts"
    assert f"GT1: {labelled}; GT2: {labelled}; GT3: {labelled}" in out
    assert "problems: none" in out
