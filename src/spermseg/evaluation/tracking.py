"""Score tracks against a synthetic video's truth: identity, MOTA/IDF1 (motmetrics) and kinematics errors.

Matching: in each frame, estimated heads and truth heads (``truth/tracks.csv``) are paired one-to-one by minimal
total distance (Hungarian), pairs farther than ``max_distance_um`` apart are no match.

* **identity-consistent share**: truth sperm and tracks are paired one-to-one for the whole video so that the
  number of frames in which they are matched is largest (Hungarian on the co-occurrence counts); the share is
  the number of truth head positions matched to *their* sperm's track divided by all truth head positions.
  A track that switches to another sperm, a track broken in two, or a missed head all lower it (it equals
  IDTP / number of truth positions, motmetrics' ID recall).
* **MOTA, IDF1, ID switches, precision, recall** from motmetrics with the same distance gate.
* **kinematics**: each truth sperm's row of ``truth/kinematics.csv`` against its paired track's row:
  relative VCL error ``|VCL - VCL_true| / VCL_true`` over motile truth sperm (VCL_true > 0), absolute beat
  frequency error over sperm with both values defined, class agreement; medians are reported.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def _hungarian_max(counts: np.ndarray) -> list[tuple[int, int]]:
    from scipy.optimize import linear_sum_assignment

    if counts.size == 0:
        return []
    r, c = linear_sum_assignment(-counts)
    return [(int(i), int(j)) for i, j in zip(r, c) if counts[i, j] > 0]


def frame_matches(est: list[dict], truth: list[dict], max_px: float) -> list[tuple[int, int, int]]:
    """(frame, truth sperm_id, track_id) for every matched head (Hungarian per frame, distance gate)."""
    from scipy.optimize import linear_sum_assignment

    by_frame_e: dict[int, list[dict]] = {}
    by_frame_t: dict[int, list[dict]] = {}
    for r in est:
        by_frame_e.setdefault(int(r["frame"]), []).append(r)
    for r in truth:
        by_frame_t.setdefault(int(r["frame"]), []).append(r)
    out = []
    for f, ts in by_frame_t.items():
        es = by_frame_e.get(f, [])
        if not es:
            continue
        a = np.array([[r["head_x"], r["head_y"]] for r in ts], float)
        b = np.array([[r["head_x"], r["head_y"]] for r in es], float)
        d = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
        cost = np.where(d <= max_px, d, 1e9)
        for i, j in zip(*linear_sum_assignment(cost)):
            if d[i, j] <= max_px:
                out.append((f, int(ts[i]["sperm_id"]), int(es[j]["track_id"])))
    return out


def mot_metrics(est: list[dict], truth: list[dict], max_px: float) -> dict[str, float]:
    """MOTA, MOTP (px), IDF1, IDP, IDR, ID switches, precision and recall with motmetrics."""
    try:
        import motmetrics as mm
    except ImportError:
        from spermseg.errors import SpermsegError

        raise SpermsegError("scoring tracks needs motmetrics: pip install 'spermseg[tracking]'") from None

    acc = mm.MOTAccumulator(auto_id=False)
    frames = sorted({int(r["frame"]) for r in truth} | {int(r["frame"]) for r in est})
    by_e: dict[int, list[dict]] = {f: [] for f in frames}
    by_t: dict[int, list[dict]] = {f: [] for f in frames}
    for r in est:
        by_e[int(r["frame"])].append(r)
    for r in truth:
        by_t[int(r["frame"])].append(r)
    for f in frames:
        ts, es = by_t[f], by_e[f]
        a = np.array([[r["head_x"], r["head_y"]] for r in ts], float).reshape(-1, 2)
        b = np.array([[r["head_x"], r["head_y"]] for r in es], float).reshape(-1, 2)
        dist = mm.distances.norm2squared_matrix(a, b, max_d2=max_px**2)
        acc.update([int(r["sperm_id"]) for r in ts], [int(r["track_id"]) for r in es], dist, frameid=f)
    names = ["mota", "motp", "idf1", "idp", "idr", "num_switches", "precision", "recall"]
    summary = mm.metrics.create().compute(acc, metrics=names, name="video")
    out = {k: float(summary[k].iloc[0]) for k in names}
    out["motp_px"] = math.sqrt(out.pop("motp")) if math.isfinite(out.get("motp", math.nan)) else math.nan
    return out


def evaluate_tracks(out_dir: str | Path, truth_dir: str | Path, *, max_distance_um: float = 2.0, write: bool = False):
    """Score ``out_dir/tracks.csv`` and ``kinematics.csv`` against ``truth_dir/{tracks,kinematics}.csv``.

    Args:
        out_dir: a ``spermseg track`` output folder (its ``track.json`` gives the pixel size).
        truth_dir: ``videos/{video}/truth`` of ``spermseg synth``.
        max_distance_um: head positions farther apart than this are no match (a head is ~4.5 um long).
        write: also write ``out_dir/evaluation.json``.

    Returns:
        ``{identity_consistent, mota, idf1, ..., n_truth_positions, n_truth_sperm, kinematics: {...}, per_sperm}``.
    """
    import json

    from spermseg.errors import DataError
    from spermseg.utils.atomic import atomic_write_json
    from spermseg.utils.table import read_rows_csv

    out_dir, truth_dir = Path(out_dir), Path(truth_dir)
    for f in (truth_dir / "tracks.csv", truth_dir / "kinematics.csv"):
        if not f.is_file():
            raise DataError(f"--truth {truth_dir}: {f.name} not found; use videos/VIDEO/truth of spermseg synth")
    px = float(json.loads((out_dir / "track.json").read_text())["pixel_size_um"])
    est, truth = read_rows_csv(out_dir / "tracks.csv"), read_rows_csv(truth_dir / "tracks.csv")
    max_px = max_distance_um / px
    matches = frame_matches(est, truth, max_px)
    sperm_ids = sorted({int(r["sperm_id"]) for r in truth})
    track_ids = sorted({int(r["track_id"]) for r in est})
    si, ti = {s: i for i, s in enumerate(sperm_ids)}, {t: j for j, t in enumerate(track_ids)}
    counts = np.zeros((len(sperm_ids), len(track_ids)))
    for _f, s, t in matches:
        counts[si[s], ti[t]] += 1
    pairs = {sperm_ids[i]: track_ids[j] for i, j in _hungarian_max(counts)}
    consistent = sum(counts[si[s], ti[t]] for s, t in pairs.items())
    result: dict[str, Any] = {
        "identity_consistent": consistent / len(truth) if truth else math.nan,
        "matched_share": len(matches) / len(truth) if truth else math.nan,
        "n_truth_positions": len(truth),
        "n_truth_sperm": len(sperm_ids),
        "n_tracks": len(track_ids),
        "max_distance_um": max_distance_um,
        **(mot_metrics(est, truth, max_px) if truth else {}),
    }
    result["kinematics"], result["per_sperm"] = _kinematics_errors(
        read_rows_csv(truth_dir / "kinematics.csv"), read_rows_csv(out_dir / "kinematics.csv"), pairs
    )
    if write:
        atomic_write_json(out_dir / "evaluation.json", result)
    return result


def _kinematics_errors(truth_kin: list[dict], est_kin: list[dict], pairs: dict[int, int]) -> tuple[dict, list]:
    est = {int(r["track_id"]): r for r in est_kin}
    per, vcl_err, beat_err, same_class = [], [], [], []
    for t in truth_kin:
        sid = int(t["track_id"])
        e = est.get(pairs.get(sid, -1))
        row = {"sperm_id": sid, "track_id": pairs.get(sid), "vcl_true": t["vcl_um_s"], "beat_true": t["beat_hz"],
               "class_true": t["class"]}  # fmt: skip
        if e is not None:
            row.update(vcl=e["vcl_um_s"], beat=e["beat_hz"], cls=e["class"])
            vt, ve = float(t["vcl_um_s"]), float(e["vcl_um_s"])
            if math.isfinite(vt) and vt > 0 and math.isfinite(ve):
                row["vcl_rel_error"] = abs(ve - vt) / vt
                vcl_err.append(row["vcl_rel_error"])
            bt, be = float(t["beat_hz"]), float(e["beat_hz"])
            if math.isfinite(bt) and math.isfinite(be):
                row["beat_error_hz"] = abs(be - bt)
                beat_err.append(row["beat_error_hz"])
            if isinstance(t["class"], str) and t["class"]:
                same_class.append(t["class"] == e["class"])
        per.append(row)

    def med(v: list[float]) -> float:
        return float(np.median(v)) if v else math.nan

    summary = {
        "median_vcl_rel_error": med(vcl_err),
        "n_vcl": len(vcl_err),
        "median_beat_error_hz": med(beat_err),
        "n_beat": len(beat_err),
        "class_agreement": float(np.mean(same_class)) if same_class else math.nan,
        "n_class": len(same_class),
    }
    return summary, per
