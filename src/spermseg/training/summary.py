"""Summary of finished training runs: mean +- std per model over seeds, like the paper's Table 3
(``spermseg summarize``).

Reads every ``result.json`` under a directory (as written by ``spermseg train`` / ``train-many``), groups the runs
by model (ensembles by kind and inputs) and reports AP, IoU_0.5, IoU_opt and t_opt as mean +- sample standard
deviation (ddof=1; None for a single run) over seeds, sorted by mean AP. The scores come from the test split
when every run of the model has one (``data.test_split``, as in Table 3), otherwise from the validation split;
``source`` says which.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spermseg.errors import DataError
from spermseg.metrics.score import mean_std

METRICS = ("ap", "iou_0.5", "iou_opt", "t_opt")


def _label(result: dict[str, Any]) -> str:
    label = str(result.get("model", "?"))
    if result.get("kind") == "ensemble" and result.get("inputs"):
        label += "|" + "+".join(result["inputs"])
    return label


def summarize(directory: str | Path, split: str = "auto") -> dict[str, Any]:
    """Summarize the finished runs under ``directory``.

    Args:
        directory: searched recursively for ``result.json``.
        split: ``auto``, ``test`` or ``validation``.

    Returns:
        ``{"dir", "models": {label: {"n", "seeds", "source", "runs", "ap": {"mean","std"}, ...}}}``, models in
        descending order of mean AP.

    Raises:
        DataError: when no finished run is found, or ``split="test"`` and a run has no test scores.
    """
    directory = Path(directory)
    files = sorted(directory.rglob("result.json"))
    groups: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for path in files:
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read {path}: {exc}; delete it and rerun that training") from None
        if not isinstance(result, dict) or "validation" not in result:
            continue  # some other tool's result.json
        groups.setdefault(_label(result), []).append((path.parent, result))
    if not groups:
        raise DataError(f"no finished training runs (result.json) under {directory}")
    models: dict[str, Any] = {}
    for label, runs in groups.items():
        has_test = all(r.get("test") for _, r in runs)
        if split == "test" and not has_test:
            missing = next(str(p) for p, r in runs if not r.get("test"))
            raise DataError(f"run {missing} has no test scores; train with --set data.test_split=test")
        source = "test" if (split == "test" or (split == "auto" and has_test)) else "validation"
        scores = [r.get(source) or {} for _, r in runs]
        entry: dict[str, Any] = {
            "n": len(runs),
            "seeds": sorted(r.get("seed") for _, r in runs if r.get("seed") is not None),
            "source": source,
            "runs": [str(p) for p, _ in runs],
        }
        for key in METRICS:
            values = [float(s[key]) for s in scores if s.get(key) is not None]
            entry[key] = mean_std(values) if values else None
        models[label] = entry
    order = sorted(models, key=lambda k: -(models[k]["ap"] or {"mean": -1.0})["mean"])
    return {"dir": str(directory), "models": {k: models[k] for k in order}}
