"""predict_probs: batching, mixed sizes, TTA, ensembles' masks, mode restored; DDP sharding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spermseg.inference.forward import predict_probs
from spermseg.models import create_ensemble, create_model, list_ensembles, list_models
from spermseg.training.distributed import DistInfo, shard_indices


def test_predict_probs_matches_direct_forward_and_batches() -> None:
    torch.manual_seed(0)
    model = create_model("unet", width=4)
    imgs = np.random.default_rng(0).random((5, 32, 48), dtype=np.float32)
    a = predict_probs(model, imgs, "minmax", batch_size=2)
    b = predict_probs(model, list(imgs), "minmax", batch_size=5)
    assert a.shape == (5, 32, 48) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-5)
    model.eval()
    from spermseg.data.transforms import normalize

    with torch.no_grad():
        direct = torch.sigmoid(model(normalize(torch.from_numpy(imgs[:1, None]), "minmax")))[0, 0].numpy()
    np.testing.assert_allclose(a[0], direct, atol=1e-5)


def test_mixed_sizes_tta_and_mode_restored() -> None:
    model = create_model("unet", width=4)
    model.train()
    imgs = [np.full((16, 16), 0.5, np.float32), np.zeros((24, 20), np.float32)]
    out = predict_probs(model, imgs, "none", tta=True)
    assert out.dtype == object and out[0].shape == (16, 16) and out[1].shape == (24, 20)
    assert model.training


@pytest.mark.parametrize("layout", ["channels_last", "contiguous_format"])
def test_predict_probs_gives_the_model_back_in_its_memory_format(layout: str) -> None:
    # A trainer validates mid-run: leaving its channels_last weights NCHW slowed the rest of the run and made a run
    # resumed from a checkpoint (which restores channels_last) differ from the uninterrupted one.
    fmt = getattr(torch, layout)
    model = create_model("unet", width=4).to(memory_format=fmt)
    before = [p.stride() for p in model.parameters()]
    predict_probs(model, np.zeros((1, 16, 16), np.float32), "none", channels_last=layout != "channels_last")
    assert [p.stride() for p in model.parameters()] == before


class _FlipSensitive(nn.Module):
    """Logit = the image's column index (not flip invariant) + sum of masks: checks TTA un-flipping and masks."""

    def forward(self, image: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        cols = torch.arange(image.shape[-1], dtype=image.dtype).expand_as(image) / image.shape[-1]
        return cols + (0 if masks is None else masks.sum(1, keepdim=True))


def test_tta_unflips_and_masks_reach_ensembles() -> None:
    model = _FlipSensitive()
    imgs = np.zeros((1, 4, 6), np.float32)
    plain = predict_probs(model, imgs, "none")
    tta = predict_probs(model, imgs, "none", tta=True)
    # flipped passes see reversed columns; averaging gives the symmetric mean, which differs from the plain output
    assert not np.allclose(plain, tta)
    np.testing.assert_allclose(tta[0], tta[0][:, ::-1], atol=1e-6)
    masks = np.ones((1, 2, 4, 6), np.float32)
    with_masks = predict_probs(model, imgs, "none", masks=masks)
    np.testing.assert_allclose(
        with_masks, 1 / (1 + np.exp(-(np.arange(6) / 6 + 2)))[None, None].repeat(4, 1), atol=1e-6
    )


@pytest.mark.parametrize("n,world", [(10, 1), (10, 3), (7, 2)])
def test_shard_indices_cover_and_agree(n: int, world: int) -> None:
    shards = [shard_indices(n, 5, DistInfo(rank=r, world_size=world)) for r in range(world)]
    assert len({len(s) for s in shards}) == 1
    assert set().union(*map(set, shards)) == set(range(n))
    assert shard_indices(n, 5, DistInfo(0, world)) == shards[0]
    assert shard_indices(n, 6, DistInfo(0, world)) != shards[0] or n < 3


def test_precision_resolution() -> None:
    """fp32 is the scoring default everywhere; bf16 can be asked for (and turned off) on every device."""
    from spermseg.errors import ConfigError
    from spermseg.inference.forward import resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", cpu) == "fp32"  # inference on a CPU never switches precision by itself
    assert resolve_precision(False, cpu) == "fp32" and resolve_precision(True, cpu) == "fp32"
    with pytest.raises(ConfigError, match="valid"):
        resolve_precision("fp16", cpu)


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "fast"), [(True, False, True), (False, True, True), (False, False, False)]
)
def test_training_picks_bf16_on_cpus_with_amx_or_avx512_bf16(
    monkeypatch: pytest.MonkeyPatch, amx: bool, avx512_bf16: bool, fast: bool
) -> None:
    """An AMD EPYC with AVX-512 BF16 but no AMX trains 3.2x faster in bf16: ``auto`` must see it (it saw only AMX)."""
    from spermseg.inference.forward import cpu_has_fast_bf16, resolve_precision

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert cpu_has_fast_bf16() is fast
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu, training=True) == ("bf16" if fast else "fp32")
    assert resolve_precision("auto", cpu) == "fp32"  # inference never switches by itself
    # channels_last wherever bf16 trains (NHWC is oneDNN's fast bf16 layout)
    from spermseg.training.config import TrainConfig
    from spermseg.training.step import use_channels_last

    assert use_channels_last(TrainConfig(), cpu) is fast


