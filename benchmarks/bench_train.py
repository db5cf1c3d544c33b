"""Training step throughput: ``unet`` at 256x256, contiguous (NCHW) vs channels_last, fp32 vs bf16, side by side.

One case is exactly one step of the training engine (:func:`spermseg.training.trainer.train_step`): the
augmentation of the data layer on the device, per-image minmax normalization, forward, BCE, backward and an Adam
step, on an in-memory batch. bf16 autocast cases are added on CUDA and on CPUs with native bf16, AMX or AVX-512
BF16 (the engine's default there, ``runtime.amp=auto``). Each case also reports the achieved GFLOP/s (3 x the
forward FLOPs per image, from ``spermseg.cli.models.count_macs``) beside the machine's measured matrix-multiply
peak in the same precision (``torch.mm`` of 2048 x 2048 matrices on the same threads), so the table says how far a
training step is from what the processor can do.

Sizes: the paper's width (64) and batch 5 on CUDA; on the CPU width 16 and batch 4 (width 8, batch 2 with
``--quick``), because a width-64 step at 256x256 takes tens of seconds on two cores. Environment variables:
``SPERMSEG_BENCH_DEVICE`` (``auto``, ``cpu``, ``cuda``), ``SPERMSEG_BENCH_THREADS`` (torch intra-op threads;
on a shared, loaded CPU set ``OMP_WAIT_POLICY=PASSIVE`` too, or OpenMP threads spin at every barrier).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Table, bench_main, measure  # noqa: E402

SIZE = 256


def _step_fn(device: Any, width: int, batch: int, channels_last: bool, amp: bool) -> Any:
    """A closure running one engine training step on a fixed random batch (fresh augmentation each call)."""
    import torch

    from spermseg.data.transforms import AugmentConfig, Augmenter
    from spermseg.models import create_model
    from spermseg.training.config import LossConfig
    from spermseg.training.losses import build_loss
    from spermseg.training.trainer import call_base, make_inputs, train_step

    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = create_model("unet", width=width).to(device, memory_format=fmt).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = build_loss(LossConfig())
    augmenter = Augmenter(AugmentConfig())
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 1, SIZE, SIZE, generator=g).to(device)
    target = (torch.rand(batch, 1, SIZE, SIZE, generator=g) > 0.95).float().to(device)

    def step() -> Any:
        x, y = augmenter(images, target, g, "minmax")
        inputs = make_inputs(x, None, fmt)
        return train_step(model, call_base, inputs, y, optimizer, loss_fn, amp=amp, device=device)

    return step


def matmul_peak_gflops(device: Any, dtype: Any, n: int = 2048, repeat: int = 5) -> float:
    """Best-of-``repeat`` GFLOP/s of an n x n matrix product (2 n^3 FLOPs) on ``device`` in ``dtype``."""
    import time

    import torch

    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)  # warm-up (oneDNN/cuBLAS kernel selection)
    best = float("inf")
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def train_gflop_per_image(width: int) -> float:
    """Training FLOPs of one image: forward + backward ~ 3 x forward (2 FLOPs per MAC), at SIZE x SIZE."""
    import torch

    from spermseg.models import create_model
    from spermseg.models.profile import count_macs

    with torch.device("meta"):
        model = create_model("unet", width=width)
        x = torch.empty(1, 1, SIZE, SIZE)
    return 3 * 2 * count_macs(model, (x,)) / 1e9


def run(quick: bool) -> str:
    import torch

    from spermseg.utils.device import resolve_device

    device = resolve_device(os.environ.get("SPERMSEG_BENCH_DEVICE", "auto"))
    threads = os.environ.get("SPERMSEG_BENCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    cuda = device.type == "cuda"
    width, batch = (64, 5) if cuda else ((8, 2) if quick else (16, 4))
    repeat = 3 if quick else (20 if cuda else 5)
    from spermseg.inference.forward import cpu_has_fast_bf16

    cases = [("NCHW fp32", False, False), ("channels_last fp32", True, False)]
    bf16 = cuda or cpu_has_fast_bf16()
    if bf16:
        cases += [("NCHW bf16", False, True), ("channels_last bf16", True, True)]
    peaks = {False: matmul_peak_gflops(device, torch.float32)}
    if bf16:
        peaks[True] = matmul_peak_gflops(device, torch.bfloat16)
    gflop = train_gflop_per_image(width)
    table = Table(
        f"unet width {width}, batch {batch}, {SIZE}x{SIZE}, {device.type}", ratio_to="NCHW fp32", unit="image"
    )
    for name, cl, amp in cases:
        fn = _step_fn(device, width, batch, cl, amp)
        m = measure(fn, name=name, repeat=repeat, warmup=2, items=batch, trace_memory=False, device=device)
        achieved = gflop * m.throughput
        m.extra.update({"GFLOP/s": f"{achieved:.1f}", "% of matmul peak": f"{100 * achieved / peaks[amp]:.1f}"})
        table.add(m)
    base = table.rows[0].throughput
    ratios = ", ".join(f"{r.name} {r.throughput:.1f} img/s ({r.throughput / base:.2f}x)" for r in table.rows)
    peak_txt = ", ".join(f"{'bf16' if k else 'fp32'} {v:.0f} GFLOP/s" for k, v in peaks.items())
    return (
        "Images per second of one training step of the engine (augmentation on the device, minmax normalization, "
        "forward, BCE, backward, Adam), contiguous vs channels_last memory format"
        + (" and fp32 vs bf16 autocast" if bf16 else "")
        + f"; {gflop:.2f} GFLOP per training image; measured matmul peak on these threads: {peak_txt}."
        + f"\n\n{table.markdown()}\n\nSide by side: {ratios}.\n"
    )


if __name__ == "__main__":
    raise SystemExit(bench_main("Training step (unet, channels_last)", run))
