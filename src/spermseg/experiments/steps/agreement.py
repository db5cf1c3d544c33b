"""Step ``agreement`` of ``spermseg reproduce``: inter-rater agreement (Table 2, Fig. 6).

:func:`run` computes the step's result (its schema in the docstring) and :func:`section` renders it in the report.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

import numpy as np

from spermseg.data.layouts import PARTS
from spermseg.experiments import figures as F
from spermseg.experiments import paper_numbers as P
from spermseg.experiments.document import GT_VARIANT_NAMES, Figure, ReportContext, Table, fmt, fmt_delta
from spermseg.experiments.pipeline import require
from spermseg.experiments.runner import StepContext

if TYPE_CHECKING:  # pragma: no cover
    from spermseg.experiments.pipeline import Reproduction

NAME = "agreement"
DESCRIPTION = "inter-rater agreement (Table 2, Fig. 6)"
SECTION_TITLE = "1. Inter-rater agreement (Table 2, Fig. 6)"
REQUIRES: tuple[str, ...] = ()


def run(rep: Reproduction, ctx: StepContext) -> dict[str, Any]:
    """Table 2 and a Fig. 6 example.

    Result: ``{"split", "n_images", "raters", "kernels", "iou": {part: {a: {b: v}}},
    "iou_prime": {k: {part: {ref: {pred: v}}}}, "mean_iou_prime": {k: {part: v}},
    "aggregation_example": npz path}`` or ``{"status": "not_applicable", "reason"}``.
    """
    ds = rep.dataset()
    split = rep.cfg.multi_rater_split
    if split not in ds.splits or len(ds.splits[split].raters) < 2:
        return {
            "status": "not_applicable",
            "reason": f"the dataset has no split '{split}' labelled by two or more raters",
        }
    ev = require("spermseg.evaluation.agreement", "inter-rater agreement (spermseg.evaluation.agreement)")
    res = ev.agreement(rep.root, split=split, kernels=tuple(rep.cfg.kernels))
    raters = list(ds.splits[split].raters)
    out: dict[str, Any] = {
        "split": split,
        "n_images": len(ds.splits[split].samples),
        "raters": raters,
        "kernels": list(rep.cfg.kernels),
        "iou": res["iou"],
        "iou_prime": res["iou_prime"],
    }
    out["mean_iou_prime"] = {
        str(k): {
            part: statistics.fmean(m[a][b] for a in raters for b in raters if a != b)
            for part, m in by_part.items()
            if m
        }
        for k, by_part in res["iou_prime"].items()
    }
    out["aggregation_example"] = _aggregation_example(rep, ctx, split, raters)
    return out


def _aggregation_example(rep: Reproduction, ctx: StepContext, split: str, raters: list[str]) -> str | None:
    agg = require("spermseg.evaluation.aggregation", "ground-truth aggregation (spermseg.evaluation.aggregation)")
    arrays = rep.arrays(split)
    fulls = {r: arrays.masks(r, "full") for r in raters}
    # The image where the raters disagree most (largest union minus intersection) shows the aggregates best.
    best, best_i = -1, 0
    for i in range(len(arrays.names)):
        stack = np.stack([np.asarray(fulls[r][i], dtype=bool) for r in raters])
        d = int(stack.any(0).sum() - stack.all(0).sum())
        if d > best:
            best, best_i = d, i
    stack = np.stack([np.asarray(fulls[r][best_i], dtype=bool) for r in raters])
    masks = {r: stack[j] for j, r in enumerate(raters)}
    for method in ("union", "majority", "intersection", "staple"):
        try:
            masks[method] = np.asarray(agg.aggregate_masks(list(stack), method), dtype=bool)
        except Exception as exc:  # noqa: BLE001 - one missing aggregate must not lose the figure
            ctx.log(f"aggregate {method} unavailable: {exc}")
    path = ctx.dir / "aggregation_example.npz"
    np.savez_compressed(
        path,
        image=np.asarray(arrays.images[best_i], dtype=np.float32),
        labels=np.array(list(masks)),
        name=arrays.names[best_i],
        **{f"mask_{k}": v for k, v in masks.items()},
    )
    return str(path.relative_to(rep.out))


def section(res: dict[str, Any], ctx: ReportContext) -> list[Table | Figure | str]:
    blocks: list[Table | Figure | str] = []
    raters = list(res["raters"])
    parts = [p for p in PARTS if p in res.get("iou", {})]
    blocks.append(f"Split `{res.get('split')}`, {res.get('n_images')} images, raters {', '.join(raters)}.")
    pairs = [(a, b) for i, a in enumerate(raters) for b in raters[i + 1 :]]
    headers = ["part"] + [f"{a} vs. {b}" for a, b in pairs]
    rows = []
    for part in parts:
        row = [part]
        for a, b in pairs:
            ours = res["iou"][part][a][b]
            paper = P.TABLE2_IOU.get(part, {}).get((a, b)) if ctx.compare else None
            row.append(fmt(ours) if paper is None else f"{fmt(ours)} (paper {fmt(paper)}, Δ {fmt_delta(ours, paper)})")
        rows.append(row)
    blocks.append(Table("Table 2 (top): strict IoU between raters (symmetric).", headers, rows))
    for k in map(str, res.get("kernels", [])):
        mats = res.get("iou_prime", {}).get(k)
        if not mats:
            continue
        rows = []
        for part in parts:
            for ref in raters:
                row = [part, ref]
                for pred in raters:
                    ours = mats[part][ref][pred]
                    paper = (
                        P.TABLE2_IOU_PRIME_K3.get(part, {}).get(ref, {}).get(pred)
                        if (ctx.compare and k == "3")
                        else None
                    )
                    row.append(
                        fmt(ours) if paper is None else f"{fmt(ours)} (paper {fmt(paper)}, Δ {fmt_delta(ours, paper)})"
                    )
                rows.append(row)
        blocks.append(
            Table(
                f"Table 2 (bottom): IoU' (Eq. 1), kernel {k}x{k}; row = reference rater, column = "
                "rater treated as the prediction.",
                ["part", "reference"] + raters,
                rows,
            )
        )
        fig = F.agreement_heatmaps(
            mats,
            ctx.fig_dir / f"table2_iou_prime_k{k}.png",
            title=f"Inter-rater IoU' with a {k}x{k} kernel (row = reference)",
        )
        blocks.append(Figure(fig, f"Table 2 (bottom) as heat maps, kernel {k}x{k}."))
    means = res.get("mean_iou_prime", {})
    if means:
        headers = ["kernel"] + parts
        rows = []
        for k, by_part in means.items():
            row = [f"{k}x{k}"]
            for part in parts:
                paper = P.TABLE2_MEAN_IOU_PRIME.get(k, {}).get(part) if ctx.compare else None
                ours = by_part.get(part)
                row.append(
                    fmt(ours) if paper is None else f"{fmt(ours)} (paper {fmt(paper)}, Δ {fmt_delta(ours, paper)})"
                )
            rows.append(row)
        blocks.append(Table("Mean IoU' over the ordered rater pairs (paper Section 5 text).", headers, rows))
    ex = res.get("aggregation_example")
    if ex and (ctx.out_dir / ex).is_file():
        with np.load(ctx.out_dir / ex) as z:
            labels = [str(s) for s in z["labels"]]
            masks = {GT_VARIANT_NAMES.get(lab, lab): z[f"mask_{lab}"] for lab in labels}
            fig = F.aggregation_examples(
                z["image"],
                masks,
                ctx.fig_dir / "fig6_aggregation.png",
                title=f"Rater masks and aggregated ground truths: {z['name']}",
            )
        blocks.append(
            Figure(
                fig,
                "Fig. 6: the raters' full-sperm masks and the aggregated ground truths "
                "(union = feeling lucky, majority voting, intersection = full agreement; STAPLE "
                "beyond the paper).",
            )
        )
    return blocks
