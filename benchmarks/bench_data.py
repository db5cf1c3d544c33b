"""Data layer: loading the spermparsing splits, ``data check`` and augmentation throughput.

Cases:
* eager ``load_split`` of each split (decode + validate + pack masks) vs a lazy open (file list and headers);
* ``spermseg data check`` (decode and validate every file of every split once);
* augmentation of a batch of 5 x 1 x 512 x 512 images with 3 masks on the CPU (the paper's batch size):
  the full paper pipeline at p = 0.5, and each operation alone at p = 1, against a plain copy;
* on a CUDA machine, the same augmentation on the GPU.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Table, bench_main, measure  # noqa: E402

DATA = Path(os.environ.get("SPERMSEG_SPERMPARSING", HERE.parent.parent / "shared" / "data" / "spermparsing"))


def _loading(quick: bool) -> str:
    from spermseg.data.arrays import load_split
    from spermseg.data.check import check_dataset
    from spermseg.data.layouts import open_dataset

    if not (DATA / "test" / "images").is_dir():
        return f"_skipped: dataset not found at {DATA} (set SPERMSEG_SPERMPARSING)_"
    ds = open_dataset(DATA)
    splits = ["test"] if quick else list(ds.splits)
    repeat, warmup = (1, 0) if quick else (3, 1)
    t = Table("Loading spermparsing (640x512, warm OS file cache)", ratio_to="eager test", unit="image")
    for name in splits:
        n = len(ds.split(name))
        n_masks = sum(len(s.mask_paths.get(r, {})) for s in ds.split(name).samples for r in s.mask_paths)
        m = measure(
            lambda name=name: load_split(DATA, name), name=f"eager {name}", repeat=repeat, warmup=warmup, items=n
        )
        m.extra["files"] = n + n_masks
        t.add(m)
    m = measure(
        lambda: load_split(DATA, "test", lazy=True),
        name="lazy open test",
        repeat=repeat,
        warmup=warmup,
        items=len(ds.split("test")),
    )
    m.extra["files"] = "headers only"
    t.add(m)
    if not quick:
        total = sum(len(s) for s in ds.splits.values())
        m = measure(
            lambda: check_dataset(DATA, show_progress=False),
            name="data check (all splits)",
            repeat=repeat,
            warmup=warmup,
            items=total,
            trace_memory=False,
        )
        t.add(m)
    arr = load_split(DATA, "train" if not quick else "test")
    held = sum(getattr(a, "nbytes", 0) for a in arr.images._items) + sum(  # type: ignore[attr-defined]
        pk.bits.nbytes
        for seq in arr._masks.values()
        for pk in seq._items  # type: ignore[attr-defined]
    )
    note = (
        f"\n\nIn memory, split '{arr.split}' holds {held / 2**20:.1f} MiB ({len(arr)} uint8 images and "
        f"{len(arr._masks)} bit-packed mask sets); float32 images are made on access."
    )
    return t.markdown() + note


def _augment(quick: bool, device: str) -> str:
    import torch

    from spermseg.data.transforms import AUGMENT_OPS, AugmentConfig, Augmenter, normalize

    torch.manual_seed(0)
    b, h, w = 5, 512, 512
    images = torch.rand(b, 1, h, w, device=device)
    masks = (torch.rand(b, 3, h, w, device=device) > 0.9).float()
    g = torch.Generator().manual_seed(0)
    repeat, warmup = (3, 1) if quick else (10, 2)
    dev = torch.device(device)
    t = Table(
        f"Augmentation, batch {b}x1x{h}x{w} + 3 masks, {device} ({torch.get_num_threads()} threads)",
        ratio_to="paper pipeline (p=0.5)",
        unit="image",
    )
    t.add(
        measure(
            lambda: (images.clone(), masks.clone()),
            name="copy (baseline)",
            repeat=repeat,
            warmup=warmup,
            items=b,
            device=dev,
            trace_memory=False,
        )
    )
    aug = Augmenter(AugmentConfig())
    t.add(
        measure(
            lambda: aug(images, masks, g),
            name="paper pipeline (p=0.5)",
            repeat=repeat,
            warmup=warmup,
            items=b,
            device=dev,
            trace_memory=False,
        )
    )
    for op in AUGMENT_OPS:
        one = Augmenter(AugmentConfig(p=1.0, ops=(op,)))
        t.add(
            measure(
                lambda one=one: one(images, masks, g),
                name=f"{op} only (p=1)",
                repeat=repeat,
                warmup=warmup,
                items=b,
                device=dev,
                trace_memory=False,
            )
        )
    t.add(
        measure(
            lambda: normalize(images, "minmax"),
            name="normalize minmax",
            repeat=repeat,
            warmup=warmup,
            items=b,
            device=dev,
            trace_memory=False,
        )
    )
    return t.markdown()


def run(quick: bool) -> str:
    import torch

    parts = [__doc__.split("\n\n", 1)[1].strip(), _loading(quick), _augment(quick, "cpu")]
    if torch.cuda.is_available():
        parts.append(_augment(quick, "cuda"))
    return "\n\n".join(parts)


if __name__ == "__main__":
    raise SystemExit(bench_main("Data layer", run))
