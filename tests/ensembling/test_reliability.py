"""Issue 14: corrupt files are detected instead of used (mask-cache entries, bundle manifests, resume states),
impossible export and tiling values are refused. Each test fails on the behaviour before the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_mask_cache import make_run, write_dataset

from spermseg.cli import main
from spermseg.ensembling.mask_cache import build_cache, load_cached_masks
from spermseg.errors import CheckpointError, DataError
from spermseg.inference.bundle import create_bundle, load_predictor
from spermseg.models import create_model
from spermseg.models.checkpoints import save_checkpoint
from spermseg.training.state import load_training_state, save_training_state

# ----------------------------------------------------------------------------------------------------------------
# 14.3 mask cache
# ----------------------------------------------------------------------------------------------------------------


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x40
    path.write_bytes(bytes(data))


def test_broken_cache_entries_are_rebuilt_and_never_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A truncated or bit-flipped entry counted as fresh, then 'ensemble eval' crashed with a traceback (or read
    wrong masks silently)."""
    data = write_dataset(tmp_path / "data")
    run = make_run(tmp_path / "runs" / "a", 0, val_ap=0.5)
    cache = tmp_path / "cache"
    build_cache([run], data, ["train", "test"], cache, device="cpu")
    entry = cache / "masks" / "a" / "test.npy"
    good = entry.read_bytes()

    for corrupt in (lambda p: p.write_bytes(good[: len(good) // 2]), _flip_last_byte):
        corrupt(entry)
        with pytest.raises(DataError, match="broken"):
            load_cached_masks(cache, "test", ["a"])
        assert main(["ensemble", "eval", "--cache", str(cache), "--split", "test", "--out", str(tmp_path / "t")]) == 2
        err = capsys.readouterr().err
        assert "rerun 'spermseg masks'" in err and "Traceback" not in err
        rebuilt = build_cache([run], data, ["test"], cache, device="cpu")
        assert rebuilt["last_build"]["built"] == ["a/test"]
        assert entry.read_bytes() == good


# ----------------------------------------------------------------------------------------------------------------
# 14.6 bundle.json
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bundle_src")
    torch.manual_seed(0)
    save_checkpoint(root / "unet" / "best", create_model("unet", width=4), {"normalization": "minmax",
                                                                             "threshold": 0.5})  # fmt: skip
    return root / "unet"


def manifest_digest(manifest: dict) -> str:
    """The documented manifest checksum: sha256 of the canonical JSON without the ``manifest_sha256`` key."""
    import hashlib

    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _edit(bundle: Path, change, *, rehash: bool) -> None:  # noqa: ANN001 - a small callable
    manifest = json.loads((bundle / "bundle.json").read_text())
    change(manifest)
    if rehash:  # a consistent but invalid manifest: the schema checks, not the checksum, must catch it
        manifest["manifest_sha256"] = manifest_digest(manifest)
    (bundle / "bundle.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("change", "rehash", "needle"),
    [
        (lambda m: m.update(threshold=7.5), False, "checksum mismatch"),
        (lambda m: m.update(threshold=7.5), True, "threshold 7.5"),
        (lambda m: m["members"][0].pop("sha256"), True, "lacks sha256"),
        (lambda m: m["members"][0].update(file="../unet/best.safetensors"), True, "inside the bundle"),
        (lambda m: m["members"][0].update(file="/etc/passwd"), True, "inside the bundle"),
        (lambda m: m["members"][0].update(normalization="zscore"), True, "unknown normalization 'zscore'"),
        (lambda m: m.update(combine="ensemble"), True, "does not fit"),
        (lambda m: m.pop("manifest_sha256"), False, "manifest_sha256 is missing"),
    ],
)
def test_bundle_manifest_is_validated_once(
    bundle_src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], change, rehash: bool, needle: str
) -> None:  # noqa: ANN001
    """A threshold of 7.5 gave empty masks (exit 0), a removed sha256 a KeyError traceback, a member path could
    leave the bundle, an unknown normalization failed per input; now one line for the bundle, exit 2."""
    bundle = create_bundle([bundle_src], tmp_path / "b")
    _edit(bundle, change, rehash=rehash)
    with pytest.raises(CheckpointError, match=needle):
        load_predictor(bundle)
    images = tmp_path / "in"
    images.mkdir()
    for i in range(2):
        import cv2

        cv2.imwrite(str(images / f"{i}.png"), np.full((32, 32), 100 + i, np.uint8))
    assert main(["predict", str(images), "--model", str(bundle), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bundle.json" in err
    assert not (tmp_path / "o").exists()


def test_bundle_threshold_outside_0_1_is_refused(bundle_src: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="outside"):
        create_bundle([bundle_src], tmp_path / "b", threshold=2.0)
    with pytest.raises(SystemExit) as exc:
        main(["bundle", "--base", str(bundle_src), "--out", str(tmp_path / "c"), "--threshold", "2"])
    assert exc.value.code == 2 and not (tmp_path / "c").exists()


def test_bundle_sidecar_is_checksummed(bundle_src: Path, tmp_path: Path) -> None:
    bundle = create_bundle([bundle_src], tmp_path / "b")
    sidecar = bundle / "base_0_unet.json"
    meta = json.loads(sidecar.read_text())
    meta["model_kwargs"]["width"] = 8
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="checksum mismatch for .*base_0_unet.json"):
        load_predictor(bundle)


# ----------------------------------------------------------------------------------------------------------------
# 14.9 resume states, export opset
# ----------------------------------------------------------------------------------------------------------------


def _state(tmp_path: Path) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = create_model("unet", width=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    save_training_state(tmp_path, epoch=1, model=model, optimizer=opt, scheduler=None)
    return model, opt


def test_a_flipped_bit_in_the_training_state_is_refused(tmp_path: Path) -> None:
    """A flipped bit in state/epoch_0001.safetensors resumed silently with different weights."""
    model, opt = _state(tmp_path)
    tensors = tmp_path / "state" / "epoch_0001.safetensors"
    _flip_last_byte(tensors)
    with pytest.raises(CheckpointError, match="sha256"):
        load_training_state(tmp_path, model=model, optimizer=opt, scheduler=None)
    _flip_last_byte(tensors)  # restored: loads again
    load_training_state(tmp_path, model=model, optimizer=opt, scheduler=None)
    info = tmp_path / "state" / "epoch_0001.json"
    info.write_text(info.read_text().replace('"epoch": 1', '"epoch": 5'))
    with pytest.raises(CheckpointError, match="sha256"):
        load_training_state(tmp_path, model=model, optimizer=opt, scheduler=None)


def test_export_refuses_an_opset_it_cannot_write(
    bundle_src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """'export --opset 3' wrote opset 18 and said nothing."""
    assert main(["export", "--model", str(bundle_src), "--out", str(tmp_path / "m.onnx"), "--opset", "3"]) == 2
    assert "--opset 3 cannot be exported" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
