"""Tests of the synthetic generator's contrast modes and per-video pixel size (docs/synth.md, "Contrast modes")."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from spermseg.data.synth import SynthConfig, generate_dataset
from spermseg.data.synth.config import MODES
from spermseg.data.synth.dataset import render_item, scene_for
from spermseg.errors import ConfigError


def mode_cfg(mode: str, px: float | None = 0.2, size: int = 160) -> SynthConfig:
    """One contrast mode at one pixel size, a few sperm kept inside a small frame, no debris."""
    cfg = dataclasses.replace(SynthConfig(), height=size, width=size, pixel_size_um=px)
    cfg.appearance.mode = mode
    cfg.sperm.count = (3, 3)
    cfg.sperm.border_margin_um = 0.0
    for name in ("lines", "spills", "stains", "head_debris"):
        setattr(cfg.background, name, (0, 0))
    for look in MODES:
        getattr(cfg.appearance, look).specks = (0, 0)
        getattr(cfg.appearance, look).bubbles = (0, 0)
    return cfg


def head_and_background(cfg: SynthConfig, video: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Head pixels, a ring just outside the heads, and the median background of one frame (floats in [0, 1])."""
    from scipy import ndimage as ndi

    fr = render_item(cfg, scene_for(cfg, 5, video), 5, video, 0)
    img = fr.image.astype(np.float32) / 255.0
    head = fr.truth["head"]
    ring = ndi.binary_dilation(head, iterations=4) & ~ndi.binary_dilation(head, iterations=1)
    far = ~ndi.binary_dilation(fr.truth["full"], iterations=12)
    return img[head], img[ring & ~fr.truth["full"]], float(np.median(img[far]))


def test_brightfield_frames_have_dark_heads_on_a_light_background() -> None:
    """Stained bright-field (as spermparsing): background >= 0.65, head medians well below half of it."""
    cfg = mode_cfg("brightfield")
    for video in (1, 2, 3):
        head, _, bg = head_and_background(cfg, video)
        assert head.size > 50
        assert bg >= 0.65
        assert np.median(head) < 0.55 * bg


def test_relief_frames_shade_heads_bright_on_one_side_and_dark_on_the_other() -> None:
    """Hoffman modulation: a head and its rim hold pixels clearly above and clearly below the background."""
    cfg = mode_cfg("relief")
    for video in (1, 2, 3):
        head, ring, bg = head_and_background(cfg, video)
        around = np.concatenate([head, ring])
        assert around.max() > bg + 0.04
        assert around.min() < bg - 0.04
        # and, unlike bright-field, the head is not mostly dark: absorption is weak
        assert np.median(head) > 0.75 * bg


def test_phase_is_the_original_dark_core_look_with_a_lower_contrast_than_brightfield() -> None:
    darkening = {}
    for mode in ("phase", "brightfield"):
        cfg = mode_cfg(mode)
        vals = [1 - np.median(h) / bg for h, _, bg in (head_and_background(cfg, v) for v in (1, 2, 3, 4))]
        darkening[mode] = float(np.median(vals))
    assert darkening["brightfield"] > darkening["phase"] + 0.2


@pytest.mark.parametrize("px", [0.1, 0.3])
def test_sperm_keep_their_physical_size_at_every_pixel_size(px: float) -> None:
    """Heads are 4-5 um long whatever the pixel size: their pixel area scales with 1 / px^2."""
    cfg = mode_cfg("brightfield", px=px, size=256)
    scene = scene_for(cfg, 2, 1)
    assert scene.pixel_size_um == px
    lengths_um = [sp.head_length * px for sp in scene.sperm]
    assert all(4.0 <= v <= 5.0 for v in lengths_um)
    # optics blur more pixels at a finer pixel size (same microscope, smaller pixels)
    assert scene.psf == pytest.approx(scene_for(dataclasses.replace(cfg, pixel_size_um=0.3), 2, 1).psf * 0.3 / px)


def test_mix_draws_every_mode_and_the_pixel_size_per_video_and_records_them(tmp_path: Path) -> None:
    cfg = dataclasses.replace(SynthConfig(), height=48, width=48)
    cfg.images_per_video = 1
    manifest = generate_dataset(tmp_path / "s", cfg, n_train=24, n_test=0, n_test_small=0, seed=0,
                                show_progress=False)  # fmt: skip
    cond = manifest["conditions"]
    assert len(cond) == 24
    assert {c["mode"] for c in cond.values()} == set(MODES)
    # each video's pixel size lies in its mode's range (bright-field smears at high magnification)
    for c in cond.values():
        lo, hi = getattr(cfg.appearance, c["mode"]).pixel_size_um
        assert lo <= c["pixel_size_um"] <= hi
    assert len({c["pixel_size_um"] for c in cond.values()}) == 24
    assert json.loads((tmp_path / "s" / "synth.json").read_text())["conditions"] == cond


def test_a_fixed_pixel_size_and_mode_apply_to_every_video() -> None:
    cfg = mode_cfg("relief", px=0.25)
    scenes = [scene_for(cfg, 0, v) for v in (1, 2, 3)]
    assert {s.mode for s in scenes} == {"relief"} and {s.pixel_size_um for s in scenes} == {0.25}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"mode": "dic"}, "appearance.mode"),
        ({"mix_weights": (0.0, 0.0, 0.0)}, "mix_weights"),
        ({"mix_weights": (1.0, 1.0)}, "mix_weights"),
    ],
)
def test_bad_appearance_settings_are_config_errors(tmp_path: Path, override: dict, message: str) -> None:
    cfg = dataclasses.replace(SynthConfig(), height=32, width=32)
    cfg.appearance = dataclasses.replace(cfg.appearance, **override)
    with pytest.raises(ConfigError, match=message):
        generate_dataset(tmp_path / "s", cfg, n_train=1, n_test=0, n_test_small=0, show_progress=False)


def test_a_bad_pixel_size_range_is_a_config_error(tmp_path: Path) -> None:
    cfg = dataclasses.replace(SynthConfig(), height=32, width=32)
    cfg.appearance.relief.pixel_size_um = (0.3, 0.1)
    with pytest.raises(ConfigError, match="appearance.relief.pixel_size_um"):
        generate_dataset(tmp_path / "s", cfg, n_train=1, n_test=0, n_test_small=0, show_progress=False)
