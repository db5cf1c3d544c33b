"""Step ``qualitative`` of ``spermseg reproduce``: difference maps (Figs. 10, 11).

:func:`run` computes the step's result (its schema in the docstring) and :func:`section` renders it in the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spermseg.experiments import figures as F
from spermseg.experiments.document import Figure, ReportContext, Table, fmt
from spermseg.experiments.pipeline import score_with_curve
from spermseg.experiments.runner import StepContext

if TYPE_CHECKING:  # pragma: no cover
    from spermseg.experiments.pipeline import Reproduction

NAME = "qualitative"
DESCRIPTION = "difference maps (Figs. 10, 11)"
SECTION_TITLE = "7. Difference maps (Figs. 10, 11)"
REQUIRES: tuple[str, ...] = ("base", "ensembles")


def run(rep: Reproduction, ctx: StepContext) -> dict[str, Any]:
    """Figs. 10/11: difference maps of chosen test images, each method binarized at its test t_opt.

    Result: ``{"examples": npz, "images": [names], "rater", "fig10_methods", "fig11_methods",
    "thresholds": {method: t}}``.
    """
    arrays = rep.arrays(rep.cfg.test_split)
    refs = rep.full_refs(rep.cfg.test_split)
    n = min(rep.cfg.qualitative_images, len(refs))
    # Images with the most reference pixels show sperm best; ties broken by order (deterministic).
    order = sorted(range(len(refs)), key=lambda i: (-int(refs[i].sum()), i))[:n]
    order.sort()
    images = [np.asarray(arrays.images[i], dtype=np.float32) for i in order]
    preds = rep.predictors(ctx.results)
    all_images = [np.asarray(im, dtype=np.float32) for im in arrays.images]
    arrays_out: dict[str, np.ndarray] = {}
    thresholds: dict[str, float] = {}
    for name, fn in preds.items():
        full_probs = fn(all_images)
        m, _ = score_with_curve(full_probs, refs, rep.cfg.metric_mode)
        t = float(m["t_opt"]) if m["t_opt"] is not None else 0.5
        thresholds[name] = t
        for j, i in enumerate(order):
            arrays_out[f"{j}/{name}"] = full_probs[i] >= t
    for j, i in enumerate(order):
        arrays_out[f"{j}/image"] = images[j]
        arrays_out[f"{j}/ref"] = refs[i]
    path = ctx.dir / "examples.npz"
    np.savez_compressed(path, **arrays_out)
    kind, sel = rep.featured()
    sel_archs = ctx.results["ensembles"]["selections"].get(sel, [])
    fig11 = [*sel_archs, *[k for k in preds if k == f"{kind}|{sel}"]]
    return {
        "examples": str(path.relative_to(rep.out)),
        "images": [arrays.names[i] for i in order],
        "rater": rep.cfg.rater,
        "fig10_methods": list(rep.cfg.models),
        "fig11_methods": fig11,
        "thresholds": thresholds,
    }


def _load_rows(npz: Path, names: Sequence[str], methods: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    with np.load(npz) as z:
        for i, name in enumerate(names):
            rows.append(
                {
                    "name": name,
                    "image": z[f"{i}/image"],
                    "ref": z[f"{i}/ref"],
                    "preds": {m: z[f"{i}/{m}"] for m in methods},
                }
            )
    return rows


def section(res: dict[str, Any], ctx: ReportContext) -> list[Table | Figure | str]:
    blocks: list[Table | Figure | str] = []
    npz = ctx.out_dir / res["examples"]
    if not npz.is_file():
        return [f"(examples file {res['examples']} is missing)"]
    thr = res.get("thresholds", {})
    rater = res.get("rater", "GT1")
    for key, fig_no, desc in (
        ("fig10_methods", "10", "all base models"),
        ("fig11_methods", "11", "the base models of the E3 selection and the ensemble"),
    ):
        methods = res.get(key) or []
        if not methods:
            continue
        rows = _load_rows(npz, res["images"], methods)
        title = f"Difference maps vs. {rater}; masks binarized at each method's t_opt"
        fig = F.difference_maps(rows, ctx.fig_dir / f"fig{fig_no}_difference_maps.png", title=title)
        blocks.append(
            Figure(
                fig,
                f"Fig. {fig_no}: difference maps of {desc} wrt {rater}: red = true positive, "
                "blue = false negative, green = false positive.",
            )
        )
    if thr:
        blocks.append(
            Table(
                "Thresholds used for the difference maps.",
                ["method", "t_opt"],
                [[m, fmt(t, 3)] for m, t in thr.items()],
            )
        )
    return blocks
