"""Track scoring against truth (spermseg.evaluation.tracking): identity share, MOTA/IDF1, kinematics errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spermseg.evaluation.tracking import evaluate_tracks
from spermseg.utils.table import write_rows_csv


def _write(tmp_path: Path, est: list[tuple[int, int, float, float]], kin_est: list[dict]) -> tuple[Path, Path]:
    truth, out = tmp_path / "truth", tmp_path / "out"
    rows = [{"sperm_id": s, "frame": f, "head_x": 10.0 * s + f, "head_y": 50.0 * s} for s in (1, 2) for f in range(10)]
    write_rows_csv(truth / "tracks.csv", ("sperm_id", "frame", "head_x", "head_y"), rows)
    write_rows_csv(truth / "kinematics.csv", ("track_id", "vcl_um_s", "beat_hz", "class"),
                   [{"track_id": 1, "vcl_um_s": 10.0, "beat_hz": 4.0, "class": "progressive"},
                    {"track_id": 2, "vcl_um_s": 0.0, "beat_hz": 0.0, "class": "immotile"}])  # fmt: skip
    write_rows_csv(out / "tracks.csv", ("track_id", "frame", "head_x", "head_y"),
                   [{"track_id": t, "frame": f, "head_x": x, "head_y": y} for t, f, x, y in est])  # fmt: skip
    write_rows_csv(out / "kinematics.csv", ("track_id", "vcl_um_s", "beat_hz", "class"), kin_est)
    (out / "track.json").write_text(json.dumps({"pixel_size_um": 1.0}))
    return out, truth


def test_an_identity_switch_costs_the_identity_share_and_mota(tmp_path: Path) -> None:
    """Track 1 follows sperm 1 throughout; sperm 2 is followed by track 2 for 5 frames, then by track 3:
    identity-consistent share (10 + 5) / 20 = 0.75, one ID switch, MOTA 1 - 1/20 = 0.95."""
    est = [(1, f, 10.0 + f + 0.3, 50.0) for f in range(10)]
    est += [(2 if f < 5 else 3, f, 20.0 + f, 100.0 - 0.4) for f in range(10)]
    kin = [{"track_id": 1, "vcl_um_s": 11.0, "beat_hz": 4.5, "class": "progressive"},
           {"track_id": 2, "vcl_um_s": 0.5, "beat_hz": 0.0, "class": "immotile"}]  # fmt: skip
    out, truth = _write(tmp_path, est, kin)
    ev = evaluate_tracks(out, truth)
    assert ev["identity_consistent"] == pytest.approx(0.75)
    assert ev["num_switches"] == 1 and ev["mota"] == pytest.approx(0.95)
    assert ev["matched_share"] == 1.0
    k = ev["kinematics"]
    assert k["median_vcl_rel_error"] == pytest.approx(0.1) and k["n_vcl"] == 1  # immotile truth: no relative error
    assert k["median_beat_error_hz"] == pytest.approx(0.25)  # median of 0.5 and 0.0
    assert k["class_agreement"] == 1.0


def test_heads_beyond_the_distance_gate_are_misses(tmp_path: Path) -> None:
    """Estimates 3 px away with a 2 px gate match nothing: identity share 0, recall 0."""
    est = [(1, f, 10.0 + f + 3.0, 50.0) for f in range(10)]
    out, truth = _write(tmp_path, est, [])
    ev = evaluate_tracks(out, truth, max_distance_um=2.0)
    assert ev["identity_consistent"] == 0.0 and ev["recall"] == 0.0
