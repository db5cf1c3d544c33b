"""The paper's protocol: ``spermseg reproduce`` (config, steps, report). Ensembling moved to ``spermseg.ensembling``.

The old paths ``spermseg.experiments.{selection, stacking, table3, ensemble_training}`` stay for one release.
"""

from __future__ import annotations

from spermseg._moved import install

install(
    {
        f"spermseg.experiments.{m}": f"spermseg.ensembling.{m}"
        for m in ("selection", "stacking", "table3", "ensemble_training")
    }
)
