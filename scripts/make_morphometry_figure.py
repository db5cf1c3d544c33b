"""Make ``docs/figures/morphometry.png`` and print the summary table of docs/morphometry.md.

Usage: ``PYTHONPATH=src .venv/bin/python scripts/make_morphometry_figure.py --data ../shared/data/spermparsing``.

Measures every GT1 sperm of the train and test splits (instances + parts, ``spermseg.inference.morphometry``) and
draws one histogram per measure (pixels of the 640 x 512 images).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MEASURES = (
    ("head_length", "head length (px)"),
    ("head_width", "head width (px)"),
    ("head_area", "head area (px²)"),
    ("head_ellipticity", "head length / width"),
    ("head_perimeter", "head perimeter (px)"),
    ("acrosome_share", "acrosome area / head area"),
    ("vacuole_count", "vacuoles per head"),
    ("vacuole_share", "vacuole area / head area"),
    ("midpiece_length", "midpiece length (px)"),
    ("midpiece_width", "midpiece width (px)"),
    ("tail_length", "tail length (px)"),
)


def collect(data: Path, splits: tuple[str, ...] = ("train", "test")) -> dict[str, np.ndarray]:
    """Every GT1 sperm's measures as columns."""
    from spermseg.data.arrays import load_split
    from spermseg.inference.morphometry import as_table, measure_sperm

    rows = []
    for split in splits:
        arrays = load_split(data, split, raters=["GT1"], parts=(), labels=("instances", "parts"))
        for i in range(len(arrays)):
            rows += measure_sperm(arrays.labels("GT1", "instances")[i], arrays.labels("GT1", "parts")[i])
    return {k: np.asarray(v, dtype=float) for k, v in as_table(rows).items()}


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "spermparsing")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures" / "morphometry.png")
    args = parser.parse_args()
    table = collect(args.data)
    n = len(table["sperm_id"])
    fig, axes = plt.subplots(3, 4, figsize=(14, 9))
    print(f"{n} sperm; border-touching tails: {int(table['touches_border'].sum())}; "
          f"touching another sperm: {int(table['touches_other'].sum())}")  # fmt: skip
    print("| measure | median | 5th pct | 95th pct | n |\n|---|---|---|---|---|")
    for ax, (key, label) in zip(axes.ravel(), MEASURES):
        v = table[key]
        v = v[np.isfinite(v) & (v >= 0)]
        if key == "tail_length":  # tails cut by the border are lower bounds
            v = table[key][(table["touches_border"] == 0) & np.isfinite(table[key])]
        ax.hist(v, bins=30, color="#3b7dd8")
        ax.set_title(label, fontsize=10)
        p5, p50, p95 = np.percentile(v, [5, 50, 95]) if v.size else (np.nan,) * 3
        ax.axvline(p50, color="k", lw=1)
        print(f"| {label} | {p50:.3g} | {p5:.3g} | {p95:.3g} | {v.size} |")
    axes.ravel()[-1].axis("off")
    fig.suptitle(f"spermparsing GT1 (train + test), {n} sperm: per-sperm measures (median: black line)")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)


if __name__ == "__main__":
    main()
