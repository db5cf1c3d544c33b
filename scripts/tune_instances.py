"""Where per-sperm PQ is lost, and post-processing variants of two networks' outputs (docs/instances.md, issue 15).

Usage::

    # once: both networks' probability maps (float16 .npy) for the runs' validation images and the test split
    PYTHONPATH=src .venv/bin/python scripts/tune_instances.py cache --binary RUN_BIN --parts RUN_PARTS \\
        --data spermparsing --out CACHE
    # PQ / SQ / RQ and the per-sperm error classes of each variant on a set of cached images
    PYTHONPATH=src .venv/bin/python scripts/tune_instances.py eval --cache CACHE --set val --data spermparsing
    # how far a better separation of the part network's own pixels could go (reference ids as an oracle)
    PYTHONPATH=src .venv/bin/python scripts/tune_instances.py oracle --cache CACHE --set val --data spermparsing

``cache --models binary`` (no ``--parts``) caches only the binary network; ``eval --only "binary + filter"`` then
runs its variants. ``val`` is the 20 training images that both runs held out for validation (``result.json``
``val_groups``); ``test`` is the test split (for the final number only). Each variant turns the two maps into a
full mask and a head mask, separated by :func:`spermseg.inference.instances.separate_instances`, scored against
GT1 instances.

Error classes of a reference sperm that no prediction matches at IoU > 0.5 (its best-overlapping prediction P,
reference R): ``missed`` (no prediction overlaps it), ``short`` (P inside R: |P & R| / |P| >= 0.8, tail lost),
``long`` (R inside P: |P & R| / |R| >= 0.8, another sperm's tail or debris taken), ``split`` (two predictions
each hold >= 25 % of R), ``other``. Unmatched predictions: ``fp_bg`` (touching no reference sperm: debris, or a
sperm the rater did not label) or ``fp_part`` (a fragment of a reference sperm).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HEAD_CODES = (1, 2, 3)
MIDPIECE = 4
TAGS = ("binary", "parts")  # the two cached networks; eval runs the variants whose maps are cached


def _sets(binary_run: Path, data: Path) -> dict[str, list[tuple[str, str]]]:
    val = json.loads((binary_run / "result.json").read_text())["val_groups"]
    test = sorted(p.stem for p in (data / "test" / "images").iterdir())
    return {"val": [("train", s) for s in val], "test": [("test", s) for s in test]}


def cache(args: argparse.Namespace) -> None:
    """Write CACHE/{binary,parts}/NAME.npy (float16; the binary map without the whole-sperm filter)."""
    from spermseg.data.io import read_image
    from spermseg.inference.options import PredictOptions
    from spermseg.inference.predict import build_batch_fn

    sets = _sets(args.binary, args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    if (args.out / "sets.json").exists():  # an existing cache keeps its sets (it may hold more than val / test)
        sets = {**sets, **json.loads((args.out / "sets.json").read_text())}
    (args.out / "sets.json").write_text(json.dumps(sets, indent=1))
    opts = PredictOptions(batch_size=1, device="cpu", min_head_radius=0.0, tta=args.tta)
    runs = {"binary": args.binary, "parts": args.parts}
    fns = {tag: build_batch_fn(runs[tag], opts)[0] for tag in args.models}
    for name in args.sets:
        for split, stem in sets[name]:
            for tag, fn in fns.items():
                f = args.out / tag / f"{stem}.npy"
                if f.exists():
                    continue
                f.parent.mkdir(parents=True, exist_ok=True)
                t0 = time.time()
                prob = fn(read_image(args.data / split / "images" / f"{stem}.png")[None])[0]
                np.save(f, prob.astype(np.float16))
                print(f"{tag} {stem} {time.time() - t0:.1f} s", flush=True)


def diagnose(pred: np.ndarray, ref: np.ndarray) -> Counter:
    """Error classes (module docstring) of one image."""
    from spermseg.metrics.panoptic import match_instances

    m = match_instances(pred, ref)
    matched_r = {r for _, r, _ in m.pairs}
    matched_p = {p for p, _, _ in m.pairs}
    out: Counter = Counter(tp=len(m.pairs))
    base = int(ref.max()) + 1
    both = (pred > 0) & (ref > 0)
    ids, counts = np.unique(pred[both].astype(np.int64) * base + ref[both], return_counts=True)
    inter = {(int(v // base), int(v % base)): int(c) for v, c in zip(ids, counts)}
    parea = np.bincount(pred.ravel())
    rarea = np.bincount(ref.ravel())
    for r in np.unique(ref[ref > 0]):
        if r in matched_r:
            continue
        ov = {p: c for (p, rr), c in inter.items() if rr == r}
        if not ov:
            out["missed"] += 1
            continue
        p = max(ov, key=ov.get)
        if sum(c >= 0.25 * rarea[r] for c in ov.values()) >= 2:
            out["split"] += 1
        elif ov[p] / parea[p] >= 0.8:
            out["short"] += 1
        elif ov[p] / rarea[r] >= 0.8:
            out["long"] += 1
        else:
            out["other"] += 1
    for p in np.unique(pred[pred > 0]):
        if p not in matched_p:
            out["fp_part" if any(pp == p for pp, _ in inter) else "fp_bg"] += 1
    return out


Maps = tuple[np.ndarray, np.ndarray]  # binary probability (H, W), part sigmoids (6, H, W)


def hysteresis(prob: np.ndarray, high_mask: np.ndarray, low: float) -> np.ndarray:
    """``high_mask`` grown into ``prob >= low``: the 8-connected components of the low mask that hold a pixel of
    the high mask (a tail whose probability dips below the threshold for a few px stays one piece)."""
    from scipy import ndimage as ndi

    lab, n = ndi.label((prob >= low) | high_mask, structure=np.ones((3, 3), bool))
    keep = np.zeros(n + 1, bool)
    keep[np.unique(lab[high_mask])] = True
    keep[0] = False
    return keep[lab]


def variants(
    thr: float, radius: float, fg_thr: float, low: float | None = None
) -> dict[str, Callable[..., tuple[np.ndarray, np.ndarray | None, bool]]]:
    """name -> fn(binary prob, part codes, part foreground prob) -> (full mask, head mask or None, keep_headless).

    ``fg_thr``: threshold on the part network's foreground probability ``1 - softmax[background]`` (the "parts fg"
    variants; the arg-max code decides only which part a foreground pixel is)."""
    from spermseg.inference.postprocess import suppress_headless

    def binary(pb: np.ndarray) -> np.ndarray:
        return suppress_headless(pb, thr, radius) >= thr

    def grown(pb: np.ndarray) -> np.ndarray:  # hysteresis after the whole-sperm filter (the filter sees thr only)
        return hysteresis(pb, binary(pb), thr if low is None else low)

    def parts_grown(pf: np.ndarray, codes: np.ndarray) -> np.ndarray:
        return hysteresis(pf, codes > 0, fg_thr if low is None else low)

    def parts_alone(pb: np.ndarray, codes: np.ndarray, pf: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        return codes > 0, np.isin(codes, HEAD_CODES), False

    out = {
        "parts alone": parts_alone,
        "parts alone, neck at the midpiece": parts_alone,  # evaluate passes the midpiece (code 4) as the neck
        "binary + filter, heads estimated": lambda pb, codes, pf: (binary(pb), None, True),
        "binary + filter, heads estimated, headless dropped": lambda pb, codes, pf: (binary(pb), None, False),
        "binary + filter, heads from parts": lambda pb, codes, pf: (
            binary(pb), np.isin(codes, HEAD_CODES), False),
        "parts fg, heads from parts": lambda pb, codes, pf: (pf >= fg_thr, np.isin(codes, HEAD_CODES), False),
        "parts, heads estimated": lambda pb, codes, pf: (codes > 0, None, True),
        "parts fg + filter, heads estimated": lambda pb, codes, pf: (
            suppress_headless(pf, fg_thr, radius) >= fg_thr, None, True),
        "parts fg + filter, heads estimated, headless dropped": lambda pb, codes, pf: (
            suppress_headless(pf, fg_thr, radius) >= fg_thr, None, False),
        "binary | parts, heads from parts": lambda pb, codes, pf: (
            binary(pb) | (codes > 0), np.isin(codes, HEAD_CODES), False),
    }  # fmt: skip
    if low is not None:
        out[f"binary + filter + hysteresis {low:g}, heads estimated"] = lambda pb, codes, pf: (grown(pb), None, True)
        out[f"binary + filter + hysteresis {low:g}, headless dropped"] = lambda pb, codes, pf: (grown(pb), None, False)
        out[f"parts + hysteresis {low:g}, heads from parts"] = lambda pb, codes, pf: (
            parts_grown(pf, codes),
            np.isin(codes, HEAD_CODES),
            False,
        )
    return out


def evaluate(args: argparse.Namespace) -> None:
    from spermseg.data.labels import read_labels
    from spermseg.inference.bundle import load_predictor
    from spermseg.inference.instances import InstanceOptions, separate_instances
    from spermseg.inference.label_outputs import split_parts_prob
    from spermseg.metrics.multiclass import PartsAccumulator
    from spermseg.metrics.panoptic import PanopticAccumulator

    sets = json.loads((args.cache / "sets.json").read_text())
    items = [(split, s) for split, s in sets[args.set] if any((args.cache / t / f"{s}.npy").exists() for t in TAGS)]
    items = items[: args.limit] if args.limit else items
    pred = load_predictor(args.binary)
    thr = pred.threshold if args.threshold is None else args.threshold
    radius = float(pred.min_head_radius or 0) if args.radius is None else args.radius
    vs = variants(thr, radius, args.fg_threshold, args.low)
    # a name given in full picks that variant only; otherwise every variant containing a given substring
    only = args.only or []
    chosen = [v for v in vs if v in only] or [v for v in vs if not only or any(o in v for o in only)]
    extra: dict[str, Any] = {k: float(v) for k, v in (kv.split("=", 1) for kv in args.opt)}
    extra = {
        k: int(v) if k in ("min_area", "min_head_area", "head_radius", "direction_px") else v for k, v in extra.items()
    }
    accs = {v: PanopticAccumulator(coco=False) for v in chosen}
    diags = {v: Counter() for v in chosen}
    pixels = {"arg-max codes": PartsAccumulator(), f"codes at foreground >= {args.fg_threshold}": PartsAccumulator()}
    for split, stem in items:
        fb = args.cache / "binary" / f"{stem}.npy"
        pb = np.load(fb).astype(np.float32) if fb.exists() else None  # None: only the part variants can run
        fp = args.cache / "parts" / f"{stem}.npy"
        codes = pf = fg_codes = None  # no part map: only the binary variants can run
        if fp.exists():
            raw = np.load(fp).astype(np.float32)
            codes, pf = split_parts_prob(raw)
            fg_codes, _ = split_parts_prob(raw, args.fg_threshold)
            ref_codes = read_labels(args.data / split / f"{args.rater}_parts" / f"{stem}.png", "parts")
            for acc, c in zip(pixels.values(), (codes, fg_codes), strict=True):
                acc.update(c, ref_codes)
        ref = read_labels(args.data / split / f"{args.rater}_instances" / f"{stem}.png", "instances")
        for v in chosen:
            if (pb is None and "binary" in v) or (codes is None and "parts" in v):
                raise SystemExit(f"variant {v!r} needs a map that {args.cache} does not hold for {stem}: use --only")
            full, head, keep = vs[v](pb, fg_codes if "parts fg" in v else codes, pf)
            neck = codes == MIDPIECE if "midpiece" in v else None
            labels = separate_instances(full, head, InstanceOptions(keep_headless=keep, **extra), neck)
            accs[v].update(labels, ref)
            diags[v] += diagnose(labels, ref)
    for name, acc in pixels.items():
        r = acc.result()
        print(
            f"part network, {name}: mIoU {r['miou']:.3f}, head {r['head']:.3f}, tail {r['tail']:.3f}, "
            f"full {r['full']:.3f}"
        )
    keys = ("missed", "short", "long", "split", "other", "fp_bg", "fp_part")
    print(f"{args.set}: {len(items)} images, binary threshold {thr:.3f}, InstanceOptions {extra or 'defaults'}\n")
    print("| variant | PQ | SQ | RQ | TP | " + " | ".join(keys) + " | sperm (pred / ref) |")
    print("|---|" + "---|" * (4 + len(keys) + 1))
    for v in chosen:
        r, d = accs[v].result(), diags[v]
        print(f"| {v} | {r['pq']:.3f} | {r['sq']:.3f} | {r['rq']:.3f} | {d['tp']} | "
              + " | ".join(str(d[k]) for k in keys) + f" | {r['n_pred']} / {r['n_ref']} |")  # fmt: skip


def oracle(args: argparse.Namespace) -> None:
    """Upper bounds of the separation on the part network's own pixels ("parts alone, neck at the midpiece").

    Each predicted head is mapped to the reference sperm holding most of it; then the foreground pixels of that
    reference sperm within R px of the head's centre take the head's label (the rest keep the rules' label): how
    much a perfect assignment *near the heads* (a learned offset to the head, say) could add, and with R = inf a
    perfect assignment everywhere. Also where the pixels of the unmatched reference sperm went."""
    from scipy import ndimage as ndi

    from spermseg.data.labels import read_labels
    from spermseg.inference.instances import InstanceOptions, separate_instances
    from spermseg.inference.label_outputs import split_parts_prob
    from spermseg.metrics.panoptic import PanopticAccumulator, match_instances

    radii = (40.0, 80.0, 120.0, 200.0, float("inf"))
    rows = ["rules", *(f"reference ids within {r:g} px of the head" for r in radii),
            "reference ids everywhere, other foreground to the nearest sperm"]  # fmt: skip
    accs = {r: PanopticAccumulator(coco=False) for r in rows}
    went: Counter = Counter()
    crossings: Counter = Counter()
    sets = json.loads((args.cache / "sets.json").read_text())
    for split, stem in sets[args.set]:
        codes, _ = split_parts_prob(np.load(args.cache / "parts" / f"{stem}.npy").astype(np.float32))
        full, head = codes > 0, np.isin(codes, HEAD_CODES)
        labels = separate_instances(full, head, InstanceOptions(keep_headless=False), codes == MIDPIECE)
        ref = read_labels(args.data / split / f"{args.rater}_instances" / f"{stem}.png", "instances")
        seeds = np.where(head, labels, 0)
        owner: dict[int, int] = {}  # reference sperm -> the predicted head on it (the first one)
        centre: dict[int, np.ndarray] = {}
        for p in np.unique(seeds[seeds > 0]):
            ids, counts = np.unique(ref[(seeds == p) & (ref > 0)], return_counts=True)
            if ids.size:
                owner.setdefault(int(ids[counts.argmax()]), int(p))
            centre[int(p)] = np.argwhere(seeds == p).mean(axis=0)
        yy, xx = np.indices(full.shape)
        accs["rules"].update(labels, ref)
        crossings += crossing_pairs(codes, ref)
        for r, name in zip(radii, rows[1:-1], strict=True):
            out = labels.copy()
            for g, p in owner.items():
                out[full & (ref == g) & (np.hypot(yy - centre[p][0], xx - centre[p][1]) <= r)] = p
            accs[name].update(out, ref)
        _, (iy, ix) = ndi.distance_transform_edt(out == 0, return_indices=True)
        accs[rows[-1]].update(np.where(full & (out == 0), out[iy, ix], out), ref)
        matched = {g for _, g, _ in match_instances(labels, ref).pairs}
        for g in np.unique(ref[ref > 0]):
            if g in matched:
                continue
            mine, p = ref == g, owner.get(int(g), -1)
            went["unmatched"] += 1
            went["in its own head's sperm"] += np.count_nonzero(mine & (labels == p)) / mine.sum()
            went["in another sperm"] += np.count_nonzero(mine & (labels > 0) & (labels != p)) / mine.sum()
            went["foreground without a sperm"] += np.count_nonzero(mine & full & (labels == 0)) / mine.sum()
            went["not foreground"] += np.count_nonzero(mine & ~full) / mine.sum()
            went["its own head's sperm outside it (x its area)"] += np.count_nonzero((labels == p) & ~mine) / mine.sum()
    print(f"{args.set}: {len(sets[args.set])} images\n\n| separation of the part network's pixels | PQ | SQ | RQ |")
    print("|---|---|---|---|")
    for name, acc in accs.items():
        r = acc.result()
        print(f"| {name} | {r['pq']:.3f} | {r['sq']:.3f} | {r['rq']:.3f} |")
    n = max(went.pop("unmatched"), 1)
    print(f"\n{n} unmatched reference sperm; mean share of their pixels:")
    for k, v in went.items():
        print(f"  {k}: {v / n:.2f}")
    print("\ncrossings (pairs of segments mostly of one reference sperm):")
    for k in sorted(crossings):
        print(f"  {k}: {crossings[k]}")


def crossing_pairs(codes: np.ndarray, ref: np.ndarray) -> Counter:
    """At every crossing of the tracing graph (``spermseg.inference.tracing``) of a part network's codes: the
    straight-through pairs made whose two segments are mostly one reference sperm each (``right`` when the same
    one), and the pairs of segments of one reference sperm not made, by the crossing's number of ends."""
    from spermseg.inference import tracing
    from spermseg.inference.instances import InstanceOptions, head_seeds, seed_radius

    opt = InstanceOptions(keep_headless=False)
    full = codes > 0
    seeds = head_seeds(np.isin(codes, HEAD_CODES) & full, opt.min_head_area, seed_radius(opt))
    g = tracing._graph(full, seeds, opt, codes == MIDPIECE)
    majority = np.zeros(g["n_seg"] + 1, np.int64)  # the reference sperm of most of each segment's pixels
    for s in range(1, g["n_seg"] + 1):
        ids = ref[(g["segments"] == s) & (ref > 0)]
        if ids.size >= 3:
            majority[s] = np.bincount(ids).argmax()
    out: Counter = Counter()
    min_cos = float(np.cos(np.deg2rad(opt.max_turn_deg)))
    for ends in g["attach"].values():
        kind = f"{min(len(ends), 5)}{'+' if len(ends) >= 5 else ''} ends"
        pairs = tracing._pair_crossing(ends, min_cos)
        for a, b in pairs.items():
            if a < b and majority[a] and majority[b]:
                out[f"{kind}: pair made, {'right' if majority[a] == majority[b] else 'wrong'}"] += 1
        segs = [s for s, _ in ends]
        for i, a in enumerate(segs):
            for b in segs[i + 1 :]:
                if majority[a] and majority[a] == majority[b] and pairs.get(a) != b:
                    out[f"{kind}: pair of one reference sperm not made"] += 1
    return out


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cache")
    c.add_argument("--binary", type=Path, required=True)
    c.add_argument("--parts", type=Path, default=None, help="the part run (not needed with --models binary)")
    c.add_argument("--data", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--sets", nargs="+", default=["val", "test"])
    c.add_argument("--tta", action="store_true", help="average over flips (predict --tta)")
    c.add_argument("--models", nargs="+", default=["binary", "parts"], choices=["binary", "parts"])
    e = sub.add_parser("eval")
    e.add_argument("--cache", type=Path, required=True)
    e.add_argument("--binary", type=Path, required=True, help="the binary run (threshold, whole-sperm radius)")
    e.add_argument("--data", type=Path, required=True)
    e.add_argument("--set", default="val")
    e.add_argument("--rater", default="GT1")
    e.add_argument("--limit", type=int, default=0)
    e.add_argument("--only", nargs="*", default=None, help="substrings of the variants to run")
    e.add_argument("--threshold", type=float, default=None, help="binary threshold (default: the run's own)")
    e.add_argument("--fg-threshold", type=float, default=0.5, help="threshold of the part network's foreground")
    e.add_argument("--radius", type=float, default=None, help="whole-sperm radius (default: the binary run's)")
    e.add_argument("--low", type=float, default=None, help="hysteresis: also run variants grown into prob >= LOW")
    e.add_argument("--opt", nargs="*", default=[], help="InstanceOptions overrides, KEY=VALUE")
    o = sub.add_parser("oracle")
    o.add_argument("--cache", type=Path, required=True)
    o.add_argument("--data", type=Path, required=True)
    o.add_argument("--set", default="val")
    o.add_argument("--rater", default="GT1")
    args = parser.parse_args(argv)
    return {"cache": cache, "eval": evaluate, "oracle": oracle}[args.cmd](args)


if __name__ == "__main__":
    main()
