"""Issue 14 seams: one flag spelling per meaning (old ones hidden but working), --help with defaults and an
example for every command, multi-page TIFFs refused, synth's --test-small, the non-binary-mask hint."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from test_data_cli import _dataset

from spermseg.cli import COMMANDS, main
from spermseg.data.io import read_image, read_mask
from spermseg.errors import DataError


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_every_command_has_a_description_an_example_and_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    """--help showed neither defaults nor examples; nested subcommands had no description."""
    for name, (module_name, _help_text) in COMMANDS.items():
        module = importlib.import_module(f"spermseg.cli.{module_name}")
        text = _help([name], capsys)
        assert module.HELP.split(" (")[0][:40] in " ".join(text.split()), name
        assert "example:\n  spermseg " + name in text, name
        assert module.EXAMPLE.startswith(f"spermseg {name}"), name
    predict = " ".join(_help(["predict"], capsys).split())
    assert "frames per forward pass (default: 4)" in predict and "(default: 64)" in predict
    for argv in (["data", "check"], ["ensemble", "train"], ["ensemble", "eval"]):
        text = _help(argv, capsys)
        assert "example:\n  spermseg " + " ".join(argv) in text, argv


def test_hidden_aliases_are_not_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--models" not in _help(["masks"], capsys) and "--runs" in _help(["masks"], capsys)
    assert "--gt" not in _help(["evaluate"], capsys)
    reproduce = _help(["reproduce"], capsys)
    assert "--rerun" in reproduce and "--force" not in reproduce
    train = _help(["train"], capsys)
    assert "--kind" in train and "--cache" in train and "--masks" not in train and "--ensemble" not in train


def test_dataset_is_data_everywhere_and_old_spellings_still_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The dataset was ROOT (data check, agreement), --data (train, masks) or --gt (evaluate)."""
    root = _dataset(tmp_path / "d")
    assert main(["data", "check", "--data", str(root), "--json"]) == 0
    new = json.loads(capsys.readouterr().out)
    assert main(["data", "check", str(root), "--json"]) == 0  # old positional, hidden
    old = json.loads(capsys.readouterr().out)
    assert new["splits"] == old["splits"]
    assert main(["agreement", "--data", str(root), "--json"]) == 0
    a = json.loads(capsys.readouterr().out)
    assert main(["agreement", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == a
    assert main(["data", "check"]) == 2
    assert "--data is required" in capsys.readouterr().err


def test_multipage_tiff_is_an_error_naming_the_page_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 3-page stack was read as its first page and 'data check' said 'problems: none'."""
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.zeros((3, 10, 16), np.uint8), photometric="minisblack")
    with pytest.raises(DataError, match=r"multi-page TIFF \(3 pages\)"):
        read_image(stack)
    with pytest.raises(DataError, match="3 pages"):
        read_mask(stack)
    single = tmp_path / "one.tif"
    tifffile.imwrite(single, np.zeros((10, 16), np.uint8))
    assert read_image(single).shape == (10, 16)

    root = _dataset(tmp_path / "d")
    img = root / "train" / "images" / "v1_0001_1.png"
    img.unlink()
    tifffile.imwrite(img.with_suffix(".tif"), np.zeros((2, 10, 16), np.uint8), photometric="minisblack")
    for name in ("full", "head", "tail"):
        mask = root / "train" / f"GT1_{name}" / "v1_0001_1.png"
        tifffile.imwrite(mask.with_suffix(".tif"), np.zeros((10, 16), np.uint8))
        mask.unlink()
    assert main(["data", "check", "--data", str(root)]) == 1
    out = capsys.readouterr().out
    assert "problems: none" not in out and "multi-page TIFF (2 pages)" in out


def test_synth_test_small_larger_than_test_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["synth", "--out", str(tmp_path / "s"), "--train", "1", "--test", "1", "--test-small", "2"]
    assert main([*argv, "--size", "32", "32"]) == 2
    assert "--test-small (2) must not exceed --test (1)" in capsys.readouterr().err
    assert not (tmp_path / "s" / "synth.json").exists()


def test_non_binary_mask_hint_names_the_train_spelling(tmp_path: Path) -> None:
    """The hint told train users to pass --binarize-threshold, which train does not have."""
    from PIL import Image

    path = tmp_path / "soft.png"
    Image.fromarray(np.full((4, 4), 100, np.uint8)).save(path)
    with pytest.raises(DataError, match=r"--set data\.binarize_threshold=T \(train"):
        read_mask(path)


def test_masks_batch_size_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """'masks --batch-size -2' ended in a traceback."""
    with pytest.raises(SystemExit) as exc:
        main(["masks", "--runs", "r", "--data", "d", "--out", str(tmp_path / "c"), "--batch-size", "-2"])
    assert exc.value.code == 2 and "must be >= 1" in capsys.readouterr().err