def test_predict_probs_defaults_to_float32_and_bf16_is_close_but_not_equal() -> None:
    torch.manual_seed(0)
    model = create_model("unet", width=4).eval()
    images = np.random.default_rng(0).random((2, 48, 64), dtype=np.float32)
    default = predict_probs(model, images, "minmax")
    fp32 = predict_probs(model, images, "minmax", precision="fp32")
    bf16 = predict_probs(model, images, "minmax", precision="bf16")
    assert np.array_equal(default, fp32)
    with torch.no_grad():
        from spermseg.data.transforms import normalize

        direct = torch.sigmoid(model(normalize(torch.from_numpy(images)[:, None], "minmax")))[:, 0].numpy()
    assert np.allclose(fp32, direct, atol=1e-6)
    assert not np.array_equal(bf16, fp32) and np.abs(bf16 - fp32).max() < 0.05


def test_predict_probs_accepts_device_auto() -> None:
    """`device="auto"` (the reproduce config's default) picks a device instead of failing in torch.device: the
    raters, blur and qualitative steps of `reproduce --preset cpu` failed on it."""
    import torch

    from spermseg.inference.forward import predict_probs
    from spermseg.models import create_model

    torch.manual_seed(0)
    model = create_model("unet", width=4).eval()
    images = [np.random.default_rng(0).random((32, 32), dtype=np.float32)]
    auto = predict_probs(model, images, "minmax", device="auto")
    cpu = predict_probs(model, images, "minmax", device="cpu")
    np.testing.assert_array_equal(auto, cpu)


@pytest.mark.parametrize("name", list_models() + [f"ensemble:{k}" for k in list_ensembles()])
def test_channels_last_default_gives_the_nchw_probabilities(name: str) -> None:
    # predict_probs runs channels_last by default on every device (1.5-1.9x faster on the CPU): the layout must not
    # change what any registered model predicts beyond float32 rounding.
    torch.manual_seed(0)
    is_ensemble = name.startswith("ensemble:")
    kind = name.split(":", 1)[-1]
    model = (create_ensemble(kind, 3, width=4) if is_ensemble else create_model(name, width=4)).eval()
    rng = np.random.default_rng(0)
    images = rng.random((2, 64, 64), dtype=np.float32)
    masks = rng.random((2, 3, 64, 64), dtype=np.float32) if is_ensemble else None
    default = predict_probs(model, images, "minmax", masks=masks)
    nchw = predict_probs(model, images, "minmax", masks=masks, channels_last=False)
    assert default.shape == (2, 64, 64)
    np.testing.assert_allclose(default, nchw, atol=1e-5)
