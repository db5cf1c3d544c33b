"""Step ``raters`` of ``spermseg reproduce``: evaluation vs. raters and aggregates (Table 4).

:func:`run` computes the step's result (its schema in the docstring) and :func:`section` renders it in the report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from spermseg.data.layouts import PARTS
from spermseg.experiments import paper_numbers as P
from spermseg.experiments.document import GT_VARIANT_NAMES, Figure, ReportContext, Table, fmt, fmt_delta
from spermseg.experiments.pipeline import require
from spermseg.experiments.runner import StepContext

if TYPE_CHECKING:  # pragma: no cover
    from spermseg.experiments.pipeline import Reproduction

NAME = "raters"
DESCRIPTION = "evaluation vs. raters and aggregates (Table 4)"
SECTION_TITLE = "5. Evaluation against raters and aggregated ground truths (Table 4)"
REQUIRES: tuple[str, ...] = ("base", "ensembles")


def run(rep: Reproduction, ctx: StepContext) -> dict[str, Any]:
    """Table 4: IoU_opt of the best base model, avg|E3 and the featured ensemble vs. every rater and aggregate.

    Result: ``{"split", "n_images", "methods": {key: description}, "gt_variants": [...],
    "iou_opt": {part: {variant: {method key: value}}}}``.
    """
    ds = rep.dataset()
    split = rep.cfg.multi_rater_split
    if split not in ds.splits or len(ds.splits[split].raters) < 2:
        return {"status": "not_applicable", "reason": f"the dataset has no multi-rater split '{split}'"}
    agg = require("spermseg.evaluation.aggregation", "ground-truth aggregation (spermseg.evaluation.aggregation)")
    from spermseg.metrics import SegmentationAccumulator

    raters = list(ds.splits[split].raters)
    arrays = rep.arrays(split)
    images = [np.asarray(im, dtype=np.float32) for im in arrays.images]
    preds = rep.predictors(ctx.results, with_all_base=False)
    best_base = ctx.results["ensembles"]["best_base"]
    methods = {"best_base": best_base}
    probs = {"best_base": rep.predictors(ctx.results)[best_base](images)}
    for key, fn in preds.items():
        methods[key] = key
        probs[key] = fn(images)
    has_parts = all(arrays.masks(r, "head") is not None and arrays.masks(r, "tail") is not None for r in raters)
    parts = ("full", "head", "tail") if has_parts else ("full",)
    refs_by_var: dict[str, list[dict[str, np.ndarray]]] = {}
    for r in raters:
        refs_by_var[r] = [{p: np.asarray(arrays.masks(r, p)[i], dtype=bool) for p in parts} for i in range(len(images))]
    for method in ("intersection", "majority", "union", "staple"):
        try:
            per_part = {
                p: agg.aggregate([[refs_by_var[r][i][p] for i in range(len(images))] for r in raters], method)
                for p in parts
            }
            refs_by_var[method] = [
                {p: np.asarray(per_part[p][i], dtype=bool) for p in parts} for i in range(len(images))
            ]
        except Exception as exc:  # noqa: BLE001 - e.g. STAPLE without SimpleITK: report the others
            ctx.log(f"aggregate {method} skipped: {exc}")
    table: dict[str, dict[str, dict[str, float]]] = {p: {} for p in parts}
    for var, refs in refs_by_var.items():
        for key, pr in probs.items():
            acc = SegmentationAccumulator(mode=rep.cfg.metric_mode, kernels=(), parts=has_parts)
            for i in range(len(images)):
                acc.update(pr[i], refs[i] if has_parts else refs[i]["full"])
            res = acc.result()
            for p in parts:
                table[p].setdefault(var, {})[key] = (res.get(p) or {}).get("iou_opt")
    return {
        "split": split,
        "n_images": len(images),
        "methods": methods,
        "method_order": list(methods),
        "gt_variants": list(refs_by_var),
        "iou_opt": table,
    }


def section(res: dict[str, Any], ctx: ReportContext) -> list[Table | Figure | str]:
    blocks: list[Table | Figure | str] = []
    methods = res["methods"]  # {"best_base": "att_unet", "avg|E3": ..., ...} key -> description
    # Result JSON is written with sorted keys, so the display order comes from explicit lists.
    keys = [k for k in res.get("method_order", []) if k in methods] or list(methods)
    variants = res.get("gt_variants") or []
    blocks.append(
        f"Split `{res.get('split')}`, {res.get('n_images')} images; IoU_opt (the threshold maximizing "
        "IoU on this set); methods: " + "; ".join(f"{k} = {v}" for k, v in methods.items()) + "."
    )
    for part in PARTS:
        by_var = res["iou_opt"].get(part)
        if not by_var:
            continue
        headers = ["ground truth"] + [methods[k] if k == "best_base" else k for k in keys]
        if ctx.compare:
            headers += [f"paper {k}" for k in keys if k in P.TABLE4_METHODS]
        rows = []
        for var in [v for v in variants if v in by_var] or list(by_var):
            by_m = by_var[var]
            row = [GT_VARIANT_NAMES.get(var, var)]
            row += [fmt(by_m.get(k)) for k in keys]
            if ctx.compare:
                for k in keys:
                    if k not in P.TABLE4_METHODS:
                        continue
                    pv = P.TABLE4.get(part, {}).get(var, {}).get(k)
                    row.append("-" if pv is None else f"{fmt(pv)} (Δ {fmt_delta(by_m.get(k), pv)})")
            rows.append(row)
        blocks.append(Table(f"Table 4: IoU_opt, {part}.", headers, rows))
    return blocks
