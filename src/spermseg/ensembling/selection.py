"""Input selections for the ensembling networks: E1-E4 of paper Section 6.3.1, or models named explicitly.

* ``E1``: all base architectures; ``E2``: the single best; ``E3``: the three best; ``E4``: the three best on the
  training set (in-sample AP, as in the paper).
* "Best" means the highest AP on a held-out split, ``rank_on="val"`` by default: the validation subset each base
  run held out of the training set (by group/video) for its own model selection, read from the run's
  ``result.json`` at cache time. The paper ranked on the test set, which leaks the test labels into the choice of
  inputs; that is available only as the explicitly named ``rank_on="test"`` (and marked ``leaks_test: true``).
* With several seeds per architecture (Table 3 averages 5 runs), architectures are ranked by the mean AP over
  their seeds and each selected architecture contributes its best seed's masks, as in the paper ("the masks to
  all ensembling variants come from a model that achieved the top score out of the 5 runs").
* An explicit selection lists cache model ids (``att_unet_s0``) or architecture names (``att_unet``, meaning
  its best seed under ``rank_on``).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spermseg.errors import ConfigError, DataError

SELECTIONS = ("E1", "E2", "E3", "E4")
RANK_SOURCES = ("val", "train", "test")
# How many architectures each named selection takes (None: all).
_SIZE = {"E1": None, "E2": 1, "E3": 3, "E4": 3}


@dataclass
class Selection:
    """A resolved input selection.

    Attributes:
        name: ``E1``..``E4`` or ``custom``.
        model_ids: cache ids of the chosen soft masks, best first (the ensemble's input channel order).
        architectures: the architecture of each chosen id.
        rank_on: the split the ranking used (``val``, ``train`` or ``test``).
        ranking: every architecture with its ranking score (mean AP over seeds), best first.
        leaks_test: True when test labels influenced the choice (``rank_on="test"``).
    """

    name: str
    model_ids: list[str]
    architectures: list[str]
    rank_on: str
    ranking: list[tuple[str, float]] = field(default_factory=list)
    leaks_test: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in ensemble run directories as provenance)."""
        out = asdict(self)
        out["ranking"] = [list(r) for r in self.ranking]
        return out


def validation_score(run_result: Mapping[str, Any] | None, metric: str = "ap") -> float | None:
    """The validation score recorded by the training engine in a run's ``result.json``.

    Accepts the engine's nested form (``{"val": {"ap": ...}}``) and flat keys (``val_ap``, ``best_val_ap``).
    """
    if not run_result:
        return None
    for key in ("val", "validation", "best"):
        block = run_result.get(key)
        if isinstance(block, Mapping) and isinstance(block.get(metric), int | float):
            return float(block[metric])
    for key in (f"val_{metric}", f"best_val_{metric}", f"validation_{metric}"):
        if isinstance(run_result.get(key), int | float):
            return float(run_result[key])
    return None


def model_scores(manifest: Mapping[str, Any], rank_on: str, metric: str = "ap") -> dict[str, float]:
    """Score of every cached base model for ranking: ``{model_id: score}``.

    Args:
        manifest: a mask-cache manifest (:func:`spermseg.ensembling.mask_cache.load_manifest`).
        rank_on: ``val`` (a cached ``val`` split if there is one, else the run's own validation score from
            ``result.json``), ``train`` or ``test`` (the cached split's scores against the first rater).
        metric: ``ap`` (default), ``iou_opt`` or ``iou_0.5``.

    Raises:
        ConfigError: unknown ``rank_on``.
        DataError: when some model has no score for that source (the message says how to get one).
    """
    if rank_on not in RANK_SOURCES:
        raise ConfigError(f"bad rank_on '{rank_on}'; valid: {', '.join(RANK_SOURCES)}")
    scores: dict[str, float] = {}
    missing: list[str] = []
    for model_id, info in manifest["models"].items():
        entries = info.get("entries", {})
        value: float | None = None
        split = rank_on
        if rank_on == "val" and "val" not in entries:
            value = validation_score(info.get("run_result"), metric)
        else:
            metrics = entries.get(split, {}).get("metrics") or {}
            value = metrics.get(metric)
        if value is None:
            missing.append(model_id)
        else:
            scores[model_id] = float(value)
    if missing:
        hint = (
            "their run directories have no result.json with a validation score; finish training them, or cache a "
            "'val' split"
            if rank_on == "val"
            else f"cache the '{rank_on}' split with labels (spermseg masks --splits {rank_on})"
        )
        raise DataError(f"no {rank_on} {metric} for base model(s) {', '.join(missing)}: {hint}")
    return scores


def rank_architectures(
    manifest: Mapping[str, Any], rank_on: str = "val", metric: str = "ap"
) -> list[tuple[str, float, str]]:
    """Architectures ranked by mean score over their seeds: ``[(architecture, mean score, best seed's id)]``.

    Ties are broken by the best seed's score, then by name, so the order is deterministic.
    """
    scores = model_scores(manifest, rank_on, metric)
    by_arch: dict[str, list[str]] = {}
    for model_id in manifest["models"]:
        by_arch.setdefault(architecture_of(manifest, model_id), []).append(model_id)
    rows = []
    for arch, ids in by_arch.items():
        best = max(ids, key=lambda i: (scores[i], i))
        rows.append((arch, statistics.fmean(scores[i] for i in ids), best, scores[best]))
    rows.sort(key=lambda r: (-r[1], -r[3], r[0]))
    return [(arch, mean, best) for arch, mean, best, _ in rows]


def architecture_of(manifest: Mapping[str, Any], model_id: str) -> str:
    """The registry name of a cached model (its id when the checkpoint recorded none)."""
    return str(manifest["models"][model_id].get("model") or model_id)


def select_inputs(
    manifest: Mapping[str, Any],
    selection: str | Sequence[str],
    *,
    rank_on: str = "val",
    metric: str = "ap",
) -> Selection:
    """Resolve a selection to cache model ids.

    Args:
        manifest: a mask-cache manifest.
        selection: ``"E1"``..``"E4"``, a comma-separated string of ids/architectures, or a list of them.
        rank_on: ranking source for E2/E3 and for picking seeds (``val`` default; ``test`` leaks). E4 always ranks
            on ``train`` (its definition) but picks seeds by ``rank_on``.
        metric: ranking metric (``ap`` as in the paper).

    Returns:
        The :class:`Selection`.

    Raises:
        ConfigError: unknown selection name, model id or architecture (the message lists the valid ones).
    """
    if not manifest.get("models"):
        raise DataError("the mask cache holds no base models; build it with 'spermseg masks --models ...'")
    if isinstance(selection, str) and selection.upper() in SELECTIONS:
        name = selection.upper()
        order_on = "train" if name == "E4" else rank_on
        ranked = rank_architectures(manifest, order_on, metric)
        # Seeds are always picked by rank_on (held-out by default), also for E4's train-set ranking.
        seed_pick = ranked if order_on == rank_on else rank_architectures(manifest, rank_on, metric)
        best_id = {arch: best for arch, _, best in seed_pick}
        size = _SIZE[name] or len(ranked)
        chosen = [arch for arch, _, _ in ranked[:size]]
        return Selection(
            name=name,
            model_ids=[best_id[a] for a in chosen],
            architectures=chosen,
            rank_on=order_on,
            ranking=[(arch, score) for arch, score, _ in ranked],
            leaks_test=order_on == "test" or rank_on == "test",
        )
    items = [s.strip() for s in selection.split(",")] if isinstance(selection, str) else [str(s) for s in selection]
    items = [s for s in items if s]
    if not items:
        raise ConfigError(f"empty selection; use one of {', '.join(SELECTIONS)} or model ids/architectures")
    ids: list[str] = []
    archs = {architecture_of(manifest, m) for m in manifest["models"]}
    ranked_cache: list[tuple[str, float, str]] | None = None
    for item in items:
        if item in manifest["models"]:
            ids.append(item)
        elif item in archs:
            if ranked_cache is None:
                ranked_cache = rank_architectures(manifest, rank_on, metric)
            ids.append(next(best for arch, _, best in ranked_cache if arch == item))
        else:
            raise ConfigError(
                f"unknown selection item '{item}'; use {', '.join(SELECTIONS)}, a cached model id "
                f"({', '.join(manifest['models'])}) or an architecture ({', '.join(sorted(archs))})"
            )
    if len(set(ids)) != len(ids):
        raise ConfigError(f"selection {items} names the same soft masks twice")
    return Selection(
        name="custom",
        model_ids=ids,
        architectures=[architecture_of(manifest, i) for i in ids],
        rank_on=rank_on,
        ranking=[(arch, score) for arch, score, _ in ranked_cache] if ranked_cache else [],
        leaks_test=rank_on == "test" and ranked_cache is not None,
    )


def all_selections(manifest: Mapping[str, Any], *, rank_on: str = "val", metric: str = "ap") -> dict[str, Selection]:
    """E1..E4 resolved on one cache: ``{"E1": Selection, ...}``."""
    return {name: select_inputs(manifest, name, rank_on=rank_on, metric=metric) for name in SELECTIONS}


def load_selection(cache_dir: str | Path, selection: str | Sequence[str], *, rank_on: str = "val") -> Selection:
    """:func:`select_inputs` on the manifest of ``cache_dir``."""
    from spermseg.data.mask_store import load_manifest

    return select_inputs(load_manifest(cache_dir), selection, rank_on=rank_on)
