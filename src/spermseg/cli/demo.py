"""``spermseg demo``: synthetic data -> ``reproduce --preset demo`` -> report (the main job, < 10 min on 2 cores).

1. ``spermseg synth`` writes a small synthetic ICSI dataset (SegSperm layout, three noisy raters, one video) into
   ``OUT/data`` (skipped when it is already there: the generator is deterministic for a seed).
2. ``reproduce --preset demo`` runs the paper's eight steps on it into ``OUT`` (resumable: re-running the demo
   skips what is finished).
3. A summary table, the time per step and the report's path are printed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from spermseg.cli._common import add_set_argument

HELP = "synthetic data -> small reproduce run -> report (the main job)"
EXAMPLE = "spermseg demo --out runs/demo"

# The synthetic dataset of the demo: small images so that training and evaluation fit the 10-minute budget on a
# 2-core CPU (see docs/reproduce.md for the measured time per step).
# 192x192 at 0.3 um/px (the generator's default magnification, inside the 0.08-0.35 um/px of lab microscopes): tails
# 2-3 px wide, so the simulated raters' 0.6-0.7 px contour noise leaves their labels within reach (at 0.5 um/px the
# truth itself scored only IoU 0.50 full / 0.47 tail against GT1; at 0.3, 0.62 / 0.56). More sperm per video than
# the generator's default gives the short CPU training enough foreground to learn from. Contrast mode: phase only.
# Measured (seed 1, best base full / tail IoU_opt): phase+relief equally 0.412 / 0.340 (below the demo's 0.45 /
# 0.35: at 720 steps the two looks split the budget), phase only 0.461 / 0.383 with the ensemble above the best
# base on every measure; 160 phase+relief images 0.475 / 0.392 but the ensemble below on tail IoU and more time.
# Bright-field belongs to stained smears at 0.08-0.16 um/px, where at 0.3 um/px tails all but vanish.
DEMO_SYNTH = {
    "train": 96,
    "test": 12,
    "test_small": 6,
    "size": (192, 192),
    "pixel_size": 0.3,
    "videos": 1,
    "frames": 12,
}
DEMO_SYNTH_CONFIG = "sperm:\n  count: [10, 18]\nappearance:\n  mode: mix\n  mix_weights: [1.0, 0.0, 0.0]\n"
BUDGET_S = 600.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``spermseg demo``."""
    parser.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic dataset (default: 1)")
    add_set_argument(parser, "blur_kernels=[1,5]", what="a ReproduceConfig key of the demo preset")
    parser.add_argument("--steps", default=None, help="comma-separated subset of the steps (default: all)")


def make_data(root: Path, seed: int) -> Path:
    """Generate the demo dataset with ``spermseg synth`` unless ``root`` already holds it."""
    from spermseg.cli import main
    from spermseg.errors import SpermsegError

    if (root / "synth.json").is_file():
        print(f"synthetic data: {root} (exists, reused)")
        return root
    from spermseg.utils.atomic import atomic_write_text

    s = DEMO_SYNTH
    synth_cfg = root.parent / "synth_config.yaml"
    atomic_write_text(synth_cfg, DEMO_SYNTH_CONFIG)
    argv = [
        "synth",
        "--out",
        str(root),
        "--train",
        str(s["train"]),
        "--test",
        str(s["test"]),
        "--test-small",
        str(s["test_small"]),
        "--size",
        str(s["size"][0]),
        str(s["size"][1]),
        "--pixel-size",
        str(s["pixel_size"]),
        "--seed",
        str(seed),
        "--videos",
        str(s["videos"]),
        "--frames",
        str(s["frames"]),
        "--no-mp4",
        "--config",
        str(synth_cfg),
        "--overwrite",
    ]
    print("synthetic data: spermseg " + " ".join(argv))
    code = main(argv)
    if code != 0:
        raise SpermsegError(f"'spermseg {' '.join(argv)}' failed (exit {code}); see the message above")
    return root


def summary_rows(records: dict) -> list[tuple[str, str, str, str]]:
    """(method, AP, IoU_0.5, IoU_opt) rows: base models (mean over seeds) and the ensembles, test vs. GT1."""
    from spermseg.experiments.report import fmt_ms

    rows = []
    base = records.get("base")
    if base is not None and base.finished and base.result:
        for m in base.result.get("ranking", []):
            s = base.result["summary"][m]
            rows.append((m, fmt_ms(s.get("ap")), fmt_ms(s.get("iou_0.5")), fmt_ms(s.get("iou_opt"))))
    ens = records.get("ensembles")
    if ens is not None and ens.finished and ens.result:
        table = ens.result["table"]
        for kind, by_sel in table.get("ap", {}).items():
            for sel in by_sel:
                rows.append(
                    (
                        f"{kind}|{sel}",
                        fmt_ms(table["ap"][kind][sel]),
                        fmt_ms(table.get("iou_0.5", {}).get(kind, {}).get(sel)),
                        fmt_ms(table.get("iou_opt", {}).get(kind, {}).get(sel)),
                    )
                )
    return rows


def run(args: argparse.Namespace) -> int:
    """Run the demo; exit 0 when every step finished (or was not applicable), 1 otherwise."""
    from spermseg.cli.reproduce import print_summary
    from spermseg.experiments.reproduce import reproduce_config, run_reproduce

    t0 = time.perf_counter()
    out = Path(args.out)
    data = make_data(out / "data", args.seed)
    t_synth = time.perf_counter() - t0
    print(f"  ({t_synth:.1f} s)")
    cfg = reproduce_config("demo", overrides=[f"data={data.resolve()}", *args.set])
    steps = [args.steps] if args.steps else None
    records, md, html = run_reproduce(cfg, out, steps=steps, command="spermseg demo --out " + str(out))
    rows = summary_rows(records)
    if rows:
        print(f"\nsummary on the synthetic test split vs. {cfg.rater} (mean ± std over seeds):")
        print(f"{'method':<18} {'AP':<17} {'IoU_0.5':<17} {'IoU_opt':<17}")
        for r in rows:
            print(f"{r[0]:<18} {r[1]:<17} {r[2]:<17} {r[3]:<17}")
    ens = records.get("ensembles")
    table = (ens.result or {}).get("headline") if ens is not None and ens.finished else None
    if table:
        from spermseg.experiments.headline import headline_rows

        heads, hrows = headline_rows(table)
        print(f"\nheadline ({table['split']} split vs {table['rater']}; also in {out / 'summary.json'}):")
        print("  ".join(heads))
        for r in hrows:
            print("  ".join(r))
    print_summary(records, md, html)
    total = time.perf_counter() - t0
    print(
        f"demo finished in {total:.0f} s (synthetic data {t_synth:.0f} s)"
        + ("" if total <= BUDGET_S else f"; over the {BUDGET_S:.0f} s budget")
    )
    selected = set(records) if steps is None else {n for s in steps for n in s.split(",") if n}
    return 0 if all(records[n].finished for n in selected if n in records) else 1
