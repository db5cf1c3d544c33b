"""Soft-mask cache: contents, provenance, skipping fresh entries, rebuilding stale ones, errors, the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from spermseg.ensembling.mask_cache import (
    build_cache,
    cached_scores,
    default_model_ids,
    file_sha256,
    load_cached_masks,
    load_manifest,
)
from spermseg.errors import CheckpointError, DataError, SpermsegError

SIZE = 48


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """One torch thread: on a loaded 2-core machine two spinning threads make tiny convolutions ~100x slower."""
    import torch

    torch.set_num_threads(1)


def write_dataset(root: Path, seed: int = 0) -> Path:
    """A tiny SegSperm-layout set: dark curved lines (GT1 full masks) on noisy gray backgrounds.

    train: 3 videos x 2 frames, test: 2 videos x 2 frames, SIZE x SIZE.
    """
    from spermseg.data.io import write_image, write_mask

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for split, videos in (("train", (1, 2, 3)), ("test", (7, 8))):
        for v in videos:
            for frame in range(2):
                a, b = rng.uniform(-0.8, 0.8), rng.uniform(10, SIZE - 10)
                curve = np.abs(yy - (a * (xx - SIZE / 2) + b + 4 * np.sin(xx / 7.0))) < 1.2
                img = 0.55 + 0.05 * rng.standard_normal((SIZE, SIZE)) - 0.3 * curve
                name = f"{v}_{frame:04d}_1.png"
                write_image(root / split / "images" / name, np.clip(img, 0, 1))
                write_mask(root / split / "GT1_full" / name, curve)
    return root


def make_run(run_dir: Path, seed: int, *, name: str = "unet", val_ap: float | None = None) -> Path:
    """An (untrained) tiny base model saved as a finished run: best checkpoint, config seed, result.json."""
    import torch

    from spermseg.models import create_model
    from spermseg.models.checkpoints import save_checkpoint

    torch.manual_seed(seed)
    model = create_model(name, width=4)
    save_checkpoint(run_dir / "best", model, {"normalization": "minmax", "threshold": 0.5, "config": {"seed": seed}})
    if val_ap is not None:
        (run_dir / "result.json").write_text(json.dumps({"validation": {"ap": val_ap}}))
    return run_dir


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("mc")
    data = write_dataset(base / "data")
    runs = [make_run(base / "runs" / f"unet_s{s}", s, val_ap=0.1 * (s + 1)) for s in range(2)]
    return {"base": base, "data": data, "r0": runs[0], "r1": runs[1]}


def test_cache_contents_and_provenance(setup: dict[str, Path], tmp_path: Path) -> None:
    from spermseg.data.arrays import load_split
    from spermseg.inference.forward import predict_probs
    from spermseg.models.checkpoints import load_model

    cache = tmp_path / "cache"
    manifest = build_cache([setup["r0"], setup["r1"]], setup["data"], ["train", "test"], cache, device="cpu")
    assert sorted(manifest["last_build"]["built"]) == sorted(
        ["unet_s0/train", "unet_s1/train", "unet_s0/test", "unet_s1/test"]
    )
    info = manifest["models"]["unet_s0"]
    assert info["checkpoint_sha256"] == file_sha256(setup["r0"] / "best.safetensors")
    assert info["normalization"] == "minmax" and info["model"] == "unet" and info["seed"] == 0
    arrays = load_split(setup["data"], "test")
    entry = info["entries"]["test"]
    assert entry["data_fingerprint"] == arrays.fingerprint
    assert entry["dtype"] == "float16" and entry["spermseg_version"]
    assert np.load(cache / entry["file"]).dtype == np.float16

    names, masks = load_cached_masks(cache, "test", ["unet_s1", "unet_s0"])
    assert names == list(arrays.names)
    assert masks.shape == (4, 2, SIZE, SIZE) and masks.dtype == np.float32
    direct = predict_probs(load_model(setup["r0"]), list(arrays.images), "minmax")
    # channel order follows the requested ids; float16 storage keeps ~3 significant digits
    np.testing.assert_allclose(masks[:, 1], direct, atol=1e-3)
    assert not np.allclose(masks[:, 0], masks[:, 1])  # two different networks
    # no temporary files are left by the atomic writes
    assert not [p for p in cache.rglob(".*") if p.is_file()]

    assert set(cached_scores(cache, "test")) == {"unet_s0", "unet_s1"}


def test_float16_storage_keeps_ap_where_8bit_does_not() -> None:
    """Why float16: on spread-out soft masks it moves AP by ~1e-4, 8-bit storage by ~2e-3 (issue requirement)."""
    from spermseg.ensembling.mask_cache import MASK_DTYPE, score_masks

    rng = np.random.default_rng(0)
    ref = np.zeros((8, 64, 64), bool)
    ref[:, 20:24, :] = True
    ref[:, :, 30:32] = True
    logits = 2.0 * (2 * ref - 1) + 1.5 * rng.standard_normal(ref.shape) - 2.0
    prob = (1 / (1 + np.exp(-logits))).astype(np.float32)
    ap32 = score_masks(prob, ref, mode="exact")["ap"]
    err16 = abs(score_masks(prob.astype(MASK_DTYPE), ref, mode="exact")["ap"] - ap32)
    err8 = abs(score_masks(np.round(prob * 255) / 255, ref, mode="exact")["ap"] - ap32)
    assert err16 < 5e-4
    assert err8 > 5 * err16


def test_rerun_skips_and_stale_entries_rebuild(setup: dict[str, Path], tmp_path: Path) -> None:
    base = tmp_path
    data = write_dataset(base / "data", seed=1)
    r0 = make_run(base / "runs" / "a", 0)
    r1 = make_run(base / "runs" / "b", 1)
    cache = base / "cache"
    build_cache([r0, r1], data, ["train", "test"], cache, device="cpu")
    file_a = cache / "masks" / "a" / "test.npy"
    stamp = file_a.stat().st_mtime_ns

    again = build_cache([r0, r1], data, ["train", "test"], cache, device="cpu")
    assert again["last_build"]["built"] == []
    assert len(again["last_build"]["skipped_fresh"]) == 4
    assert file_a.stat().st_mtime_ns == stamp

    # "retrain" model a: new weights, new hash -> both of its splits are rebuilt, b is skipped
    make_run(r0, 7)
    rebuilt = build_cache([r0, r1], data, ["train", "test"], cache, device="cpu")
    assert sorted(rebuilt["last_build"]["built"]) == ["a/test", "a/train"]
    assert rebuilt["models"]["a"]["checkpoint_sha256"] == file_sha256(r0 / "best.safetensors")

    # data change on the test split (a replaced image) -> test entries of both models are stale
    img = next((data / "test" / "images").iterdir())
    os.utime(img, ns=(stamp + 10**9, stamp + 10**9))
    from spermseg.data.arrays import load_split

    current = load_split(data, "test").fingerprint
    with pytest.raises(DataError, match="stale"):
        load_cached_masks(cache, "test", ["a"], data_fingerprint=current)
    rebuilt = build_cache([r0, r1], data, ["test"], cache, device="cpu")
    assert sorted(rebuilt["last_build"]["built"]) == ["a/test", "b/test"]
    names, masks = load_cached_masks(cache, "test", ["a", "b"])
    assert masks.shape[:2] == (4, 2)


def test_errors(setup: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    build_cache([setup["r0"]], setup["data"], ["test"], cache, device="cpu")
    with pytest.raises(DataError, match="cached: unet_s0"):
        load_cached_masks(cache, "test", ["nope"])
    with pytest.raises(DataError, match="split 'train' is not in mask cache"):
        load_cached_masks(cache, "train", ["unet_s0"])
    with pytest.raises(DataError, match="no mask cache"):
        load_manifest(tmp_path / "missing")
    with pytest.raises(CheckpointError):
        build_cache([tmp_path / "no_run"], setup["data"], ["test"], tmp_path / "c2")
    with pytest.raises(SpermsegError, match="bad model id"):
        build_cache([setup["r0"]], setup["data"], ["test"], tmp_path / "c3", model_ids=["../evil"])
    # an ensembling network is not a base model
    import torch

    from spermseg.models import create_ensemble
    from spermseg.models.checkpoints import save_checkpoint

    torch.manual_seed(0)
    ens = create_ensemble("ens_s", 2, width=4)
    save_checkpoint(tmp_path / "ens" / "best", ens, {"normalization": "minmax", "inputs": ["a", "b"]})
    with pytest.raises(CheckpointError, match="not a base model"):
        build_cache([tmp_path / "ens"], setup["data"], ["test"], tmp_path / "c4")


def test_default_ids_are_unique(tmp_path: Path) -> None:
    for p in ("x/seed0", "y/seed0", "z"):
        (tmp_path / p).mkdir(parents=True)
    assert default_model_ids([tmp_path / "x/seed0", tmp_path / "y/seed0", tmp_path / "z"]) == [
        "x-seed0",
        "y-seed0",
        "z",
    ]


def test_cli_masks(setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spermseg.cli import main

    cache = tmp_path / "cache"
    rc = main(
        [
            "masks",
            "--models",
            f"first={setup['r0']}",
            f"second={setup['r1']}",
            "--data",
            str(setup["data"]),
            "--splits",
            "test",
            "--out",
            str(cache),
            "--device",
            "cpu",
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["models"]) == {"first", "second"}
    assert 0.0 <= out["models"]["first"]["splits"]["test"]["ap"] <= 1.0
    assert (
        main(["masks", "--models", str(tmp_path / "nothing"), "--data", str(setup["data"]), "--out", str(cache)]) == 2
    )


def test_precision_is_recorded_and_a_change_rebuilds(setup: dict[str, Path], tmp_path: Path) -> None:
    """Cached masks are float32 inference by default; asking for bf16 rebuilds them (never mixes precisions)."""
    cache = tmp_path / "cache"
    first = build_cache([setup["r0"]], setup["data"], ["test"], cache, device="cpu")
    entry = next(iter(first["models"].values()))["entries"]["test"]
    assert entry["precision"] == "fp32"
    again = build_cache([setup["r0"]], setup["data"], ["test"], cache, device="cpu")
    assert again["last_build"]["built"] == []
    bf16 = build_cache([setup["r0"]], setup["data"], ["test"], cache, device="cpu", precision="bf16")
    assert len(bf16["last_build"]["built"]) == 1
    assert next(iter(bf16["models"].values()))["entries"]["test"]["precision"] == "bf16"


def test_a_rebuild_after_a_killed_write_leaves_no_temporary_file(setup: dict[str, Path], tmp_path: Path) -> None:
    """A build killed while writing an entry or the manifest leaves hidden temporaries (atomic_path); the rerun,
    which rewrites that entry and the manifest, removes them (the fault-injection test found one)."""
    cache = tmp_path / "cache"
    build_cache([setup["r0"]], setup["data"], ["test"], cache, device="cpu")
    entry_dir = next((cache / "masks").iterdir())
    debris = [entry_dir / ".test.k1lled.npy", cache / ".manifest.k1lled.json"]
    for path in debris:
        path.write_bytes(b"half")
    (entry_dir / "test.npy").unlink()  # the entry the killed write was replacing
    rebuilt = build_cache([setup["r0"]], setup["data"], ["test"], cache, device="cpu")
    assert rebuilt["last_build"]["built"] == [f"{entry_dir.name}/test"]
    assert not any(path.exists() for path in debris)


def test_a_split_with_the_same_pixels_is_copied_not_recomputed(tmp_path: Path) -> None:
    """test_small holds test's images with more raters: its entries are copied from test's, scored on its own refs."""
    import shutil

    from spermseg.data.io import write_mask

    data = write_dataset(tmp_path / "data", seed=2)
    shutil.copytree(data / "test" / "images", data / "test_small" / "images")
    for f in sorted((data / "test" / "GT1_full").iterdir()):
        write_mask(data / "test_small" / "GT1_full" / f.name, np.zeros((SIZE, SIZE), bool) | (np.arange(SIZE) < 3))
    r0 = make_run(tmp_path / "runs" / "a", 0)
    cache = tmp_path / "cache"
    manifest = build_cache([r0], data, ["test", "test_small"], cache, device="cpu")
    entries = manifest["models"]["a"]["entries"]
    assert entries["test_small"]["copied_from"] == entries["test"]["file"]
    assert "copied_from" not in entries["test"]
    _, a = load_cached_masks(cache, "test", ["a"])
    _, b = load_cached_masks(cache, "test_small", ["a"])
    np.testing.assert_array_equal(a, b)
    assert entries["test_small"]["metrics"] != entries["test"]["metrics"]  # its own references

    # different pixels (one image changed): computed, not copied
    img = sorted((data / "test_small" / "images").iterdir())[0]
    from spermseg.data.io import read_image, write_image

    write_image(img, np.clip(read_image(img) * 0.5, 0, 1))
    manifest = build_cache([r0], data, ["test", "test_small"], cache, device="cpu")
    assert manifest["last_build"]["built"] == ["a/test_small"]
    assert "copied_from" not in manifest["models"]["a"]["entries"]["test_small"]
