"""Measure the levers of the ``cpu`` training preset on a real dataset: one run per variant, scored on the run's own
validation images (what the recipe was tuned on) and on the test split (reported, never tuned on).

Usage (resumable: finished runs are skipped; each variant is a normal ``spermseg train`` run directory)::

    .venv/bin/python scripts/cpu_recipe_ablation.py --data ../shared/data/spermparsing --out runs/ablation \\
        [--epochs 30] [--variants cpu,no_bias_prior,...] [--json-out ablation.json]

Every variant is the ``cpu`` preset with one lever changed (leave-one-out), at the same number of epochs, so the
rows differ only in that lever. For each it prints full/head/tail IoU_opt, tail IoU' (k = 3, at its optimal
threshold), AP and the training time; head/tail are scored from the full-sperm prediction against GT1's head and
tail regions (spermseg.metrics, as ``spermseg evaluate`` does).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Variant name -> ``--set`` overrides on top of ``--preset cpu`` (leave-one-out of the preset's levers).
VARIANTS: dict[str, list[str]] = {
    "cpu": [],
    "loss_dice_bce": ["loss.name=dice_bce"],
    "loss_dice_bce_skeleton_recall": ["loss.name=skeleton_recall", "loss.thin_weight=1.0"],
    "loss_bce_skeleton_recall": ["loss.name=skeleton_recall", "loss.dice_weight=0", "loss.thin_weight=1.0"],
    "loss_dice_bce_cldice": ["loss.name=cldice", "loss.thin_weight=0.5"],
    "no_bias_prior": ["model.bias_prior=false"],
    "uniform_crops": ["data.crop_foreground=0"],
    "multistep_schedule": ["schedule.name=multistep", "schedule.milestones=[{m1},{m2}]", "schedule.gamma=0.3"],
    "crop128_batch32": ["data.crop=128", "schedule.batch_size=32"],
    "width8": ["model.width=8"],
    "fp32": ["runtime.amp=off", "runtime.channels_last=off"],
    "no_blur": ["augment.ops=[hflip,vflip,rotate,zoom,contrast,brightness]"],
    "no_zoom": ["augment.ops=[hflip,vflip,rotate,blur,contrast,brightness]"],
    "width24": ["model.width=24"],
}


def train_variant(name: str, data: Path, out: Path, epochs: int, seed: int) -> Path:
    run = out / name
    sets = [s.format(m1=max(1, round(0.3 * epochs)), m2=max(2, round(0.8 * epochs))) for s in VARIANTS[name]]
    sets += [f"schedule.epochs={epochs}", f"validation.every={max(1, epochs // 5)}", "runtime.progress=false"]
    if (run / "result.json").is_file():
        return run
    cmd = [sys.executable, "-m", "spermseg", "train", "--data", str(data), "--model", "unet", "--preset", "cpu"]
    cmd += ["--seed", str(seed), "--out", str(run), "--resume"]
    for s in sets:
        cmd += ["--set", s]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return run


def score_run(run: Path, data: Path) -> dict:
    """Validation (the run's held-out groups of ``train``) and test scores, full/head/tail, vs GT1."""
    from spermseg.data.arrays import load_split
    from spermseg.inference.forward import predict_probs
    from spermseg.metrics import SegmentationAccumulator
    from spermseg.models.checkpoints import load_model

    result = json.loads((run / "result.json").read_text())
    model = load_model(run)
    norm = model.spermseg_meta["normalization"]
    out = {"train_s": result.get("train_time_s"), "images_per_s": result.get("images_per_s")}
    for label, split, keep in (("val", "train", set(result.get("val_groups") or [])), ("test", "test", None)):
        arrays = load_split(data, split, raters=["GT1"])
        idx = [i for i, g in enumerate(arrays.groups) if keep is None or g in keep]
        probs = predict_probs(model, [arrays.images[i] for i in idx], norm, batch_size=2)
        acc = SegmentationAccumulator("fast", kernels=(3,), parts=True)
        for j, i in enumerate(idx):
            acc.update(probs[j], {p: arrays.masks("GT1", p)[i] for p in ("full", "head", "tail")})
        res = acc.result()
        out[label] = {
            "n": len(idx),
            "ap": res["full"]["ap"],
            **{f"{p}_iou_opt": res[p]["iou_opt"] for p in ("full", "head", "tail")},
            "tail_iou_prime3": res["tail"]["iou_prime_opt"]["3"]["iou"]
            if "3" in res["tail"]["iou_prime_opt"]
            else res["tail"]["iou_prime_opt"][3]["iou"],
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; valid: {', '.join(VARIANTS)}")
    rows = {}
    for name in names:
        t0 = time.perf_counter()
        run = train_variant(name, args.data, args.out, args.epochs, args.seed)
        rows[name] = score_run(run, args.data)
        print(f"{name}: {json.dumps(rows[name])} ({time.perf_counter() - t0:.0f} s)", flush=True)
    cols = ["ap", "full_iou_opt", "head_iou_opt", "tail_iou_opt", "tail_iou_prime3"]
    print(
        "\n| variant | train s | "
        + " | ".join(f"val {c}" for c in cols)
        + " | "
        + " | ".join(f"test {c}" for c in cols)
        + " |"
    )
    print("|---" * (2 + 2 * len(cols)) + "|")
    for name, r in rows.items():
        cells = [f"{r['val'][c]:.4f}" for c in cols] + [f"{r['test'][c]:.4f}" for c in cols]
        print(f"| {name} | {r['train_s']:.0f} | " + " | ".join(cells) + " |")
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
