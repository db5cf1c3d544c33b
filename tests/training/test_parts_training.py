"""The parts target: multi-class loss, code augmentation, and a tiny end-to-end training run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spermseg.cli import main
from spermseg.data.labels import write_labels
from spermseg.training.losses import parts_loss
from spermseg.training.parts import augment_parts

_spec = importlib.util.spec_from_file_location("train_helpers", Path(__file__).with_name("train_helpers.py"))
assert _spec is not None and _spec.loader is not None
train_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_helpers)


def test_parts_loss_is_small_for_the_right_codes_and_dice_weights_small_parts() -> None:
    codes = torch.tensor([[[[0, 0, 5, 5], [0, 2, 2, 3]]]], dtype=torch.float32)
    good = torch.nn.functional.one_hot(codes[:, 0].long(), 6).permute(0, 3, 1, 2).float() * 20
    assert parts_loss(good, codes) < 0.01
    assert parts_loss(torch.zeros_like(good), codes) > parts_loss(good, codes)
    ce_only = parts_loss(torch.zeros_like(good), codes, dice_weight=0)
    assert ce_only == pytest.approx(float(np.log(6)), rel=1e-5)


def test_foreground_term_is_the_binary_cross_entropy_of_one_minus_background() -> None:
    """loss.foreground_weight adds BCE(1 - softmax[background], any part): a pixel whose mass is split between
    tail and midpiece is sure foreground and pays (almost) nothing there, however its code is split."""
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 5, 7)
    codes = torch.randint(0, 6, (2, 1, 5, 7)).float()
    p_fg = 1 - torch.softmax(logits, 1)[:, 0]
    bce = torch.nn.functional.binary_cross_entropy(p_fg, (codes[:, 0] > 0).float())
    plain = parts_loss(logits, codes, dice_weight=0)
    assert parts_loss(logits, codes, dice_weight=0, foreground_weight=2.0) == pytest.approx(
        float(plain + 2 * bce), rel=1e-5
    )
    split = torch.full((1, 6, 1, 1), -20.0)
    split[0, 4], split[0, 5] = 10.0, 10.0  # half midpiece, half tail, no background
    tail = torch.full((1, 1, 1, 1), 5.0)
    fg_only = parts_loss(split, tail, dice_weight=0, foreground_weight=1.0) - parts_loss(split, tail, dice_weight=0)
    assert 0 <= float(fg_only) < 1e-6


def test_foreground_weight_is_refused_for_binary_networks() -> None:
    from spermseg.errors import ConfigError
    from spermseg.training.config import train_config

    with pytest.raises(ConfigError, match="loss.foreground_weight"):
        train_config("demo", overrides=["loss.foreground_weight=1"])
    with pytest.raises(ConfigError, match="loss.foreground_weight"):
        train_config("demo", overrides=["loss.foreground_weight=-1", "data.target=parts"])
    assert train_config("demo", overrides=["loss.foreground_weight=1", "data.target=parts"]).loss.foreground_weight == 1


def test_augment_parts_keeps_codes_and_moves_them_with_the_image() -> None:
    from spermseg.data.transforms import AugmentConfig, Augmenter

    img = torch.zeros(1, 1, 8, 8)
    img[..., :, :4] = 1.0
    codes = torch.zeros(1, 1, 8, 8)
    codes[..., :, :4] = 4
    codes[..., 0, 0] = 3
    aug = Augmenter(AugmentConfig(enabled=True, p=1.0, ops=("hflip",)))
    out_img, out_codes = augment_parts(aug, img, codes, torch.Generator().manual_seed(0), None)
    assert set(out_codes.unique().tolist()) <= {0.0, 3.0, 4.0}
    assert torch.equal(out_codes > 0, out_img > 0.5)  # codes followed the image


def _parts_dataset(root: Path) -> Path:
    train_helpers.make_lines_dataset(root, n_groups=3, per_group=2, size=32, splits=("train",))
    import cv2

    for mask_path in sorted((root / "train" / "GT1_full").iterdir()):
        full = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 0
        codes = np.where(full, 5, 0).astype(np.uint8)
        codes[:, :8][full[:, :8]] = 2
        write_labels(root / "train" / "GT1_parts" / mask_path.name, codes, "parts")
    return root


def test_train_parts_target_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """spermseg train --target parts: a six-channel model, started at the code frequencies of its training
    targets, selected by validation mIoU, that predict can run."""
    import spermseg.models.blocks as blocks

    priors: list = []
    real = blocks.set_output_bias
    monkeypatch.setattr(blocks, "set_output_bias", lambda model, prior: priors.append(prior) or real(model, prior))
    root = _parts_dataset(tmp_path / "data")
    out = tmp_path / "run"
    args = ["train", "--data", str(root), "--preset", "demo", "--target", "parts", "--out", str(out)]
    sets = ["--set", "schedule.epochs=2", "--set", "model.width=4", "--set", "validation.fraction=0.34",
            "--set", "model.bias_prior=true"]  # fmt: skip
    assert main([*args, *sets]) == 0
    assert len(priors) == 1 and len(priors[0]) == 6, "a part network's bias starts at one frequency per code"
    assert sum(priors[0]) == pytest.approx(1.0, abs=1e-4) and priors[0][0] == max(priors[0])  # background first
    done = [line for line in capsys.readouterr().err.splitlines() if "done in" in line]
    assert done and "val mIoU" in done[-1] and "val AP" not in done[-1], "the summary names the score it selected on"
    result = json.loads((out / "result.json").read_text())
    assert 0 <= result["validation"]["miou"] <= 1 and "iou_tail" in result["validation"]
    meta = json.loads((out / "best.json").read_text())
    assert meta["model_kwargs"]["out_channels"] == 6
    # the foreground's validation t_opt is the run's threshold (it was the 0.5 default before)
    assert 0 <= result["validation"]["fg_iou_opt"] <= 1 and meta["threshold"] == result["validation"]["t_opt"]
    pred = tmp_path / "pred"
    assert main(["predict", str(root / "train" / "images"), "--model", str(out), "--out", str(pred),
                 "--no-overlay", "--instances"]) == 0  # fmt: skip
    assert len(list(pred.glob("*_parts.png"))) == 6 and len(list(pred.glob("*_instances.png"))) == 6
    assert main(["evaluate", "--target", "parts", "--pred", str(pred), "--gt", str(root), "--split", "train"]) == 0
