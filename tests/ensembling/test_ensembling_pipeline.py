"""Ensembling pipeline end to end on a tiny synthetic set: cache -> E1-E4 -> avg -> trained kinds -> Table 3.

The fast test (default suite) trains three tiny base models for one short epoch, caches their soft masks, resolves
E1-E4, trains one ensembling network (``ens_att_v2``) and writes Table 3. The slow test trains each of the five
trainable kinds and the out-of-fold stacking variant.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spermseg.errors import ConfigError, DataError

SIZE = 64
BASE_MODELS = ("unet", "att_unet", "fpn")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """One torch thread: on a loaded 2-core machine two spinning threads make tiny convolutions ~100x slower."""
    import torch

    torch.set_num_threads(1)


def write_sperm_dataset(root: Path, *, videos: dict[str, int], seed: int = 0) -> Path:
    """Tiny synthetic SegSperm-layout set: a bright oval head with a thin, fading, curved tail on a noisy, unevenly
    lit background; GT1 full/head/tail masks. ``videos`` maps split -> number of videos (3 frames each)."""
    from spermseg.data.io import write_image, write_mask

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    for split, n_videos in videos.items():
        for v in range(n_videos):
            light = rng.uniform(-0.15, 0.15, 2)
            for frame in range(3):
                cy, cx = rng.uniform(16, SIZE - 16, 2)
                ang = rng.uniform(0, 2 * np.pi)
                head = ((yy - cy) * np.cos(ang) + (xx - cx) * np.sin(ang)) ** 2 / 16 + (
                    (xx - cx) * np.cos(ang) - (yy - cy) * np.sin(ang)
                ) ** 2 / 6 < 1
                t = np.linspace(0, 1, 80)
                bend = rng.uniform(-0.6, 0.6)
                ty = cy - np.cos(ang) * 30 * t + bend * 8 * np.sin(3 * t)
                tx = cx - np.sin(ang) * 30 * t + bend * 8 * np.cos(3 * t)
                tail = np.zeros((SIZE, SIZE), bool)
                fade = np.zeros((SIZE, SIZE), np.float32)
                for y, x, tt in zip(ty, tx, t):
                    yi, xi = int(round(y)), int(round(x))
                    if 0 <= yi < SIZE and 0 <= xi < SIZE:
                        tail[yi, xi] = True
                        fade[yi, xi] = max(fade[yi, xi], 1 - 0.7 * tt)
                tail &= ~head
                img = (
                    0.5
                    + light[0] * (xx / SIZE - 0.5)
                    + light[1] * (yy / SIZE - 0.5)
                    + 0.05 * rng.standard_normal((SIZE, SIZE))
                    - 0.3 * head
                    - 0.2 * fade
                )
                name = f"{split}{v}_{frame:04d}_1.png"
                write_image(root / split / "images" / name, np.clip(img, 0, 1))
                write_mask(root / split / "GT1_head" / name, head)
                write_mask(root / split / "GT1_tail" / name, tail)
                write_mask(root / split / "GT1_full" / name, head | tail)
    return root


def tiny_train_overrides(steps: int = 2) -> list[str]:
    """One short epoch of a width-4 network on the CPU."""
    return [
        "model.width=4",
        "schedule.epochs=1",
        "schedule.batch_size=4",
        "schedule.milestones=[1]",
        f"schedule.steps_per_epoch={steps}",
        "optim.lr=0.01",
        "validation.fraction=0.25",
        "data.crop=0",
        "data.test_split=",
        "runtime.device=cpu",
        "runtime.progress=false",
        "runtime.tensorboard=false",
    ]


def train_base(data: Path, name: str, out: Path, seed: int) -> Path:
    from spermseg.training.config import train_config
    from spermseg.training.trainer import train

    cfg = train_config(
        "demo", overrides=[*tiny_train_overrides(), f"model.name={name}", f"seed={seed}", f"data.root={data}"]
    )
    train(cfg, out)
    return out


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Dataset, three trained base models (one seed each; unet twice) and their in-sample cache."""
    import torch

    torch.set_num_threads(1)
    from spermseg.ensembling.mask_cache import build_cache

    base = tmp_path_factory.mktemp("ens")
    data = write_sperm_dataset(base / "data", videos={"train": 4, "test": 2})
    runs = [train_base(data, name, base / "runs" / f"{name}_s0", 0) for name in BASE_MODELS]
    runs.append(train_base(data, "unet", base / "runs" / "unet_s1", 1))
    cache = base / "cache"
    build_cache(runs, data, ["train", "test"], cache, device="cpu")
    return {"base": base, "data": data, "cache": cache}


