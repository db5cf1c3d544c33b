"""The paper's experimental protocol end to end, as eight resumable steps, and the report.

``spermseg reproduce --data ROOT --out DIR [--preset paper|cpu|demo]`` runs, in order (each step writes
``DIR/steps/NAME/`` and a ``DONE.json`` with its result; see :mod:`spermseg.experiments.runner`; each step is one
module of :mod:`spermseg.experiments.steps`):

1. ``agreement``: Table 2 on ``test_small`` (strict IoU and IoU' at k = 3, 5; full/head/tail) and a Fig. 6
   example of the aggregated ground truths.
2. ``normalization``: Fig. 9, validation AP of each model trained with ``none``, ``mean`` and ``minmax``.
3. ``base``: every base model x seed (minmax) -> Table 3 top block (test vs. GT1, mean ± std over seeds) and Fig. 7.
   Runs live in ``DIR/runs/base/MODEL/NORM/sSEED``; a finished run is never retrained (the trainer skips it and
   resumes an interrupted one), so killing the pipeline during this step and re-running it loses at most the
   current epoch. The normalization step's ``minmax`` runs are the same directories, so they are trained once.
4. ``ensembles``: the soft-mask cache (``DIR/cache``), selections E1-E4 (ranked on validation AP by default),
   ``avg`` and the trained kinds x selections x seeds -> Table 3 lower blocks.
5. ``raters``: Table 4 on ``test_small``: the best base model, ``avg|E3`` and the featured ensemble
   (``ens_att_v2|E3``) against GT1-GT3 and the union / majority / intersection / STAPLE aggregates.
6. ``blur``: Fig. 12, each base model (best seed) and the featured ensemble on blurred test images.
7. ``qualitative``: Figs. 10/11 difference maps on chosen test images.
8. ``temporal``: Fig. 14 on a frame sequence when the dataset has one.

Result schemas (what :mod:`spermseg.experiments.report` reads) are given in each step's docstring. Paths inside
results are relative to ``DIR``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from spermseg.errors import ConfigError
from spermseg.experiments.config import (  # noqa: F401 - re-exported: the names callers know from here
    ALL_MODELS,
    EXECUTION_KEYS,
    PRESET_ALIASES,
    PRESETS,
    STEP_NAMES,
    TRAINED_KINDS,
    ReproduceConfig,
    reproduce_config,
    validate,
)
from spermseg.experiments.pipeline import Reproduction, find_sequence, score_with_curve, set_main_threads  # noqa: F401
from spermseg.experiments.runner import StepRecord, StepRunner
from spermseg.experiments.steps import build_steps
from spermseg.utils.atomic import atomic_write_json


def compare_with_paper(cfg: ReproduceConfig) -> bool:
    """Whether the report shows the paper's numbers (``auto``: only on SegSperm itself)."""
    from spermseg.experiments.paper_numbers import is_segsperm

    if cfg.compare_paper == "on":
        return True
    if cfg.compare_paper == "off":
        return False
    return is_segsperm(cfg.data)


def run_reproduce(
    cfg: ReproduceConfig,
    out_dir: str | Path,
    *,
    steps: Sequence[str] | None = None,
    force: Sequence[str] = (),
    log: Callable[[str], None] | None = None,
    command: str = "",
) -> tuple[dict[str, StepRecord], Path, Path]:
    """Run the selected steps (skipping finished ones) and write the report.

    Args:
        cfg: the resolved config.
        out_dir: output directory.
        steps: subset of :data:`STEP_NAMES` (``None``: all).
        force: steps to re-run even when finished.
        log: progress printer.
        command: the command line, shown in the report.

    Returns:
        ``(records, report_md, report_html)``.
    """
    from spermseg.config import config_to_dict, save_config
    from spermseg.experiments.report import collect_environment, write_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "config.yaml"
    current = config_to_dict(cfg)
    if saved.is_file():
        import yaml

        old = yaml.safe_load(saved.read_text()) or {}
        # Steps that finished under another config would mix results; the user must choose. Keys that only change
        # how the work is executed or shown (not its results) may change between invocations.
        changed = sorted(k for k in set(old) | set(current) if old.get(k) != current.get(k) and k not in EXECUTION_KEYS)
        if changed and not force:
            raise ConfigError(
                f"{out} holds a reproduction with a different config ({', '.join(changed)} differ; "
                f"see {saved}); use another --out, or --force STEP to redo the affected steps"
            )
    save_config(cfg, saved)
    set_main_threads(cfg)
    pipe = Reproduction(cfg, out, log=log)
    runner = StepRunner(out, build_steps(pipe), log=log)
    records = runner.run(steps, force=force)
    info = {
        "dataset": str(Path(cfg.data).resolve()),
        "preset": cfg.preset,
        "models": ", ".join(cfg.models),
        "seeds": ", ".join(map(str, cfg.seeds)),
    }
    if command:
        info["command"] = command
    md, html = write_report(
        out, records, current, collect_environment(), compare_paper=compare_with_paper(cfg), info=info
    )
    atomic_write_json(out / "steps.json", {k: r.to_dict() for k, r in records.items()})
    ens = records.get("ensembles")
    table = (ens.result or {}).get("headline") if ens is not None and ens.finished else None
    atomic_write_json(out / "summary.json", {"headline": table, "command": command or None})
    return records, md, html
