"""Distillation: one small base network learns a teacher's soft masks, in the trainer's own loop.

``spermseg distill --teacher BUNDLE --student NAME --width W --data ROOT --out RUN`` is ``spermseg train`` with a
``distill`` section (:class:`~spermseg.training.config.DistillConfig`); the loop (:mod:`spermseg.training.trainer`)
asks a :class:`Distiller` for two things only: the training split, and the augmentation step that turns a batch
into the student's input and target. Everything else (crops, the shared augmentation, the optimizer, validation,
checkpoints, resume, ``result.json``) is the trainer's.

Target: the teacher's probability ``p_T`` (its whole pipeline, normalization included, before predict's
whole-sperm filter, which the student inherits), mixed with the labels when asked, ``(1 - w) p_T + w y``, and
learnt with the run's loss (``bce``, i.e. the cross-entropy to the teacher's distribution, or ``dice_bce``).

Where ``p_T`` comes from (``distill.source``):

* ``cache`` (default): the teacher runs once over the full training images; its soft masks are stored in the
  mask-cache format (:mod:`spermseg.data.mask_store`, model id ``teacher``; reused while teacher and data are
  unchanged) and ride along with each crop through the geometric part of the shared augmentation (flips,
  rotation, zoom: :func:`spermseg.data.transforms.augment_batch`, the same replay that feeds the ensembling
  networks). Photometric changes (blur, contrast, brightness) reach the student's image but not the teacher's,
  so the student learns the teacher's answer on the clean frame.
* ``online``: the teacher runs on every augmented batch (the same augmentation replayed without normalization,
  so it sees exactly the student's pixels, blur included): exact, and one teacher forward per step.

Data: a labelled dataset (its labels are used for validation and test, and with ``label_weight``), or images
without labels (a plain folder of frames, or a dataset split without masks): distillation needs no annotations.
Without labels the teacher's binary masks (at its threshold) stand in for them where the loop needs a reference:
the validation score (then an agreement with the teacher), foreground-centred crops and the bias prior.

Why training and not ensembling: the result is a base model trained by the trainer, which must call this module;
its inputs are a predictor (inference) and the soft-mask cache's format (data), both below training, and nothing
of ensembling (selection, stacking, Table 3) is needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from spermseg.errors import ConfigError, DataError
from spermseg.training.train_data import SplitData, load_config_split

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from spermseg.training.config import TrainConfig

#: The teacher's model id in its mask cache.
TEACHER_ID = "teacher"
_CHUNK = 64  # frames per teacher call in the cache pass: bounds the float32 working memory


def teacher_digest(teacher: str | Path) -> str:
    """A sha256 that changes whenever the teacher's weights or settings change (its cache entry's key).

    A bundle (or ``builtin``): its manifest checksum, which covers every member's sha256 and the threshold; a run
    directory or checkpoint: the sha256 of its weights.
    """
    from spermseg.inference.bundle import MANIFEST, manifest_digest, read_bundle_manifest, resolve_model
    from spermseg.models.checkpoints import resolve_checkpoint
    from spermseg.utils.hashing import file_sha256

    path = Path(resolve_model(teacher))
    if (path / MANIFEST).is_file():
        manifest = read_bundle_manifest(path)
        return str(manifest.get("manifest_sha256") or manifest_digest(manifest))
    return file_sha256(resolve_checkpoint(path).with_suffix(".safetensors"))


def image_files(root: str | Path, split: str) -> list[Path]:
    """The images to distil on when ``root`` has no labels: a dataset split's images, or the images in ``root``.

    Raises:
        DataError: no image there.
    """
    from spermseg.data.io import is_image_file
    from spermseg.data.layouts import open_dataset

    root = Path(root)
    try:
        dataset = open_dataset(root)
    except DataError:
        dataset = None
    if dataset is not None and split in dataset.splits:
        files = [s.image_path for s in dataset.splits[split].samples]
    else:
        files = sorted(p for p in root.iterdir() if p.is_file() and is_image_file(p)) if root.is_dir() else []
    if not files:
        raise DataError(f"no images to distil on in {root} (split '{split}', or image files directly in the folder)")
    return files


def is_labelled(root: str | Path, split: str) -> bool:
    """True when ``root`` is a dataset whose ``split`` has a rater's masks."""
    from spermseg.data.layouts import open_dataset

    try:
        dataset = open_dataset(root)
    except DataError:
        return False
    return split in dataset.splits and bool(dataset.splits[split].raters)


