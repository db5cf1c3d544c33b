"""spermseg bundle / predict / export on real files: folders, 16-bit TIFF, RGB JPEG, MP4, bad inputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch

from spermseg.cli import main
from spermseg.data.io import read_mask, read_soft_mask
from spermseg.errors import CheckpointError
from spermseg.inference.bundle import create_bundle, load_predictor
from spermseg.inference.video import VideoWriter
from spermseg.models import create_ensemble, create_model
from spermseg.models.checkpoints import save_checkpoint


def _frame(seed: int, size=(70, 90)) -> np.ndarray:
    """A gray frame with a bright 'sperm' (ellipse + line) on a noisy background, uint8."""
    rng = np.random.default_rng(seed)
    img = (rng.normal(100, 8, size)).clip(0, 255).astype(np.uint8)
    cv2.ellipse(img, (30, 35), (6, 4), 0, 0, 360, 200, -1)
    cv2.line(img, (30, 35), (80, 20 + seed % 10), 180, 1)
    return img


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny base-model checkpoints and an ensembling network over them (untrained but real)."""
    root = tmp_path_factory.mktemp("runs")
    torch.manual_seed(0)
    save_checkpoint(
        root / "unet" / "best", create_model("unet", width=4), {"normalization": "minmax", "threshold": 0.5}
    )
    save_checkpoint(root / "fpn" / "best", create_model("fpn", width=4), {"normalization": "mean", "threshold": 0.3})
    save_checkpoint(root / "ens" / "best", create_ensemble("ens_att_v2", 2, width=4), {"normalization": "minmax",
                                                                                     "threshold": 0.4})  # fmt: skip
    return {"unet": root / "unet", "fpn": root / "fpn", "ens": root / "ens", "root": root}


def test_bundle_kinds_thresholds_and_checksums(runs: dict[str, Path], tmp_path: Path) -> None:
    single = create_bundle([runs["unet"]], tmp_path / "single")
    avg = create_bundle([runs["unet"], runs["fpn"]], tmp_path / "avg")
    ens = create_bundle([runs["unet"], runs["fpn"]], tmp_path / "ens", ensemble=runs["ens"])
    assert json.loads((single / "bundle.json").read_text())["combine"] == "single"
    assert load_predictor(avg).threshold == pytest.approx(0.4)  # mean of 0.5 and 0.3
    predictor = load_predictor(ens)
    assert predictor.combine == "ensemble" and predictor.threshold == pytest.approx(0.4)
    x = torch.rand(2, 1, 45, 61)
    with torch.no_grad():
        prob = predictor(x)
    assert prob.shape == x.shape and float(prob.min()) >= 0 and float(prob.max()) <= 1
    # averaging bundle == mean of the members' probabilities (at a size that needs no padding, where the bundle's
    # one padding to the members' common divisor and each member's own padding agree)
    x = torch.rand(1, 1, 64, 96)
    with torch.no_grad():
        members = [load_predictor(r)(x) for r in (runs["unet"], runs["fpn"])]
        np.testing.assert_allclose(load_predictor(avg)(x), (members[0] + members[1]) / 2, atol=1e-5)
    weights = ens / "base_0_unet.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_predictor(ens)
    with pytest.raises(CheckpointError, match="takes 2 soft masks but 1"):
        create_bundle([runs["unet"]], tmp_path / "bad", ensemble=runs["ens"])


def _write_inputs(folder: Path) -> None:
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"f{i}.png"), _frame(i))
    tifffile.imwrite(folder / "deep.tif", _frame(3).astype(np.uint16) * 257)
    rgb = np.repeat(_frame(4)[..., None], 3, axis=2)
    cv2.imwrite(str(folder / "color.jpg"), rgb)


