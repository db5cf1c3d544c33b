"""Paper Table 3: base models and ensembles (``avg`` and the five trained kinds) x input selections E1-E4.

Three blocks, each cell the mean +- std over seeds on the evaluation split (test by default) against the first
rater (GT1):

1. base models: AP, IoU_0.5, IoU_opt, and check marks for the selections E1-E4 that contain them;
2. ensembles: AP per selection;
3. ensembles: IoU_0.5 and IoU_opt per selection.

:func:`evaluate_ensembles` produces the records (one per base model run, per ``avg`` selection and per trained
ensemble run) from a mask cache and ensemble run directories; :func:`build_table3` aggregates them and
:func:`render_markdown` prints the blocks. ``avg`` has no parameters, so it has one value per selection and no std
(as in the paper). Ensembles trained with out-of-fold stacking get their own rows (``kind [oof]``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spermseg.ensembling.selection import SELECTIONS, Selection, all_selections
from spermseg.errors import CheckpointError, DataError
from spermseg.utils.atomic import atomic_write_json, atomic_write_text

# Registry name -> the name printed in the paper.
PAPER_MODEL_NAMES: dict[str, str] = {
    "att_unet": "AttUnet",
    "unet3p": "Unet3+",
    "unet": "Unet",
    "fc_densenet": "FC-DenseNet",
    "unet_pp": "Unet++",
    "sa_unet": "SA-Unet",
    "uctransnet": "UCTransNet",
    "manet": "MAnet",
    "fpn": "FPN",
    "deeplabv3p": "DeepLabV3+",
}

# Ensemble kind -> (paper name, paper "Inputs" column).
PAPER_ENSEMBLE_NAMES: dict[str, tuple[str, str]] = {
    "avg": ("Avg", "S"),
    "ens_s": ("Ensemble", "S"),
    "ens_is": ("Ensemble", "I+S"),
    "ens_concat": ("Ensemble+concat", "I,S"),
    "ens_att_v1": ("EnsembleAttV1", "I,S"),
    "ens_att_v2": ("EnsembleAttV2", "I,S"),
}

METRICS = ("ap", "iou_0.5", "iou_opt")
METRIC_LABELS = {"ap": "AP", "iou_0.5": "IoU_0.5", "iou_opt": "IoU_opt"}
TRAINED_KINDS = ("ens_s", "ens_is", "ens_concat", "ens_att_v1", "ens_att_v2")
ENSEMBLE_PROVENANCE = "ensemble.json"  # written into ensemble run directories by ``spermseg ensemble train``


# ----------------------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------------------


def split_references(arrays: Any, rater: str | None = None) -> tuple[str, list[Any]]:
    """Per image the reference for :class:`SegmentationAccumulator`: ``{"full": m, "head": m, "tail": m}``.

    Args:
        arrays: :class:`spermseg.data.arrays.SplitArrays` of the evaluation split.
        rater: reference rater (default: the split's first rater, GT1 on SegSperm).

    Returns:
        ``(rater, refs)``; parts a split does not label are left out of the dicts.

    Raises:
        DataError: when the split has no full-sperm labels for that rater.
    """
    from spermseg.ensembling.mask_cache import reference_masks

    found = reference_masks(arrays, rater)
    if found is None:
        raise DataError(f"the evaluation split has no full-sperm masks of rater {rater or 'GT1'}; pick another split")
    name, full = found
    parts: dict[str, Sequence[np.ndarray]] = {"full": full}
    for part in ("head", "tail"):
        try:
            masks = arrays.masks(name, part)
        except (KeyError, DataError):
            masks = None
        if masks is not None:
            parts[part] = masks
    refs = [{part: np.asarray(m[i], dtype=bool) for part, m in parts.items()} for i in range(len(full))]
    return name, refs


def score(probs: np.ndarray | Sequence[np.ndarray], refs: Sequence[Any], *, mode: str = "fast") -> dict[str, Any]:
    """Metrics of soft masks (N, H, W) against per-image references (the ``spermseg evaluate`` JSON form); head
    and tail too when the references hold them."""
    from spermseg.metrics import score as score_masks

    has_parts = any(isinstance(r, Mapping) and len(r) > 1 for r in refs)
    return score_masks(probs, refs if has_parts else [_full_of(r) for r in refs], parts=has_parts, mode=mode)


def _full_of(ref: Any) -> np.ndarray:
    return ref["full"] if isinstance(ref, Mapping) else ref


def _mean_std_cell(values: Sequence[float]) -> list[Any]:
    """A Table 3 cell ``[mean (NaN without values), sample std or None, n]`` (:func:`spermseg.metrics.mean_std`)."""
    from spermseg.metrics import mean_std

    s = mean_std(values)
    return [float("nan") if s["mean"] is None else s["mean"], s["std"], s["n"]]


# ----------------------------------------------------------------------------------------------------------------
# Evaluation of a cache and ensemble runs
# ----------------------------------------------------------------------------------------------------------------


def read_ensemble_run(run_dir: str | Path) -> dict[str, Any]:
    """What an ensemble run is: kind, inputs, seed, selection, stacking and the cache it was trained on.

    Reads the checkpoint metadata (``kind == "ensemble"``, ``model``, ``inputs``, ``config``) and, when present,
    the ``ensemble.json`` provenance written by ``spermseg ensemble train``.
    """
    from spermseg.models.checkpoints import read_meta

    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    if meta.get("kind") != "ensemble":
        raise CheckpointError(
            f"{run_dir} is not an ensembling-network run (kind={meta.get('kind')}); pass --runs of "
            "'spermseg ensemble train'"
        )
    prov: dict[str, Any] = {}
    prov_path = run_dir / ENSEMBLE_PROVENANCE
    if prov_path.is_file():
        prov = json.loads(prov_path.read_text())
    config = meta.get("config") or {}
    selection = prov.get("selection") or {}
    return {
        "run": str(run_dir),
        "kind": meta.get("model"),
        "inputs": list(meta.get("inputs") or selection.get("model_ids") or []),
        "seed": prov.get("seed", config.get("seed") if isinstance(config, Mapping) else None),
        "select": selection.get("name") or prov.get("select") or "custom",
        "stacking": prov.get("stacking", "in-sample"),
        "cache": prov.get("cache"),
        "normalization": meta.get("normalization", "minmax"),
    }


def evaluate_ensembles(
    cache_dir: str | Path,
    runs: Sequence[str | Path],
    data_root: str | Path | None = None,
    *,
    split: str = "test",
    rank_on: str = "val",
    rater: str | None = None,
    mode: str = "fast",
    device: str = "auto",
    batch_size: int = 4,
    include_base: bool = True,
    include_avg: bool = True,
    log: Any = None,
) -> dict[str, Any]:
    """Score base models, ``avg`` for E1-E4 and trained ensemble runs on ``split``.

    Args:
        cache_dir: the in-sample mask cache (base models' soft masks on ``split``; E1-E4 resolve on it).
        runs: ensemble run directories; each reads its soft masks from the cache it was trained with (its
            ``ensemble.json``) when that cache exists, else from ``cache_dir``.
        data_root: dataset root (default: the one recorded in the cache).
        split: evaluation split.
        rank_on: ranking source for E1-E4 (``val`` default; ``test`` leaks and is marked so).
        rater: reference rater (default: the split's first).
        mode: ``fast`` or ``exact`` metric mode (:class:`spermseg.metrics.SegmentationAccumulator`).
        device: device for the ensemble forward passes.
        batch_size: images per forward pass.
        include_base: score every cached base model.
        include_avg: score ``avg`` for each of E1-E4.
        log: ``callable(str)`` for progress lines.

    Returns:
        ``{"split", "reference", "rank_on", "leaks_test", "selections": {E: Selection dict}, "records": [...]}``;
        a record is ``{"kind", "select", "stacking", "seed", "model", "id", "run", "inputs", "metrics"}`` where
        ``metrics`` is the ``spermseg evaluate`` JSON form.
    """
    from spermseg.data.arrays import load_split
    from spermseg.data.mask_store import load_cached_masks, load_manifest
    from spermseg.utils.device import resolve_device

    say = log or (lambda _msg: None)
    cache_dir = Path(cache_dir)
    manifest = load_manifest(cache_dir)
    root = data_root or manifest.get("data_root")
    if root is None:
        raise DataError(f"mask cache {cache_dir} records no data root; pass --data ROOT")
    arrays = load_split(root, split)
    ref_name, refs = split_references(arrays, rater)
    names = list(arrays.names)
    selections: dict[str, Selection] = all_selections(manifest, rank_on=rank_on)
    records: list[dict[str, Any]] = []

    def masks_for(cache: Path, ids: Sequence[str]) -> np.ndarray:
        # float16 as stored: halves memory for E1 stacks; consumers compute in float32 per image or batch.
        cached_names, stack = load_cached_masks(cache, split, ids, dtype=np.float16)
        if cached_names != names:
            raise DataError(
                f"cached '{split}' images in {cache} differ from {root}; rebuild the cache (spermseg masks)"
            )
        return stack

    if include_base:
        for model_id, info in manifest["models"].items():
            if split not in info.get("entries", {}):
                continue
            stack = masks_for(cache_dir, [model_id])
            records.append(
                {
                    "kind": "base",
                    "model": info.get("model") or model_id,
                    "id": model_id,
                    "seed": info.get("seed"),
                    "metrics": score(stack[:, 0], refs, mode=mode),
                }
            )
            say(f"base {model_id}: AP {records[-1]['metrics']['full']['ap']:.4f}")
    if include_avg:
        for name, sel in selections.items():
            # avg in probability space equals the ``avg`` ensemble (logit of the mean, then sigmoid).
            prob = masks_for(cache_dir, sel.model_ids).mean(axis=1, dtype=np.float32)
            records.append(
                {
                    "kind": "avg",
                    "select": name,
                    "stacking": "in-sample",
                    "seed": None,
                    "inputs": sel.model_ids,
                    "metrics": score(prob, refs, mode=mode),
                }
            )
            say(f"avg|{name}: AP {records[-1]['metrics']['full']['ap']:.4f}")
    dev = str(resolve_device(device))
    for run in runs:
        info = read_ensemble_run(run)
        cache = Path(info["cache"]) if info.get("cache") and Path(info["cache"]).is_dir() else cache_dir
        if not info["inputs"]:
            raise CheckpointError(f"ensemble run {run} records no input model ids; retrain it with spermseg ensemble")
        stack = masks_for(cache, info["inputs"])
        from spermseg.inference.forward import predict_probs
        from spermseg.models.checkpoints import load_model

        model = load_model(run)
        prob = predict_probs(
            model, list(arrays.images), info["normalization"], device=dev, batch_size=batch_size, masks=stack
        )
        records.append({**info, "metrics": score(prob, refs, mode=mode)})
        say(
            f"{info['kind']}|{info['select']} ({info['stacking']}, seed {info['seed']}): "
            f"AP {records[-1]['metrics']['full']['ap']:.4f}"
        )
    return {
        "split": split,
        "reference": f"{ref_name}/full",
        "data_root": str(root),
        "cache": str(cache_dir),
        "rank_on": rank_on,
        "leaks_test": any(s.leaks_test for s in selections.values()),
        "selections": {k: v.to_dict() for k, v in selections.items()},
        "records": records,
    }


# ----------------------------------------------------------------------------------------------------------------
# Aggregation and rendering
# ----------------------------------------------------------------------------------------------------------------


def _row_key(record: Mapping[str, Any]) -> str:
    stacking = record.get("stacking") or "in-sample"
    return record["kind"] if stacking == "in-sample" else f"{record['kind']} [{stacking}]"


def build_table3(evaluation: Mapping[str, Any], metrics: Sequence[str] = METRICS) -> dict[str, Any]:
    """Aggregate evaluation records into Table 3's blocks (mean, std, n over seeds).

    Args:
        evaluation: the output of :func:`evaluate_ensembles` (or several merged: ``records`` concatenated).
        metrics: which full-sperm metrics to tabulate.

    Returns:
        ``{"split", "reference", "rank_on", "leaks_test", "metrics", "base": [...], "ensembles": {metric: [...]}}``.
        Base rows: ``{"model", "name", "n", metric: [mean, std, n], "in": {E: bool}}`` sorted by mean AP (best
        first). Ensemble rows per metric: ``{"row", "kind", "stacking", "name", "inputs", E: [mean, std, n] | None}``.
    """
    selections = evaluation.get("selections", {})
    in_sel = {name: set(sel.get("architectures", [])) for name, sel in selections.items()}
    base_vals: dict[str, dict[str, list[float]]] = {}
    ens_vals: dict[str, dict[str, dict[str, list[float]]]] = {}
    ens_meta: dict[str, tuple[str, str]] = {}
    for rec in evaluation["records"]:
        full = rec["metrics"]["full"]
        if rec["kind"] == "base":
            slot = base_vals.setdefault(rec["model"], {m: [] for m in metrics})
            for m in metrics:
                slot[m].append(full.get(m, float("nan")))
            continue
        key = _row_key(rec)
        ens_meta[key] = (rec["kind"], rec.get("stacking") or "in-sample")
        for m in metrics:
            ens_vals.setdefault(m, {}).setdefault(key, {}).setdefault(rec.get("select") or "custom", []).append(
                full.get(m, float("nan"))
            )
    base_rows = []
    for model, vals in base_vals.items():
        row: dict[str, Any] = {"model": model, "name": PAPER_MODEL_NAMES.get(model, model)}
        for m in metrics:
            row[m] = _mean_std_cell(vals[m])
        row["n"] = row[metrics[0]][2]
        row["in"] = {name: model in archs for name, archs in in_sel.items()}
        base_rows.append(row)
    base_rows.sort(key=lambda r: (-_nan_low(r[metrics[0]][0]), r["model"]))
    order = ["avg", *TRAINED_KINDS]
    ensembles: dict[str, list[dict[str, Any]]] = {}
    for m in metrics:
        rows = []
        keys = sorted(
            ens_vals.get(m, {}),
            key=lambda k: (order.index(ens_meta[k][0]) if ens_meta[k][0] in order else len(order), ens_meta[k][1], k),
        )
        for key in keys:
            kind, stacking = ens_meta[key]
            paper_name, inputs = PAPER_ENSEMBLE_NAMES.get(kind, (kind, ""))
            row = {
                "row": key,
                "kind": kind,
                "stacking": stacking,
                "inputs": inputs,
                "name": paper_name if stacking == "in-sample" else f"{paper_name} [{stacking}]",
            }
            cells = ens_vals[m][key]
            for sel in (*SELECTIONS, *sorted(set(cells) - set(SELECTIONS))):
                row[sel] = _mean_std_cell(cells[sel]) if sel in cells else None
            rows.append(row)
        ensembles[m] = rows
    return {
        "split": evaluation.get("split"),
        "reference": evaluation.get("reference"),
        "rank_on": evaluation.get("rank_on"),
        "leaks_test": bool(evaluation.get("leaks_test")),
        "metrics": list(metrics),
        "selections": {k: v.get("model_ids", []) for k, v in selections.items()},
        "base": base_rows,
        "ensembles": ensembles,
    }


def _nan_low(x: float) -> float:
    return -math.inf if x is None or math.isnan(x) else x


def _fmt(cell: Sequence[Any] | None, bold: bool = False) -> str:
    if cell is None or cell[2] == 0:
        return "-"
    mean, std, _n = cell
    text = f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"
    return f"**{text}**" if bold else text


def _best(cells: Sequence[Sequence[Any] | None]) -> float:
    """The column maximum to print in bold; NaN (nothing bold) when the column has fewer than two distinct values."""
    means = [c[0] for c in cells if c is not None and c[2] > 0 and not math.isnan(c[0])]
    return max(means) if len(set(means)) > 1 else math.nan


def render_markdown(table: Mapping[str, Any]) -> str:
    """Table 3 as Markdown: the base-model block, the AP block and the IoU blocks; column maxima in bold."""
    metrics = table["metrics"]
    sels = [s for s in SELECTIONS if s in table.get("selections", {})] or list(SELECTIONS)
    lines = [
        f"Evaluation on split `{table['split']}` against {table['reference']}; mean ± std over seeds; "
        f"selections ranked on `{table['rank_on']}`"
        + (" (LEAKS test labels into the selection)" if table.get("leaks_test") else "")
        + ".",
        "",
    ]
    lines.append("**Base models and the selections E1-E4 that contain them**")
    lines.append("")
    lines.append(
        "| Base model | n | " + " | ".join(METRIC_LABELS.get(m, m) for m in metrics) + " | " + " | ".join(sels) + " |"
    )
    lines.append("|---|---:|" + "---:|" * len(metrics) + ":-:|" * len(sels))
    best = {m: _best([r[m] for r in table["base"]]) for m in metrics}
    for row in table["base"]:
        cells = [_fmt(row[m], bold=row[m][2] > 0 and row[m][0] == best[m]) for m in metrics]
        marks = ["✓" if row["in"].get(s) else "" for s in sels]
        lines.append(f"| {row['name']} | {row['n']} | " + " | ".join(cells) + " | " + " | ".join(marks) + " |")
    for m in metrics:
        rows = table["ensembles"].get(m, [])
        if not rows:
            continue
        label = METRIC_LABELS.get(m, m)
        extra = sorted(
            {k for r in rows for k in r if k not in ("row", "kind", "stacking", "inputs", "name")} - set(sels)
        )
        cols = [*sels, *extra]
        lines += ["", f"**{label} of the ensembles per input selection**", ""]
        lines.append("| Ensemble model | Inputs | " + " | ".join(f"{label} ({c})" for c in cols) + " |")
        lines.append("|---|---|" + "---:|" * len(cols))
        col_best = {c: _best([r.get(c) for r in rows]) for c in cols}
        for row in rows:
            cells = [
                _fmt(row.get(c), bold=row.get(c) is not None and row[c][2] > 0 and row[c][0] == col_best[c])
                for c in cols
            ]
            lines.append(f"| {row['name']} | {row['inputs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table3(evaluation: Mapping[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Write ``evaluation.json`` (all records), ``table3.json`` and ``table3.md`` into ``out_dir``, atomically.

    Returns:
        The table dict.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = build_table3(evaluation)
    atomic_write_json(out / "evaluation.json", evaluation)
    atomic_write_json(out / "table3.json", table)
    atomic_write_text(out / "table3.md", render_markdown(table))
    return table
