"""Step ``normalization`` of ``spermseg reproduce``: normalization study (Fig. 9).

:func:`run` computes the step's result (its schema in the docstring) and :func:`section` renders it in the report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spermseg.experiments import figures as F
from spermseg.experiments.document import Figure, ReportContext, Table, fmt_ms
from spermseg.experiments.runner import StepContext
from spermseg.metrics.score import mean_std

if TYPE_CHECKING:  # pragma: no cover
    from spermseg.experiments.pipeline import Reproduction

NAME = "normalization"
DESCRIPTION = "normalization study (Fig. 9)"
SECTION_TITLE = "2. Image normalization (Fig. 9)"
REQUIRES: tuple[str, ...] = ()


def run(rep: Reproduction, ctx: StepContext) -> dict[str, Any]:
    """Fig. 9: validation AP per model and normalization.

    Result: ``{"models", "normalizations", "seeds", "metric", "ap": {model: {norm: {"mean","std","n"}}}}``.
    """
    models = rep.cfg.normalization_models or rep.cfg.models
    done = rep.train_all(
        [(m, n, s) for m in models for n in rep.cfg.normalizations for s in rep.cfg.normalization_seeds],
        ctx.log,
        fill_from=rep.base_run_keys(),  # step 3's runs fill the pool's last round
    )
    ap: dict[str, dict[str, Any]] = {}
    for model in models:
        ap[model] = {}
        for norm in rep.cfg.normalizations:
            vals = [(done[(model, norm, s)].get("validation") or {}).get("ap") for s in rep.cfg.normalization_seeds]
            ap[model][norm] = mean_std(vals)
    return {
        "models": list(models),
        "normalizations": list(rep.cfg.normalizations),
        "seeds": list(rep.cfg.normalization_seeds),
        "metric": "validation AP",
        "ap": ap,
    }


def section(res: dict[str, Any], ctx: ReportContext) -> list[Table | Figure | str]:
    norms = list(res["normalizations"])
    models = list(res["models"])
    ap = res["ap"]
    metric = res.get("metric", "validation AP")
    rows = [[m] + [fmt_ms(ap.get(m, {}).get(n)) for n in norms] for m in models]
    blocks: list[Table | Figure | str] = [
        Table(f"Fig. 9 data: {metric} per model and normalization (mean ± std over seeds).", ["model"] + norms, rows)
    ]
    means = {m: {n: (ap.get(m, {}).get(n) or {}).get("mean") for n in norms} for m in models}
    stds = {m: {n: (ap.get(m, {}).get(n) or {}).get("std") for n in norms} for m in models}
    fig = F.normalization_bars(
        means, ctx.fig_dir / "fig9_normalization.png", std=stds, title=f"Image normalization: {metric}"
    )
    blocks.append(
        Figure(
            fig,
            "Fig. 9: AP of each model trained without normalization (none), with mean "
            "subtraction (mean) and with mean subtraction and minmax range extension (minmax).",
        )
    )
    best = {m: max(norms, key=lambda n: means[m].get(n) if means[m].get(n) is not None else -1) for m in models}
    n_minmax = sum(1 for m in models if best[m] == "minmax")
    blocks.append(f"minmax gives the highest AP for {n_minmax} of {len(models)} models (paper: all ten).")
    return blocks
