"""PQ of the three instance methods on the same part maps: the tables of docs/instances.md.

Usage::

    PYTHONPATH=src .venv/bin/python scripts/compare_instance_methods.py --parts PRED_DIR --gt DATA --split test
    PYTHONPATH=src .venv/bin/python scripts/compare_instance_methods.py --parts DATA/test_small/GT2_parts \\
        --gt DATA --split test_small

``PRED_DIR`` holds ``NAME_parts.png`` (``spermseg predict`` of a part network) or ``NAME.png`` part maps; with
``--kind mask`` it holds binary ``NAME_mask.png`` masks (a binary network; heads are then estimated). For each
method (components, watershed, skeleton) and head source (the part codes, or heads estimated from the full mask
alone) it prints PQ, SQ, RQ, COCO AP50 and the sperm count against the rater's instances.
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    from spermseg.data.arrays import load_split
    from spermseg.data.labels import read_labels
    from spermseg.evaluation.instances import find_label_predictions
    from spermseg.inference.instances import InstanceOptions, separate_instances
    from spermseg.metrics.panoptic import PanopticAccumulator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", required=True, help="folder of predicted part maps")
    parser.add_argument("--gt", required=True, help="dataset root")
    parser.add_argument("--split", default="test")
    parser.add_argument("--rater", default="GT1")
    parser.add_argument("--kind", choices=("parts", "mask"), default="parts")
    args = parser.parse_args()
    arrays = load_split(args.gt, args.split, raters=[args.rater], parts=(), labels=("instances",))
    files = find_label_predictions(args.parts, arrays.names, args.kind)
    if args.kind == "mask":  # binary masks: code 5 everywhere, so only "estimated" heads make sense
        from spermseg.data.io import read_mask

        maps = [read_mask(f).astype(np.uint8) * 5 for f in files]
    else:
        maps = [read_labels(f, "parts") for f in files]
    refs = arrays.labels(args.rater, "instances")
    print("| method | heads | PQ | SQ | RQ | AP50 | sperm (pred / ref) |\n|---|---|---|---|---|---|---|")
    for method in ("components", "watershed", "skeleton"):
        sources = ("parts", "estimated") if args.kind == "parts" else ("estimated",)
        for heads in sources if method != "components" else ("-",):
            acc = PanopticAccumulator()
            for codes, ref in zip(maps, refs):
                head = np.isin(codes, (1, 2, 3)) if heads == "parts" else None
                acc.update(separate_instances(codes > 0, head, InstanceOptions(method=method)), ref)  # type: ignore[arg-type]
            r = acc.result()
            print(f"| {method} | {heads} | {r['pq']:.3f} | {r['sq']:.3f} | {r['rq']:.3f} | {r['ap50']:.3f} | "
                  f"{r['n_pred']} / {r['n_ref']} |")  # fmt: skip


if __name__ == "__main__":
    main()
