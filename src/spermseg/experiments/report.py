"""The reproduction report: ``report.md`` and a self-contained ``report.html`` from the step results.

:func:`write_report` takes the step records of :mod:`spermseg.experiments.steps` (status, result JSON, wall time),
the resolved config and an environment description, draws the figures with :mod:`spermseg.experiments.figures`
into ``OUT/figures/`` and writes

* ``OUT/report.md``: Markdown tables, figures linked by relative path;
* ``OUT/report.html``: the same content with every figure embedded as a base64 PNG and the CSS inline, so the
  single file opens offline in any browser and prints well (no external assets, no network).

Every step has a section; a step that did not finish says so ("not available: <why>", "failed: <why>", "not run")
instead of showing numbers. When the data is SegSperm itself, the paper's published Tables 2-4
(:mod:`spermseg.experiments.paper_numbers`) stand beside ours with the difference (ours - paper).

The result schema of each step is documented in :mod:`spermseg.experiments.reproduce`; this module only reads it.
"""

from __future__ import annotations

import base64
import html
import os
import platform
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from spermseg.data.layouts import PARTS  # defined once, in the data layer
from spermseg.experiments import figures as F
from spermseg.experiments import paper_numbers as P
from spermseg.utils.atomic import atomic_write_text
from spermseg.utils.progress import fmt_seconds

# Display names of the aggregated ground truths (paper Fig. 6 names in brackets).
GT_VARIANT_NAMES = {
    "GT1": "GT1",
    "GT2": "GT2",
    "GT3": "GT3",
    "intersection": "intersection (full agreement)",
    "majority": "majority voting",
    "union": "union (feeling lucky)",
    "staple": "STAPLE",
}


# ---------------------------------------------------------------------------------------------------------------
# Document model: sections of paragraphs, tables and figures, rendered twice (Markdown and HTML).
@dataclass
class Table:
    """A table: ``rows`` of already formatted cells."""

    caption: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Figure:
    """A figure file (PNG) with its caption."""

    path: Path
    caption: str


@dataclass
class Section:
    """One report section (usually one step)."""

    title: str
    status: str = ""
    blocks: list[Table | Figure | str] = field(default_factory=list)
    anchor: str = ""


def fmt(v: Any, nd: int = 4) -> str:
    """A number with ``nd`` decimals; ``-`` for missing or non-finite values."""
    if v is None:
        return "-"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{f:.{nd}f}" if np.isfinite(f) else "-"


def fmt_ms(stat: Mapping[str, Any] | None, nd: int = 4) -> str:
    """``mean ± std`` from ``{"mean", "std", "n"}`` (std omitted for a single value)."""
    if not stat or stat.get("mean") is None:
        return "-"
    if stat.get("std") is None or stat.get("n", 2) < 2:
        return fmt(stat["mean"], nd)
    return f"{fmt(stat['mean'], nd)} ± {fmt(stat['std'], nd)}"


def fmt_delta(ours: Any, paper: Any, nd: int = 4) -> str:
    """Signed difference ``ours - paper``."""
    if ours is None or paper is None:
        return "-"
    d = float(ours) - float(paper)
    return f"{d:+.{nd}f}" if np.isfinite(d) else "-"


# ---------------------------------------------------------------------------------------------------------------
@dataclass
class _Ctx:
    out_dir: Path
    fig_dir: Path
    compare: bool
    results: dict[str, dict[str, Any]]


def _rec_dict(rec: Any) -> dict[str, Any]:
    return rec.to_dict() if hasattr(rec, "to_dict") else dict(rec)


def _status_line(rec: dict[str, Any]) -> str:
    st = rec.get("status", "pending")
    wall = fmt_seconds(rec.get("wall_s"))
    if st == "done":
        return f"ran in this invocation ({wall})"
    if st == "skipped":
        return f"finished in an earlier invocation ({wall}); results reused"
    if st == "unavailable":
        return f"not available: {rec.get('reason', '')}"
    if st == "failed":
        return f"failed: {rec.get('reason', '')} (see steps/{rec.get('name')}/FAILED.json)"
    return "not run (not selected with --steps, or not reached)"


