"""Realism report of the synthetic generator: synthetic vs real frames at equal scale, and the transfer number.

Prints (and writes as ``OUT/realism.json``) side by side for the real images and each synthetic contrast mode:
intensity of background, head and tail relative to the background median, background noise (high-pass std),
head length and width and tail width in micrometres; and with ``--model`` the transfer number: that model (trained
on synthetic frames only) scored on the real images (AP, IoU_opt and t_opt for full, head and tail, vs GT1).
Writes ``OUT/realism.png``: frames cropped to the same physical field and resampled to the same size, then the
histograms of those measures.

Usage (from the repository root)::

    python benchmarks/synth_realism.py --real ../shared/data/spermparsing --out runs/realism
    python benchmarks/synth_realism.py --real ../shared/data/spermparsing --model runs/builtin/bundle \\
        --transfer-split train --out runs/realism          # tune on train (the synthetic model never saw it)
    python benchmarks/synth_realism.py --real ../shared/data/spermparsing --model builtin --transfer-split test

The real pixel size is not in the spermparsing files: its 640x512 frames show heads 37-51 px long (10th-90th
percentile of GT1), and a human head is 4-5 um long (WHO), so about 0.1 um/px (``--real-pixel-size``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

MODES = ("phase", "relief", "brightfield")
FIELD_UM = 40.0  # side of the physical field shown per frame in the figure


def _read(path: Path) -> np.ndarray:
    from spermseg.data.io import read_image

    return np.asarray(read_image(path))


def frame_stats(image: np.ndarray, head: np.ndarray, tail: np.ndarray, px: float) -> dict[str, list[float]]:
    """Appearance and size measures of one frame with its head/tail masks.

    Args:
        image: (H, W) uint8 gray frame.
        head, tail: (H, W) bool masks.
        px: micrometres per pixel.

    Returns:
        Lists (one value per frame, or per head / tail piece): ``bg``, ``head``, ``tail`` (median intensity over
        the background median), ``noise`` (std of the background's high-pass, fraction of the background),
        ``head_length_um``, ``head_width_um``, ``tail_width_um``.
    """
    from scipy import ndimage as ndi
    from skimage import measure, morphology

    img = image.astype(np.float32)
    full = head | tail
    bg_mask = ~ndi.binary_dilation(full, iterations=max(3, int(round(0.6 / px))))
    bg = float(np.median(img[bg_mask])) if bg_mask.any() else float(np.median(img))
    out: dict[str, list[float]] = {k: [] for k in ("head", "tail", "noise", "head_length_um", "head_width_um")}
    out["tail_width_um"] = []
    if head.any():
        out["head"].append(float(np.median(img[head])) / bg)
    if tail.any():
        out["tail"].append(float(np.median(img[tail])) / bg)
    high = img - ndi.gaussian_filter(img, 2.0)
    out["noise"].append(float(high[bg_mask].std()) / bg)
    min_area = (1.5 / px) ** 2  # whole heads, not a sliver cut by the border
    for r in measure.regionprops(measure.label(head)):
        if r.area >= min_area:
            out["head_length_um"].append(float(r.axis_major_length) * px)
            out["head_width_um"].append(float(r.axis_minor_length) * px)
    lab = measure.label(tail)
    for r in measure.regionprops(lab):
        sk = morphology.skeletonize(r.image).sum()
        if sk >= 10:
            out["tail_width_um"].append(float(r.area) / float(sk) * px)
    return out


def _merge(acc: dict[str, list[float]], more: dict[str, list[float]]) -> None:
    for k, v in more.items():
        acc.setdefault(k, []).extend(v)


def _summary(acc: dict[str, list[float]]) -> dict[str, list[float] | None]:
    """Median and 10th/90th percentiles of every measure."""
    return {k: ([float(np.percentile(v, q)) for q in (10, 50, 90)] if v else None) for k, v in acc.items()}


def real_stats(root: Path, split: str, px: float, limit: int) -> tuple[dict[str, list[float]], list[np.ndarray]]:
    names = sorted((root / split / "images").glob("*.png"))[:limit]
    acc: dict[str, list[float]] = {}
    frames = []
    for f in names:
        head = _read(root / split / "GT1_head" / f.name) > 0
        tail = _read(root / split / "GT1_tail" / f.name) > 0
        img = _read(f)
        _merge(acc, frame_stats(img, head, tail, px))
        frames.append(_field(img, px))
    return acc, frames


def synth_stats(mode: str, n: int, seed: int, work: Path) -> tuple[dict[str, list[float]], list[np.ndarray]]:
    """Generate ``n`` frames of one mode (one per video, default parameters otherwise) and measure their truth."""
    from spermseg.cli import main

    out = work / mode
    argv = ["synth", "--out", str(out), "--train", str(n), "--test", "0", "--test-small", "0", "--seed", str(seed),
            "--images-per-video", "1", "--set", f"appearance.mode={mode}", "--overwrite"]  # fmt: skip
    if main(argv) != 0:
        raise SystemExit(f"synth_realism: spermseg {' '.join(argv)} failed")
    manifest = json.loads((out / "synth.json").read_text())
    acc: dict[str, list[float]] = {}
    frames = []
    for f in sorted((out / "train" / "images").glob("*.png")):
        px = manifest["conditions"][f.name.split("_")[0]]["pixel_size_um"]
        head = _read(out / "truth" / "train" / "head" / f.name) > 0
        tail = _read(out / "truth" / "train" / "tail" / f.name) > 0
        img = _read(f)
        _merge(acc, frame_stats(img, head, tail, px))
        frames.append(_field(img, px))
    return acc, frames


def _field(image: np.ndarray, px: float, size: int = 256) -> np.ndarray:
    """The central ``FIELD_UM`` x ``FIELD_UM`` um of a frame (padded when smaller), resampled to ``size`` px."""
    import cv2

    side = int(round(FIELD_UM / px))
    h, w = image.shape
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    crop = image[y0 : y0 + side, x0 : x0 + side]
    crop = np.pad(crop, ((0, side - crop.shape[0]), (0, side - crop.shape[1])), constant_values=0)
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def transfer(model: str, root: Path, split: str, work: Path) -> dict[str, dict[str, float]]:
    """Predict ``split`` of the real dataset with ``model`` and score it vs GT1 (full, head, tail)."""
    from spermseg.cli import main

    pred = work / f"pred_{split}"
    argv = ["predict", "--model", model, str(root / split / "images"), "--out", str(pred), "--no-overlay"]
    if main(argv) != 0:
        raise SystemExit("synth_realism: predict failed")
    res = work / f"eval_{split}.json"
    argv = ["evaluate", "--pred", str(pred), "--data", str(root), "--split", split, "--json-out", str(res)]
    if main(argv) != 0:
        raise SystemExit("synth_realism: evaluate failed")
    data = json.loads(res.read_text())
    keep = ("ap", "iou_opt", "t_opt", "iou_0.5")
    return {part: {k: data[part][k] for k in keep if k in data[part]} for part in ("full", "head", "tail")}


def figure(rows: dict[str, list[np.ndarray]], stats: dict[str, dict[str, list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    cols = 4
    fig, axes = plt.subplots(len(names) + 1, cols, figsize=(3 * cols, 3 * (len(names) + 1)))
    for i, name in enumerate(names):
        for j in range(cols):
            ax = axes[i, j]
            ax.axis("off")
            if j < len(rows[name]):
                ax.imshow(rows[name][j], cmap="gray", vmin=0, vmax=255)
            if j == 0:
                ax.set_title(f"{name} ({FIELD_UM:.0f} um field)", fontsize=9, loc="left")
    for ax, (key, label) in zip(
        axes[-1],
        (
            ("head", "head / background"),
            ("tail", "tail / background"),
            ("head_length_um", "head length (um)"),
            ("tail_width_um", "tail mask width (um)"),
        ),  # fmt: skip
        strict=True,
    ):
        for name in names:
            v = stats[name].get(key) or []
            if v:
                ax.hist(v, bins=20, histtype="step", density=True, label=name)
        ax.set_title(label, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[-1, 0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, required=True, help="real dataset (SegSperm layout, GT1 head/tail)")
    parser.add_argument("--real-split", default="train", help="split whose images are measured (default train)")
    parser.add_argument("--real-pixel-size", type=float, default=0.1, help="um/px of the real images (0.1)")
    parser.add_argument("--real-images", type=int, default=48, help="real images measured")
    parser.add_argument("--per-mode", type=int, default=24, help="synthetic frames per contrast mode")
    parser.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    parser.add_argument("--model", default=None, help="synthetic-only model for the transfer number (bundle/run)")
    parser.add_argument("--transfer-split", default="train", help="real split it is scored on (default train)")
    parser.add_argument("--out", type=Path, required=True, help="folder for realism.json and realism.png")
    args = parser.parse_args(argv)

    stats: dict[str, dict[str, list[float]]] = {}
    rows: dict[str, list[np.ndarray]] = {}
    stats["real"], rows["real"] = real_stats(args.real, args.real_split, args.real_pixel_size, args.real_images)
    with tempfile.TemporaryDirectory() as tmp:
        for mode in MODES:
            stats[mode], rows[mode] = synth_stats(mode, args.per_mode, args.seed, Path(tmp))
        report: dict[str, object] = {name: _summary(acc) for name, acc in stats.items()}
        if args.model:
            report["transfer"] = {"model": args.model, "split": args.transfer_split,
                                  **transfer(args.model, args.real, args.transfer_split, Path(tmp))}  # fmt: skip
    figure(rows, stats, args.out / "realism.png")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "realism.json").write_text(json.dumps(report, indent=2))
    keys = ("head", "tail", "noise", "head_length_um", "head_width_um", "tail_width_um")
    print(f"{'median [p10, p90]':<16}" + "".join(f"{k:>22}" for k in keys))
    for name in stats:
        cells = []
        for k in keys:
            v = report[name][k]  # type: ignore[index]
            cells.append("-" if v is None else f"{v[1]:.3f} [{v[0]:.2f},{v[2]:.2f}]")
        print(f"{name:<16}" + "".join(f"{c:>22}" for c in cells))
    if "transfer" in report:
        t = report["transfer"]
        print(f"transfer ({args.model} on {args.real} {args.transfer_split} vs GT1):")
        for part in ("full", "head", "tail"):
            print(f"  {part:5s} " + "  ".join(f"{k} {v:.4f}" for k, v in t[part].items()))  # type: ignore[index]
    print(f"wrote {args.out / 'realism.png'} and {args.out / 'realism.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
