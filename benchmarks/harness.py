"""Shared benchmark harness: timing with warm-up and repeats, peak memory, machine info, RESULTS.md sections.

Every ``benchmarks/bench_*.py`` uses it the same way::

    from harness import Table, bench_main, measure

    def run(quick: bool) -> str:
        t = Table("what", ratio_to="baseline")
        t.add(measure(lambda: work(), name="baseline", repeat=5))
        return "Some words.\\n\\n" + t.markdown()

    if __name__ == "__main__":
        bench_main("section name", run)

``python benchmarks/bench_x.py`` replaces its section of ``benchmarks/RESULTS.md``; ``benchmarks/run_all.py``
(``make bench``) runs every script in a fresh process and rewrites the whole file. Performance goals are checked
here, as side-by-side ratios, never in the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import re
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
_BEGIN = "<!-- BEGIN {name} -->"
_END = "<!-- END {name} -->"


@dataclass
class Measurement:
    """Timings (seconds per call) and memory peaks of one benchmarked callable.

    Attributes:
        name: label shown in tables.
        times: wall time of each timed repeat (after warm-up), seconds per call.
        py_peak_mb: peak of Python-tracked allocations (tracemalloc; includes NumPy buffers, not torch CPU
            tensors) during one extra traced call; None when not traced.
        rss_peak_mb: process peak resident set size after the runs (``ru_maxrss``; monotone over the process).
        cuda_peak_mb: peak CUDA memory allocated by torch during the timed calls; None on CPU.
        items: work items per call (images, batches), for throughput.
        extra: free-form numbers to show.
    """

    name: str
    times: list[float]
    py_peak_mb: float | None = None
    rss_peak_mb: float | None = None
    cuda_peak_mb: float | None = None
    items: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def spread(self) -> float:
        """Half the interquartile range relative to the median (robust spread; 0 for fewer than 2 runs)."""
        if len(self.times) < 2:
            return 0.0
        q = statistics.quantiles(self.times, n=4, method="inclusive")
        return (q[2] - q[0]) / 2 / self.median if self.median > 0 else 0.0

    @property
    def throughput(self) -> float:
        """Items per second at the median time."""
        return self.items / self.median if self.median > 0 else float("inf")


def _sync(device: Any) -> None:
    if device is not None and str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def measure(
    fn: Callable[[], Any],
    *,
    name: str,
    repeat: int = 5,
    warmup: int = 1,
    items: int = 1,
    trace_memory: bool = True,
    device: Any = None,
    setup: Callable[[], Any] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Measurement:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeat`` timed calls, then one traced call for memory.

    Args:
        fn: the work; its return value is discarded (kept alive until the timer stops).
        name: label.
        repeat: timed calls (median and spread are computed over them).
        warmup: untimed calls first (lazy imports, caches, cuDNN autotuning, allocator warm-up).
        items: work items per call, for throughput.
        trace_memory: run one extra call under ``tracemalloc`` for the Python/NumPy peak (not timed, since
            tracing slows allocation-heavy code several-fold).
        device: a torch device; on CUDA, calls are synchronized and the CUDA peak is recorded.
        setup: called before every call, untimed (e.g. to drop a cache).
        clock: the timer; ``time.process_time`` measures this process's CPU time, which waiting for a busy CPU
            does not inflate (single-threaded work on a shared machine).
    """
    cuda = device is not None and str(device).startswith("cuda")
    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        if setup:
            setup()
        fn()
        _sync(device)
    times: list[float] = []
    for _ in range(repeat):
        if setup:
            setup()
        gc.collect()
        t0 = clock()
        out = fn()
        _sync(device)
        times.append(clock() - t0)
        del out
    py_peak = None
    if trace_memory:
        if setup:
            setup()
        gc.collect()
        tracemalloc.start()
        try:
            fn()
            _sync(device)
            py_peak = tracemalloc.get_traced_memory()[1] / 2**20
        finally:
            tracemalloc.stop()
    cuda_peak = None
    if cuda:
        import torch

        cuda_peak = torch.cuda.max_memory_allocated(device) / 2**20
    return Measurement(
        name=name, times=times, py_peak_mb=py_peak, rss_peak_mb=rss_peak_mb(), cuda_peak_mb=cuda_peak, items=items
    )


def rss_peak_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _fmt_time(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} us"


def _fmt_mb(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}" if v >= 10 else f"{v:.1f}"


