"""The reproduction report: ``report.md`` and a self-contained ``report.html`` from the step results.

:func:`write_report` takes the step records of :mod:`spermseg.experiments.runner` (status, result JSON, wall time),
the resolved config and an environment description, draws the figures with :mod:`spermseg.experiments.figures`
into ``OUT/figures/`` and writes

* ``OUT/report.md``: Markdown tables, figures linked by relative path;
* ``OUT/report.html``: the same content with every figure embedded as a base64 PNG and the CSS inline, so the
  single file opens offline in any browser and prints well (no external assets, no network).

Every step has a section; a step that did not finish says so ("not available: <why>", "failed: <why>", "not run")
instead of showing numbers. When the data is SegSperm itself, the paper's published Tables 2-4
(:mod:`spermseg.experiments.paper_numbers`) stand beside ours with the difference (ours - paper).

The result schema of each step is documented in its module (:mod:`spermseg.experiments.steps`), beside the
section that reads it.
"""

from __future__ import annotations

import base64
import html
import os
import platform
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spermseg.experiments.document import (  # noqa: F401 - re-exported: track_report and tests use them here
    GT_VARIANT_NAMES,
    Figure,
    ReportContext,
    Section,
    Table,
    fmt,
    fmt_delta,
    fmt_ms,
)
from spermseg.experiments.steps import STEP_MODULES
from spermseg.utils.atomic import atomic_write_text
from spermseg.utils.progress import fmt_seconds


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


SECTIONS: dict[str, tuple[str, Callable[[dict[str, Any], ReportContext], list[Table | Figure | str]]]] = {
    step.NAME: (step.SECTION_TITLE, step.section) for step in STEP_MODULES
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


def build_sections(records: Mapping[str, Any], ctx: ReportContext) -> list[Section]:
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
    ctx = ReportContext(out_dir, fig_dir, compare_paper, results)
    env = dict(environment) if environment is not None else collect_environment()
    sections = build_sections(recs, ctx)

    header: list[Table | Figure | str] = []
    table = (results.get("ensembles") or {}).get("headline")
    if table:
        from spermseg.experiments.headline import headline_rows, verdict_line

        heads, rows = headline_rows(table)
        header.append(
            Table(
                f"Headline: the best base model, avg and the featured ensemble on the {table['split']} split vs "
                f"{table['rater']} (mean ± std over seeds; also in summary.json).",
                heads,
                rows,
                note="The best base model is the one with the highest mean test AP, chosen with test labels: the "
                "comparison favours it. " + verdict_line(table),
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
