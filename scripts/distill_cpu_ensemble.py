"""Students of the ``cpu`` ensemble: the teacher, its students and the speed/accuracy table, as one resumable run.

The commands of docs/training.md ("Students of the cpu ensemble"), in order; each step is skipped when its
result is on disk and resumed when it was interrupted, so the script can be run again after a kill:

    spermseg reproduce --data ROOT --out OUT/repro --preset cpu --models att_unet,unet,fpn --seeds 0
        --steps base,ensembles --set ensemble_kinds=[ens_att_v2] --set selections=[E3] --set ensemble_seeds=[0]
    spermseg bundle --ensemble R/ensembles/ens_att_v2_E3/s0 --out OUT/teacher_e3     # R = OUT/repro/runs
    spermseg distill --data ROOT --preset cpu --teacher OUT/teacher_e3 --student S --width W
        [--label-weight L] --cache OUT/teacher_cache --out OUT/student_S_wW[_lL]  # one per --students entry
    python benchmarks/bench_predict.py --only student --teacher OUT/teacher_e3 --student OUT/student_... --bases R/...

Students are given as ``NAME:WIDTH[:LABEL_WEIGHT]``. The benchmark (``--bench``) should run on idle cores: it
measures frames/s. Choose a student by its validation AP (``result.json``), never by the test AP it prints.

Usage (from the repository root)::

    python scripts/distill_cpu_ensemble.py --data ../shared/data/spermparsing --out runs/students \\
        --students unet:4 unet:16:0.5 --bench
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASES = ("att_unet", "unet", "fpn")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="dataset root (SegSperm layout with train and test)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (teacher, students, cache)")
    parser.add_argument("--students", nargs="+", default=["unet:4"], metavar="NAME:WIDTH[:LABEL_WEIGHT]",
                        help="students to distill (default: %(default)s)")  # fmt: skip
    parser.add_argument("--bench", action="store_true", help="run benchmarks/bench_predict.py at the end")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return parser.parse_args(argv)


def student_runs(out: Path, specs: list[str]) -> list[tuple[Path, list[str]]]:
    """``(run directory, distill flags)`` per ``NAME:WIDTH[:LABEL_WEIGHT]``."""
    runs = []
    for spec in specs:
        parts = spec.split(":")
        if len(parts) not in (2, 3):
            raise SystemExit(f"error: student '{spec}' is not NAME:WIDTH[:LABEL_WEIGHT], e.g. unet:4 or unet:16:0.5")
        name, width = parts[0], int(parts[1])
        flags = ["--student", name, "--width", str(width)]
        tag = f"student_{name}_w{width}"
        if len(parts) == 3:
            flags += ["--label-weight", parts[2]]
            tag += f"_l{parts[2].replace('.', '')}"
        runs.append((out / tag, flags))
    return runs


def run(cmd: list[str], dry_run: bool) -> None:
    print("+ " + shlex.join(cmd), flush=True)
    if not dry_run:
        subprocess.run(cmd, check=True, cwd=ROOT)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out, data = args.out, args.data
    repro = out / "repro"
    r = repro / "runs"
    bases = [str(r / "base" / b / "minmax" / "s0") for b in BASES]
    ensemble = r / "ensembles" / "ens_att_v2_E3" / "s0"
    teacher = out / "teacher_e3"
    spermseg = [sys.executable, "-m", "spermseg"]

    # reproduce resumes by itself: finished runs are skipped, an interrupted one continues from its checkpoint
    run(spermseg + ["reproduce", "--data", data, "--out", str(repro), "--preset", "cpu", "--models", ",".join(BASES),
                    "--seeds", "0", "--steps", "base,ensembles", "--set", "ensemble_kinds=[ens_att_v2]",
                    "--set", "selections=[E3]", "--set", "ensemble_seeds=[0]"], args.dry_run)  # fmt: skip
    if not (teacher / "bundle.json").is_file():
        # no --base: bundle takes the base models from the ensemble's mask cache, in the order it was trained on
        # (reproduce trains them in its own order, which need not be the order of --models)
        run(spermseg + ["bundle", "--ensemble", str(ensemble), "--out", str(teacher)], args.dry_run)
    students = student_runs(out, args.students)
    for run_dir, flags in students:
        if (run_dir / "result.json").is_file():
            print(f"# {run_dir} is done", flush=True)
            continue
        resume = ["--resume"] if run_dir.is_dir() else []
        cache = ["--cache", str(out / "teacher_cache")]
        run(spermseg + ["distill", "--data", data, "--preset", "cpu", "--teacher", str(teacher), *flags, *cache,
                        "--out", str(run_dir), *resume], args.dry_run)  # fmt: skip
    if args.bench:
        run([sys.executable, "benchmarks/bench_predict.py", "--only", "student", "--teacher", str(teacher),
             "--student", *[str(d) for d, _ in students], "--data", data, "--bases", *bases], args.dry_run)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
