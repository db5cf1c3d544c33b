"""Train the built-in model on synthetic data only and write it into the package (``--model builtin``).

Steps, each an ordinary spermseg command (run in this process), all seeded:

1. ``spermseg synth``  : a synthetic ICSI dataset (``--data-seed``): no real image, so no data licence attaches;
2. ``spermseg train``  : one network on it (``--model``, ``--width``, ``--preset``, ``--seed``, ``--set``);
3. ``spermseg bundle`` : the run as a single-model bundle (threshold = its validation t_opt);
4. float16 export into ``--dest`` (default: the package folder ``src/spermseg/builtin/``) with
   :func:`spermseg.inference.builtin.write_builtin`; ``bundle.json["builtin"]`` records this script's command line,
   the three commands, the data seed, the training seed, the spermseg and torch versions, the git commit and the
   run's validation and synthetic-test scores.

Usage (from the repository root)::

    python scripts/train_builtin.py                                  # defaults below; minutes to hours on a CPU
    python scripts/train_builtin.py --work /tmp/builtin --data-seed 0 --seed 0 --model unet --width 16
    python scripts/train_builtin.py --train 6 --test 2 --size 96 96 --preset demo --dest /tmp/b   # a smoke run

The same arguments give the same weights on the same machine and versions (deterministic training); ``--dest``
then holds a new ``bundle.json`` (its ``created`` time differs). Zero-shot scores on real images are measured
separately (README, "Built-in model"), never used to choose anything here.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def _run(argv: list[str], commands: list[str]) -> None:
    """Run one spermseg command in this process; stop the script when it fails."""
    from spermseg.cli import main

    commands.append(shlex.join(["spermseg", *argv]))
    print(f"$ {commands[-1]}", file=sys.stderr, flush=True)
    code = main(argv)
    if code != 0:
        raise SystemExit(f"train_builtin: '{commands[-1]}' failed with exit code {code}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/builtin"), help="working folder (data, run, bundle)")
    parser.add_argument("--dest", type=Path, default=None, help="where to write (default: src/spermseg/builtin)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--train", type=int, default=400, help="synthetic training images")
    parser.add_argument("--test", type=int, default=40, help="synthetic test images (scored, recorded)")
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"), help="image size")
    parser.add_argument("--images-per-video", type=int, default=2, help="synthetic images per video (group)")
    parser.add_argument("--model", default="unet", help="network (spermseg models)")
    parser.add_argument("--width", type=int, default=16, help="network width")
    parser.add_argument("--preset", default="cpu", help="training preset (paper, cpu, demo)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="training config override")
    parser.add_argument("--synth-set", action="append", default=[], metavar="KEY=VALUE", help="synth parameter")
    parser.add_argument("--device", default="auto", help="training device")
    parser.add_argument("--force", action="store_true", help="regenerate data and retrain in --work")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from spermseg.inference.builtin import write_builtin
    from spermseg.inference.bundle import BUILTIN_DIR

    work, dest = args.work, args.dest or BUILTIN_DIR
    data, run, bundle = work / "synth", work / "run", work / "bundle"
    force = ["--overwrite"] if args.force else []
    commands: list[str] = []
    synth = ["synth", "--out", str(data), "--train", str(args.train), "--test", str(args.test), "--test-small",
             "0", "--size", *map(str, args.size), "--seed", str(args.data_seed), "--images-per-video",
             str(args.images_per_video), *[x for kv in args.synth_set for x in ("--set", kv)], *force]  # fmt: skip
    if args.force or not (data / "synth.json").is_file():
        _run(synth, commands)
    else:  # the whole command, so that the recorded steps stay rerunnable (--force regenerates)
        commands.append(f"(kept {data}, made by an earlier run; this run's arguments give: "
                        f"{shlex.join(['spermseg', *synth])})")  # fmt: skip
    sets = [f"model.width={args.width}", "data.test_split=test", *args.set]
    train = ["train", "--data", str(data), "--model", args.model, "--preset", args.preset, "--seed", str(args.seed),
             "--out", str(run), "--device", args.device, *[x for kv in sets for x in ("--set", kv)]]  # fmt: skip
    _run(train + (["--force"] if args.force else []), commands)
    _run(["bundle", "--base", str(run), "--out", str(bundle)], commands)
    result = json.loads((run / "result.json").read_text())
    provenance = {
        "trained_on": "synthetic data only (spermseg synth); no real image",
        "command": shlex.join(["python", "scripts/train_builtin.py", *(sys.argv[1:] if argv is None else argv)]),
        "steps": commands,
        "data_seed": args.data_seed,
        "seed": args.seed,
        "synth": {"train": args.train, "test": args.test, "size": list(args.size), "set": list(args.synth_set)},
        "torch_version": torch.__version__.split("+")[0],
        "git_commit": _git_commit(),
        "validation": result.get("validation"),
        "synthetic_test": result.get("test"),
    }
    write_builtin(bundle, dest, provenance)
    size = sum(f.stat().st_size for f in dest.glob("*.safetensors")) / 1e6
    test_ap = (result.get("test") or {}).get("ap")
    print(f"wrote the built-in model to {dest} ({size:.1f} MB float16); synthetic test AP {test_ap}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
