"""Model zoo: forward throughput and training-step time of every base model and ensembling network.

Cases, at each family's default width and 512x512 inputs (256x256 with ``--quick``):

* forward in eval mode without gradients, batch 1 and batch 4 (images/s);
* one training step (forward in training mode, the deep-supervision BCE loss of :mod:`spermseg.training.losses`,
  backward, Adam step) at the paper's batch size on CUDA (5 for base models, 6 for ensembles) and batch 2 on the
  CPU, where the paper's batches would take minutes per step.

Ensembling networks get ``N_MASKS`` soft masks (the paper's E3: the top three base models). Parameters and MACs
(from ``spermseg models``) are printed next to the timings. Environment variables: ``SPERMSEG_BENCH_DEVICE``
(``auto``, ``cpu``, ``cuda``), ``SPERMSEG_BENCH_MODELS`` (comma-separated subset, e.g. ``unet,ens_att_v2``) and
``SPERMSEG_BENCH_THREADS`` (torch intra-op threads; on a shared, loaded CPU 1 thread is faster than 2, because
OpenMP threads spin at every barrier while waiting for a core).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Measurement, Table, bench_main, measure  # noqa: E402

N_MASKS = 3


def _cases() -> list[tuple[str, str]]:
    """(name, kind) of every base model and trainable-or-not ensembling kind, optionally filtered."""
    from spermseg.models import list_ensembles, list_models

    cases = [(n, "base") for n in list_models()] + [(k, "ensemble") for k in list_ensembles()]
    wanted = os.environ.get("SPERMSEG_BENCH_MODELS")
    if wanted:
        names = {w.strip() for w in wanted.split(",") if w.strip()}
        unknown = names - {n for n, _ in cases}
        if unknown:
            raise SystemExit(f"SPERMSEG_BENCH_MODELS: unknown {sorted(unknown)}; valid: {[n for n, _ in cases]}")
        cases = [c for c in cases if c[0] in names]
    return cases


def _build(name: str, kind: str, device: Any) -> Any:
    import torch

    from spermseg.models import create_ensemble, create_model

    torch.manual_seed(0)
    model = create_ensemble(name, N_MASKS) if kind == "ensemble" else create_model(name)
    return model.to(device)


def _inputs(kind: str, batch: int, size: int, device: Any) -> tuple[Any, ...]:
    import torch

    g = torch.Generator().manual_seed(0)
    image = torch.rand(batch, 1, size, size, generator=g).to(device)
    if kind == "ensemble":
        return image, torch.rand(batch, N_MASKS, size, size, generator=g).to(device)
    return (image,)


def _forward(model: Any, inputs: tuple[Any, ...]) -> Any:
    import torch

    with torch.no_grad():
        return model(*inputs)


def _train_step_fn(model: Any, inputs: tuple[Any, ...]) -> Any:
    """A closure doing one optimisation step on fixed inputs and a fixed random sparse target."""
    import torch

    from spermseg.models.blocks import split_outputs
    from spermseg.training.losses import bce_loss, deep_supervision_loss

    model.train()
    image = inputs[0]
    g = torch.Generator().manual_seed(1)
    target = (torch.rand(image.shape[0], 1, *image.shape[-2:], generator=g) < 0.02).float().to(image.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-3) if params else None

    def step() -> Any:
        logits, aux = split_outputs(model(*inputs))
        loss = deep_supervision_loss(logits, aux, target, bce_loss)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return loss.detach()

    return step


def run(quick: bool) -> str:
    import torch

    from spermseg.models.profile import profile_model
    from spermseg.utils.device import resolve_device

    device = resolve_device(os.environ.get("SPERMSEG_BENCH_DEVICE", "auto"))
    if os.environ.get("SPERMSEG_BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["SPERMSEG_BENCH_THREADS"]))
    cuda = device.type == "cuda"
    size = 256 if quick else 512
    repeat, warmup = (1, 1) if quick else ((10, 3) if cuda else (2, 1))
    # The batch-4 forward reuses the model just warmed up at batch 1; in quick mode skip its own warm-up.
    warmup_b4 = 0 if quick and not cuda else warmup
    batches = {"base": 5, "ensemble": 6} if cuda else {"base": 2, "ensemble": 2}
    cases = _cases()

    tables = {
        "b1": Table(f"Forward, eval, no grad, batch 1, {size}x{size}, {device.type}", ratio_to="unet", unit="image"),
        "b4": Table(f"Forward, eval, no grad, batch 4, {size}x{size}, {device.type}", ratio_to="unet", unit="image"),
        "train": Table(
            f"Training step (forward, BCE + deep supervision, backward, Adam), {size}x{size}, {device.type}",
            ratio_to="unet",
            unit="image",
        ),
    }
    for name, kind in cases:
        print(f"{name} ({kind})", file=sys.stderr, flush=True)
        info = profile_model(name, (size, size), kind, n_masks=N_MASKS)
        extra = {"params (M)": f"{info['params'] / 1e6:.2f}", "GMACs/image": f"{info['macs'] / 1e9:.1f}"}
        model = _build(name, kind, device).eval()
        rows: list[tuple[str, Measurement]] = []
        for key, batch, warm in (("b1", 1, warmup), ("b4", 4, warmup_b4)):
            inputs = _inputs(kind, batch, size, device)
            m = measure(
                lambda m=model, x=inputs: _forward(m, x),
                name=name,
                repeat=repeat,
                warmup=warm,
                items=batch,
                trace_memory=False,
                device=device,
            )
            rows.append((key, m))
            del inputs
        batch = batches[kind]
        step = _train_step_fn(model, _inputs(kind, batch, size, device))
        train = measure(step, name=name, repeat=repeat, warmup=warmup, items=batch, trace_memory=False, device=device)
        train.extra["batch"] = batch
        rows.append(("train", train))
        for key, m in rows:
            m.extra.update(extra)
            tables[key].add(m)
        del model, step
        if cuda:
            torch.cuda.empty_cache()

    intro = (
        f"Every registered base model at its default width and every ensembling kind ({N_MASKS} soft masks), "
        f"{size}x{size} single-channel inputs, fp32. `time vs unet` compares with the U-Net row; throughput is "
        "images/s. RSS peak is monotone over the process (it shows the largest model so far)."
    )
    return "\n\n".join([intro, *(t.markdown() for t in tables.values())])


if __name__ == "__main__":
    bench_main("Model zoo: throughput and training step", run)