def test_selections_e1_to_e4(pipeline: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from spermseg.ensembling.mask_cache import load_manifest
    from spermseg.ensembling.selection import all_selections, model_scores, rank_architectures, select_inputs

    manifest = load_manifest(pipeline["cache"])
    sels = all_selections(manifest)
    val = model_scores(manifest, "val")
    ranked = rank_architectures(manifest, "val")
    # E1: one soft mask per architecture (the better unet seed), E2/E3: the best 1/3 by mean validation AP
    assert sorted(sels["E1"].architectures) == sorted(BASE_MODELS)
    assert sels["E2"].architectures == [ranked[0][0]]
    assert sels["E3"].architectures == [r[0] for r in ranked[:3]]
    unet_ids = ["unet_s0", "unet_s1"]
    best_unet = max(unet_ids, key=lambda i: val[i])
    assert best_unet in sels["E1"].model_ids and ({*unet_ids} - {best_unet}).isdisjoint(sels["E1"].model_ids)
    # mean over seeds ranks architectures
    assert dict((a, s) for a, s, _ in ranked)["unet"] == pytest.approx((val["unet_s0"] + val["unet_s1"]) / 2)
    # E4 ranks on the training split (in-sample AP from the cache)
    train_ap = model_scores(manifest, "train")
    arch_of = {m: manifest["models"][m]["model"] for m in train_ap}
    train_mean = {a: np.mean([v for m, v in train_ap.items() if arch_of[m] == a]) for a in set(arch_of.values())}
    e4_expected = sorted(train_mean, key=lambda a: -train_mean[a])
    assert sels["E4"].architectures == e4_expected[:3] and sels["E4"].rank_on == "train"
    assert not any(s.leaks_test for s in sels.values())
    assert select_inputs(manifest, "E3", rank_on="test").leaks_test
    # explicit selections: ids and architectures (architecture -> its best seed)
    custom = select_inputs(manifest, "fpn_s0,unet")
    assert custom.model_ids == ["fpn_s0", best_unet] and custom.name == "custom"
    # the CLI prints the same selections
    from spermseg.cli import main

    assert main(["ensemble", "select", "--cache", str(pipeline["cache"]), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {k: v["model_ids"] for k, v in printed.items()} == {k: v.model_ids for k, v in sels.items()}
    with pytest.raises(ConfigError, match="unknown selection item"):
        select_inputs(manifest, "nonexistent")
    with pytest.raises(ConfigError, match="bad rank_on"):
        select_inputs(manifest, "E2", rank_on="holdout")


def test_avg_and_trained_ensemble_to_table3(pipeline: dict[str, Path], tmp_path: Path) -> None:
    from spermseg.cli import main
    from spermseg.ensembling.mask_cache import load_cached_masks, load_manifest
    from spermseg.ensembling.selection import select_inputs

    run = tmp_path / "ens_att_v2_E3"
    overrides = [f"--set={o}" for o in tiny_train_overrides()]
    assert (
        main(
            [
                "ensemble",
                "train",
                "--cache",
                str(pipeline["cache"]),
                "--kind",
                "ens_att_v2",
                "--select",
                "E3",
                "--preset",
                "demo",
                "--out",
                str(run),
                "--seed",
                "3",
                *overrides,
            ]
        )
        == 0
    )
    prov = json.loads((run / "ensemble.json").read_text())
    e3 = select_inputs(load_manifest(pipeline["cache"]), "E3")
    assert prov["selection"]["model_ids"] == e3.model_ids and prov["seed"] == 3
    # the ensemble validates on the groups its inputs held out, when they share one validation split
    from spermseg.ensembling.ensemble_training import base_validation_split

    manifest = load_manifest(pipeline["cache"])
    assert base_validation_split(manifest, ["att_unet_s0", "fpn_s0"]) == (0, 0.25)
    # one validation split for every seed (validation.split_seed defaults to 0): seeds differ only in init/batches
    assert base_validation_split(manifest, ["unet_s0", "unet_s1"]) == (0, 0.25)
    shared = base_validation_split(manifest, e3.model_ids)
    assert prov["validation_from_base"] == (shared is not None)
    if shared is not None:
        base_groups = manifest["models"][e3.model_ids[0]]["run_result"]["val_groups"]
        assert json.loads((run / "result.json").read_text())["val_groups"] == base_groups
    meta = json.loads((run / "best.json").read_text())
    assert meta["kind"] == "ensemble" and meta["inputs"] == e3.model_ids and meta["n_masks"] == 3

    out = tmp_path / "table"
    assert (
        main(
            [
                "ensemble",
                "eval",
                "--cache",
                str(pipeline["cache"]),
                "--runs",
                str(run),
                "--out",
                str(out),
                "--device",
                "cpu",
                "--json",
            ]
        )
        == 0
    )
    table = json.loads((out / "table3.json").read_text())
    evaluation = json.loads((out / "evaluation.json").read_text())
    md = (out / "table3.md").read_text()
    # base block: 3 architectures, unet over 2 seeds with a std
    base = {r["model"]: r for r in table["base"]}
    assert set(base) == set(BASE_MODELS) and base["unet"]["n"] == 2 and base["unet"]["ap"][1] is not None
    # avg for E1..E4, recomputed here from the cache: mean of the soft masks
    from spermseg.data.arrays import load_split
    from spermseg.ensembling.table3 import score, split_references

    _, refs = split_references(load_split(pipeline["data"], "test"))
    _, stack = load_cached_masks(pipeline["cache"], "test", e3.model_ids)
    avg_e3 = score(stack.mean(axis=1), refs)["full"]["ap"]
    ap_rows = {r["row"]: r for r in table["ensembles"]["ap"]}
    assert ap_rows["avg"]["E3"][0] == pytest.approx(avg_e3)
    assert all(ap_rows["avg"][e] is not None for e in ("E1", "E2", "E3", "E4"))
    assert ap_rows["ens_att_v2"]["E3"][2] == 1 and ap_rows["ens_att_v2"]["E1"] is None
    rec = next(r for r in evaluation["records"] if r["kind"] == "ens_att_v2")
    assert 0.0 <= rec["metrics"]["full"]["ap"] <= 1.0 and rec["metrics"]["head"] is not None
    assert "EnsembleAttV2" in md and "Avg" in md and "IoU_opt" in md and "✓" in md


def test_ensemble_refuses_validation_images_an_input_model_trained_on(
    pipeline: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A base model trained on another validation split saw the ensemble's validation images: in-sample masks
    there would make checkpoint selection and t_opt optimistic, so the ensemble refuses (or warns when allowed)."""
    from spermseg.cli import main
    from spermseg.ensembling.ensemble_training import validation_overlap
    from spermseg.ensembling.mask_cache import build_cache, load_manifest
    from spermseg.training.config import train_config
    from spermseg.training.trainer import train

    data = pipeline["data"]
    other = tmp_path / "unet_split7"
    cfg = train_config(
        "demo",
        overrides=[*tiny_train_overrides(), "model.name=unet", f"data.root={data}", "validation.split_seed=7"],
    )
    train(cfg, other)
    cache = tmp_path / "cache"
    build_cache([pipeline["base"] / "runs" / "fpn_s0", other], data, ["train"], cache, device="cpu")
    manifest = load_manifest(cache)
    ens_cfg = train_config("demo", overrides=tiny_train_overrides(), ensemble=True)
    overlap = validation_overlap(manifest, ["fpn_s0", "unet_split7"], ens_cfg)
    assert set(overlap) == {"unet_split7"} and overlap["unet_split7"]
    argv = ["ensemble", "train", "--cache", str(cache), "--kind", "ens_s", "--select", "fpn_s0,unet_split7"]
    argv += ["--preset", "demo", "--out", str(tmp_path / "ens"), *[f"--set={o}" for o in tiny_train_overrides()]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "validation groups" in err and "unet_split7" in err and "Traceback" not in err
    assert main([*argv, "--allow-validation-overlap"]) == 0
    assert "WARNING" in capsys.readouterr().err
    prov = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    assert prov["validation_overlap"]["unet_split7"]


def test_group_kfold_and_fold_roots(pipeline: dict[str, Path], tmp_path: Path) -> None:
    from spermseg.data.arrays import load_split
    from spermseg.ensembling.stacking import group_kfold, make_fold_root

    arrays = load_split(pipeline["data"], "train")
    folds = group_kfold(arrays.names, arrays.groups, 2, seed=0)
    assert set(folds) == set(arrays.groups) and set(folds.values()) == {0, 1}
    assert folds == group_kfold(arrays.names, arrays.groups, 2, seed=0)
    with pytest.raises(ConfigError, match="groups"):
        group_kfold(arrays.names, arrays.groups, 9)
    keep = [n for n, g in zip(arrays.names, arrays.groups) if folds[g] == 1]
    root = make_fold_root(pipeline["data"], "train", keep, tmp_path / "fold")
    sub = load_split(root, "train")
    assert sorted(sub.names) == sorted(keep) and sub.parts("GT1") == ["full", "head", "tail"]
    assert not (tmp_path / "fold" / "test").exists()


def test_errors(pipeline: dict[str, Path], tmp_path: Path) -> None:
    from spermseg.cli import main
    from spermseg.ensembling.ensemble_training import train_ensemble

    with pytest.raises(ConfigError, match="no parameters"):
        train_ensemble(pipeline["cache"], "avg", tmp_path / "x")
    with pytest.raises(ConfigError, match="unknown ensemble kind"):
        train_ensemble(pipeline["cache"], "ens_xyz", tmp_path / "x")
    with pytest.raises(DataError):
        train_ensemble(tmp_path / "nocache", "ens_s", tmp_path / "x")
    assert main(["ensemble", "select", "--cache", str(tmp_path / "nocache")]) == 2


@pytest.mark.slow
def test_every_trained_kind_and_oof_stacking(pipeline: dict[str, Path], tmp_path: Path) -> None:
    """Each of the five trainable kinds on E2 (E1 for one) and ens_s with out-of-fold stacking, then Table 3."""
    from spermseg.ensembling.ensemble_training import train_ensemble
    from spermseg.ensembling.mask_cache import load_manifest
    from spermseg.ensembling.table3 import TRAINED_KINDS, evaluate_ensembles, write_table3

    runs = []
    for i, kind in enumerate(TRAINED_KINDS):
        run = tmp_path / kind
        train_ensemble(
            pipeline["cache"],
            kind,
            run,
            select="E1" if i == 0 else "E2",
            preset="demo",
            overrides=tiny_train_overrides(),
            seed=0,
        )
        runs.append(run)
    oof_run = tmp_path / "ens_s_oof"
    prov = train_ensemble(
        pipeline["cache"],
        "ens_s",
        oof_run,
        select="E2",
        preset="demo",
        overrides=tiny_train_overrides(),
        seed=0,
        stacking="oof",
        folds=2,
        oof_test="fold-avg",
        oof_overrides=["schedule.steps_per_epoch=1", "validation.fraction=0.34"],
    )
    runs.append(oof_run)
    oof = load_manifest(prov["cache"])
    assert oof["stacking"]["mode"] == "oof" and oof["stacking"]["k"] == 2
    (mid,) = prov["selection"]["model_ids"]
    entry = oof["models"][mid]["entries"]
    assert len(oof["models"][mid]["fold_runs"]) == 2 and entry["test"]["test_inputs"] == "fold-avg"
    # out-of-fold masks differ from the in-sample ones
    insample = load_manifest(pipeline["cache"])["models"][mid]["entries"]["train"]["metrics"]["ap"]
    assert entry["train"]["metrics"]["ap"] != pytest.approx(insample, abs=1e-6)

    evaluation = evaluate_ensembles(pipeline["cache"], runs, device="cpu")
    table = write_table3(evaluation, tmp_path / "table")
    rows = {r["row"]: r for r in table["ensembles"]["iou_opt"]}
    assert rows["ens_s"]["E1"] is not None and rows["ens_s [oof]"]["E2"] is not None
    for kind in TRAINED_KINDS[1:]:
        assert rows[kind]["E2"][2] == 1
