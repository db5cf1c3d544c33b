"""Dataset check: list and validate a dataset, every problem found (``spermseg data check``; its JSON report).

Per split: the image count, image sizes (W x H), raters and their parts, and groups; then every problem, one line
each. Every file is decoded exactly once.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any


def check_dataset(
    root: Path,
    binarize_threshold: float | None = None,
    groups_csv: Path | None = None,
    *,
    decode: bool = True,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Validate a dataset and return the ``spermseg data check --json`` report.

    Args:
        root: dataset folder.
        binarize_threshold: see :func:`spermseg.data.io.read_mask`.
        groups_csv: optional ``name,group`` file.
        decode: decode every file (pixel-level checks); ``False`` checks the file lists only.
        show_progress: progress bar on stderr (when it is a terminal).

    Returns:
        ``{"root", "layout", "ok", "n_errors", "n_warnings", "wall_s", "splits": {name: {...}}, "problems": [...]}``.
    """
    from spermseg.data.layouts import PARTS, format_sizes, open_dataset, validate_split
    from spermseg.utils.progress import progress

    t0 = time.perf_counter()
    ds = open_dataset(root, groups_csv=groups_csv)
    problems = list(ds.problems)
    splits: dict[str, Any] = {}
    total = sum(len(s) for s in ds.splits.values())
    bar = progress(total=total, desc="checking", unit="img", disable=None if show_progress and decode else True)
    try:
        for name, sp in ds.splits.items():
            sizes: Counter[tuple[int, int]] = Counter()
            if decode:
                report = validate_split(sp, binarize_threshold, on_sample=lambda _s: bar.update(1))
                sizes = report.sizes
                problems.extend(report.problems)
            group_sizes = Counter(s.group for s in sp.samples)
            largest = group_sizes.most_common(1)[0] if group_sizes else None
            splits[name] = {
                "n_images": len(sp),
                "sizes": [{"width": w, "height": h, "count": n} for (w, h), n in sizes.most_common()],
                "sizes_text": format_sizes(sizes) if decode else "not decoded",
                "raters": {
                    r: {"stored": sp.parts(r), "available": sp.available_parts(r), "labels": sp.labels(r)}
                    for r in sp.raters
                },
                "parts": [p for p in PARTS if any(p in sp.available_parts(r) for r in sp.raters)],
                "n_groups": len(group_sizes),
                "largest_group": {"group": largest[0], "n_images": largest[1]} if largest else None,
            }
    finally:
        bar.close()
    n_errors = sum(p.severity == "error" for p in problems)
    return {
        "root": str(ds.root),
        "layout": ds.layout,
        "decoded": decode,
        "binarize_threshold": binarize_threshold,
        "ok": n_errors == 0,
        "n_errors": n_errors,
        "n_warnings": len(problems) - n_errors,
        "wall_s": round(time.perf_counter() - t0, 3),
        "splits": splits,
        "problems": [
            {"severity": p.severity, "split": p.split, "path": str(p.path) if p.path else None, "message": p.message}
            for p in problems
        ],
    }


def format_report(report: dict[str, Any]) -> str:
    """Human-readable text of a :func:`check_dataset` report."""
    lines = [f"dataset {report['root']} (layout: {report['layout']})"]
    for name, sp in report["splits"].items():
        raters = "; ".join(
            f"{r}: {', '.join(info['available']) or 'none'}"
            + (
                " (full derived from head | tail)"
                if "full" in info["available"] and "full" not in info["stored"]
                else ""
            )
            + (f"; labels: {', '.join(info['labels'])}" if info.get("labels") else "")
            for r, info in sp["raters"].items()
        )
        largest = sp["largest_group"]
        groups = f"{sp['n_groups']} groups"
        if largest and largest["n_images"] > 1:
            groups += f" (largest: {largest['group']}, {largest['n_images']} images)"
        elif largest:
            groups += " (one image each)"
        lines.append(f"  {name}: {sp['n_images']} images, size {sp['sizes_text']}")
        lines.append(f"    raters and parts: {raters or 'none (no masks)'}")
        lines.append(f"    {groups}")
    if report["problems"]:
        lines.append(f"problems: {report['n_errors']} errors, {report['n_warnings']} warnings")
        lines.extend(f"  {p['severity']}: {p['message']}" for p in report["problems"])
    else:
        lines.append("problems: none")
    verdict = "OK" if report["ok"] else "FAILED"
    decoded = "every file decoded" if report["decoded"] else "file lists only"
    lines.append(f"{verdict} ({decoded}, {report['wall_s']:.1f} s)")
    return "\n".join(lines)