def _not_applicable(result: dict[str, Any]) -> str | None:
    if result.get("status") == "not_applicable":
        return f"not applicable: {result.get('reason', '')}"
    return None


# ---------------------------------------------------------------------------------------------------------------
# Step sections. Each takes the step's result and the context and returns its blocks.
def _sec_agreement(res: dict[str, Any], ctx: _Ctx) -> list[Table | Figure | str]:
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


def _sec_normalization(res: dict[str, Any], ctx: _Ctx) -> list[Table | Figure | str]:
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


def _selection_marks(ctx: _Ctx) -> dict[str, list[str]]:
    ens = ctx.results.get("ensembles") or {}
    return {k: list(v) for k, v in (ens.get("selections") or {}).items()}


def _sec_base(res: dict[str, Any], ctx: _Ctx) -> list[Table | Figure | str]:
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


def _sec_ensembles(res: dict[str, Any], ctx: _Ctx) -> list[Table | Figure | str]:
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


def _sec_raters(res: dict[str, Any], ctx: _Ctx) -> list[Table | Figure | str]:
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


def _sec_blur(res: dict[str, Any], ctx: _Ctx) -> list[Table | Figure | str]:
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


def _sec_qualitative(res: dict[str, Any], ctx: _Ctx) -> list[Table | Figure | str]:
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


def _sec_temporal(res: dict[str, Any], ctx: _Ctx) -> list[Table | Figure | str]:
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


SECTIONS: dict[str, tuple[str, Callable[[dict[str, Any], _Ctx], list[Table | Figure | str]]]] = {
    "agreement": ("1. Inter-rater agreement (Table 2, Fig. 6)", _sec_agreement),
    "normalization": ("2. Image normalization (Fig. 9)", _sec_normalization),
    "base": ("3. Base models (Table 3 top, Fig. 7)", _sec_base),
    "ensembles": ("4. Ensembles (Table 3 lower blocks)", _sec_ensembles),
    "raters": ("5. Evaluation against raters and aggregated ground truths (Table 4)", _sec_raters),
    "blur": ("6. Robustness to blur (Fig. 12)", _sec_blur),
    "qualitative": ("7. Difference maps (Figs. 10, 11)", _sec_qualitative),
    "temporal": ("8. Temporal consistency (Fig. 14)", _sec_temporal),
}