def unlabelled_split(root: str | Path, split: str, max_images: int = 0) -> SplitData:
    """Images without labels as a :class:`SplitData` (targets are filled in later from the teacher).

    Groups (for the validation split by video) come from the names, as for datasets
    (:func:`spermseg.data.layouts.parse_group`).
    """
    from spermseg.data.arrays import fingerprint
    from spermseg.data.io import read_image
    from spermseg.data.layouts import parse_group

    files = image_files(root, split)
    files = files[:max_images] if max_images > 0 else files
    return SplitData(
        names=[f.name for f in files],
        groups=[parse_group(f.stem) for f in files],
        images=[read_image(f) for f in files],
        targets=[],
        fingerprint=fingerprint(files, Path(root), {"unlabelled": True}),
    )


class Distiller:
    """The teacher of a run and what the loop asks of it (:mod:`spermseg.training.trainer` builds one).

    Args:
        cfg: the run's config (``cfg.distill.teacher`` set; validated).
        run_dir: the run directory (the default teacher cache lives in it).
        device: the training device (the teacher runs there too).
        log: one-line messages.
    """

    def __init__(self, cfg: TrainConfig, run_dir: Path, device: torch.device, log: Callable[[str], None]) -> None:
        from spermseg.inference.bundle import load_predictor
        from spermseg.training.step import amp_enabled

        self.cfg, self.d, self.run_dir, self.device, self.log = cfg, cfg.distill, Path(run_dir), device, log
        self.teacher = load_predictor(self.d.teacher).float().eval().to(device)
        self.digest = teacher_digest(self.d.teacher)
        self.labelled = is_labelled(cfg.data.root, cfg.data.train_split)
        self.amp = amp_enabled(cfg, device)
        if not self.labelled and self.d.label_weight > 0:
            raise ConfigError(
                f"{cfg.data.root} has no labels for split '{cfg.data.train_split}', so distill.label_weight must be 0"
            )
        if not self.labelled and cfg.data.test_split:
            raise ConfigError(
                f"{cfg.data.root} has no labels to test on: set data.test_split='' (images without labels are "
                "scored against the teacher in validation only)"
            )

    # ---- the training split ------------------------------------------------------------------------------------

    def training_split(self) -> SplitData:
        """The split the run trains on: labels (or the teacher's binary masks) and, for ``cache``, soft masks.

        ``masks`` (N, 1, H, W) float16 holds the teacher's soft masks for ``source=cache``; the loop crops and
        augments them with their images (the trainer drops them from the validation part: they are targets).
        """
        cfg = self.cfg
        if self.labelled:
            data = load_config_split(cfg, cfg.data.train_split, max_images=cfg.data.max_images)
        else:
            data = unlabelled_split(cfg.data.root, cfg.data.train_split, cfg.data.max_images)
        if self.d.source == "cache" or not self.labelled:
            soft = self.cached_soft_masks(data)
            if not self.labelled:
                data.targets = [m >= self.teacher.threshold for m in soft]
            if self.d.source == "cache":
                data.masks = soft[:, None]
        kind = "labelled" if self.labelled else "unlabelled (the teacher's binary masks stand in for labels)"
        self.log(f"spermseg distill: teacher {self.d.teacher} ({self.teacher.combine}), {kind}, source {self.d.source}")
        return data

    def cached_soft_masks(self, data: SplitData) -> np.ndarray:
        """The teacher's soft masks (N, H, W) float16 of ``data``'s images, from its mask cache or computed now."""
        from spermseg.data.mask_store import (
            entry_problem,
            load_cached_masks,
            load_manifest,
            register_split,
            write_entry,
        )

        cache = Path(self.d.cache) if self.d.cache else self.run_dir / "teacher_cache"
        split = self.cfg.data.train_split
        manifest = load_manifest(cache, missing_ok=True)
        info = manifest["splits"].get(split) or {}
        model = manifest["models"].get(TEACHER_ID) or {}
        entry = (model.get("entries") or {}).get(split)
        fresh = (
            entry is not None
            and info.get("fingerprint") == data.fingerprint
            and info.get("names") == list(data.names)
            and model.get("teacher_sha256") == self.digest
            and entry.get("tta") == self.d.tta
            and entry_problem(cache, entry, info["shape"]) is None
        )
        if fresh:
            self.log(f"spermseg distill: the teacher's soft masks from {cache} (fresh)")
            return load_cached_masks(cache, split, [TEACHER_ID], dtype=np.float16)[1][:, 0]
        cache.mkdir(parents=True, exist_ok=True)
        sizes = [tuple(img.shape) for img in data.images]
        register_split(manifest, split, SimpleNamespace(names=data.names, groups=data.groups,
                                                        fingerprint=data.fingerprint, sizes=sizes))  # fmt: skip
        manifest["models"][TEACHER_ID] = {
            "teacher": str(self.d.teacher),
            "teacher_sha256": self.digest,
            "threshold": self.teacher.threshold,
            "entries": {},
        }
        t0 = time.perf_counter()
        probs = self.predict(data.images)
        seconds = time.perf_counter() - t0
        write_entry(cache, manifest, TEACHER_ID, split, probs, {"tta": self.d.tta, "seconds": round(seconds, 3)})
        self.log(f"spermseg distill: teacher over {len(probs)} images in {seconds:.1f} s -> {cache}")
        return np.clip(probs, 0.0, 1.0).astype(np.float16)

    def predict(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """The teacher's probabilities (N, H, W) float32 on raw frames of one size, in float32."""
        from spermseg.inference.backends import in_chunks, torch_backend, with_flip_tta

        fn = torch_backend(self.teacher, str(self.device), precision="fp32")
        fn = in_chunks(with_flip_tta(fn) if self.d.tta else fn, self.cfg.validation.batch_size)
        chunks = [fn(np.stack(images[i : i + _CHUNK])) for i in range(0, len(images), _CHUNK)]
        out = np.concatenate(chunks)
        if out.ndim != 3:
            raise ConfigError(f"the teacher {self.d.teacher} gives {out.shape[1]} channels; distil a binary model")
        return out

    # ---- one batch ---------------------------------------------------------------------------------------------

    def augment(
        self,
        augmenter: Any,
        images: torch.Tensor,
        target: torch.Tensor,
        masks: torch.Tensor | None,
        gen: torch.Generator,
        normalization: str | None,
    ) -> tuple[torch.Tensor, torch.Tensor, None]:
        """The loop's augmentation step for distillation: ``(student input, soft target, no masks)``.

        Args:
            augmenter: the run's Augmenter.
            images: raw crops (B, 1, h, w) in [0, 1].
            target: labels (B, 1, h, w) float {0, 1} (the teacher's binary masks without labels).
            masks: the teacher's cached soft masks (B, 1, h, w) for ``source=cache``, else None.
            gen: the augmentation generator (advanced as one Augmenter call advances it).
            normalization: the student's normalization.

        Returns:
            Normalized augmented images, the target ``(1 - w) p_T + w y`` (B, 1, h, w) in [0, 1], and None.
        """
        import torch

        from spermseg.data.transforms import augment_batch
        from spermseg.inference.forward import autocast_context

        state = gen.get_state()
        student, target, masks = augment_batch(augmenter, images, target, masks, gen, normalization)
        if self.d.source == "online":
            replay = type(gen)(device=gen.device)
            replay.set_state(state)
            raw, _ = augmenter(images, None, replay)  # the same flips, warp, blur and contrast, not normalized
            # in the student's training precision: bf16 exactly when its steps are bf16 (CUDA, CPUs with native bf16)
            with torch.no_grad(), autocast_context(self.device, "bf16" if self.amp else "fp32"):
                soft = self.teacher(raw).float()
            if soft.shape[1] != 1:
                raise ConfigError(f"the teacher {self.d.teacher} gives {soft.shape[1]} channels; distil a binary model")
        else:
            assert masks is not None, "source=cache: the split carries the teacher's masks"
            soft = masks[:, :1]
        w = float(self.d.label_weight)
        return student, (soft if w == 0 else (1.0 - w) * soft + w * target), None

    # ---- what the checkpoints record --------------------------------------------------------------------------

    def meta(self, whole_sperm: dict[str, Any] | None) -> dict[str, Any]:
        """Checkpoint metadata of the student: the teacher's identity and, without labels, its whole-sperm radius."""
        out: dict[str, Any] = {
            "distill": {
                "teacher": str(self.d.teacher),
                "teacher_sha256": self.digest,
                "source": self.d.source,
                "label_weight": self.d.label_weight,
                "validation_reference": "labels" if self.labelled else "teacher",
            }
        }
        if whole_sperm is None and self.teacher.min_head_radius is not None:
            out["whole_sperm"] = {"min_head_radius": self.teacher.min_head_radius, "source": "teacher"}
        return out
