"""``report.html`` of one ``spermseg track`` run, in the style of the reproduce report (same renderer and CSS).

Sections: the input and its calibration (with sources), trajectories over the first frame, VCL/VSL histograms,
WHO class counts, a kinematics summary (median and interquartile range per measure), and, when the run was
scored against synthetic truth (``evaluation.json``), the identity / MOTA / IDF1 and kinematics errors. Figures
go to ``OUT/figures/`` and are embedded, so the single HTML file opens offline.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from spermseg.experiments.report import Figure, Section, Table, _render_html, fmt
from spermseg.kinematics import CLASSES
from spermseg.utils.atomic import atomic_path, atomic_write_text

_MEASURES = ("vcl_um_s", "vsl_um_s", "vap_um_s", "lin", "str", "wob", "alh_um", "bcf_hz", "beat_hz", "tail_length_um")


def _trajectories(out: Path, rows: list[dict], fig_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spermseg.data.io import read_image
    from spermseg.inference.track_outputs import track_color

    first = out / "first_frame.png"
    fig, ax = plt.subplots(figsize=(7, 7), dpi=110)
    if first.is_file():
        ax.imshow(read_image(first), cmap="gray", vmin=0, vmax=1)
    by: dict[int, list[dict]] = {}
    for r in rows:
        by.setdefault(int(r["track_id"]), []).append(r)
    for tid, rs in by.items():
        xy = np.array([[r["head_x"], r["head_y"]] for r in rs])
        color = np.array(track_color(tid)) / 255
        ax.plot(xy[:, 0], xy[:, 1], "-", color=color, lw=1.2)
        ax.plot(xy[0, 0], xy[0, 1], "o", color=color, ms=3)
        ax.text(xy[-1, 0] + 3, xy[-1, 1], str(tid), color=color, fontsize=8)
    ax.set_axis_off()
    ax.set_title("head trajectories (dot: first position)")
    return _save(fig, fig_dir / "trajectories.png")


def _histograms(kin: list[dict], fig_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), dpi=110)
    for ax, key, name in zip(axes, ("vcl_um_s", "vsl_um_s"), ("VCL", "VSL")):
        v = [float(r[key]) for r in kin if math.isfinite(float(r[key]))]
        ax.hist(v, bins=min(20, max(5, len(v))), color="#4477aa", edgecolor="white")
        ax.set_xlabel(f"{name} (um/s)")
        ax.set_ylabel("tracks")
    fig.tight_layout()
    return _save(fig, fig_dir / "velocity_histograms.png")


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def _summary_table(kin: list[dict]) -> Table:
    rows = []
    for key in _MEASURES:
        v = np.array([float(r[key]) for r in kin], float)
        v = v[np.isfinite(v)]
        q = np.percentile(v, [25, 50, 75]) if v.size else [math.nan] * 3
        rows.append([key, str(v.size), fmt(q[1], 3), f"{fmt(q[0], 3)} - {fmt(q[2], 3)}"])
    note = "WHO 6th ed. / CASA definitions: docs/tracking.md; undefined values (short tracks) omitted."
    return Table("Kinematics over tracks", ["measure", "tracks", "median", "IQR"], rows, note=note)


def _evaluation_section(ev: dict) -> Section:
    k = ev.get("kinematics", {})
    rows = [
        ["identity-consistent share of truth head positions", fmt(ev.get("identity_consistent"), 4)],
        ["matched share (any track)", fmt(ev.get("matched_share"), 4)],
        ["MOTA", fmt(ev.get("mota"), 4)],
        ["IDF1", fmt(ev.get("idf1"), 4)],
        ["ID switches", fmt(ev.get("num_switches"), 0)],
        ["precision / recall", f"{fmt(ev.get('precision'), 4)} / {fmt(ev.get('recall'), 4)}"],
        ["median relative VCL error (motile truth)", f"{fmt(k.get('median_vcl_rel_error'), 4)} (n={k.get('n_vcl')})"],
        ["median beat-frequency error (Hz)", f"{fmt(k.get('median_beat_error_hz'), 3)} (n={k.get('n_beat')})"],
        ["class agreement", f"{fmt(k.get('class_agreement'), 3)} (n={k.get('n_class')})"],
    ]
    per = [
        [str(p["sperm_id"]), str(p.get("track_id") or "-"), fmt(p.get("vcl_true"), 2), fmt(p.get("vcl"), 2),
         fmt(p.get("beat_true"), 2), fmt(p.get("beat"), 2), str(p.get("class_true", "")), str(p.get("cls", ""))]
        for p in ev.get("per_sperm", [])
    ]  # fmt: skip
    return Section(
        "Against the synthetic truth",
        blocks=[
            Table(
                f"Tracking ({ev.get('n_truth_positions')} truth head positions of {ev.get('n_truth_sperm')} sperm, "
                f"match within {ev.get('max_distance_um')} um)",
                ["", ""],
                rows,
            ),  # fmt: skip
            Table(
                "Per truth sperm",
                ["sperm", "track", "VCL true", "VCL", "beat true", "beat", "class true", "class"],
                per,
            ),  # fmt: skip
        ],
        anchor="truth",
    )


def write_track_report(out: str | Path) -> Path:
    """Write ``out/report.html`` from a tracking run's files; returns its path."""
    from spermseg.utils.table import read_rows_csv

    out = Path(out)
    run = json.loads((out / "track.json").read_text())
    rows = read_rows_csv(out / "tracks.csv")
    kin = read_rows_csv(out / "kinematics.csv")
    fig_dir = out / "figures"
    calib = [
        ["input", f"`{run['input']}` ({run['kind']})"],
        ["frames", f"{run['frames_processed']} processed of {run['frames_announced']} announced"],
        ["frame rate", f"{fmt(run['fps'], 3)} fps ({run['fps_source']})"],
        ["pixel size", f"{fmt(run['pixel_size_um'], 4)} um ({run['pixel_size_source']})"],
        ["linker", run["linker"]],
        ["tracks / detections", f"{run['n_tracks']} / {run['n_detections']}"],
    ]
    sections = [Section("Run", blocks=[Table("Input and calibration", ["", ""], calib)], anchor="run")]
    if run.get("error"):
        sections[0].status = f"failed: {run['error']}"
    counts = {c: sum(1 for r in kin if r["class"] == c) for c in CLASSES}
    counts["too short"] = sum(1 for r in kin if not isinstance(r["class"], str) or not r["class"])
    total = max(1, sum(counts.values()))
    sections.append(
        Section(
            "Motility",
            blocks=[
                Figure(
                    _trajectories(out, rows, fig_dir), "Head trajectories over the first frame, one colour per track."
                ),
                Figure(_histograms(kin, fig_dir), "VCL and VSL of every track long enough to measure."),
                Table(
                    "WHO classes (thresholds in track.json: config.kinematics)",
                    ["class", "tracks", "share"],
                    [[c, str(n), f"{100 * n / total:.1f} %"] for c, n in counts.items()],
                ),  # fmt: skip
                _summary_table(kin),
            ],
            anchor="motility",
        )
    )
    ev_path = out / "evaluation.json"
    if ev_path.is_file():
        sections.append(_evaluation_section(json.loads(ev_path.read_text())))
    path = out / "report.html"
    atomic_write_text(path, _render_html(f"spermseg track: {Path(run['input']).name}", sections))
    return path
