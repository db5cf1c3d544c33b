"""The headline of a reproduction: the best base model, ``avg`` and the featured trained ensemble, side by side.

One table answers the paper's question (does ensembling beat the best single network?) on the test split against
the reference rater, for full sperm, head and tail. It is written to ``DIR/summary.json`` by every reproduce run and
shown at the top of the report::

    {"headline": {"split": "test", "rater": "GT1", "rows": [
      {"method": "unet", "role": "best_base", "n": 3,
       "full": {"ap": ..., "iou_opt": ..., "ap_std": ..., "iou_opt_std": ...}, "head": {...}, "tail": {...}},
      {"method": "avg|E3", "role": "avg", ...},
      {"method": "ens_att_v2|E3", "role": "ensemble", ...}],
     "ensemble_minus_best_base": {"full": {"ap": ..., "iou_opt": ...}, "head": ..., "tail": ...},
     "beats_best_base_by_2std": {"full": {"ap": true|false|null, ...}, ...}}}

The best base model is the architecture with the highest mean test AP over its seeds (the strongest single-model
competitor, chosen with test labels, so the comparison favours the base models); values are means over seeds with
the sample standard deviation (ddof 1; ``None`` for one seed). ``beats_best_base_by_2std`` answers the paper's
claim strictly: the ensemble's mean exceeds the best base model's by more than twice the larger of the two
standard deviations (``None`` when either side has a single seed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from spermseg.data.layouts import PARTS  # defined once, in the data layer
from spermseg.metrics.score import mean_std

HEADLINE_METRICS = ("ap", "iou_opt")


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    s = mean_std(values)
    return s["mean"], s["std"]


def _row(method: str, role: str, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"method": method, "role": role, "n": len(records)}
    for part in PARTS:
        cells: dict[str, float | None] | None = {}
        for metric in HEADLINE_METRICS:
            per_seed = [((r["metrics"].get(part) or {}).get(metric)) for r in records]
            mean, std = _mean_std(per_seed)
            cells[metric], cells[f"{metric}_std"] = mean, std
        if all(v is None for v in cells.values()):
            cells = None  # the part is not labelled in this split
        row[part] = cells
    return row


def headline(evaluation: Mapping[str, Any], featured: str, rater: str) -> dict[str, Any] | None:
    """The headline table from :func:`spermseg.ensembling.table3.evaluate_ensembles` records.

    Args:
        evaluation: the evaluation with base, ``avg`` and ensemble records (``include_base=True``).
        featured: the featured ensemble ``kind|E`` (paper: ``ens_att_v2|E3``); ``avg`` uses the same selection.
        rater: the reference rater's name (for the JSON).

    Returns:
        ``{"split", "rater", "rows", "ensemble_minus_best_base"}``, or None when there are no base records.
    """
    records = evaluation.get("records", [])
    base: dict[str, list[Mapping[str, Any]]] = {}
    for rec in records:
        if rec.get("kind") == "base":
            base.setdefault(str(rec.get("model")), []).append(rec)
    if not base:
        return None

    def mean_ap(recs: Sequence[Mapping[str, Any]]) -> float:
        return _mean_std([r["metrics"]["full"].get("ap") for r in recs])[0] or -1.0

    best = max(sorted(base), key=lambda m: mean_ap(base[m]))
    rows = [_row(best, "best_base", base[best])]
    kind, _, sel = featured.partition("|")
    avg = [r for r in records if r.get("kind") == "avg" and r.get("select") == sel]
    if avg:
        rows.append(_row(f"avg|{sel}", "avg", avg))
    ens = [r for r in records if r.get("kind") == kind and r.get("select") == sel and kind != "avg"]
    if ens:
        rows.append(_row(featured, "ensemble", ens))
    diff: dict[str, Any] | None = None
    verdict: dict[str, Any] | None = None
    if ens:
        diff, verdict = {}, {}
        for part in PARTS:
            b, e = rows[0][part], rows[-1][part]
            if b is None or e is None:
                diff[part] = verdict[part] = None
                continue
            diff[part] = {m: None if b[m] is None or e[m] is None else e[m] - b[m] for m in HEADLINE_METRICS}
            verdict[part] = {m: _beats_by_2std(b, e, m) for m in HEADLINE_METRICS}
    return {
        "split": evaluation.get("split"),
        "rater": rater,
        "rows": rows,
        "ensemble_minus_best_base": diff,
        "beats_best_base_by_2std": verdict,
    }


def _beats_by_2std(base: Mapping[str, Any], ens: Mapping[str, Any], metric: str) -> bool | None:
    """Whether ``ens`` exceeds ``base`` on ``metric`` by more than 2x the larger std (None without both stds)."""
    values = (base.get(metric), ens.get(metric), base.get(f"{metric}_std"), ens.get(f"{metric}_std"))
    if any(v is None for v in values):
        return None
    b, e, sb, se = values
    return bool(e - b > 2.0 * max(sb, se))


def headline_rows(table: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted rows of a headline table (for the report and the demo's terminal summary)."""

    def cell(part: Mapping[str, Any] | None, metric: str) -> str:
        if part is None or part.get(metric) is None:
            return "-"
        std = part.get(f"{metric}_std")
        return f"{part[metric]:.4f}" + (f" ± {std:.4f}" if std is not None else "")

    headers = ["method", "role", "n"] + [f"{p} {m}" for p in PARTS for m in HEADLINE_METRICS]
    rows = [
        [r["method"], r["role"], str(r["n"])] + [cell(r.get(p), m) for p in PARTS for m in HEADLINE_METRICS]
        for r in table["rows"]
    ]
    return headers, rows


def verdict_line(table: Mapping[str, Any]) -> str:
    """One sentence: on which measures the featured ensemble beats the best base model by more than 2 std."""
    verdict = table.get("beats_best_base_by_2std") or {}
    rows = table.get("rows") or []
    if not verdict or len(rows) < 2:
        return "No trained ensemble in this run: nothing to compare with the best base model."
    names = {"ap": "AP", "iou_opt": "IoU_opt"}
    yes, no, unknown = [], [], []
    for part, cells in verdict.items():
        for metric, beats in (cells or {}).items():
            label = f"{part} {names[metric]}"
            (yes if beats else unknown if beats is None else no).append(label)
    text = f"{rows[-1]['method']} vs the best base model {rows[0]['method']}: "
    text += f"better by more than 2 std on {', '.join(yes)}" if yes else "better by more than 2 std on nothing"
    if no:
        text += f"; not on {', '.join(no)}"
    if unknown:
        text += f"; undecided (one seed) on {', '.join(unknown)}"
    return text + "."
