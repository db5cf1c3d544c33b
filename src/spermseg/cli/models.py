"""``spermseg models``: list the registered models with parameter counts and MACs.

MACs (multiply-accumulates) are counted with :class:`torch.utils.flop_counter.FlopCounterMode` for one image of
the requested size (default 512x512) at each family's default width, as FLOPs / 2. Only matrix products and
convolutions count (normalization, activations and pooling are a few percent at most). The model and its input
live on the ``meta`` device, so nothing is computed and even 512x512 takes well under a second per model; a model
that cannot run on ``meta`` falls back to a real CPU forward pass.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from spermseg.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

HELP = "list the registered models with parameter counts and MACs"
EXAMPLE = "spermseg models unet att_unet --size 512 512"


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (works on ``meta`` modules too)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """Multiply-accumulates of one eval-mode forward pass, FLOPs / 2 from ``FlopCounterMode``.

    Args:
        model: the module (any device; ``meta`` computes nothing).
        inputs: positional inputs of ``model.forward`` on the same device, e.g. ``(image,)`` with image (B, C, H, W).

    Returns:
        MACs for the whole batch.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(*inputs)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2


def profile_model(
    name: str,
    size: tuple[int, int] = (512, 512),
    kind: str = "base",
    n_masks: int = 3,
    in_channels: int = 1,
    macs: bool = True,
) -> dict[str, Any]:
    """Parameter count and MACs of one model at its default width.

    Args:
        name: a base model (:func:`spermseg.models.list_models`) or, with ``kind="ensemble"``, an ensembling kind.
        size: (H, W) of the input image.
        kind: ``"base"`` or ``"ensemble"``.
        n_masks: number of soft masks fed to an ensembling network.
        in_channels: image channels.
        macs: also count MACs (parameters only when False).

    Returns:
        ``{"name", "kind", "params", "macs" (int or None), "size": [H, W], "defaults": {...}}``; ensembles add
        ``"n_masks"``.
    """
    import torch

    from spermseg.models import create_ensemble, create_model, model_kwargs

    def build() -> nn.Module:
        if kind == "ensemble":
            return create_ensemble(name, n_masks, in_channels=in_channels)
        return create_model(name, in_channels=in_channels)

    def example(device: str) -> tuple[torch.Tensor, ...]:
        image = torch.zeros(1, in_channels, *size, device=device)
        if kind == "ensemble":
            return image, torch.zeros(1, n_masks, *size, device=device)
        return (image,)

    with torch.device("meta"):
        model = build()
    info: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "params": count_parameters(model),
        "macs": None,
        "size": list(size),
    }
    if kind == "ensemble":
        info["n_masks"] = n_masks
    else:
        info["defaults"] = {k: v for k, v in model_kwargs(name).items() if k not in ("in_channels", "out_channels")}
    if macs:
        try:
            info["macs"] = count_macs(model, example("meta"))
        except (NotImplementedError, RuntimeError):
            # Some operators have no meta kernel: count on a real CPU model instead (slower, same result).
            info["macs"] = count_macs(build(), example("cpu"))
    return info


def _ensemble_kinds() -> list[str]:
    from spermseg.models import list_ensembles

    try:
        return list_ensembles()
    except ModuleNotFoundError as exc:  # the ensembling module is not part of this build
        if exc.name != "spermseg.models.ensemble":
            raise
        return []


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME", help="models or ensembling kinds to show (default: all)")
    parser.add_argument(
        "--size",
        nargs=2,
        type=int,
        default=(512, 512),
        metavar=("H", "W"),
        help="input size for the MAC count (default: 512 512)",
    )
    parser.add_argument("--n-masks", type=int, default=3, help="soft masks fed to the ensembling networks (3)")
    parser.add_argument("--no-macs", action="store_true", help="only count parameters")
    parser.add_argument("--no-ensembles", action="store_true", help="list the base models only")
    parser.add_argument("--json", action="store_true", help="print JSON on stdout instead of a table")
    parser.add_argument("--json-out", metavar="FILE", help="also write the JSON to FILE")


def run(args: argparse.Namespace) -> int:
    from spermseg.models import list_models

    h, w = args.size
    if h < 1 or w < 1:
        raise ConfigError(f"--size must be positive, got {h} {w}")
    if args.n_masks < 1:
        raise ConfigError(f"--n-masks must be >= 1, got {args.n_masks}")
    bases = list_models()
    ensembles = [] if args.no_ensembles else _ensemble_kinds()
    valid = bases + ensembles
    unknown = [n for n in args.names if n not in valid]
    if unknown:
        raise ConfigError(f"unknown model(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    wanted = set(args.names) if args.names else set(valid)

    rows = [profile_model(n, (h, w), "base", macs=not args.no_macs) for n in bases if n in wanted]
    rows += [
        profile_model(n, (h, w), "ensemble", n_masks=args.n_masks, macs=not args.no_macs)
        for n in ensembles
        if n in wanted
    ]
    result = {
        "size": [h, w],
        "macs_definition": "FLOPs / 2 of convolutions and matrix products, batch 1",
        "models": rows,
    }
    from spermseg.cli._common import emit_json

    if emit_json(args, result):
        return 0
    _print_table(rows, (h, w))
    return 0


def _print_table(rows: list[dict[str, Any]], size: tuple[int, int]) -> None:
    print(f"{'model':<14} {'kind':<9} {'params':>10} {'GMACs@' + 'x'.join(map(str, size)):>16}  defaults")
    for r in rows:
        macs = "-" if r["macs"] is None else f"{r['macs'] / 1e9:.2f}"
        if r["kind"] == "ensemble":
            extra = f"n_masks={r['n_masks']}"
        else:
            extra = ", ".join(f"{k}={v}" for k, v in r["defaults"].items())
        print(f"{r['name']:<14} {r['kind']:<9} {r['params'] / 1e6:>9.3f}M {macs:>16}  {extra}")