# ---------------------------------------------------------------------------------------------------------------
def collect_environment() -> dict[str, Any]:
    """Versions of the main libraries and a description of the hardware (CPU, cores, memory, GPUs)."""
    import importlib

    from spermseg._version import __version__

    versions: dict[str, str] = {"spermseg": __version__, "python": sys.version.split()[0]}
    for mod, name in (
        ("torch", "torch"),
        ("numpy", "numpy"),
        ("scipy", "scipy"),
        ("skimage", "scikit-image"),
        ("cv2", "opencv"),
        ("matplotlib", "matplotlib"),
        ("safetensors", "safetensors"),
        ("SimpleITK", "SimpleITK"),
    ):
        try:
            versions[name] = str(importlib.import_module(mod).__version__)
        except Exception:  # noqa: BLE001 - an optional library that is absent or broken is just not listed
            continue
    hw: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        m = re.search(r"model name\s*:\s*(.+)", cpuinfo)
        if m:
            hw["cpu"] = m.group(1).strip()
    except OSError:
        hw["cpu"] = platform.processor() or "unknown"
    try:
        meminfo = Path("/proc/meminfo").read_text()
        m = re.search(r"MemTotal:\s*(\d+) kB", meminfo)
        if m:
            hw["memory_gib"] = round(int(m.group(1)) / 2**20, 1)
    except OSError:
        pass
    if "torch" in sys.modules or versions.get("torch"):
        import torch

        hw["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            hw["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            versions["cuda"] = str(torch.version.cuda)
        else:
            hw["gpus"] = []
    return {"versions": versions, "hardware": hw}


def build_sections(records: Mapping[str, Any], ctx: _Ctx) -> list[Section]:
    """One section per known step, in pipeline order, with its status and content."""
    sections = []
    for name, (title, fn) in SECTIONS.items():
        rec = _rec_dict(records[name]) if name in records else {"name": name, "status": "pending"}
        rec.setdefault("name", name)
        sec = Section(title=title, status=_status_line(rec), anchor=name)
        res = rec.get("result")
        if rec.get("status") in ("done", "skipped") and isinstance(res, dict):
            na = _not_applicable(res)
            if na:
                sec.status = na
            else:
                try:
                    sec.blocks = fn(res, ctx)
                except Exception as exc:  # noqa: BLE001 - a broken section must not lose the rest of the report
                    sec.blocks = [f"(could not render this section: {type(exc).__name__}: {exc})"]
            for note in res.get("notes", []) or []:
                sec.blocks.append(str(note))
        sections.append(sec)
    return sections


def write_report(
    out_dir: str | Path,
    records: Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
    environment: Mapping[str, Any] | None = None,
    *,
    compare_paper: bool = False,
    title: str = "spermseg reproduction report",
    info: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``out_dir``.

    Args:
        out_dir: the reproduce output directory (figures go to ``out_dir/figures``; npz paths in results are
            relative to it).
        records: ``{step_name: StepRecord | dict}`` with ``status``, ``result``, ``wall_s``, ``reason``.
        config: the resolved config (shown as YAML).
        environment: from :func:`collect_environment` (collected now when ``None``).
        compare_paper: show the paper's Tables 2-4 beside ours (only meaningful on SegSperm).
        title: the report's title.
        info: extra key/value lines for the header (dataset, preset, command line, ...).

    Returns:
        ``(markdown_path, html_path)``.
    """
    import yaml

    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    recs = {k: _rec_dict(v) for k, v in records.items()}
    results = {k: r["result"] for k, r in recs.items() if r.get("status") in ("done", "skipped") and r.get("result")}
    ctx = _Ctx(out_dir, fig_dir, compare_paper, results)
    env = dict(environment) if environment is not None else collect_environment()
    sections = build_sections(recs, ctx)

    header: list[Table | Figure | str] = []
    table = (results.get("ensembles") or {}).get("headline")
    if table:
        from spermseg.experiments.headline import headline_rows

        heads, rows = headline_rows(table)
        header.append(
            Table(
                f"Headline: the best base model, avg and the featured ensemble on the {table['split']} split vs "
                f"{table['rater']} (mean ± std over seeds; also in summary.json).",
                heads,
                rows,
                note="The best base model is the one with the highest mean test AP, chosen with test labels: the "
                "comparison favours it.",
            )
        )
    info_rows = [[k, str(v)] for k, v in (info or {}).items()]
    info_rows.append(["generated", datetime.now(UTC).isoformat(timespec="seconds")])
    info_rows.append(
        [
            "paper numbers shown",
            "yes (the data is SegSperm)"
            if compare_paper
            else "no (the data is not SegSperm, so the paper's numbers are not comparable)",
        ]
    )
    header.append(Table("Run.", ["", ""], info_rows))
    step_rows = []
    total = 0.0
    for name, (stitle, _) in SECTIONS.items():
        r = recs.get(name, {"status": "pending"})
        wall = r.get("wall_s")
        if r.get("status") in ("done", "skipped") and wall:
            total += float(wall)
        status = r.get("status", "pending")
        note = r.get("reason", "") if status in ("unavailable", "failed") else ""
        res = r.get("result") or {}
        if status in ("done", "skipped") and res.get("status") == "not_applicable":
            note = f"not applicable: {res.get('reason', '')}"
        step_rows.append([name, stitle.split(" ", 1)[1], status, fmt_seconds(wall), str(r.get("attempts", "-")), note])
    step_rows.append(["total", "", "", fmt_seconds(total), "", ""])
    header.append(
        Table(
            "Steps and wall time per step.", ["step", "content", "status", "wall time", "attempts", "note"], step_rows
        )
    )
    env_rows = [[k, str(v)] for k, v in env.get("versions", {}).items()]
    env_rows += [
        [k, ", ".join(map(str, v)) if isinstance(v, list) else str(v)] for k, v in env.get("hardware", {}).items()
    ]
    tail = [
        Section("Environment", blocks=[Table("Versions and hardware.", ["", ""], env_rows)], anchor="env"),
        Section(
            "Resolved configuration",
            blocks=["```yaml\n" + yaml.safe_dump(dict(config or {}), sort_keys=False) + "```"],
            anchor="config",
        ),
    ]
    all_sections = [Section("Summary", blocks=header, anchor="summary"), *sections, *tail]
    md_path = out_dir / "report.md"
    html_path = out_dir / "report.html"
    atomic_write_text(md_path, _render_md(title, all_sections, out_dir))
    atomic_write_text(html_path, _render_html(title, all_sections))
    return md_path, html_path


# ---------------------------------------------------------------------------------------------------------------
def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _render_md(title: str, sections: Sequence[Section], out_dir: Path) -> str:
    lines = [f"# {title}", ""]
    for sec in sections:
        lines += [f"## {sec.title}", ""]
        if sec.status:
            lines += [f"*Status: {sec.status}*", ""]
        for b in sec.blocks:
            if isinstance(b, Table):
                lines += [f"**{b.caption}**", ""]
                lines.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
                lines.append("|" + "|".join("---" for _ in b.headers) + "|")
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
                if b.note:
                    lines += ["", b.note]
            elif isinstance(b, Figure):
                rel = os.path.relpath(b.path, out_dir)
                lines.append(f"![{b.caption}]({rel})")
                lines += ["", f"*{b.caption}*"]
            else:
                lines.append(b)
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;
color:#111;line-height:1.45}
h1{border-bottom:2px solid #333}h2{border-bottom:1px solid #bbb;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:13px}
th,td{border:1px solid #999;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#eee}caption{caption-side:top;text-align:left;font-weight:600;padding:4px 0}
figure{margin:1em 0;page-break-inside:avoid}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:13px;font-style:italic}.status{color:#444;font-style:italic}
.status.bad{color:#a00}pre{background:#f6f6f6;padding:.7em;overflow-x:auto;font-size:12px}
nav ul{columns:2}
@media print{body{max-width:none;margin:0}h2{page-break-before:auto}a{color:inherit}}
"""

# After load, record how many embedded images decoded, so an automated check (headless browser) can verify them.
_JS = """
window.addEventListener('load',function(){var imgs=document.images,ok=0;
for(var i=0;i<imgs.length;i++){if(imgs[i].complete&&imgs[i].naturalWidth>0){ok++;}}
document.body.setAttribute('data-images-decoded',ok+'/'+imgs.length);});
"""


def _inline(text: str) -> str:
    """Escape text and turn `code` spans into <code>."""
    esc = html.escape(text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", esc)


def _render_html(title: str, sections: Sequence[Section]) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style><script>{_JS}</script></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<nav><ul>",
    ]
    out += [f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in sections if s.anchor]
    out.append("</ul></nav>")
    for sec in sections:
        out.append(f'<section id="{html.escape(sec.anchor)}"><h2>{html.escape(sec.title)}</h2>')
        if sec.status:
            bad = any(w in sec.status for w in ("not available", "failed", "not run"))
            out.append(f'<p class="status{" bad" if bad else ""}">Status: {_inline(sec.status)}</p>')
        for b in sec.blocks:
            if isinstance(b, Table):
                out.append(f"<table><caption>{_inline(b.caption)}</caption>")
                if any(b.headers):  # key/value tables have no header row
                    out.append("<thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in b.headers) + "</tr></thead>")
                out.append("<tbody>")
                for row in b.rows:
                    out.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>")
                out.append("</tbody></table>")
                if b.note:
                    out.append(f"<p>{_inline(b.note)}</p>")
            elif isinstance(b, Figure):
                data = base64.b64encode(Path(b.path).read_bytes()).decode("ascii")
                out.append(
                    f'<figure><img alt="{html.escape(b.caption)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{_inline(b.caption)}</figcaption></figure>"
                )
            elif b.startswith("```"):
                body = b.strip("`").split("\n", 1)[1] if "\n" in b else b
                out.append(f"<pre>{html.escape(body.rstrip('`'))}</pre>")
            else:
                out.append(f"<p>{_inline(b)}</p>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