class Table:
    """A Markdown table of measurements with a ratio column against one row (side-by-side comparison)."""

    def __init__(self, title: str, *, ratio_to: str | None = None, unit: str = "item") -> None:
        self.title = title
        self.ratio_to = ratio_to
        self.unit = unit
        self.rows: list[Measurement] = []

    def add(self, m: Measurement) -> Measurement:
        self.rows.append(m)
        print(f"  {m.name}: {_fmt_time(m.median)} +- {m.spread * 100:.0f}%", file=sys.stderr, flush=True)
        return m

    def markdown(self) -> str:
        base = next((r for r in self.rows if r.name == self.ratio_to), None)
        extra_keys = list(dict.fromkeys(k for r in self.rows for k in r.extra))
        head = ["case", "median", "spread", f"{self.unit}s/s"]
        if base is not None:
            head.append(f"time vs {base.name}")
        head += ["py peak MiB", "RSS peak MiB", "CUDA peak MiB", *extra_keys]
        lines = [f"**{self.title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            cells = [r.name, _fmt_time(r.median), f"+-{r.spread * 100:.0f}%", f"{r.throughput:.3g}"]
            if base is not None:
                cells.append(f"{r.median / base.median:.2f}x")
            cells += [_fmt_mb(r.py_peak_mb), _fmt_mb(r.rss_peak_mb), _fmt_mb(r.cuda_peak_mb)]
            cells += [str(r.extra.get(k, "")) for k in extra_keys]
            lines.append("| " + " | ".join(cells) + " |")
        n = {len(r.times) for r in self.rows}
        lines += [
            "",
            f"median over {'/'.join(map(str, sorted(n)))} timed runs after warm-up; spread = half IQR / median.",
        ]
        return "\n".join(lines)


def machine_info() -> dict[str, str]:
    """Machine and library versions, for the header of every result."""
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "cpu": _cpu_model(),
        "cpu vector units": _cpu_vector_flags(),
        "cpus": str(os.cpu_count()),
    }
    with contextlib.suppress(OSError):
        info["load average"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    for mod in ("spermseg", "numpy", "torch", "scipy", "cv2", "PIL", "onnxruntime"):
        try:
            m = __import__(mod)
            info[mod] = getattr(m, "__version__", "?")
        except Exception:  # noqa: BLE001 - optional libraries may be missing or broken
            continue
    try:
        import torch

        info["torch threads"] = str(torch.get_num_threads())
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["cuda"] = str(torch.version.cuda)
    except Exception:  # noqa: BLE001
        pass
    return info


def _cpuinfo(field: str) -> str | None:
    """The first ``field`` of /proc/cpuinfo (None where there is none: not Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


#: the instruction sets that set the speed of convolutions and of bf16 (the model name alone, e.g. "AMD EPYC",
#: covers machines with and without AVX-512 and bf16: a `cpu` preset epoch took 13 s on AMX, 74 s on AVX2 only)
_VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")


def _cpu_vector_flags() -> str:
    line = _cpuinfo("flags")
    if line is None:
        return "unknown"
    flags = set(line.split())
    return " ".join(f for f in _VECTOR_FLAGS if f in flags) or "none of " + " ".join(_VECTOR_FLAGS)


def machine_markdown(info: dict[str, str] | None = None) -> str:
    info = info or machine_info()
    return "\n".join(f"- {k}: {v}" for k, v in info.items())


def write_section(name: str, markdown: str, path: Path = RESULTS) -> None:
    """Replace (or append) the section ``name`` of ``path``, delimited by HTML comment markers; atomic."""
    begin, end = _BEGIN.format(name=name), _END.format(name=name)
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def section_markdown(title: str, body: str, *, wall_s: float) -> str:
    """A section: heading, body, and the date, wall time and machine it ran on."""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return (
        f"## {title}\n\n{body.strip()}\n\n<details><summary>machine ({stamp}, {wall_s:.0f} s)</summary>\n\n"
        f"{machine_markdown()}\n\n</details>\n"
    )


def bench_main(title: str, run: Callable[[bool], str], argv: Sequence[str] | None = None) -> int:
    """Command line of a bench script: ``[--quick] [--out FILE]``.

    Without ``--out`` the section ``title`` of ``benchmarks/RESULTS.md`` is replaced; with it the section is
    written to FILE (used by ``run_all.py``).
    """
    parser = argparse.ArgumentParser(description=f"benchmark: {title}")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller inputs (smoke test)")
    parser.add_argument("--out", type=Path, default=None, help="write the section to this file instead")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    body = run(args.quick)
    section = section_markdown(title, body, wall_s=time.perf_counter() - t0)
    if args.out is not None:
        args.out.write_text(section)
    else:
        write_section(title, section)
    print(section)
    return 0
