"""Distillation: where the teacher's soft masks come from, the mask cache or the teacher online (per batch).

Measured pieces (the ``cpu`` preset's batch: 8 crops of 256x256 from 640x512 frames; student unet width 8):

* the cache's one teacher pass, per training frame (640x512, float32, the teacher's whole pipeline);
* one batch's augmentation with the cached masks replayed (``source=cache``);
* one batch's augmentation plus the teacher's forward on the augmented crops (``source=online``);
* one student training step (forward, backward, Adam), which both pay.

From them: the distillation time of ``--epochs`` epochs over ``--frames`` frames both ways, and the number of
epochs after which the cache is ahead. The teacher: ``--teacher BUNDLE`` (e.g. a bundle of the ``cpu`` unet), else
an untrained unet of width 16 (the ``cpu`` unet's architecture: the same cost).

Usage::

    python benchmarks/bench_distill.py --quick
    OMP_NUM_THREADS=1 python benchmarks/bench_distill.py --teacher runs/unet_cpu --frames 172 --epochs 100 --cpu-time
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Table, bench_main, measure  # noqa: E402


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--teacher", type=Path, default=None, help="teacher bundle (default: untrained unet w16)")
    parser.add_argument("--frames", type=int, default=172, help="training frames (spermparsing train minus val)")
    parser.add_argument("--epochs", type=int, default=100, help="epochs (the cpu preset: 100)")
    parser.add_argument("--cpu-time", action="store_true", help="time with CPU time (a busy machine; 1 thread)")
    return parser.parse_known_args(argv)


def _teacher(tmp: Path, opts: argparse.Namespace):
    import torch

    from spermseg.inference.bundle import create_bundle, load_predictor
    from spermseg.models import create_model
    from spermseg.models.checkpoints import save_checkpoint

    if opts.teacher is not None:
        return load_predictor(opts.teacher).eval()
    torch.manual_seed(0)
    stem = save_checkpoint(tmp / "t" / "best", create_model("unet", width=16), {"normalization": "minmax"})
    return load_predictor(create_bundle([stem], tmp / "teacher")).eval()


def run(quick: bool, opts: argparse.Namespace | None = None) -> str:
    import numpy as np
    import torch

    from spermseg.data.transforms import AugmentConfig, Augmenter, augment_batch, normalize
    from spermseg.inference.backends import torch_backend
    from spermseg.inference.forward import autocast_context, resolve_precision
    from spermseg.models import create_model
    from spermseg.training.losses import bce_loss
    from spermseg.training.step import call_base, train_step

    opts = opts or _parse([])[0]
    clock = time.process_time if opts.cpu_time else time.perf_counter
    side, batch, repeat = (128, 4, 2) if quick else (256, 8, 5)
    frame = (256, 320) if quick else (512, 640)
    with tempfile.TemporaryDirectory() as d:
        teacher = _teacher(Path(d), opts)
    rng = np.random.default_rng(0)
    frames = rng.random((2, *frame), dtype=np.float32)
    crops = torch.from_numpy(rng.random((batch, 1, side, side), dtype=np.float32))
    target = (torch.rand(batch, 1, side, side) > 0.9).float()
    cached = torch.rand(batch, 1, side, side)
    aug = Augmenter(AugmentConfig())
    cpu = torch.device("cpu")
    # as the cpu preset trains here (runtime.amp=auto): bf16 + channels_last on CPUs with AMX, else float32
    amp = resolve_precision("auto", cpu, training=True) == "bf16"
    fmt = torch.channels_last if amp else torch.contiguous_format
    student = create_model("unet", width=8).train().to(memory_format=fmt)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    forward = torch_backend(teacher, "cpu", precision="fp32")  # the cache pass: float32, as Distiller.predict

    def cache_step() -> object:
        return augment_batch(aug, crops, target, cached, torch.Generator().manual_seed(1), "minmax")

    def online_step() -> object:
        gen = torch.Generator().manual_seed(1)
        state = gen.get_state()
        out = augment_batch(aug, crops, target, None, gen, "minmax")
        replay = torch.Generator()
        replay.set_state(state)
        raw, _ = aug(crops, None, replay)
        with torch.no_grad(), autocast_context(cpu, "bf16" if amp else "fp32"):  # as Distiller.augment
            return out, teacher(raw)

    def student_step() -> object:
        inputs = {"image": normalize(crops, "minmax").contiguous(memory_format=fmt)}
        return train_step(student, call_base, inputs, cached, optimizer, bce_loss, amp=amp, device=cpu)

    t = Table(f"Distillation pieces (batch {batch} of {side}x{side}; teacher pass on {frame[1]}x{frame[0]})",
              unit="item")  # fmt: skip
    m_pass = t.add(measure(lambda: forward(frames), name="cache: teacher pass, per 2 frames", repeat=repeat, items=2,
                           trace_memory=False, clock=clock))  # fmt: skip
    m_cache = t.add(
        measure(cache_step, name="cache: augmentation step", repeat=repeat, trace_memory=False, clock=clock)
    )
    m_online = t.add(measure(online_step, name="online: augmentation + teacher step", repeat=repeat,
                             trace_memory=False, clock=clock))  # fmt: skip
    m_student = t.add(
        measure(student_step, name="student train step (both)", repeat=repeat, trace_memory=False, clock=clock)
    )
    steps = -(-opts.frames // batch)
    per_frame = m_pass.median / 2
    cache_total = opts.frames * per_frame + opts.epochs * steps * (m_cache.median + m_student.median)
    online_total = opts.epochs * steps * (m_online.median + m_student.median)
    extra = m_online.median - m_cache.median
    even = opts.frames * per_frame / (steps * extra) if extra > 0 else float("inf")
    teacher_name = f"`{opts.teacher}`" if opts.teacher else "untrained unet width 16"
    return (
        t.markdown()
        + f"\n\nTraining steps and the online teacher in {'bf16 (this CPU has AMX)' if amp else 'float32'}, "
        + "the cache pass in float32"
        + ("; times are this process's CPU time (one thread)" if opts.cpu_time else "")
        + ".\n"
        + f"\nTeacher {teacher_name}. {opts.epochs} epochs over {opts.frames} frames ({steps} steps each): "
        + f"cache {cache_total / 60:.1f} min (teacher pass {opts.frames * per_frame:.0f} s), online "
        + f"{online_total / 60:.1f} min: the online teacher costs {online_total / cache_total:.2f}x; the cache is "
        + f"ahead after {even:.2f} epochs.\n"
    )


if __name__ == "__main__":
    options, rest = _parse(sys.argv[1:])
    sys.exit(bench_main("Distillation: mask cache vs online teacher", lambda q: run(q, options), rest))
