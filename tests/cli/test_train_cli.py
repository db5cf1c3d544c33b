"""CLI: spermseg train / train-many / summarize, in-process on a tiny synthetic set."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from train_helpers import make_lines_dataset, tiny_overrides  # noqa: E402

from spermseg.cli import main  # noqa: E402
from spermseg.config import parse_seeds  # noqa: E402
from spermseg.errors import ConfigError  # noqa: E402
from spermseg.training.summary import summarize  # noqa: E402


def _sets(epochs: int = 1) -> list[str]:
    out: list[str] = []
    for item in [*tiny_overrides(epochs), "schedule.steps_per_epoch=1"]:
        if not item.startswith("model.name="):
            out += ["--set", item]
    return out


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lines_dataset(tmp_path_factory.mktemp("cli_lines") / "data", n_groups=3, per_group=2)


def test_train_cli_writes_run_and_json(data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--data",
            str(data_root),
            "--model",
            "unet",
            "--out",
            str(out),
            "--preset",
            "demo",
            "--seed",
            "3",
            "--json",
            "--json-out",
            str(tmp_path / "r.json"),
            *_sets(),
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "r.json").read_text()) == json.loads((out / "result.json").read_text())
    assert printed["seed"] == 3 and printed["preset"] == "demo" and printed["model"] == "unet"
    import yaml

    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["seed"] == 3 and cfg["model"]["width"] == 4 and cfg["data"]["root"] == str(data_root)


def test_train_cli_user_errors(data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["train", "--data", str(data_root), "--model", "nonet", "--out", str(tmp_path / "x"), *_sets()])
    err = capsys.readouterr().err
    assert code == 2 and "unknown model 'nonet'" in err and "unet" in err
    code = main(["train", "--data", str(data_root), "--out", str(tmp_path / "y"), "--ensemble", "ens_s"])
    assert code == 2 and "--masks" in capsys.readouterr().err
    code = main(["train", "--data", str(data_root), "--out", str(tmp_path / "z"), "--set", "schedule.epochs=0"])
    assert code == 2 and "schedule.epochs" in capsys.readouterr().err
    code = main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "w"), *_sets()])
    assert code == 2


def test_train_many_skips_finished_and_summarize(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    grid = tmp_path / "grid"
    args = [
        "train-many",
        "--data",
        str(data_root),
        "--models",
        "unet",
        "--seeds",
        "0-1",
        "--out",
        str(grid),
        "--preset",
        "demo",
        "--json",
        *_sets(),
    ]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert {k: v["status"] for k, v in report["runs"].items()} == {"unet/seed0": "trained", "unet/seed1": "trained"}
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert all(v["status"] == "skipped (finished)" for v in report["runs"].values())

    summary = summarize(grid)
    entry = summary["models"]["unet"]
    assert entry["n"] == 2 and entry["seeds"] == [0, 1] and entry["source"] == "validation"
    aps = [json.loads((grid / "unet" / f"seed{s}" / "result.json").read_text())["validation"]["ap"] for s in (0, 1)]
    assert entry["ap"]["mean"] == pytest.approx(sum(aps) / 2)
    assert entry["ap"]["std"] == pytest.approx(abs(aps[0] - aps[1]) / 2**0.5)
    assert main(["summarize", str(grid)]) == 0
    table = capsys.readouterr().out
    assert "unet" in table and "+-" in table
    assert main(["summarize", str(grid), "--split", "test"]) == 2


def test_parse_seeds() -> None:
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("3") == [3]
    assert parse_seeds("0-1,5,1") == [0, 1, 5]
    for bad in ("", "a", "4-2", "-1"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)
