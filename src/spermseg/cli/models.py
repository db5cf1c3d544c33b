"""``spermseg models``: list the registered models with parameter counts and MACs.

MACs (multiply-accumulates) are counted with :class:`torch.utils.flop_counter.FlopCounterMode` for one image of
the requested size (default 512x512) at each family's default width, as FLOPs / 2. Only matrix products and
convolutions count (normalization, activations and pooling are a few percent at most). The model and its input
live on the ``meta`` device, so nothing is computed and even 512x512 takes well under a second per model; a model
that cannot run on ``meta`` falls back to a real CPU forward pass.
"""

from __future__ import annotations

import argparse
from typing import Any

from spermseg.errors import ConfigError
from spermseg.models.profile import count_macs, count_parameters, profile_model  # noqa: F401 - re-exported

HELP = "list the registered models with parameter counts and MACs"
EXAMPLE = "spermseg models unet att_unet --size 512 512"


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
