"""The eight steps of ``spermseg reproduce``, one module each: ``run(rep, ctx)`` computes the step's result (schema
in its docstring) and ``section(result, ctx)`` renders it in the report, side by side, so that a result's layout
is written and read in one file. :data:`STEP_MODULES` is the pipeline's order; :func:`build_steps` binds them to a
:class:`~spermseg.experiments.pipeline.Reproduction`.

The step runner (resume, DONE/FAILED records) is :mod:`spermseg.experiments.runner`; its names are re-exported
here for one release (they lived in ``spermseg.experiments.steps``).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from spermseg.experiments.runner import (  # noqa: F401 - re-exported (old home)
    ATTEMPTS_FILE,
    DONE_FILE,
    FAILED_FILE,
    UNAVAILABLE_FILE,
    Step,
    StepContext,
    StepRecord,
    StepRunner,
    StepUnavailable,
)
from spermseg.experiments.steps import (
    agreement,
    base,
    blur,
    ensembles,
    normalization,
    qualitative,
    raters,
    temporal,
)

if TYPE_CHECKING:  # pragma: no cover
    from spermseg.experiments.pipeline import Reproduction

STEP_MODULES = (agreement, normalization, base, ensembles, raters, blur, qualitative, temporal)


def build_steps(rep: Reproduction) -> list[Step]:
    """The eight steps bound to ``rep``, with their dependencies, in pipeline order.

    Args:
        rep: the pipeline (config, paths, shared pieces) every step reads.

    Returns:
        One :class:`~spermseg.experiments.runner.Step` per module of :data:`STEP_MODULES`.
    """
    return [Step(s.NAME, functools.partial(s.run, rep), s.DESCRIPTION, requires=s.REQUIRES) for s in STEP_MODULES]