def test_predict_folder_tiff_jpeg_and_outputs(runs: dict[str, Path], tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    _write_inputs(inputs)
    out = tmp_path / "out"
    code = main(["predict", str(inputs), "--model", str(runs["unet"]), "--out", str(out), "--pixel-size", "0.5"])
    assert code == 0
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert sorted(Path(r["input"]).name for r in rows) == ["color.jpg", "deep.tif", "f0.png", "f1.png"]
    for row in rows:
        prob = read_soft_mask(out / row["soft_mask"])
        mask = read_mask(out / row["binary_mask"])
        assert prob.shape == (70, 90) == mask.shape
        np.testing.assert_array_equal(mask, prob >= float(row["threshold"]))
        assert (out / row["overlay"]).is_file()
    assert (out / "sperm.csv").read_text().startswith("input,frame,instance")


def test_predict_npy_threshold_tta_tiling_and_glob(runs: dict[str, Path], tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    _write_inputs(inputs)
    out = tmp_path / "out"
    args = ["predict", str(inputs / "f*.png"), "--model", str(runs["unet"]), "--out", str(out), "--soft-format",
            "npy", "--threshold", "0.9", "--tta", "--tile", "32", "--tile-overlap", "8", "--no-overlay"]  # fmt: skip
    assert main(args) == 0
    prob = np.load(out / "f0_prob.npy")
    assert prob.dtype == np.float32 and prob.shape == (70, 90)
    np.testing.assert_array_equal(read_mask(out / "f0_mask.png"), prob >= 0.9)
    assert not (out / "f0_overlay.png").exists()


def test_predict_video_streams_frames(runs: dict[str, Path], tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    with VideoWriter(video, fps=5, size=(64, 80)) as writer:
        for i in range(5):
            writer.write(np.repeat(_frame(i, (64, 80))[..., None], 3, axis=2))
    out = tmp_path / "out"
    assert main(["predict", str(video), "--model", str(runs["unet"]), "--out", str(out), "--batch-size", "2"]) == 0
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [int(r["frame"]) for r in rows] == [0, 1, 2, 3, 4]
    assert (out / "clip" / "frame_000004_mask.png").is_file()
    cap = cv2.VideoCapture(str(out / "clip_overlay.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    cap.release()


def test_predict_bad_inputs(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", str(empty), "--model", str(runs["unet"]), "--out", str(tmp_path / "o1")]) == 2
    assert "holds no image" in capsys.readouterr().err
    mixed = tmp_path / "mixed"
    _write_inputs(mixed)
    (mixed / "broken.png").write_bytes(cv2.imencode(".png", _frame(9))[1].tobytes()[:200])
    out = tmp_path / "o2"
    assert main(["predict", str(mixed), "--model", str(runs["unet"]), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "broken.png" in err and "1 input(s) failed" in err
    assert len(list(csv.DictReader((out / "predictions.csv").open()))) == 4
    assert main(["predict", str(mixed), "--model", str(tmp_path / "nope"), "--out", str(out)]) == 2


@pytest.mark.slow
def test_onnx_export_parity_of_an_ensemble_bundle(runs: dict[str, Path], tmp_path: Path) -> None:
    bundle = create_bundle([runs["unet"], runs["fpn"]], tmp_path / "ens", ensemble=runs["ens"])
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", "--model", str(bundle), "--out", str(onnx_path), "--check"]) == 0
    inputs = tmp_path / "in"
    _write_inputs(inputs)
    for backend, model in (("torch", bundle), ("onnx", onnx_path)):
        assert main(["predict", str(inputs), "--model", str(model), "--backend", backend, "--out",
                     str(tmp_path / backend), "--soft-format", "npy"]) == 0  # fmt: skip
    for name in ("f0", "deep", "color"):
        diff = np.abs(
            np.load(tmp_path / "torch" / f"{name}_prob.npy") - np.load(tmp_path / "onnx" / f"{name}_prob.npy")
        )
        assert diff.max() < 1e-4


def test_predict_precision_flag(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--precision fp32 is the CPU default; bf16 can be chosen (and on CUDA turned off); bad values are user errors."""
    inputs = tmp_path / "in"
    _write_inputs(inputs)
    probs = {}
    for precision in ("auto", "fp32", "bf16"):
        out = tmp_path / precision
        argv = ["predict", str(inputs / "f0.png"), "--model", str(runs["unet"]), "--out", str(out)]
        assert main([*argv, "--soft-format", "npy", "--precision", precision, "--no-overlay"]) == 0
        probs[precision] = np.load(out / "f0_prob.npy")
    assert np.array_equal(probs["auto"], probs["fp32"])  # CPU: auto is float32
    assert not np.array_equal(probs["bf16"], probs["fp32"]) and np.abs(probs["bf16"] - probs["fp32"]).max() < 0.05
    with pytest.raises(SystemExit):
        main(["predict", str(inputs), "--model", str(runs["unet"]), "--out", str(tmp_path / "x"), "--precision", "x"])
