"""Step ``temporal`` of ``spermseg reproduce``: temporal consistency (Fig. 14).

:func:`run` computes the step's result (its schema in the docstring) and :func:`section` renders it in the report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spermseg.experiments import figures as F
from spermseg.experiments.document import Figure, ReportContext, Table, fmt
from spermseg.experiments.pipeline import find_sequence, require
from spermseg.experiments.runner import StepContext
from spermseg.metrics.score import mean_std

if TYPE_CHECKING:  # pragma: no cover
    from spermseg.experiments.pipeline import Reproduction

NAME = "temporal"
DESCRIPTION = "temporal consistency (Fig. 14)"
SECTION_TITLE = "8. Temporal consistency (Fig. 14)"
REQUIRES: tuple[str, ...] = ("base", "ensembles")


def run(rep: Reproduction, ctx: StepContext) -> dict[str, Any]:
    """Fig. 14: temporal consistency on a frame sequence (when the dataset has one).

    Result: ``{"sequence", "n_frames", "series": {method: {"iou": [F-1], "kept": [F-1], "mean_iou",
    "mean_kept"}}}`` or ``{"status": "not_applicable", "reason"}``.
    """
    seq = find_sequence(rep.root, rep.cfg.temporal_frames)
    if seq is None:
        return {
            "status": "not_applicable",
            "reason": f"no frame sequence in {rep.root} (expected VIDEO_DIR/frames/*.png under videos/)",
        }
    temporal = require("spermseg.evaluation.temporal", "temporal consistency (spermseg.evaluation.temporal)")
    name, frames = seq
    series: dict[str, Any] = {}
    # Each method binarized at its t_opt on the test set: from the qualitative step when it ran, else the
    # base models' best-seed t_opt (0.5 for an ensemble without one).
    thresholds = dict((ctx.results.get("qualitative") or {}).get("thresholds", {}))
    base = ctx.results["base"]
    for m, seed in base.get("best_seed", {}).items():
        t_best = (base["runs"][m][str(seed)].get("test") or {}).get("t_opt")
        if t_best is not None:
            thresholds.setdefault(m, t_best)
    for method, fn in rep.predictors(ctx.results).items():
        probs = fn(frames)
        t = thresholds.get(method, 0.5)
        res = temporal.temporal_consistency(list(probs), threshold=t)
        series[method] = {
            "iou": list(res["iou"]),
            "kept": list(res["kept"]),
            "mean_iou": mean_std(res["iou"])["mean"],
            "mean_kept": mean_std(res["kept"])["mean"],
        }
    return {"sequence": name, "n_frames": len(frames), "series": series}


def section(res: dict[str, Any], ctx: ReportContext) -> list[Table | Figure | str]:
    blocks: list[Table | Figure | str] = []
    series = res["series"]
    rows = [
        [m, fmt(s.get("mean_iou")), fmt(s.get("mean_kept")), str(len(s.get("iou", [])) + 1)] for m, s in series.items()
    ]
    blocks.append(f"Sequence `{res.get('sequence')}`, {res.get('n_frames')} frames.")
    blocks.append(
        Table(
            "Fig. 14 (quantified): temporal consistency of the binarized masks between consecutive frames.",
            ["method", "mean IoU(t-1, t)", "mean fraction kept", "frames"],
            rows,
        )
    )
    fig = F.temporal_plot(series, ctx.fig_dir / "fig14_temporal.png")
    blocks.append(
        Figure(
            fig,
            "Fig. 14: IoU between consecutive masks and the fraction of foreground pixels kept "
            "from one frame to the next, per method.",
        )
    )
    return blocks
