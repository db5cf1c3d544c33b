"""Typed config: YAML + overrides, unknown keys listed, resolved config round-trips."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from spermseg.config import load_config_file, parse_overrides, resolve_config, save_config
from spermseg.errors import ConfigError


@dataclass(frozen=True)
class Optim:
    lr: float = 1e-3
    milestones: tuple[int, ...] = (30, 80)


@dataclass(frozen=True)
class Cfg:
    epochs: int = 300
    name: str = "unet"
    norm: Literal["none", "mean", "minmax"] = "minmax"
    out: Path | None = None
    optim: Optim = field(default_factory=Optim)


def test_overrides_parse_yaml_values() -> None:
    assert parse_overrides(["optim.lr=1e-4", "epochs=3", "optim.milestones=[1, 2]"]) == {
        "optim": {"lr": 1e-4, "milestones": [1, 2]},
        "epochs": 3,
    }


def test_resolve_yaml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 10\noptim:\n  lr: 0.01\n")
    cfg = resolve_config(Cfg, yaml_path=path, overrides=["optim.milestones=5,15", "norm=mean"])
    assert cfg.epochs == 10
    assert cfg.optim.lr == 0.01
    assert cfg.optim.milestones == (5, 15)
    assert cfg.norm == "mean"
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config_file(Cfg, tmp_path / "resolved.yaml") == cfg


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("epoch=3", "valid keys: epochs, name, norm, optim, out"),
        ("optim.lr=abc", "expected a number"),
        ("norm=zscore", "valid values: none, mean, minmax"),
        ("epochs=1.5", "expected an integer"),
        ("noequals", "key=value"),
    ],
)
def test_bad_overrides_are_clear(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        resolve_config(Cfg, overrides=[override])


def test_missing_yaml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        resolve_config(Cfg, yaml_path=tmp_path / "nope.yaml")


def test_on_off_choices_survive_yaml_booleans() -> None:
    # `--set runtime.amp=off` reached the Literal check as False (YAML 1.1 reads bare off/on as booleans)
    from spermseg.training.config import train_config

    cfg = train_config("demo", overrides=["runtime.amp=off", "runtime.channels_last=on"])
    assert cfg.runtime.amp == "off" and cfg.runtime.channels_last == "on"
    with pytest.raises(ConfigError, match="valid values"):
        train_config("demo", overrides=["runtime.amp=maybe"])
