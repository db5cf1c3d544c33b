"""trackpy vs laptrack on the same detections of synthetic videos: the linker comparison of docs/tracking.md.

Usage::

    spermseg synth --out SYN --train 0 --test 0 --test-small 0 --videos 4 --frames 75 --seed 1
    PYTHONPATH=src .venv/bin/python scripts/compare_linkers.py --videos SYN/videos --out /tmp/linkers

For every video, ``spermseg track --masks VIDEO/truth/full`` detects the heads once (its tracks.csv holds every
detection); the same detections are then linked again by each linker with the same search range (``max_speed_um_s
/ fps``) and gap (``gap_frames`` missed frames), kinematics are computed per track as ``track`` does, and each
result is scored against the truth (``evaluation.tracking.evaluate_tracks``). Conditions: the exact detections,
and the same with a share of the heads dropped at random (missed detections, which gap closing must bridge) and
the rest jittered (segmentation noise). Link time is the linker alone, all frames of one video.

laptrack (``pip install laptrack``) is needed by this script only; the library does not import it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

FIELDS = ("frame", "head_x_um", "head_y_um", "tail_angle_rad", "tail_length_um")


def link_trackpy(frames: list[np.ndarray], search_px: float, gap: int) -> list[list[int]]:
    """Track ids per detection, frame by frame (the ``spermseg track`` linker)."""
    from spermseg.inference.tracking import HeadLinker

    linker = HeadLinker(search_px, gap)
    return [linker.link(f, xy) for f, xy in enumerate(frames)]


def link_laptrack(frames: list[np.ndarray], search_px: float, gap: int) -> list[list[int]]:
    """Track ids per detection with laptrack's global LAP linking and gap closing (no splits or merges)."""
    import pandas as pd
    from laptrack import LapTrack

    df = pd.DataFrame(
        [(f, i, x, y) for f, xy in enumerate(frames) for i, (x, y) in enumerate(xy)], columns=["frame", "i", "x", "y"]
    )
    lt = LapTrack(
        metric="sqeuclidean",
        cutoff=search_px**2,
        gap_closing_metric="sqeuclidean",
        gap_closing_cutoff=search_px**2,
        gap_closing_max_frame_count=gap + 1,  # frame difference: `gap` missed frames in between
        splitting_cutoff=False,
        merging_cutoff=False,
    )
    track_df, _, _ = lt.predict_dataframe(df, ["x", "y"], only_coordinate_cols=False)
    ids = [[0] * len(xy) for xy in frames]
    for f, i, t in zip(track_df["frame"], track_df["i"], track_df["track_id"]):
        ids[int(f)][int(i)] = int(t) + 1
    return ids


LINKERS = {"trackpy": link_trackpy, "laptrack": link_laptrack}


def write_result(out: Path, dets: list[list[dict[str, Any]]], ids: list[list[int]], info: dict, fps: float) -> None:
    """tracks.csv, kinematics.csv and track.json of one linking, as ``spermseg track`` writes them."""
    from spermseg.inference.track_outputs import TRACK_COLUMNS
    from spermseg.inference.tracking import OpenTracks
    from spermseg.kinematics import KINEMATICS_COLUMNS, KinematicsConfig
    from spermseg.utils.atomic import atomic_write_json
    from spermseg.utils.table import write_rows_csv

    rows = [{**d, "track_id": t} for ds, ts in zip(dets, ids) for d, t in zip(ds, ts)]
    rows.sort(key=lambda r: (r["frame"], r["track_id"]))
    tracks = OpenTracks(fps, KinematicsConfig(), memory=0)
    tracks.add(rows)
    write_rows_csv(out / "tracks.csv", TRACK_COLUMNS, rows)
    write_rows_csv(out / "kinematics.csv", KINEMATICS_COLUMNS, tracks.finish_all())
    atomic_write_json(out / "track.json", info)


def main() -> None:
    from spermseg.evaluation.tracking import evaluate_tracks
    from spermseg.inference.tracking import TrackConfig, track_source
    from spermseg.utils.table import read_rows_csv

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=Path, required=True, help="the videos/ folder of spermseg synth --videos")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--pixel-size", type=float, default=0.3)
    parser.add_argument("--drop", type=float, default=0.1, help="share of heads dropped in the noisy condition")
    parser.add_argument("--jitter-px", type=float, default=1.0, help="std of the head jitter in that condition")
    args = parser.parse_args()
    cfg = TrackConfig()
    search_px = cfg.max_speed_um_s / args.fps / args.pixel_size
    table: list[dict[str, Any]] = []
    for video in sorted(p for p in args.videos.iterdir() if (p / "truth").is_dir()):
        base = args.out / "detect" / video.name
        if not (base / "track.json").exists():
            track_source(video / "truth" / "full", base, cfg, masks=True, fps=args.fps, pixel_size=args.pixel_size,
                         show_progress=False, force=True)  # fmt: skip
        info = json.loads((base / "track.json").read_text())
        rows = read_rows_csv(base / "tracks.csv")
        n = int(info["frames_processed"])
        rng = np.random.default_rng(0)
        for cond in ("exact", "noisy"):
            dets: list[list[dict[str, Any]]] = [[] for _ in range(n)]
            for r in rows:
                if cond == "noisy" and rng.random() < args.drop:
                    continue
                d = {k: r[k] for k in r if k != "track_id"}
                if cond == "noisy":
                    dx, dy = rng.normal(0, args.jitter_px, 2)
                    d.update(head_x=d["head_x"] + dx, head_y=d["head_y"] + dy)
                    d.update(head_x_um=d["head_x"] * args.pixel_size, head_y_um=d["head_y"] * args.pixel_size)
                dets[int(r["frame"])].append(d)
            frames = [np.array([[d["head_x"], d["head_y"]] for d in ds], float).reshape(-1, 2) for ds in dets]
            for name, link in LINKERS.items():
                t0 = time.perf_counter()
                ids = link(frames, search_px, cfg.gap_frames)
                seconds = time.perf_counter() - t0
                out = args.out / cond / name / video.name
                out.mkdir(parents=True, exist_ok=True)
                write_result(out, dets, ids, info, args.fps)
                ev = evaluate_tracks(out, video / "truth")
                table.append({"video": video.name, "condition": cond, "linker": name, "link_s": seconds,
                              "n_tracks": ev["n_tracks"], **{k: ev[k] for k in ("identity_consistent", "mota", "idf1",
                              "num_switches")}, "vcl_err": ev["kinematics"]["median_vcl_rel_error"]})  # fmt: skip
    print("| condition | linker | video | identity-consistent | MOTA | IDF1 | ID switches | tracks | median rel. VCL "
          "error | link time, ms |\n|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    for r in sorted(table, key=lambda r: (r["condition"], r["linker"], r["video"])):
        print(f"| {r['condition']} | {r['linker']} | {r['video']} | {r['identity_consistent']:.3f} | {r['mota']:.3f} | "
              f"{r['idf1']:.3f} | {r['num_switches']} | {r['n_tracks']} | {r['vcl_err']:.3f} | "
              f"{1000 * r['link_s']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
