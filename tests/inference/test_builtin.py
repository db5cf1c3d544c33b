"""``--model builtin``: the bundle that ships in the package (float16, checksums verified) and its refusals.

The mechanism is tested with a tiny bundle written in the test (``bundle.BUILTIN_DIR`` monkeypatched), not with shipped
weights; the last test checks the shipped model itself and skips while none ships.
"""

from __future__ import annotations

import fnmatch
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

import spermseg
from spermseg.cli import main
from spermseg.data.io import write_image
from spermseg.errors import CheckpointError, SpermsegError
from spermseg.inference import builtin, bundle

REPO = Path(__file__).resolve().parents[2]


def _tiny_bundle(root: Path, width: int = 4) -> Path:
    from spermseg.inference.bundle import create_bundle
    from spermseg.models import create_model
    from spermseg.models.checkpoints import save_checkpoint

    torch.manual_seed(0)
    model = create_model("unet", width=width)
    meta = {"normalization": "minmax", "threshold": 0.4, "whole_sperm": {"min_head_radius": None}}
    stem = save_checkpoint(root / "run" / "best", model, meta)
    return create_bundle([stem], root / "bundle")


@pytest.fixture()
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A built-in model written by write_builtin into a monkeypatched package folder."""
    dest = tmp_path / "package" / "builtin"
    builtin.write_builtin(_tiny_bundle(tmp_path), dest, {"command": "test", "data_seed": 3})
    monkeypatch.setattr(bundle, "BUILTIN_DIR", dest)
    return dest


def test_without_weights_every_entry_point_says_so_in_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(bundle, "BUILTIN_DIR", tmp_path / "empty")  # an installation without the weights
    img = tmp_path / "frames" / "f0.png"
    img.parent.mkdir()
    write_image(img, np.full((32, 32), 0.5, np.float32))
    commands = [
        ["predict", str(img), "--model", "builtin", "--out", str(tmp_path / "p")],
        ["export", "--model", "builtin", "--out", str(tmp_path / "m.onnx")],
        [
            "track",
            str(img.parent),
            "--model",
            "builtin",
            "--fps",
            "25",
            "--pixel-size",
            "0.3",
            "--out",
            str(tmp_path / "t"),
        ],
        ["train", "--data", str(tmp_path), "--init", "builtin", "--out", str(tmp_path / "r"), "--preset", "demo"],
    ]
    for argv in commands:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "no built-in model" in err[0], (argv, err)
        assert "missing from this installation" in err[0], (argv, err)
    assert not (tmp_path / "p").exists() and not (tmp_path / "t").exists()
    with pytest.raises(SpermsegError, match="no built-in model"):
        spermseg.load_predictor()
    with pytest.raises(SpermsegError, match="no built-in model"):
        spermseg.load_model("builtin")
    assert bundle.builtin_model_path() is None


def test_float16_bundle_loads_everywhere_and_predicts_like_its_float32_source(shipped: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from spermseg.inference.backends import torch_backend
    from spermseg.inference.bundle import load_predictor

    manifest = json.loads((shipped / "bundle.json").read_text())
    assert manifest["builtin"]["data_seed"] == 3 and manifest["builtin"]["dtype"] == "float16"
    assert manifest["builtin"]["spermseg_version"] == spermseg.__version__
    weights = load_file(str(shipped / manifest["members"][0]["file"]))
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float16}
    frames = np.random.default_rng(0).random((2, 48, 40), dtype=np.float32)
    ref = torch_backend(load_predictor(tmp_path / "bundle"), "cpu")(frames)
    out = torch_backend(spermseg.load_predictor(), "cpu")(frames)  # default: builtin
    assert 0 < float(np.abs(out - ref).max()) < 5e-3  # float16 rounding, nothing else
    assert spermseg.load_predictor().threshold == pytest.approx(0.4)
    model = spermseg.load_model("builtin")
    assert next(model.parameters()).dtype == torch.float32  # stored float16, computed float32
    # predict on the CLI
    img = tmp_path / "img.png"
    write_image(img, frames[0])
    assert main(["predict", str(img), "--model", "builtin", "--out", str(tmp_path / "pred"), "--no-overlay"]) == 0
    assert (tmp_path / "pred" / "img_mask.png").is_file()
    # the napari widget's door: builtin is offered and resolves to the verified folder
    from spermseg.napari import _core

    assert _core.builtin_model_path() == shipped and _core.resolve_model("builtin") == shipped


def test_a_changed_file_fails_the_checksum_with_a_reinstall_hint(shipped: Path, tmp_path: Path, capsys) -> None:
    weights = next(shipped.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the last tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum.*reinstall spermseg"):
        spermseg.load_predictor("builtin")
    img = tmp_path / "img.png"
    write_image(img, np.full((32, 32), 0.5, np.float32))
    assert main(["predict", str(img), "--model", "builtin", "--out", str(tmp_path / "p")]) == 2
    assert "reinstall spermseg" in capsys.readouterr().err
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    (shipped / "bundle.json").write_text(
        (shipped / "bundle.json").read_text().replace('"data_seed": 3', '"data_seed": 4')
    )
    with pytest.raises(CheckpointError, match="reinstall spermseg"):  # the manifest's own checksum
        spermseg.load_predictor("builtin")


def test_onnx_backend_and_ensembles_are_refused_with_the_way_out(shipped: Path, tmp_path: Path) -> None:
    from spermseg.inference.options import PredictOptions
    from spermseg.inference.predict import build_batch_fn
    from spermseg.models import create_model
    from spermseg.models.checkpoints import save_checkpoint

    with pytest.raises(SpermsegError, match="spermseg export --model builtin"):
        build_batch_fn("builtin", PredictOptions(backend="onnx"))
    from spermseg.inference.bundle import create_bundle

    second = save_checkpoint(tmp_path / "r2" / "best", create_model("unet", width=4), {"normalization": "minmax"})
    avg = create_bundle([tmp_path / "run" / "best", second], tmp_path / "avg")
    with pytest.raises(CheckpointError, match="must be one network"):
        builtin.write_builtin(avg, tmp_path / "b2", {})
    # a local folder called builtin stays reachable as a path
    assert not bundle.is_builtin(Path("builtin")) and not bundle.is_builtin("./builtin")


def test_wheels_carry_every_file_write_builtin_writes(shipped: Path) -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["spermseg.builtin"]
    written = sorted(p.name for p in shipped.iterdir())
    assert written and all(any(fnmatch.fnmatch(n, pat) for pat in patterns) for n in written), (written, patterns)
    assert (REPO / "src" / "spermseg" / "builtin").resolve() == Path(bundle.__file__).resolve().parents[1] / "builtin"


@pytest.mark.slow
def test_export_of_builtin_writes_onnx(shipped: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    assert main(["export", "--model", "builtin", "--out", str(tmp_path / "b.onnx"), "--check"]) == 0


@pytest.mark.slow
def test_train_builtin_script_makes_a_loadable_builtin(tmp_path: Path, monkeypatch) -> None:
    """scripts/train_builtin.py end to end at toy size: synth -> train -> bundle -> float16, provenance recorded."""
    import subprocess
    import sys

    dest = tmp_path / "dest"
    argv = ["--work", str(tmp_path / "work"), "--dest", str(dest), "--train", "8", "--test", "2", "--size", "64", "64",
            "--preset", "demo", "--width", "4", "--set", "schedule.epochs=1", "--data-seed", "5"]  # fmt: skip
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "train_builtin.py"), *argv], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    monkeypatch.setattr(bundle, "BUILTIN_DIR", dest)
    info = builtin.builtin_info()
    assert info["data_seed"] == 5 and info["command"].startswith("python scripts/train_builtin.py")
    assert info["steps"][0].startswith("spermseg synth") and "--seed 5" in info["steps"][0]
    assert (dest / "base_0_unet.safetensors").stat().st_mode & 0o044 == 0o044  # readable by all
    assert spermseg.load_predictor().combine == "single"


def test_the_shipped_model_segments_a_synthetic_frame() -> None:
    """The shipped model finds the sperm of a synthetic frame it never saw (seed 12345, a different seed from its
    training data): IoU with the exact truth at its own threshold above 0.35 (an empty or random mask scores near
    0; the shipped weights score 0.43 here and IoU_opt 0.51 on their 40 synthetic test images, bundle.json)."""
    if bundle.builtin_model_path() is None:
        pytest.skip("no built-in weights in this checkout (scripts/train_builtin.py makes them)")
    from spermseg.data.synth import SynthConfig, render_item, scene_for
    from spermseg.inference.options import PredictOptions
    from spermseg.inference.predict import build_batch_fn

    cfg = SynthConfig(height=256, width=256)
    frame = render_item(cfg, scene_for(cfg, 12345, 0), 12345, 0, 0)
    fn, threshold = build_batch_fn("builtin", PredictOptions(device="cpu"))
    pred = fn((frame.image.astype(np.float32) / 255.0)[None])[0] >= threshold
    truth = frame.truth["full"]
    iou = np.logical_and(pred, truth).sum() / max(np.logical_or(pred, truth).sum(), 1)
    assert truth.any() and iou > 0.35, iou
