"""Training loop: loss falls, resume is exact, runs are skipped/forced, validation split by group."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import make_lines_dataset, tiny_overrides

import spermseg
from spermseg.errors import SpermsegError
from spermseg.training.config import train_config
from spermseg.training.trainer import TrainHooks, split_by_group, train


class _Stop(Exception):
    pass


def _cfg(root: Path, epochs: int = 2, extra: tuple[str, ...] = ()):
    return train_config("demo", overrides=[f"data.root={root}", *tiny_overrides(epochs), *extra])


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lines_dataset(tmp_path_factory.mktemp("lines") / "data")


@pytest.fixture(scope="module")
def finished_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory):
    torch.set_num_threads(2)
    run = tmp_path_factory.mktemp("runs") / "full"
    return train(_cfg(data_root), run)


def test_loss_falls_and_run_dir_complete(finished_run) -> None:
    hist = finished_run.history
    assert [h["epoch"] for h in hist] == [1, 2]
    assert hist[1]["train_loss"] < hist[0]["train_loss"]
    run = finished_run.run_dir
    for name in (
        "config.yaml",
        "metrics.csv",
        "best.safetensors",
        "best.json",
        "last.safetensors",
        "last.json",
        "result.json",
        "state/latest.json",
    ):
        assert (run / name).is_file(), name
    result = json.loads((run / "result.json").read_text())
    for key in ("ap", "iou_0.5", "iou_opt", "t_opt"):
        assert 0.0 <= result["validation"][key] <= 1.0
    assert result["epochs"] == 2 and result["images_per_s"] > 0 and result["peak_memory_mb"] > 0
    assert result["wall_time_s"] >= result["train_time_s"] > 0
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and rows[0].startswith("epoch,lr,train_loss")


def test_load_model_uses_best_and_threshold(finished_run, data_root: Path) -> None:
    model = spermseg.load_model(str(finished_run.run_dir))
    meta = model.spermseg_meta
    assert not model.training
    assert meta["threshold"] == pytest.approx(finished_run.result["threshold"])
    assert meta["normalization"] == "minmax" and meta["model"] == "unet" and meta["kind"] == "base"
    assert meta["model_kwargs"] == {"width": 4}
    best = _weights(finished_run.run_dir / "best.safetensors")
    for key, value in model.state_dict().items():
        assert torch.equal(value, best[key])


def test_finished_run_is_skipped_unless_forced(finished_run, data_root: Path) -> None:
    again = train(_cfg(data_root), finished_run.run_dir)
    assert again.skipped and again.result == finished_run.result
    with pytest.raises(SpermsegError, match="different config"):
        train(_cfg(data_root, extra=("optim.lr=0.02",)), finished_run.run_dir)


def test_resume_after_interruption_gives_identical_weights(finished_run, data_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "interrupted"

    def stop(epoch: int, step: int, loss: float) -> None:
        if epoch == 1 and step == 0:  # in the second epoch, after the first epoch's state was written
            raise _Stop

    torch.set_num_threads(2)
    with pytest.raises(_Stop):
        train(_cfg(data_root), run, hooks=TrainHooks(on_step_end=stop))
    assert json.loads((run / "state" / "latest.json").read_text())["epoch"] == 1
    with pytest.raises(SpermsegError, match="--resume"):
        train(_cfg(data_root), run)
    resumed = train(_cfg(data_root), run, resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    for name in ("last.safetensors", "best.safetensors"):
        a, b = _weights(finished_run.run_dir / name), _weights(run / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert resumed.history[1]["train_loss"] == finished_run.history[1]["train_loss"]


def test_force_retrains(finished_run, data_root: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "forced"
    shutil.copytree(finished_run.run_dir, run)
    second = train(_cfg(data_root, epochs=1, extra=("optim.lr=0.02",)), run, force=True)
    assert not second.skipped and second.result["epochs"] == 1
    assert second.history[0]["train_loss"] != finished_run.history[0]["train_loss"]
    assert not (run / "state" / "epoch_0002.json").exists()


def test_split_by_group_is_deterministic_and_disjoint() -> None:
    groups = [f"v{i // 3}" for i in range(30)]
    tr, va = split_by_group(groups, 0.2, seed=1)
    assert split_by_group(groups, 0.2, seed=1) == (tr, va)
    assert sorted(tr + va) == list(range(30))
    assert not {groups[i] for i in tr} & {groups[i] for i in va}
    assert len(va) >= 6
    assert split_by_group(groups, 0.2, seed=2) != (tr, va)
    assert split_by_group(groups, 0.0, seed=1) == (list(range(30)), [])
    # never all groups in validation
    tr, va = split_by_group(["a", "a", "b"], 0.9, seed=0)
    assert tr and va


def test_nested_subset_is_nested_seeded_and_checked() -> None:
    from spermseg.errors import ConfigError
    from spermseg.training.train_data import nested_subset

    pool = list(range(3, 40, 2))
    small, large = nested_subset(pool, 4, seed=0), nested_subset(pool, 9, seed=0)
    assert len(small) == 4 and len(large) == 9 and set(small) <= set(large) <= set(pool)
    assert small == sorted(small) and nested_subset(pool, 4, seed=0) == small
    assert nested_subset(pool, 4, seed=1) != small
    assert nested_subset(pool, 0, seed=0) == pool
    with pytest.raises(ConfigError, match="data.train_images=99"):
        nested_subset(pool, 99, seed=0)


def test_train_images_keeps_the_validation_images(data_root: Path, tmp_path: Path) -> None:
    """data.train_images trains on fewer images while validating on the same held-out groups as a full run."""
    full = train(_cfg(data_root, epochs=1), tmp_path / "full").result
    few = train(_cfg(data_root, epochs=1, extra=("data.train_images=3",)), tmp_path / "few").result
    assert few["n_train"] == 3 < full["n_train"]
    assert few["val_groups"] == full["val_groups"] and few["n_val"] == full["n_val"]


def test_ensemble_schedule_preset() -> None:
    cfg = train_config("paper", ensemble=True)
    assert cfg.schedule.milestones == (5, 15) and cfg.schedule.batch_size == 6
    base = train_config("paper")
    assert base.schedule.milestones == (30, 80) and base.schedule.batch_size == 5 and base.schedule.epochs == 300
    assert base.optim.lr == 1e-3 and base.loss.name == "bce" and base.data.normalization == "minmax"
    assert np.isclose(base.schedule.gamma, 0.3)


def test_ensemble_trains_from_mask_cache(finished_run, data_root: Path, tmp_path: Path) -> None:
    from spermseg.ensembling.mask_cache import build_cache

    cache = tmp_path / "cache"
    build_cache(
        [finished_run.run_dir, finished_run.run_dir], data_root, ["train"], cache, model_ids=["a", "b"], device="cpu"
    )
    cfg = _cfg(
        data_root,
        epochs=1,
        extra=("model.ensemble=ens_att_v2", f"model.masks={cache}", "model.width=4", "model.mask_models=[b, a]"),
    )
    res = train(cfg, tmp_path / "ens")
    assert res.result["kind"] == "ensemble" and res.result["inputs"] == ["b", "a"]
    model = spermseg.load_model(str(tmp_path / "ens"))
    assert model.spermseg_meta["n_masks"] == 2 and model.spermseg_meta["inputs"] == ["b", "a"]
    assert model(torch.rand(1, 1, 32, 32), torch.rand(1, 2, 32, 32)).shape == (1, 1, 32, 32)


def test_soft_masks_follow_the_image_geometry() -> None:
    from spermseg.data.transforms import AugmentConfig, Augmenter
    from spermseg.training.trainer import augment_batch

    g = torch.Generator().manual_seed(0)
    target = (torch.rand(6, 1, 32, 32, generator=g) > 0.8).float()
    images = torch.rand(6, 1, 32, 32, generator=g)
    soft = torch.cat([target * 0.7, 1 - target * 0.7], dim=1)  # soft copies of the target
    aug = Augmenter(AugmentConfig(p=1.0))
    g1 = torch.Generator().manual_seed(1)
    _, t, m = augment_batch(aug, images, target, soft, g1)
    assert ((m[:, :1] > 0.35).float() == t).float().mean() > 0.97  # same flips/rotation/zoom as the target
    assert ((m > 0.05) & (m < 0.65)).any()  # still soft, not re-binarized
    g2 = torch.Generator().manual_seed(1)
    _, t_only = aug(images, target, g2)
    assert torch.equal(t, t_only) and torch.equal(g1.get_state(), g2.get_state())


def test_foreground_crops_hold_sperm_and_are_reproducible() -> None:
    """crop_foreground=1 centres every crop on a target pixel; the same generator seed gives the same crops."""
    from spermseg.training.trainer import DeviceData, SplitData

    rng = np.random.default_rng(0)
    targets = []
    for _ in range(6):
        t = np.zeros((96, 128), bool)
        y, x = rng.integers(0, 90), rng.integers(0, 120)
        t[y : y + 3, x : x + 3] = True  # one tiny object per image: a uniform 16x16 crop rarely holds it
        targets.append(t)
    data = SplitData(
        names=[f"i{i}" for i in range(6)],
        groups=[f"g{i}" for i in range(6)],
        images=[rng.random((96, 128), dtype=np.float32) for _ in range(6)],
        targets=targets,
    )
    dev = DeviceData(data, torch.device("cpu"), crop=16, crop_foreground=1.0)
    assert dev.prior == pytest.approx(6 * 9 / (6 * 96 * 128))
    _, tgt, _ = dev.batch(range(6), torch.Generator().manual_seed(1))
    assert (tgt.sum(dim=(1, 2, 3)) > 0).all()
    _, again, _ = dev.batch(range(6), torch.Generator().manual_seed(1))
    assert torch.equal(tgt, again)
    uniform = DeviceData(data, torch.device("cpu"), crop=16, crop_foreground=0.0)
    hits = sum(int((uniform.batch(range(6), torch.Generator().manual_seed(s))[1].sum(dim=(1, 2, 3)) > 0).sum())
               for s in range(5))  # fmt: skip
    assert hits < 30  # uniform crops miss some of the objects


def test_class_prior_counts_the_codes_of_every_training_image() -> None:
    """The part network's starting bias comes from the code frequencies over all training pixels; a code that no
    pixel has gets a tiny share instead of zero (its log would be minus infinity)."""
    from spermseg.training.trainer import DeviceData, SplitData

    a = np.zeros((4, 8), np.uint8)
    a[0, :4] = 5  # 4 tail pixels
    b = np.zeros((4, 8), np.uint8)
    b[1, :2] = 2  # 2 nucleus pixels
    b[2, :2] = 1  # 2 acrosome pixels
    data = SplitData(names=["a", "b"], groups=["a", "b"], images=[np.zeros((4, 8), np.float32)] * 2, targets=[a, b])
    prior = DeviceData(data, torch.device("cpu"), crop=0).class_prior(6)
    assert prior == pytest.approx([56 / 64, 2 / 64, 2 / 64, 1e-6, 1e-6, 4 / 64])


def test_every_seed_validates_on_the_same_images(tmp_path: Path) -> None:
    """Seeds of a grid differ in initialisation and batches, not in data: the best seed is picked on one split
    (the old default drew the split from the run seed)."""
    data = make_lines_dataset(tmp_path / "data", n_groups=8, per_group=1)
    groups = []
    for seed in (0, 1, 2):
        cfg = train_config("demo", overrides=[*tiny_overrides(1), f"data.root={data}", f"seed={seed}"])
        groups.append(train(cfg, tmp_path / f"s{seed}").result["val_groups"])
    assert groups[0] == groups[1] == groups[2] and groups[0]
    follow = [
        train(
            train_config("demo", overrides=[*tiny_overrides(1), f"data.root={data}", f"seed={s}",
                                            "validation.split_seed=null"]),
            tmp_path / f"follow{s}",
        ).result["val_groups"]
        for s in (0, 1, 2)
    ]  # fmt: skip
    assert len({tuple(g) for g in follow}) > 1  # null: the split follows the run seed (the old behaviour)
