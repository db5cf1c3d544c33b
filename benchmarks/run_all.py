"""Run every ``benchmarks/bench_*.py`` in a fresh process and rewrite ``benchmarks/RESULTS.md`` (``make bench``).

Usage: ``python benchmarks/run_all.py [--quick] [--only NAME ...] [--timeout SECONDS]``.
A failing script leaves a section saying so (with the end of its error output); the others still run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import RESULTS, machine_markdown  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every script (smoke test)")
    parser.add_argument("--only", nargs="*", default=None, help="script names to run (e.g. data for bench_data.py)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per script")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file to rewrite")
    args = parser.parse_args(argv)

    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in args.only]
    sections: list[str] = []
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for script in scripts:
            out = Path(tmp) / f"{script.stem}.md"
            cmd = [sys.executable, str(script), "--out", str(out)] + (["--quick"] if args.quick else [])
            print(f"== {script.name}", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(
                    cmd,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                    timeout=args.timeout,
                    cwd=HERE.parent,
                )
                ok, err = proc.returncode == 0 and out.exists(), proc.stderr
            except subprocess.TimeoutExpired as exc:
                ok, err = False, f"timed out after {args.timeout:.0f} s\n{exc.stderr or ''}"
            sys.stderr.write(err if not ok else "")
            if ok:
                sections.append(out.read_text())
            else:
                failed += 1
                tail = "\n".join(str(err).strip().splitlines()[-15:])
                sections.append(f"## {script.name}: FAILED\n\n```\n{tail}\n```\n")
            print(f"   {'ok' if ok else 'FAILED'} in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    header = (
        "# Benchmark results\n\n"
        f"Written by `make bench` (`benchmarks/run_all.py`{' --quick' if args.quick else ''}) on {stamp}. "
        "Each section is produced by one `benchmarks/bench_*.py` script (run one alone to refresh its section). "
        "Times are medians after warm-up; ratios compare cases side by side on the same machine.\n\n"
        f"{machine_markdown()}\n"
    )
    tmp_out = args.out.with_name(f".{args.out.name}.tmp")
    tmp_out.write_text(header + "\n" + "\n".join(sections))
    tmp_out.replace(args.out)
    print(f"wrote {args.out} ({len(scripts) - failed}/{len(scripts)} scripts ok)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
