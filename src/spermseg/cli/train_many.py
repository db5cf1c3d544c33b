"""``spermseg train-many``: train a grid of models x seeds into ``OUT/<model>/seed<k>``, skipping finished runs.

Unfinished runs (killed before ``result.json``) are resumed; finished ones are skipped unless ``--force``. With
``--jobs N`` several runs go at once as separate processes (on a multi-GPU machine pass ``--device cuda``: job i
uses GPU ``i mod count``). Summarize the grid afterwards with ``spermseg summarize OUT``.

Example:
    spermseg train-many --data ROOT --models unet,att_unet,unet3p --seeds 0-4 --out runs --preset cpu
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from spermseg.config import parse_seeds  # noqa: F401 - re-exported (its old home)
from spermseg.errors import ConfigError

HELP = "train a grid of models x seeds, skipping finished runs"
EXAMPLE = "spermseg train-many --data data/segsperm --models unet,att_unet --seeds 0-4 --out runs --preset cpu"


def run_dir_for(out: str | Path, model: str, seed: int) -> Path:
    """The run directory of one grid cell: ``OUT/<model>/seed<seed>``."""
    return Path(out) / model / f"seed{seed}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from spermseg.cli.train import add_common_arguments

    add_common_arguments(parser)
    parser.add_argument("--models", required=True, metavar="A,B,C", help="comma-separated base model names")
    parser.add_argument("--seeds", default="0", help="seeds: 0-4, 0,1,2 or 3 (default: 0)")
    parser.add_argument("--out", required=True, metavar="DIR", help="grid directory (OUT/<model>/seed<k>)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, as separate processes (default: 1)")
    parser.add_argument("--json", action="store_true", help="print the status of every run as JSON")
    parser.add_argument("--json-out", default=None, metavar="FILE", help="also write that JSON to FILE")


def _subprocess_args(args: argparse.Namespace, model: str, seed: int, run_dir: Path, device: str | None) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "spermseg",
        "train",
        "--data",
        str(args.data),
        "--model",
        model,
        "--seed",
        str(seed),
        "--out",
        str(run_dir),
        "--preset",
        args.preset,
        "--resume",
    ]
    if args.config:
        cmd += ["--config", str(args.config)]
    for item in args.overrides:
        cmd += ["--set", item]
    if device:
        cmd += ["--device", device]
    if args.force:
        cmd.append("--force")
    return cmd


def _device_for_job(device: str | None, job: int) -> str | None:
    """Spread jobs over GPUs when ``--device cuda`` is given on a multi-GPU machine."""
    if device != "cuda":
        return device
    import torch

    count = torch.cuda.device_count()
    return f"cuda:{job % count}" if count > 1 else device


def run(args: argparse.Namespace) -> int:
    from spermseg.cli._common import emit_json
    from spermseg.cli.train import build_config
    from spermseg.training.trainer import is_finished, train

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models:
        raise ConfigError("--models is empty; give e.g. --models unet,att_unet")
    seeds = parse_seeds(args.seeds)
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    # Resolve every config first: a typo in a model name or --set fails before hours of training.
    cells = [(m, s, run_dir_for(args.out, m, s)) for m in models for s in seeds]
    configs = {(m, s): build_config(args, model=m, seed=s) for m, s, _ in cells}
    from spermseg.models import model_kwargs

    for m in models:
        model_kwargs(m)  # raises ConfigError listing the valid models

    statuses: dict[str, dict[str, Any]] = {}
    todo = []
    for m, s, rd in cells:
        if is_finished(rd) and not args.force:
            statuses[f"{m}/seed{s}"] = {"status": "skipped (finished)", "run_dir": str(rd)}
        else:
            todo.append((m, s, rd))
    print(
        f"spermseg train-many: {len(cells)} runs, {len(cells) - len(todo)} finished, {len(todo)} to train",
        file=sys.stderr,
    )

    def one(job: int, m: str, s: int, rd: Path) -> tuple[str, dict[str, Any]]:
        t0 = time.perf_counter()
        key = f"{m}/seed{s}"
        if args.jobs == 1:
            try:
                res = train(configs[(m, s)], rd, resume=True, force=args.force, preset_name=args.preset)  # type: ignore[arg-type]
            except Exception as exc:  # keep going with the other runs; report at the end
                return key, {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "run_dir": str(rd)}
            ap = (res.result.get("validation") or {}).get("ap")
            return key, {"status": "trained", "run_dir": str(rd), "val_ap": ap, "wall_s": time.perf_counter() - t0}
        rd.mkdir(parents=True, exist_ok=True)
        log = rd / "train.log"
        with open(log, "ab") as fh:
            proc = subprocess.run(
                _subprocess_args(args, m, s, rd, _device_for_job(args.device, job)),
                stdout=fh,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if proc.returncode != 0 or not is_finished(rd):
            return key, {"status": "failed", "error": f"exit code {proc.returncode}; see {log}", "run_dir": str(rd)}
        ap = (json.loads((rd / "result.json").read_text()).get("validation") or {}).get("ap")
        return key, {"status": "trained", "run_dir": str(rd), "val_ap": ap, "wall_s": time.perf_counter() - t0}

    if args.jobs == 1:
        results = [one(0, m, s, rd) for m, s, rd in todo]
    else:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(lambda t: one(t[0], *t[1]), enumerate(todo)))
    statuses.update(dict(results))

    failed = [k for k, v in statuses.items() if v["status"] == "failed"]
    for key in sorted(statuses):
        st = statuses[key]
        extra = f" val AP {st['val_ap']:.4f}" if st.get("val_ap") is not None else ""
        extra += f" ({st['error']})" if st["status"] == "failed" else ""
        print(f"  {key}: {st['status']}{extra}", file=sys.stderr)
    report = {"out": str(args.out), "runs": statuses, "failed": failed}
    emit_json(args, report)
    return 1 if failed else 0
