"""Step ``blur`` of ``spermseg reproduce``: robustness to blur (Fig. 12).

:func:`run` computes the step's result (its schema in the docstring) and :func:`section` renders it in the report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from spermseg.experiments import figures as F
from spermseg.experiments.document import Figure, ReportContext, Table, fmt
from spermseg.experiments.pipeline import require
from spermseg.experiments.runner import StepContext

if TYPE_CHECKING:  # pragma: no cover
    from spermseg.experiments.pipeline import Reproduction

NAME = "blur"
DESCRIPTION = "robustness to blur (Fig. 12)"
SECTION_TITLE = "6. Robustness to blur (Fig. 12)"
REQUIRES: tuple[str, ...] = ("base", "ensembles")


def run(rep: Reproduction, ctx: StepContext) -> dict[str, Any]:
    """Fig. 12: AP and IoU_opt per blur kernel size for each base model and the featured ensemble.

    Result: ``{"kernels", "rater", "sigma_rule", "highlight", "values": {method: {"ap": [..], "iou_opt": [..]}}}``.
    """
    blur = require("spermseg.evaluation.blur", "blur robustness (spermseg.evaluation.blur)")
    images = [np.asarray(im, dtype=np.float32) for im in rep.arrays(rep.cfg.test_split).images]
    refs = rep.full_refs(rep.cfg.test_split)
    sizes = list(rep.cfg.blur_kernels)
    values: dict[str, dict[str, list[float]]] = {}
    for name, fn in rep.predictors(ctx.results).items():
        if name.startswith("avg|"):
            continue  # Fig. 12 shows the base models and the best ensemble
        ctx.log(f"blur sweep: {name}")
        res = blur.blur_robustness(fn, images, refs, sizes, mode=rep.cfg.metric_mode, kernels=(), parts=False)
        values[name] = {key: [(res[k].get("full") or {}).get(key) for k in sizes] for key in ("ap", "iou_opt")}
    kind, sel = rep.featured()
    sigmas = ", ".join(f"k={k}: {blur.blur_sigma(k):.2f}" for k in sizes)
    return {
        "kernels": sizes,
        "rater": rep.cfg.rater,
        "highlight": f"{kind}|{sel}",
        "values": values,
        "sigma_rule": f"Gaussian sigma = 0.3((k-1)/2-1)+0.8, OpenCV's rule; k=1 is no blur; {sigmas}",
    }


def section(res: dict[str, Any], ctx: ReportContext) -> list[Table | Figure | str]:
    blocks: list[Table | Figure | str] = []
    kernels = list(res["kernels"])
    for metric, label in (("iou_opt", "IoU_opt"), ("ap", "AP")):
        vals = {m: v[metric] for m, v in res["values"].items() if metric in v}
        if not vals:
            continue
        rows = [[m] + [fmt(x) for x in v] for m, v in vals.items()]
        blocks.append(
            Table(
                f"Fig. 12 data: {label} (full sperm, vs. {res.get('rater', 'GT1')}) per blur kernel.",
                ["method"] + [f"k={k}" for k in kernels],
                rows,
            )
        )
        fig = F.blur_curves(
            kernels, vals, ctx.fig_dir / f"fig12_blur_{metric}.png", metric=label, highlight=res.get("highlight")
        )
        blocks.append(
            Figure(
                fig,
                f"Fig. 12: {label} against the size of the Gaussian kernel that blurs the input "
                f"({res.get('sigma_rule', '')}).",
            )
        )
    return blocks
