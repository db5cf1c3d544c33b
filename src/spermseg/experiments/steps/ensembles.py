"""Step ``ensembles`` of ``spermseg reproduce``: mask cache, avg and trained ensembles (Table 3).

:func:`run` computes the step's result (its schema in the docstring) and :func:`section` renders it in the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from spermseg.experiments import paper_numbers as P
from spermseg.experiments.document import Figure, ReportContext, Table, fmt, fmt_delta, fmt_ms
from spermseg.experiments.runner import StepContext
from spermseg.metrics.score import mean_std
from spermseg.utils.atomic import atomic_write_json

if TYPE_CHECKING:  # pragma: no cover
    from spermseg.experiments.pipeline import Reproduction

NAME = "ensembles"
DESCRIPTION = "mask cache, avg and trained ensembles (Table 3)"
SECTION_TITLE = "4. Ensembles (Table 3 lower blocks)"
REQUIRES: tuple[str, ...] = ("base",)


def run(rep: Reproduction, ctx: StepContext) -> dict[str, Any]:
    """Table 3 lower blocks.

    Result: ``{"selections": {E: [architectures]}, "selection_ids": {E: [cache ids]}, "rank_on",
    "leaks_test", "kinds", "seeds", "runs": {"kind|E": [run dirs]}, "table": {metric: {kind: {E: stat}}},
    "best": "kind|E" by mean AP, "best_base": architecture ranked first on rank_on}``.
    """
    from spermseg.ensembling.ensemble_training import train_ensemble
    from spermseg.ensembling.selection import all_selections
    from spermseg.ensembling.table3 import evaluate_ensembles
    from spermseg.experiments.headline import headline

    splits = [rep.cfg.train_split, rep.cfg.test_split]
    if rep.cfg.multi_rater_split in rep.dataset().splits:
        splits.append(rep.cfg.multi_rater_split)
    ctx.log(f"caching soft masks on {', '.join(splits)}")
    manifest = rep.build_cache(splits, ctx.log)
    selections = all_selections(manifest, rank_on=rep.cfg.rank_on)
    run_dirs: dict[str, list[str]] = {}
    jobs: list[dict[str, Any]] = []
    for kind in rep.cfg.ensemble_kinds:
        for sel in rep.cfg.selections:
            for seed in rep.cfg.ensemble_seeds:
                rd = rep.ensemble_run_dir(kind, sel, seed)
                if not (rd / "result.json").is_file():
                    ctx.log(f"training {kind}|{sel} seed {seed} on {', '.join(selections[sel].model_ids)}")
                jobs.append(
                    {
                        "cache": rep.cache_dir,
                        "kind": kind,
                        "out": rd,
                        "select": sel,
                        "rank_on": rep.cfg.rank_on,
                        "data_root": rep.root,
                        "seed": seed,
                        "preset": rep.cfg.train_preset,
                        "overrides": [
                            *rep.cfg.ensemble_overrides,
                            "runtime.progress=false",
                            "runtime.tensorboard=false",
                            "data.test_split=",
                        ],
                        "device": rep.cfg.device,
                        "resume": True,
                    }
                )
                run_dirs.setdefault(f"{kind}|{sel}", []).append(str(rd))
    todo = [j for j in jobs if not (Path(j["out"]) / "result.json").is_file()]
    if rep.cfg.jobs > 1 and len(todo) > 1:
        # Like the base runs: on a 2-core CPU two 1-thread runs at a time finish the twelve sooner than one 2-thread
        # run (the results do not depend on it: test_reproduce).
        from spermseg.experiments.pipeline import run_in_workers

        ctx.log(f"training {len(todo)} ensembles, {rep.cfg.jobs} at a time")
        run_in_workers(rep.cfg, _train_worker, [(j,) for j in todo])
    for j in jobs:
        train_ensemble(**j, log=ctx.log)  # trains what is left; a finished run returns its result
    all_runs = [r for rs in run_dirs.values() for r in rs]
    ev = evaluate_ensembles(
        rep.cache_dir,
        all_runs,
        rep.root,
        split=rep.cfg.test_split,
        rank_on=rep.cfg.rank_on,
        rater=rep.cfg.rater,
        mode=rep.cfg.metric_mode,
        device=rep.cfg.device,
        batch_size=rep.cfg.batch_size,
        include_base=True,  # every base run with head/tail too: the headline's best base model
    )
    atomic_write_json(ctx.dir / "evaluation.json", ev)
    cells: dict[str, dict[str, dict[str, list[float]]]] = {}
    for rec in ev["records"]:
        if rec["kind"] == "base":
            continue
        full = rec["metrics"]["full"]
        for metric in ("ap", "iou_0.5", "iou_opt"):
            cells.setdefault(metric, {}).setdefault(rec["kind"], {}).setdefault(rec["select"], []).append(
                full.get(metric)
            )
    table = {
        m: {k: {e: mean_std(v) for e, v in by_sel.items()} for k, by_sel in by_kind.items()}
        for m, by_kind in cells.items()
    }
    best = max(
        ((k, e) for k, by_sel in table["ap"].items() for e in by_sel),
        key=lambda ke: table["ap"][ke[0]][ke[1]]["mean"] or -1.0,
    )
    return {
        "selections": {e: list(s.architectures) for e, s in selections.items()},
        "selection_ids": {e: list(s.model_ids) for e, s in selections.items()},
        "rank_on": rep.cfg.rank_on,
        "leaks_test": bool(ev.get("leaks_test")),
        "kinds": ["avg", *rep.cfg.ensemble_kinds],
        "seeds": list(rep.cfg.ensemble_seeds),
        "runs": {k: [str(Path(r).relative_to(rep.out)) for r in v] for k, v in run_dirs.items()},
        "table": table,
        "best": f"{best[0]}|{best[1]}",
        "best_base": selections["E2"].architectures[0],
        "headline": headline(ev, rep.cfg.featured_ensemble, rep.cfg.rater),
    }


def _train_worker(kwargs: dict[str, Any]) -> None:
    """One ensemble run in a worker process."""
    from spermseg.ensembling.ensemble_training import train_ensemble

    train_ensemble(**kwargs)


def section(res: dict[str, Any], ctx: ReportContext) -> list[Table | Figure | str]:
    blocks: list[Table | Figure | str] = []
    sels = res.get("selections", {})
    rank_on = res.get("rank_on", "validation")
    rows = [[e, ", ".join(v)] for e, v in sels.items()]
    blocks.append(Table(f"Input selections (ranked by AP on the {rank_on} split).", ["selection", "base models"], rows))
    table = res["table"]
    names = {"ap": "AP", "iou_0.5": "IoU_0.5", "iou_opt": "IoU_opt"}
    for metric, label in names.items():
        if metric not in table:
            continue
        sel_names = [e for e in sels if any(e in table[metric][k] for k in table[metric])]
        rows = []
        for kind, by_sel in table[metric].items():
            paper_name, inputs = P.PAPER_ENSEMBLE_NAMES.get(kind, (kind, ""))
            row = [kind, inputs]
            for e in sel_names:
                ours = by_sel.get(e)
                cell = fmt_ms(ours)
                if ctx.compare and ours:
                    pv = P.TABLE3_ENSEMBLES.get(metric, {}).get(kind, {}).get(e, (None, None))[0]
                    if pv is not None:
                        cell += f" (paper {fmt(pv)}, Δ {fmt_delta(ours.get('mean'), pv)})"
                row.append(cell)
            rows.append(row)
        blocks.append(
            Table(
                f"Table 3: {label} of the ensembles (mean ± std over seeds; avg has no parameters).",
                ["ensemble", "inputs"] + [f"{label} ({e})" for e in sel_names],
                rows,
            )
        )
    if res.get("best"):
        blocks.append(f"Best ensemble by mean AP: `{res['best']}`.")
    if res.get("best_base"):
        blocks.append(f"Best base model by mean AP: `{res['best_base']}`.")
    return blocks
