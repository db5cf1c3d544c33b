"""``spermseg distill``: the student learns the teacher's soft masks (not the labels), from the cache or online,
with or without labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import make_lines_dataset, tiny_overrides

from spermseg.cli import main


def _sets(epochs: int, *extra: str) -> list[str]:
    return [x for kv in [*tiny_overrides(epochs=epochs), *extra] for x in ("--set", kv)]


def _probs(model: Path, images: np.ndarray) -> np.ndarray:
    from spermseg.inference.backends import torch_backend
    from spermseg.inference.bundle import load_predictor

    return torch_backend(load_predictor(model), "cpu")(images)


def _images(root: Path) -> np.ndarray:
    from spermseg.data.io import read_image

    return np.stack([read_image(p) for p in sorted((root / "train" / "images").iterdir())])


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset, teacher bundle): the teacher was trained on the *inverted* masks of the dataset's images, so its
    soft masks and the dataset's labels disagree everywhere: a student can only be close to one of them."""
    import cv2

    tmp = tmp_path_factory.mktemp("distill")
    data = make_lines_dataset(tmp / "data", n_groups=3, per_group=2)
    inverted = make_lines_dataset(tmp / "inverted", n_groups=3, per_group=2)  # same seed: the same images
    for mask in (inverted / "train" / "GT1_full").iterdir():
        cv2.imwrite(str(mask), 255 - cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE))
    sets = _sets(8, "optim.lr=0.02", "schedule.milestones=[100]")  # a confident teacher
    assert main(["train", "--data", str(inverted), "--out", str(tmp / "t"), "--preset", "demo", *sets]) == 0
    assert main(["bundle", "--base", str(tmp / "t"), "--out", str(tmp / "teacher")]) == 0
    return data, tmp / "teacher"


def _distill(data: Path, bundle: Path, out: Path, *extra: str, epochs: int = 6) -> int:
    argv = ["distill", "--teacher", str(bundle), "--student", "unet", "--width", "4", "--data", str(data)]
    sets = _sets(epochs, "optim.lr=0.02", "schedule.milestones=[100]")
    return main([*argv, "--out", str(out), "--preset", "demo", *sets, *extra])


def test_distillation_moves_the_student_to_the_teacher_not_to_the_labels(teacher, tmp_path: Path) -> None:
    data, bundle = teacher
    images = _images(data)
    p_teacher = _probs(bundle, images)
    assert _distill(data, bundle, tmp_path / "start", "--set", "optim.lr=1e-12", epochs=1) == 0  # its start
    assert _distill(data, bundle, tmp_path / "student") == 0
    assert _distill(data, bundle, tmp_path / "labels", "--label-weight", "1") == 0  # the labels alone
    dist = {k: float(np.abs(_probs(tmp_path / k, images) - p_teacher).mean()) for k in ("start", "student", "labels")}
    assert dist["student"] < 0.6 * dist["start"], dist
    assert dist["student"] < 0.6 * dist["labels"], dist
    meta = json.loads((tmp_path / "student" / "best.json").read_text())
    assert meta["distill"]["source"] == "cache" and meta["distill"]["validation_reference"] == "labels"
    assert (tmp_path / "student" / "teacher_cache" / "manifest.json").is_file()


def test_the_teacher_sees_the_students_pixels_and_its_masks_follow_them(teacher, tmp_path: Path) -> None:
    """Online: the target is the teacher's output on the very crop the student gets (same flips); cache: the
    teacher's cached masks get the crop's flips. Checked against the same augmentation replayed by hand."""
    from spermseg.config import resolve_config
    from spermseg.data.transforms import AugmentConfig, Augmenter, normalize
    from spermseg.training.config import TrainConfig
    from spermseg.training.distill import Distiller

    data, bundle = teacher
    images = torch.from_numpy(_images(data)[:4, None, :32, :32].copy())
    aug = Augmenter(AugmentConfig(p=0.5, ops=("hflip", "vflip")))
    flipped, _ = aug(images, None, torch.Generator().manual_seed(3))  # the flips seed 3 draws
    assert not torch.equal(flipped, images)
    for source in ("cache", "online"):
        cfg = resolve_config(
            TrainConfig,
            overrides=[
                f"data.root={data}",
                f"distill.teacher={bundle}",
                f"distill.source={source}",
                "runtime.device=cpu",
                'runtime.amp="off"',  # float32: an exact comparison (YAML reads a bare off as false)
            ],
        )
        distiller = Distiller(cfg, tmp_path / source, torch.device("cpu"), lambda _m: None)
        soft = torch.from_numpy(distiller.predict(list(images[:, 0].numpy())))[:, None]
        masks = soft if source == "cache" else None
        labels = torch.zeros_like(images)
        student, target, none = distiller.augment(
            aug, images, labels, masks, torch.Generator().manual_seed(3), "minmax"
        )
        assert none is None
        assert torch.allclose(student, normalize(flipped, "minmax"), atol=1e-6)  # the student's crop: flipped
        if source == "online":
            with torch.no_grad():
                expected = distiller.teacher(flipped)
        else:
            expected, _ = aug(soft, None, torch.Generator().manual_seed(3))
        assert torch.allclose(target, expected, atol=1e-5), source


def test_images_without_labels_online_and_a_shared_cache(teacher, tmp_path: Path, capsys) -> None:
    data, bundle = teacher
    frames = tmp_path / "frames"
    frames.mkdir()
    for src in sorted((data / "train" / "images").iterdir()):
        (frames / src.name).write_bytes(src.read_bytes())  # a plain folder of frames, no masks
    assert (
        _distill(frames, bundle, tmp_path / "s1", "--source", "online", "--cache", str(tmp_path / "c"), epochs=2) == 0
    )
    result = json.loads((tmp_path / "s1" / "result.json").read_text())
    assert result["test"] is None and result["validation"]["ap"] is not None  # scored against the teacher
    meta = json.loads((tmp_path / "s1" / "best.json").read_text())
    assert meta["distill"]["validation_reference"] == "teacher"
    npy = next((tmp_path / "c" / "masks" / "teacher").glob("*.npy"))
    stamp = npy.stat().st_mtime_ns
    capsys.readouterr()
    assert _distill(frames, bundle, tmp_path / "s2", "--cache", str(tmp_path / "c"), epochs=1) == 0
    assert npy.stat().st_mtime_ns == stamp and "(fresh)" in capsys.readouterr().err  # reused, not recomputed
    assert _distill(frames, bundle, tmp_path / "s3", "--label-weight", "0.5") == 2  # no labels to mix in


def test_refusals(teacher, tmp_path: Path, capsys) -> None:
    data, bundle = teacher
    assert _distill(data, bundle, tmp_path / "a", "--set", "loss.name=cldice") == 2
    assert _distill(data, tmp_path / "missing", tmp_path / "b") == 2
    err = capsys.readouterr().err
    assert "soft" in err and "missing" in err


def test_a_run_saved_before_the_distill_section_existed_still_matches() -> None:
    from spermseg.config import config_to_dict
    from spermseg.training.config import TrainConfig
    from spermseg.training.run_dir import comparable

    new = config_to_dict(TrainConfig())
    old = {k: v for k, v in new.items() if k != "distill"}
    old["model"] = {k: v for k, v in new["model"].items() if k != "init"}
    assert comparable(old) == comparable(new)
    changed = {**new, "distill": {**new["distill"], "teacher": "bundles/e3"}}
    assert comparable(old) != comparable(changed)
