"""Data efficiency: test IoU_opt after training on N real images, from scratch vs from given weights, same budget.

For every size N (``--sizes``), start (``scratch`` and each ``--init``) and seed (``--seeds``) this runs one
ordinary ``spermseg train`` (a subprocess, ``--jobs`` at a time, one thread each):

    spermseg train --data ROOT --model M --preset P --seed S --out OUT/nN/START/sS --resume
        --set data.train_images=N --set data.test_split=test --set schedule.epochs=E
        --set schedule.steps_per_epoch=K --set schedule.exact_steps=true [--init INIT] [--set ...]

* the same optimizer steps (``E x K``) for every N and start: the budget is fixed, not the epochs
  (``schedule.exact_steps``: an epoch of few images draws them again until it has K full batches);
* the same validation images for every N (``data.train_images`` draws N of the training part *after* the
  validation split, nested: the 12 images are among the 24), so checkpoint selection never sees test;
* a finished run is skipped when the script runs again (resumable; a killed run resumes from its last epoch).

The table (mean +- std over seeds of ``result.json["test"]``: full-sperm AP and IoU_opt vs the rater of the run)
is printed and written to ``OUT/table.md`` and ``OUT/table.json``.

Usage (from the repository root)::

    python scripts/data_efficiency.py --data ../shared/data/spermparsing --out runs/data_eff --init builtin
    python scripts/data_efficiency.py --data D --out O --sizes 12,24 --seeds 0 --steps 40 --steps-per-epoch 10
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="dataset root (SegSperm layout with train and test)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (one run folder per cell)")
    parser.add_argument("--sizes", default="12,24,48,0", help="training images per run; 0 = all (default: %(default)s)")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds (default: %(default)s)")
    parser.add_argument("--init", action="append", default=[], metavar="builtin|RUN_DIR|BUNDLE",
                        help="a start to compare with training from scratch (repeatable)")  # fmt: skip
    parser.add_argument("--model", default="unet", help="network (default: %(default)s)")
    parser.add_argument("--preset", default="cpu", help="training preset (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=400, help="optimizer steps per run (default: %(default)s)")
    parser.add_argument("--steps-per-epoch", type=int, default=20,
                        help="optimizer steps per epoch; epochs = --steps / this (default: %(default)s)")  # fmt: skip
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="training config override")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each (default: %(default)s)")
    return parser.parse_args(argv)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def cells(args: argparse.Namespace) -> list[dict]:
    """One dict per run: size, start label, seed, run folder and the ``spermseg train`` argument list."""
    if args.steps % args.steps_per_epoch:
        raise SystemExit(f"--steps {args.steps} is not a multiple of --steps-per-epoch {args.steps_per_epoch}")
    epochs = args.steps // args.steps_per_epoch
    starts = [("scratch", None)] + [(Path(i).name if i != "builtin" else "builtin", i) for i in args.init]
    out = []
    for n in _ints(args.sizes):
        for label, init in starts:
            for seed in _ints(args.seeds):
                run = args.out / f"n{n or 'all'}" / label / f"s{seed}"
                sets = [f"data.train_images={n}", "data.test_split=test", f"schedule.epochs={epochs}",
                        f"schedule.steps_per_epoch={args.steps_per_epoch}", "schedule.exact_steps=true",
                        "runtime.threads=1",
                        "runtime.progress=false", *args.set]  # fmt: skip
                argv = ["train", "--data", str(args.data), "--model", args.model, "--preset", args.preset,
                        "--seed", str(seed), "--out", str(run), "--resume",
                        *[x for kv in sets for x in ("--set", kv)]]  # fmt: skip
                if init:
                    argv += ["--init", init]
                out.append({"n": n, "start": label, "seed": seed, "run": run, "argv": argv})
    return out


def _train(cell: dict) -> tuple[dict, int, float]:
    if (cell["run"] / "result.json").is_file():
        return cell, 0, 0.0
    cell["run"].mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "spermseg", *cell["argv"]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    t0 = time.perf_counter()
    with open(cell["run"] / "train.log", "a") as log:
        code = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    return cell, code, time.perf_counter() - t0


def _mean_std(values: list[float]) -> str:
    import numpy as np

    v = np.asarray(values, dtype=float)
    return f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" if len(v) > 1 else f"{v.mean():.4f}"


def table(all_cells: list[dict]) -> tuple[str, dict]:
    """Markdown and JSON of the finished runs: one row per size, AP and IoU_opt per start."""
    scores: dict[tuple[int, str], dict[str, list[float]]] = {}
    n_train: dict[int, int] = {}
    for c in all_cells:
        path = c["run"] / "result.json"
        if not path.is_file():
            continue
        res = json.loads(path.read_text())
        test = res.get("test") or {}
        cell = scores.setdefault((c["n"], c["start"]), {"ap": [], "iou_opt": []})
        for key in cell:
            if test.get(key) is not None:
                cell[key].append(float(test[key]))
        n_train[c["n"]] = int(res["n_train"])
    starts = list(dict.fromkeys(c["start"] for c in all_cells))
    head = ["training images"] + [f"{s} {m}" for s in starts for m in ("AP", "IoU_opt")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in dict.fromkeys(c["n"] for c in all_cells):
        row = [str(n_train.get(n, n or "all"))]
        for s in starts:
            cell = scores.get((n, s), {"ap": [], "iou_opt": []})
            row += [_mean_std(cell[m]) + f" (n={len(cell[m])})" if cell[m] else "-" for m in ("ap", "iou_opt")]
        lines.append("| " + " | ".join(row) + " |")
    data = {f"{n}|{s}": v for (n, s), v in scores.items()}
    return "\n".join(lines) + "\n", {"n_train": n_train, "scores": data}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    todo = cells(args)
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    with ThreadPoolExecutor(max(args.jobs, 1)) as pool:
        for cell, code, wall in pool.map(_train, todo):
            label = f"n={cell['n'] or 'all'} {cell['start']} seed {cell['seed']}"
            if code:
                failed.append(label)
                print(f"FAILED {label} (exit {code}): {cell['run'] / 'train.log'}", flush=True)
            else:
                print(f"done {label}" + (f" in {wall:.0f} s" if wall else " (finished before)"), flush=True)
    md, data = table(todo)
    data["commands"] = [shlex.join(["spermseg", *c["argv"]]) for c in todo]
    (args.out / "table.md").write_text(md)
    (args.out / "table.json").write_text(json.dumps(data, indent=2))
    print(md)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
