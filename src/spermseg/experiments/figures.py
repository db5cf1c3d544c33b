"""The report's figures (paper Figs. 6, 7, 9, 10/11, 12, 14) with matplotlib, readable in print.

Every function takes plain data (lists, dicts, numpy arrays, as stored in the step results), writes one PNG
atomically and returns its path. Figures use the object API (``matplotlib.figure.Figure`` with the Agg canvas),
never ``pyplot``, so no global state or display backend is involved and they are safe in worker processes.
Colours come from a colour-blind-safe cycle, and lines also differ by marker, so figures stay readable in grey
print.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spermseg.utils.atomic import atomic_path

# Okabe-Ito colour-blind-safe palette, plus markers so that curves differ in black-and-white print.
_COLORS = [
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#F0E442",
    "#000000",
    "#999999",
    "#882255",
    "#44AA99",
    "#117733",
]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p"]
DPI = 130

# Difference-map colours of the paper (Figs. 10, 11): TP red, FN blue, FP green.
TP_RGB = (1.0, 0.0, 0.0)
FN_RGB = (0.0, 0.35, 1.0)
FP_RGB = (0.0, 0.8, 0.0)


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _style(i: int) -> dict[str, Any]:
    return {"color": _COLORS[i % len(_COLORS)], "marker": _MARKERS[i % len(_MARKERS)]}


def iou_threshold_curves(
    curves: Mapping[str, Mapping[str, Any]], path: str | Path, title: str = "IoU vs. binarization threshold (test set)"
) -> Path:
    """Paper Fig. 7: IoU as a function of the threshold, one curve per model, ``t_opt`` marked with a cross.

    Args:
        curves: ``{name: {"thresholds": [T], "iou": [T], "t_opt": float, "iou_opt": float}}``.
        path: output PNG.
        title: figure title.

    Returns:
        ``path``.
    """
    fig = _figure(7.0, 4.6)
    ax = fig.add_subplot()
    for i, (name, c) in enumerate(curves.items()):
        t = np.asarray(c["thresholds"], dtype=float)
        v = np.asarray(c["iou"], dtype=float)
        st = _style(i)
        # Markers only every few points: the curve stays readable and lines stay distinguishable in grey print.
        ax.plot(
            t,
            v,
            color=st["color"],
            marker=st["marker"],
            markevery=max(1, len(t) // 8),
            markersize=4,
            linewidth=1.4,
            label=f"{name} (t_opt={c['t_opt']:.2f}, IoU={c['iou_opt']:.3f})",
        )
        ax.plot(
            [c["t_opt"]],
            [c["iou_opt"]],
            marker="x",
            color="black",
            markersize=10,
            markeredgewidth=2.2,
            linestyle="none",
            zorder=5,
        )
    ax.plot([], [], marker="x", color="black", linestyle="none", markersize=8, label="optimal threshold t_opt")
    ax.axvline(0.5, color="0.6", linestyle=":", linewidth=1)
    ax.set_xlabel("binarization threshold t (probability)")
    ax.set_ylabel("IoU (full sperm)")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower center", ncol=2 if len(curves) > 5 else 1, framealpha=0.9)
    return _save(fig, path)


def normalization_bars(
    ap: Mapping[str, Mapping[str, float]],
    path: str | Path,
    std: Mapping[str, Mapping[str, float]] | None = None,
    title: str = "Effect of image normalization on AP (validation)",
) -> Path:
    """Paper Fig. 9: grouped bars, AP per model for each normalization.

    Args:
        ap: ``{model: {normalization: AP}}`` (normalizations in the same order for every model).
        path: output PNG.
        std: optional error bars, same shape as ``ap``.
        title: figure title.
    """
    models = list(ap)
    norms: list[str] = []
    for m in models:
        norms += [n for n in ap[m] if n not in norms]
    fig = _figure(max(5.5, 1.1 * len(models) + 2), 4.2)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(norms))
    x = np.arange(len(models))
    hatches = ["", "//", "..", "xx", "\\\\"]
    lo = []
    for j, n in enumerate(norms):
        vals = np.array([ap[m].get(n, np.nan) for m in models], dtype=float)
        err = None
        if std is not None:
            err = np.array([std.get(m, {}).get(n, 0.0) or 0.0 for m in models], dtype=float)
        bars = ax.bar(
            x + (j - (len(norms) - 1) / 2) * width,
            vals,
            width,
            yerr=err,
            capsize=2,
            label=n,
            color=_COLORS[j % len(_COLORS)],
            hatch=hatches[j % len(hatches)],
            edgecolor="black",
            linewidth=0.5,
        )
        ax.bar_label(bars, fmt="%.3f", fontsize=6, rotation=90, padding=2)
        lo.extend(v for v in vals if np.isfinite(v))
    ax.set_xticks(x, models, rotation=30, ha="right")
    ax.set_ylabel("average precision (AP)")
    if lo:
        # Zoom on the range of the values (AP differences are small), leaving room for the labels.
        span = max(lo) - min(lo)
        ax.set_ylim(max(0.0, min(lo) - 0.5 * span - 0.02), min(1.0, max(lo) + 0.6 * span + 0.03))
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title)
    ax.legend(title="normalization", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def difference_rgb(image: np.ndarray, ref: np.ndarray, pred: np.ndarray, alpha: float = 0.75) -> np.ndarray:
    """Overlay of a difference map on a gray image: TP red, FN blue, FP green (paper Figs. 10, 11).

    Args:
        image: (H, W) float in [0, 1].
        ref: (H, W) bool reference mask.
        pred: (H, W) bool predicted mask.
        alpha: opacity of the coloured pixels.

    Returns:
        (H, W, 3) float RGB in [0, 1].
    """
    img = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    rgb = np.repeat(img[..., None], 3, axis=-1)
    ref = np.asarray(ref, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    for mask, col in ((ref & pred, TP_RGB), (ref & ~pred, FN_RGB), (~ref & pred, FP_RGB)):
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.asarray(col, dtype=np.float32)
    return rgb


def difference_maps(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Paper Figs. 10/11: per row an image, then one difference map per method (TP red, FN blue, FP green).

    Args:
        rows: ``[{"name": str, "image": (H, W) float, "ref": (H, W) bool, "preds": {method: (H, W) bool}}]``;
            every row has the same methods.
        path: output PNG.
        title: figure title (the reference rater, the thresholds used).
    """
    from matplotlib.patches import Patch

    methods = list(rows[0]["preds"]) if rows else []
    ncol = 1 + len(methods)
    h, w = np.asarray(rows[0]["image"]).shape if rows else (1, 1)
    cell = 1.9
    fig = _figure(cell * ncol * max(0.6, w / h), cell * len(rows) + 0.9)
    axes = fig.subplots(len(rows), ncol, squeeze=False)
    for r, row in enumerate(rows):
        axes[r, 0].imshow(np.asarray(row["image"]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[r, 0].set_ylabel(str(row.get("name", r)), fontsize=6)
        for c, m in enumerate(methods, start=1):
            axes[r, c].imshow(difference_rgb(row["image"], row["ref"], row["preds"][m]), interpolation="nearest")
        for c in range(ncol):
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title("image" if c == 0 else methods[c - 1], fontsize=8)
    handles = [
        Patch(color=TP_RGB, label="TP (true positive)"),
        Patch(color=FN_RGB, label="FN (false negative)"),
        Patch(color=FP_RGB, label="FP (false positive)"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def blur_curves(
    kernels: Sequence[int],
    values: Mapping[str, Sequence[float]],
    path: str | Path,
    metric: str = "IoU_opt",
    highlight: str | None = None,
    title: str = "Robustness to Gaussian blur of the input (test set)",
) -> Path:
    """Paper Fig. 12: a metric against the blur kernel size, one line per method.

    Args:
        kernels: kernel sizes (pixels), the x axis.
        values: ``{method: [value per kernel]}``.
        path: output PNG.
        metric: y-axis label (e.g. ``IoU_opt`` or ``AP``).
        highlight: a method drawn thicker (the best ensemble).
        title: figure title.
    """
    fig = _figure(7.0, 4.4)
    ax = fig.add_subplot()
    for i, (name, v) in enumerate(values.items()):
        st = _style(i)
        lw = 2.6 if name == highlight else 1.3
        ax.plot(list(kernels), np.asarray(v, dtype=float), label=name, linewidth=lw, markersize=4, **st)
    ax.set_xlabel("Gaussian blur kernel size (pixels)")
    ax.set_ylabel(metric + " (full sperm)")
    ax.set_xticks(list(kernels))
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2 if len(values) > 5 else 1)
    return _save(fig, path)


def temporal_plot(
    series: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | Path,
    title: str = "Temporal consistency on a frame sequence",
) -> Path:
    """Paper Fig. 14 (quantified): per method, IoU between consecutive binarized masks and the fraction of
    foreground pixels kept from one frame to the next, against the frame index.

    Args:
        series: ``{method: {"iou": [F-1], "kept": [F-1]}}``.
        path: output PNG.
        title: figure title.
    """
    fig = _figure(7.0, 5.2)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    for i, (name, s) in enumerate(series.items()):
        st = _style(i)
        x = np.arange(1, len(s["iou"]) + 1)
        ax1.plot(x, np.asarray(s["iou"], dtype=float), label=name, markersize=3, linewidth=1.2, **st)
        ax2.plot(x, np.asarray(s["kept"], dtype=float), label=name, markersize=3, linewidth=1.2, **st)
    ax1.set_ylabel("IoU(frame t-1, frame t)")
    ax2.set_ylabel("foreground kept (fraction)")
    ax2.set_xlabel("frame index t")
    for ax in (ax1, ax2):
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=7, ncol=2)
    ax1.set_title(title)
    return _save(fig, path)


def aggregation_examples(
    image: np.ndarray,
    masks: Mapping[str, np.ndarray],
    path: str | Path,
    title: str = "Rater masks and their aggregates",
) -> Path:
    """Paper Fig. 6: an image, the raters' masks and the aggregated ground truths, side by side.

    Args:
        image: (H, W) float in [0, 1].
        masks: ``{label: (H, W) bool}``, e.g. GT1, GT2, GT3, union (feeling lucky), majority, intersection
            (full agreement), STAPLE.
        path: output PNG.
        title: figure title.
    """
    n = 1 + len(masks)
    ncol = min(4, n)
    nrow = (n + ncol - 1) // ncol
    h, w = np.asarray(image).shape
    fig = _figure(2.3 * ncol * max(0.6, w / h), 2.3 * nrow + 0.5)
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    axes[0].imshow(np.asarray(image), cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("image", fontsize=8)
    for ax, (label, m) in zip(axes[1:], masks.items()):
        # Mask in white over a darkened image, so that the mask's extent is visible in print.
        rgb = np.repeat(0.35 * np.clip(np.asarray(image, dtype=np.float32), 0, 1)[..., None], 3, axis=-1)
        rgb[np.asarray(m, dtype=bool)] = 1.0
        ax.imshow(rgb)
        ax.set_title(f"{label} ({int(np.asarray(m, dtype=bool).sum())} px)", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[n:]:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def agreement_heatmaps(
    matrices: Mapping[str, Mapping[str, Mapping[str, float]]],
    path: str | Path,
    title: str = "Inter-rater IoU' (row = reference, column = prediction)",
) -> Path:
    """Table 2 (bottom) as heat maps, one panel per part.

    Args:
        matrices: ``{part: {ref: {pred: value}}}``.
        path: output PNG.
        title: figure title.
    """
    parts = list(matrices)
    fig = _figure(3.2 * len(parts), 3.3)
    axes = fig.subplots(1, len(parts), squeeze=False)[0]
    for ax, part in zip(axes, parts):
        raters = list(matrices[part])
        mat = np.array([[matrices[part][r].get(c, np.nan) for c in raters] for r in raters], dtype=float)
        im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
        for i in range(len(raters)):
            for j in range(len(raters)):
                ax.text(
                    j,
                    i,
                    f"{mat[i, j]:.3f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if mat[i, j] < 0.6 else "black",
                )
        ax.set_xticks(range(len(raters)), raters)
        ax.set_yticks(range(len(raters)), raters)
        ax.set_xlabel("prediction")
        ax.set_ylabel("reference")
        ax.set_title(part)
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="IoU'")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)
