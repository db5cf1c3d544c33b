"""Step ``base`` of ``spermseg reproduce``: base models x seeds (Table 3 top, Fig. 7).

:func:`run` computes the step's result (its schema in the docstring) and :func:`section` renders it in the report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spermseg.experiments import figures as F
from spermseg.experiments import paper_numbers as P
from spermseg.experiments.document import Figure, ReportContext, Table, fmt, fmt_delta, fmt_ms
from spermseg.experiments.pipeline import score_with_curve
from spermseg.experiments.runner import StepContext
from spermseg.metrics.score import mean_std

if TYPE_CHECKING:  # pragma: no cover
    from spermseg.experiments.pipeline import Reproduction

NAME = "base"
DESCRIPTION = "base models x seeds (Table 3 top, Fig. 7)"
SECTION_TITLE = "3. Base models (Table 3 top, Fig. 7)"
REQUIRES: tuple[str, ...] = ()


def run(rep: Reproduction, ctx: StepContext) -> dict[str, Any]:
    """Table 3 top block and Fig. 7.

    Result: ``{"split", "rater", "models", "seeds", "runs": {model: {seed: {"run", "val_ap", "test": M}}},
    "summary": {model: {metric: {"mean","std","n"}}}, "ranking": [model by mean test AP],
    "best_seed": {model: seed (by validation AP)}, "curves": {model: curve of the best seed}}``.
    """
    runs: dict[str, dict[str, Any]] = {}
    done = rep.train_all(rep.base_run_keys(), ctx.log)
    for model in rep.cfg.models:
        for seed in rep.cfg.seeds:
            r = done[(model, "minmax", seed)]
            runs.setdefault(model, {})[str(seed)] = {
                "run": str(rep.run_dir(model, "minmax", seed).relative_to(rep.out)),
                "val_ap": (r.get("validation") or {}).get("ap"),
                "threshold": r.get("threshold"),
                "train_s": r.get("wall_time_s"),
            }
    ctx.log("caching test soft masks of every run")
    rep.build_cache([rep.cfg.test_split], ctx.log)
    refs = rep.full_refs(rep.cfg.test_split)
    summary: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    best_seed: dict[str, int] = {}
    for model in rep.cfg.models:
        seeds = rep.cfg.seeds
        best_seed[model] = max(seeds, key=lambda s: (runs[model][str(s)]["val_ap"] or -1.0, -s))
        per_metric: dict[str, list[float | None]] = {k: [] for k in ("ap", "iou_0.5", "iou_opt", "t_opt")}
        for seed in seeds:
            probs = rep.cached(rep.cfg.test_split, [f"{model}_s{seed}"])[:, 0]
            metrics, curve = score_with_curve(probs, refs, rep.cfg.metric_mode)
            runs[model][str(seed)]["test"] = metrics
            for k in per_metric:
                per_metric[k].append(metrics.get(k))
            if seed == best_seed[model]:
                curves[model] = curve
        summary[model] = {k: mean_std(v) for k, v in per_metric.items()}
    ranking = sorted(rep.cfg.models, key=lambda m: -(summary[m]["ap"]["mean"] or -1.0))
    return {
        "split": rep.cfg.test_split,
        "rater": rep.cfg.rater,
        "models": list(rep.cfg.models),
        "seeds": list(rep.cfg.seeds),
        "runs": runs,
        "summary": summary,
        "ranking": ranking,
        "best_seed": best_seed,
        "curves": curves,
    }


def _selection_marks(ctx: ReportContext) -> dict[str, list[str]]:
    ens = ctx.results.get("ensembles") or {}
    return {k: list(v) for k, v in (ens.get("selections") or {}).items()}


def section(res: dict[str, Any], ctx: ReportContext) -> list[Table | Figure | str]:
    blocks: list[Table | Figure | str] = []
    summary = res["summary"]
    models = list(res.get("ranking") or summary)
    sels = _selection_marks(ctx)
    metrics = [("ap", "AP"), ("iou_0.5", "IoU_0.5"), ("iou_opt", "IoU_opt"), ("t_opt", "t_opt")]
    headers = ["model"] + [h for _, h in metrics] + ["seeds"] + list(sels)
    if ctx.compare:
        headers += ["paper AP", "Δ AP", "paper IoU_opt", "Δ IoU_opt"]
    rows = []
    for m in models:
        s = summary[m]
        row = [m] + [fmt_ms(s.get(k)) for k, _ in metrics] + [str((s.get("ap") or {}).get("n", "-"))]
        row += ["✓" if m in sels[e] else "" for e in sels]
        if ctx.compare:
            p = P.TABLE3_BASE.get(m, {})
            for key in ("ap", "iou_opt"):
                pv = p.get(key, (None, None))[0]
                row += [fmt(pv), fmt_delta((s.get(key) or {}).get("mean"), pv)]
        rows.append(row)
    blocks.append(
        Table(
            f"Table 3 (top): base models on `{res.get('split', 'test')}` vs. {res.get('rater', 'GT1')} "
            "(full sperm), mean ± std over seeds; E1-E4 mark the ensembles' input selections.",
            headers,
            rows,
        )
    )
    curves = res.get("curves") or {}
    if curves:
        fig = F.iou_threshold_curves(curves, ctx.fig_dir / "fig7_iou_threshold.png")
        blocks.append(
            Figure(
                fig,
                "Fig. 7: IoU against the binarization threshold for each model (best seed); "
                "the optimal thresholds t_opt are marked with a cross.",
            )
        )
    t_opts = [(summary[m].get("t_opt") or {}).get("mean") for m in models]
    t_opts = [t for t in t_opts if t is not None]
    if t_opts:
        blocks.append(
            f"Optimal thresholds range from {min(t_opts):.2f} to {max(t_opts):.2f} "
            "(paper: they cluster near 0.2, far from 0.5)."
        )
    return blocks
